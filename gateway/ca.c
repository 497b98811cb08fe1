/* `certgate ca ...`: the development CA.
 *
 * A CA is a directory: ca.crt + ca.key (ECDSA P-256, PKCS#8), optionally
 * chain.crt (an intermediate followed by its parents), revoked.txt (one
 * "SERIALHEX YYYYMMDDHHMMSSZ" line per revoked certificate), crlnumber and
 * ca.crl. Subcommands load what they need from the directory, build one
 * X509 or X509_CRL in memory, and write every output file atomically
 * (PATH.tmp created with its final mode, fsync, rename) because `certgate
 * connect` watches renewed cert/key files and must never read half of one.
 *
 * Not for production: it exists so demos and tests can mint short-lived login
 * certificates with the claims in the default places (CONFIG.md "claims"),
 * plus the odd certificates the gateway must refuse (testing options). */
#include "ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cg_duration.h"
#include "x509_build.h"

#define CA_DEFAULT_NAME              "certgate dev CA"
#define CA_DEFAULT_INTERMEDIATE_NAME "certgate dev intermediate CA"
#define CA_DEFAULT_TTL               "365d"
#define ISSUE_DEFAULT_TTL            "15m"
#define SERVER_DEFAULT_TTL           "90d"
#define CRL_DEFAULT_TTL              "7d"
#define CLOCK_SLACK_S                60   /* CA and server certs start a minute early */
#define RSA_MIN_BITS                 1024 /* weak on purpose: the weak-key test needs it */
#define RSA_MAX_BITS                 8192
#define MAX_TEXT_FILE                (16 * 1024 * 1024)

/* ---- messages --------------------------------------------------------- */

/* Prints "certgate: ca SUB: ..." and returns exit code 1. */
static int refuse(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(const char *sub, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "certgate: ca %s: ", sub);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Like refuse() with the newest OpenSSL error appended; empties the error
 * queue so the next failure does not report a stale reason. */
static int refuse_ssl(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse_ssl(const char *sub, const char *fmt, ...)
{
	va_list ap;
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	fprintf(stderr, "certgate: ca %s: ", sub);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", reason ? reason : "OpenSSL error");
	ERR_clear_error();
	return 1;
}

/* Prints one line with a hint to --help and returns exit code 2. */
static int usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *sub, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "certgate: ca %s: ", sub);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'certgate ca %s --help')\n", sub);
	return 2;
}

/* ---- files ------------------------------------------------------------ */

static bool join_path(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);
	return n > 0 && (size_t)n < size;
}

static bool suffix_path(char *buf, size_t size, const char *prefix, const char *suffix)
{
	int n = snprintf(buf, size, "%s%s", prefix, suffix);
	return n > 0 && (size_t)n < size;
}

/* Writes the file's contents to bio; returns 1 on success. */
typedef int (*emit_fn)(BIO *bio, const void *arg);

/* Flushes the rename in path's directory to disk (best effort: a failure
 * here costs durability after a crash, not correctness). */
static void fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(dir))
			return;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)fsync(fd);
	close(fd);
}

/* path.tmp is created with mode (0600 keys are never readable by others,
 * not even for a moment), filled, fsynced and renamed over path. */
static int write_atomic(const char *sub, const char *path, mode_t mode, emit_fn emit,
                        const void *arg)
{
	char tmp[PATH_MAX];
	if (!suffix_path(tmp, sizeof(tmp), path, ".tmp"))
		return refuse(sub, "%s: path too long", path);
	if (unlink(tmp) < 0 && errno != ENOENT)
		return refuse(sub, "%s: %s", tmp, strerror(errno));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return refuse(sub, "%s: %s", tmp, strerror(errno));
	if (fchmod(fd, mode) < 0) { /* the umask may have narrowed it */
		refuse(sub, "%s: %s", tmp, strerror(errno));
		goto fail_fd;
	}
	BIO *bio = BIO_new_fd(fd, BIO_NOCLOSE);
	if (!bio) {
		refuse_ssl(sub, "%s", tmp);
		goto fail_fd;
	}
	errno = 0;
	int ok = emit(bio, arg) == 1 && BIO_flush(bio) == 1;
	int saved = errno;
	BIO_free(bio);
	if (!ok) {
		if (saved)
			refuse(sub, "%s: %s", tmp, strerror(saved));
		else
			refuse_ssl(sub, "%s: cannot write", tmp);
		goto fail_fd;
	}
	if (fsync(fd) < 0) {
		refuse(sub, "%s: %s", tmp, strerror(errno));
		goto fail_fd;
	}
	if (close(fd) < 0) {
		refuse(sub, "%s: %s", tmp, strerror(errno));
		goto fail_unlink;
	}
	if (rename(tmp, path) < 0) {
		refuse(sub, "%s: %s", path, strerror(errno));
		goto fail_unlink;
	}
	fsync_parent(path);
	ERR_clear_error();
	return 0;

fail_fd:
	close(fd);
fail_unlink:
	unlink(tmp);
	return 1;
}

static int emit_key(BIO *bio, const void *arg)
{
	/* PKCS#8 "PRIVATE KEY", unencrypted: what libpq and the gateway load. */
	return PEM_write_bio_PrivateKey(bio, (EVP_PKEY *)arg, NULL, NULL, 0, NULL, NULL);
}

static int emit_certs(BIO *bio, const void *arg)
{
	const STACK_OF(X509) *certs = arg;
	for (int i = 0; i < sk_X509_num(certs); i++)
		if (PEM_write_bio_X509(bio, sk_X509_value(certs, i)) != 1)
			return 0;
	return 1;
}

static int emit_crl(BIO *bio, const void *arg)
{
	return PEM_write_bio_X509_CRL(bio, (X509_CRL *)arg);
}

static int emit_text(BIO *bio, const void *arg)
{
	const char *text = arg;
	int n = (int)strlen(text);
	return n == 0 || BIO_write(bio, text, n) == n;
}

/* Never prompts for a passphrase: our keys are unencrypted, and a prompt
 * from inside a test or a script would hang it. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Every certificate in the PEM file path, in order; at least one. The caller
 * frees *out with sk_X509_pop_free(*out, X509_free). */
static int load_certs(const char *sub, const char *path, STACK_OF(X509) * *out)
{
	FILE *fp = fopen(path, "re");
	if (!fp)
		return refuse(sub, "%s: %s", path, strerror(errno));
	STACK_OF(X509) *certs = sk_X509_new_null();
	if (!certs) {
		fclose(fp);
		return refuse_ssl(sub, "%s", path);
	}
	X509 *x;
	while ((x = PEM_read_X509(fp, NULL, no_passphrase, NULL)) != NULL) {
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			break;
		}
	}
	fclose(fp);
	/* The loop always ends on an error: "no start line" after the last
	 * certificate is the normal end of file. */
	unsigned long e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE &&
	    sk_X509_num(certs) > 0)
		ERR_clear_error();
	if (ERR_peek_error() != 0 || sk_X509_num(certs) == 0) {
		sk_X509_pop_free(certs, X509_free);
		if (ERR_peek_error() == 0)
			return refuse(sub, "%s: no certificate found", path);
		return refuse_ssl(sub, "%s: cannot read certificate", path);
	}
	*out = certs;
	return 0;
}

static int load_cert(const char *sub, const char *path, X509 **out)
{
	STACK_OF(X509) *certs = NULL;
	int rc = load_certs(sub, path, &certs);
	if (rc != 0)
		return rc;
	*out = sk_X509_shift(certs);
	sk_X509_pop_free(certs, X509_free);
	return 0;
}

static int load_key(const char *sub, const char *path, EVP_PKEY **out)
{
	FILE *fp = fopen(path, "re");
	if (!fp)
		return refuse(sub, "%s: %s", path, strerror(errno));
	EVP_PKEY *key = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	if (!key)
		return refuse_ssl(sub, "%s: cannot read private key", path);
	*out = key;
	return 0;
}

/* Reads a whole small text file into a NUL-terminated heap string (*out,
 * freed by the caller). A missing file gives *out = NULL and success. */
static int read_text(const char *sub, const char *path, char **out)
{
	*out = NULL;
	FILE *fp = fopen(path, "re");
	if (!fp) {
		if (errno == ENOENT)
			return 0;
		return refuse(sub, "%s: %s", path, strerror(errno));
	}
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (!buf) {
		fclose(fp);
		return refuse(sub, "%s: out of memory", path);
	}
	for (;;) {
		if (len + 1 == cap) {
			if (cap >= MAX_TEXT_FILE) {
				free(buf);
				fclose(fp);
				return refuse(sub, "%s: file too large", path);
			}
			char *bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				fclose(fp);
				return refuse(sub, "%s: out of memory", path);
			}
			buf = bigger;
			cap *= 2;
		}
		size_t n = fread(buf + len, 1, cap - 1 - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	int err = ferror(fp);
	fclose(fp);
	if (err) {
		free(buf);
		return refuse(sub, "%s: read error", path);
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/* mkdir -p, every directory it creates 0700. */
static int make_dirs(const char *sub, const char *dir)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof(path))
		return refuse(sub, "%s: bad directory name", dir);
	memcpy(path, dir, n + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return refuse(sub, "%s: %s", path, strerror(errno));
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return refuse(sub, "%s: %s", path, strerror(errno));
	struct stat st;
	if (stat(path, &st) < 0)
		return refuse(sub, "%s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return refuse(sub, "%s: %s", path, strerror(ENOTDIR));
	return 0;
}

static int remove_if_present(const char *sub, const char *dir, const char *name)
{
	char path[PATH_MAX];
	if (!join_path(path, sizeof(path), dir, name))
		return refuse(sub, "%s: path too long", dir);
	if (unlink(path) < 0 && errno != ENOENT)
		return refuse(sub, "%s: %s", path, strerror(errno));
	return 0;
}

/* ---- the CA on disk ----------------------------------------------------- */

typedef struct ca {
	const char *dir;
	X509 *cert;
	EVP_PKEY *key;
} ca_t;

static void ca_finish(ca_t *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	ca->cert = NULL;
	ca->key = NULL;
}

/* Loads DIR/ca.crt and DIR/ca.key and checks they belong together. */
static int ca_load(const char *sub, const char *dir, ca_t *ca)
{
	char crt_path[PATH_MAX], key_path[PATH_MAX];
	memset(ca, 0, sizeof(*ca));
	ca->dir = dir;
	if (!join_path(crt_path, sizeof(crt_path), dir, "ca.crt") ||
	    !join_path(key_path, sizeof(key_path), dir, "ca.key"))
		return refuse(sub, "%s: path too long", dir);
	int rc = load_key(sub, key_path, &ca->key);
	if (rc == 0)
		rc = load_cert(sub, crt_path, &ca->cert);
	if (rc == 0 && X509_check_private_key(ca->cert, ca->key) != 1)
		rc = refuse(sub, "%s: does not match %s", key_path, crt_path);
	if (rc == 0 && X509_check_ca(ca->cert) == 0)
		rc = refuse(sub, "%s: not a CA certificate", crt_path);
	if (rc != 0)
		ca_finish(ca);
	ERR_clear_error();
	return rc;
}

/* The CA's certificate followed by the rest of its chain: DIR/chain.crt if
 * it exists (an intermediate), else DIR/ca.crt. */
static int ca_load_chain(const char *sub, const char *dir, STACK_OF(X509) * *out)
{
	char path[PATH_MAX];
	if (!join_path(path, sizeof(path), dir, "chain.crt"))
		return refuse(sub, "%s: path too long", dir);
	if (access(path, F_OK) != 0) {
		if (errno != ENOENT)
			return refuse(sub, "%s: %s", path, strerror(errno));
		if (!join_path(path, sizeof(path), dir, "ca.crt"))
			return refuse(sub, "%s: path too long", dir);
	}
	return load_certs(sub, path, out);
}

/* ---- option parsing ------------------------------------------------------ */

enum {
	OPT_HELP = 256,
	OPT_DIR,
	OPT_NAME,
	OPT_TTL,
	OPT_PARENT,
	OPT_FORCE,
	OPT_OUT,
	OPT_USER,
	OPT_GROUP,
	OPT_DEVICE_ID,
	OPT_DEVICE_TRUST,
	OPT_BACKDATE,
	OPT_POSTDATE,
	OPT_EKU,
	OPT_CA_TRUE,
	OPT_RSA,
	OPT_DIGEST,
	OPT_CRITICAL_EXT,
	OPT_EXT,
	OPT_CN,
	OPT_NO_EMAIL,
	OPT_CHAIN,
	OPT_DNS,
	OPT_IP,
	OPT_CERT,
	OPT_CRL_TTL,
};

/* A repeatable option's values; capacity argc is always enough. */
typedef struct list {
	const char **items;
	int count;
} list_t;

static bool list_init(list_t *l, int argc)
{
	l->count = 0;
	l->items = calloc((size_t)argc + 1, sizeof(*l->items));
	return l->items != NULL;
}

/* Next option, or -1 at the end. Unknown options, missing arguments and
 * --help are turned into *rc (2, 2, 0) with the return value 0. */
static int next_option(const char *sub, int argc, char **argv, const struct option *opts,
                       void (*help)(void), int *rc)
{
	int c = getopt_long(argc, argv, "+:", opts, NULL);
	switch (c) {
	case -1:
		if (optind < argc) {
			*rc = usage_error(sub, "unexpected argument '%s'", argv[optind]);
			return 0;
		}
		return -1;
	case OPT_HELP:
		help();
		*rc = 0;
		return 0;
	case ':':
		*rc = usage_error(sub, "option '%s' needs a value", argv[optind - 1]);
		return 0;
	case '?':
		*rc = usage_error(sub, "unknown option '%s'", argv[optind - 1]);
		return 0;
	default:
		return c;
	}
}

/* A single-valued option given once. */
static bool set_once(const char *sub, const char **slot, const char *name, int *rc)
{
	if (*slot) {
		*rc = usage_error(sub, "--%s given twice", name);
		return false;
	}
	*slot = optarg;
	return true;
}

/* Parses a DUR option into whole seconds (at least min_s). */
static bool parse_seconds(const char *sub, const char *name, const char *text, int64_t min_s,
                          int64_t *out, int *rc)
{
	uint64_t ms;
	if (!cg_duration_parse(text, &ms)) {
		*rc = usage_error(sub, "--%s: bad duration '%s' (like 90s, 15m, 24h, 7d)", name,
		                  text);
		return false;
	}
	if ((int64_t)(ms / 1000) < min_s) {
		*rc = usage_error(sub, "--%s: must be at least %llds", name, (long long)min_s);
		return false;
	}
	*out = (int64_t)(ms / 1000);
	return true;
}

static bool parse_rsa_bits(const char *sub, const char *text, unsigned *out, int *rc)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno || end == text || *end || text[0] < '1' || text[0] > '9' || v < RSA_MIN_BITS ||
	    v > RSA_MAX_BITS) {
		*rc = usage_error(sub, "--rsa: bits must be %d..%d, got '%s'", RSA_MIN_BITS,
		                  RSA_MAX_BITS, text);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

/* Printable ASCII without spaces: what fits an IA5String SAN entry. */
static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

/* ---- ca init ---------------------------------------------------------- */

static void help_init(void)
{
	fputs("usage: certgate ca init --dir DIR [--name CN] [--ttl DUR] [--parent PARENT_DIR] "
	      "[--force]\n"
	      "\n"
	      "Creates a development CA (ECDSA P-256) in DIR (made 0700 if missing):\n"
	      "DIR/ca.crt (0644) and DIR/ca.key (0600, PKCS#8). Not for production.\n"
	      "\n"
	      "  --dir DIR            the CA directory\n"
	      "  --name CN            subject common name (default \"" CA_DEFAULT_NAME "\")\n"
	      "  --ttl DUR            validity (default " CA_DEFAULT_TTL ")\n"
	      "  --parent PARENT_DIR  make an intermediate CA signed by PARENT_DIR's CA;\n"
	      "                       DIR/chain.crt then holds it followed by its parents\n"
	      "  --force              replace an existing DIR/ca.key (also forgets the old\n"
	      "                       CA's chain.crt, revoked.txt, crlnumber and ca.crl)\n"
	      "  --help               this text\n",
	      stdout);
}

static int cmd_init(int argc, char **argv)
{
	static const char sub[] = "init";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"name", required_argument, NULL, OPT_NAME},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"parent", required_argument, NULL, OPT_PARENT},
	        {"force", no_argument, NULL, OPT_FORCE},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *name = NULL, *ttl_text = NULL, *parent_dir = NULL;
	bool force = false;
	int rc = 0, c;

	while ((c = next_option(sub, argc, argv, opts, help_init, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_NAME:
			ok = set_once(sub, &name, "name", &rc);
			break;
		case OPT_TTL:
			ok = set_once(sub, &ttl_text, "ttl", &rc);
			break;
		case OPT_PARENT:
			ok = set_once(sub, &parent_dir, "parent", &rc);
			break;
		case OPT_FORCE:
			force = true;
			break;
		}
		if (!ok)
			return rc;
	}
	if (c == 0)
		return rc;
	if (!dir)
		return usage_error(sub, "--dir is required");
	if (!name)
		name = parent_dir ? CA_DEFAULT_INTERMEDIATE_NAME : CA_DEFAULT_NAME;
	if (!*name)
		return usage_error(sub, "--name must not be empty");
	int64_t ttl_s;
	if (!parse_seconds(sub, "ttl", ttl_text ? ttl_text : CA_DEFAULT_TTL, 1, &ttl_s, &rc))
		return rc;

	char key_path[PATH_MAX], crt_path[PATH_MAX], chain_path[PATH_MAX];
	if (!join_path(key_path, sizeof(key_path), dir, "ca.key") ||
	    !join_path(crt_path, sizeof(crt_path), dir, "ca.crt") ||
	    !join_path(chain_path, sizeof(chain_path), dir, "chain.crt"))
		return refuse(sub, "%s: path too long", dir);
	struct stat st;
	if (lstat(key_path, &st) == 0) {
		if (!force)
			return refuse(sub, "%s: already exists (use --force to replace the CA)",
			              key_path);
	} else if (errno != ENOENT && errno != ENOTDIR) {
		return refuse(sub, "%s: %s", key_path, strerror(errno));
	}

	ca_t parent = {0};
	STACK_OF(X509) *parent_chain = NULL, *chain = NULL;
	EVP_PKEY *key = NULL;
	X509_NAME *subject = NULL;
	X509 *cert = NULL;
	X509V3_CTX ctx;
	if (parent_dir) {
		rc = ca_load(sub, parent_dir, &parent);
		if (rc != 0)
			return rc;
		rc = ca_load_chain(sub, parent_dir, &parent_chain);
		if (rc != 0)
			goto done;
	}
	rc = make_dirs(sub, dir);
	if (rc != 0)
		goto done;

	key = gw_x509_key_new(0);
	subject = X509_NAME_new();
	if (!key || !subject) {
		rc = refuse_ssl(sub, "cannot generate the CA key");
		goto done;
	}
	if (!gw_x509_name_add(subject, NID_commonName, name)) {
		rc = refuse_ssl(sub, "--name '%s'", name);
		goto done;
	}
	cert = gw_x509_cert_new(subject, parent_dir ? parent.cert : NULL, key, time(NULL),
	                        -CLOCK_SLACK_S, ttl_s + CLOCK_SLACK_S, &ctx);
	if (!cert || !gw_x509_add_ext(&ctx, cert, NID_basic_constraints, "critical,CA:TRUE") ||
	    !gw_x509_add_ext(&ctx, cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !X509_sign(cert, parent_dir ? parent.key : key, EVP_sha256())) {
		rc = refuse_ssl(sub, "cannot make the CA certificate");
		goto done;
	}

	/* A replaced CA starts from scratch: the old CRL is signed by the old
	 * key and the old chain names other parents. */
	if (force) {
		static const char *const stale[] = {"chain.crt", "ca.crl", "revoked.txt",
		                                    "crlnumber"};
		for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++)
			if ((rc = remove_if_present(sub, dir, stale[i])) != 0)
				goto done;
	}
	chain = sk_X509_new_null();
	if (!chain || !sk_X509_push(chain, cert)) {
		rc = refuse_ssl(sub, "out of memory");
		goto done;
	}
	rc = write_atomic(sub, key_path, 0600, emit_key, key);
	if (rc == 0)
		rc = write_atomic(sub, crt_path, 0644, emit_certs, chain);
	if (rc == 0 && parent_dir) {
		for (int i = 0; i < sk_X509_num(parent_chain) && rc == 0; i++)
			if (!sk_X509_push(chain, sk_X509_value(parent_chain, i)))
				rc = refuse_ssl(sub, "out of memory");
		if (rc == 0)
			rc = write_atomic(sub, chain_path, 0644, emit_certs, chain);
	}

done:
	sk_X509_free(chain); /* borrowed pointers only */
	X509_free(cert);
	X509_NAME_free(subject);
	EVP_PKEY_free(key);
	sk_X509_pop_free(parent_chain, X509_free);
	ca_finish(&parent);
	return rc;
}

/* ---- ca issue --------------------------------------------------------- */

static void help_issue(void)
{
	fputs("usage: certgate ca issue --dir DIR --out PREFIX --user EMAIL [--group G]...\n"
	      "                         [--device-id ID] [--device-trust LEVEL] [--ttl DUR]\n"
	      "\n"
	      "Issues a short-lived login certificate (ECDSA P-256) signed by DIR's CA,\n"
	      "with the claims in the default places: subject CN=EMAIL and one OU per\n"
	      "group, SAN email:EMAIL, SAN URI urn:certgate:device:ID and\n"
	      "urn:certgate:trust:LEVEL. Writes PREFIX.crt and PREFIX.key (0600).\n"
	      "\n"
	      "  --dir DIR             the CA directory (see certgate ca init)\n"
	      "  --out PREFIX          output file prefix\n"
	      "  --user EMAIL          the user claim\n"
	      "  --group G             a group claim (repeatable, kept in order)\n"
	      "  --device-id ID        the device id claim\n"
	      "  --device-trust LEVEL  always_deny, low, medium or high\n"
	      "  --ttl DUR             validity (default " ISSUE_DEFAULT_TTL ")\n"
	      "  --help                this text\n"
	      "\n"
	      "testing options (certificates the gateway must refuse, or odd claims):\n"
	      "  --backdate DUR        notBefore = now - DUR (notAfter = notBefore + ttl)\n"
	      "  --postdate DUR        notBefore = now + DUR\n"
	      "  --eku client|server|both|none\n"
	      "                        extendedKeyUsage (default client)\n"
	      "  --ca-true             basicConstraints CA:TRUE on the leaf\n"
	      "  --rsa BITS            an RSA key of BITS (1024..8192) instead of P-256\n"
	      "  --digest sha1|sha256|sha384\n"
	      "                        signature digest (default sha256)\n"
	      "  --critical-ext OID    add an unknown critical extension (UTF8String)\n"
	      "  --ext OID=VALUE       add a non-critical extension holding the UTF8String\n"
	      "                        VALUE (repeatable; for ext:OID claim sources)\n"
	      "  --cn NAME             subject CN instead of EMAIL\n"
	      "  --no-email            leave out the SAN email\n"
	      "  --chain               append DIR/chain.crt (or DIR/ca.crt) to PREFIX.crt\n",
	      stdout);
}

typedef struct issue_opts {
	const char *dir, *out, *user, *device_id, *device_trust, *ttl, *backdate, *postdate;
	const char *eku, *rsa, *digest, *cn;
	list_t groups, critical_exts, exts;
	bool ca_true, no_email, chain;
} issue_opts_t;

static const char *const trust_levels[] = {"always_deny", "low", "medium", "high"};

static const EVP_MD *digest_by_name(const char *name)
{
	if (strcmp(name, "sha1") == 0)
		return EVP_sha1();
	if (strcmp(name, "sha256") == 0)
		return EVP_sha256();
	if (strcmp(name, "sha384") == 0)
		return EVP_sha384();
	return NULL;
}

static const char *eku_value(const char *name)
{
	if (strcmp(name, "client") == 0)
		return "clientAuth";
	if (strcmp(name, "server") == 0)
		return "serverAuth";
	if (strcmp(name, "both") == 0)
		return "clientAuth,serverAuth";
	if (strcmp(name, "none") == 0)
		return "";
	return NULL;
}

/* Adds --critical-ext OID and --ext OID=VALUE extensions. */
static int add_custom_exts(const char *sub, X509 *x, const issue_opts_t *o)
{
	for (int pass = 0; pass < 2; pass++) {
		const list_t *l = pass == 0 ? &o->critical_exts : &o->exts;
		for (int i = 0; i < l->count; i++) {
			const char *arg = l->items[i];
			const char *eq = pass == 0 ? NULL : strchr(arg, '=');
			const char *opt = pass == 0 ? "critical-ext" : "ext";
			if (pass == 1 && !eq)
				return usage_error(sub, "--ext: expected OID=VALUE, got '%s'", arg);
			size_t oid_len = eq ? (size_t)(eq - arg) : strlen(arg);
			char oid_text[128];
			if (oid_len == 0 || oid_len >= sizeof(oid_text))
				return usage_error(sub, "--%s: bad OID in '%s'", opt, arg);
			memcpy(oid_text, arg, oid_len);
			oid_text[oid_len] = '\0';
			ASN1_OBJECT *oid = OBJ_txt2obj(oid_text, 1);
			if (!oid) {
				ERR_clear_error();
				return usage_error(sub, "--%s: bad OID '%s'", opt, oid_text);
			}
			int dup = X509_get_ext_by_OBJ(x, oid, -1);
			bool ok = dup < 0 &&
			          gw_x509_add_utf8_ext(x, oid, pass == 0 ? "certgate test" : eq + 1,
			                               pass == 0);
			ASN1_OBJECT_free(oid);
			if (dup >= 0)
				return usage_error(sub, "--%s: extension %s given twice", opt,
				                   oid_text);
			if (!ok)
				return refuse_ssl(sub, "--%s '%s'", opt, arg);
		}
	}
	return 0;
}

/* Builds and signs the login certificate for key. */
static int build_login_cert(const char *sub, const issue_opts_t *o, const ca_t *ca, EVP_PKEY *key,
                            int64_t ttl_s, int64_t start_s, X509 **out)
{
	int rc = 1;
	X509_NAME *subject = X509_NAME_new();
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	X509 *x = NULL;
	X509V3_CTX ctx;
	const char *cn = o->cn ? o->cn : o->user;

	if (!subject || !names) {
		rc = refuse_ssl(sub, "out of memory");
		goto done;
	}
	if (!gw_x509_name_add(subject, NID_commonName, cn)) {
		rc = refuse_ssl(sub, "subject CN '%s'", cn);
		goto done;
	}
	for (int i = 0; i < o->groups.count; i++) {
		if (!gw_x509_name_add(subject, NID_organizationalUnitName, o->groups.items[i])) {
			rc = refuse_ssl(sub, "--group '%s'", o->groups.items[i]);
			goto done;
		}
	}
	if ((!o->no_email && !gw_x509_san_push(names, GEN_EMAIL, o->user)) ||
	    (o->device_id && !gw_x509_san_push_uri(names, "urn:certgate:device:", o->device_id)) ||
	    (o->device_trust &&
	     !gw_x509_san_push_uri(names, "urn:certgate:trust:", o->device_trust))) {
		rc = refuse_ssl(sub, "subjectAltName");
		goto done;
	}
	x = gw_x509_cert_new(subject, ca->cert, key, time(NULL), start_s, ttl_s, &ctx);
	const char *eku = eku_value(o->eku ? o->eku : "client");
	if (!x || !gw_x509_add_san(x, names) ||
	    !gw_x509_add_ext(&ctx, x, NID_basic_constraints,
	                     o->ca_true ? "critical,CA:TRUE" : "critical,CA:FALSE") ||
	    !gw_x509_add_ext(&ctx, x, NID_key_usage, "critical,digitalSignature") ||
	    (*eku && !gw_x509_add_ext(&ctx, x, NID_ext_key_usage, eku))) {
		rc = refuse_ssl(sub, "cannot make the certificate");
		goto done;
	}
	rc = add_custom_exts(sub, x, o);
	if (rc != 0)
		goto done;
	if (!X509_sign(x, ca->key, digest_by_name(o->digest ? o->digest : "sha256"))) {
		rc = refuse_ssl(sub, "cannot sign the certificate");
		goto done;
	}
	*out = x;
	x = NULL;
	rc = 0;
done:
	X509_free(x);
	GENERAL_NAMES_free(names);
	X509_NAME_free(subject);
	return rc;
}

/* Writes PREFIX.key then PREFIX.crt (leaf, then the CA chain with --chain).
 * The certificate goes last: a watcher that sees a new certificate finds
 * its key already in place. */
static int write_leaf(const char *sub, const char *dir, const char *prefix, X509 *cert,
                      EVP_PKEY *key, bool with_chain)
{
	char crt_path[PATH_MAX], key_path[PATH_MAX];
	if (!suffix_path(crt_path, sizeof(crt_path), prefix, ".crt") ||
	    !suffix_path(key_path, sizeof(key_path), prefix, ".key"))
		return refuse(sub, "%s: path too long", prefix);
	STACK_OF(X509) *certs = NULL;
	int rc = 0;
	if (with_chain)
		rc = ca_load_chain(sub, dir, &certs);
	else if (!(certs = sk_X509_new_null()))
		rc = refuse_ssl(sub, "out of memory");
	if (rc != 0)
		return rc;
	if (!X509_up_ref(cert) || !sk_X509_unshift(certs, cert)) {
		sk_X509_pop_free(certs, X509_free);
		return refuse_ssl(sub, "out of memory");
	}
	rc = write_atomic(sub, key_path, 0600, emit_key, key);
	if (rc == 0)
		rc = write_atomic(sub, crt_path, 0644, emit_certs, certs);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

static int issue_validate(const char *sub, const issue_opts_t *o)
{
	if (!o->dir)
		return usage_error(sub, "--dir is required");
	if (!o->out)
		return usage_error(sub, "--out is required");
	if (!o->user)
		return usage_error(sub, "--user is required");
	if (!is_token(o->user) || (!o->no_email && !strchr(o->user, '@')))
		return usage_error(sub, "--user: expected an email address, got '%s'", o->user);
	if (o->cn && !*o->cn)
		return usage_error(sub, "--cn must not be empty");
	for (int i = 0; i < o->groups.count; i++)
		if (!*o->groups.items[i])
			return usage_error(sub, "--group must not be empty");
	if (o->device_id && !is_token(o->device_id))
		return usage_error(sub, "--device-id: '%s' is empty or has spaces or non-ASCII",
		                   o->device_id);
	if (o->device_trust) {
		bool known = false;
		for (size_t i = 0; i < sizeof(trust_levels) / sizeof(trust_levels[0]); i++)
			known = known || strcmp(o->device_trust, trust_levels[i]) == 0;
		if (!known)
			return usage_error(sub,
			                   "--device-trust: expected always_deny, low, medium or "
			                   "high, got '%s'",
			                   o->device_trust);
	}
	if (o->backdate && o->postdate)
		return usage_error(sub, "--backdate and --postdate exclude each other");
	if (o->eku && !eku_value(o->eku))
		return usage_error(sub, "--eku: expected client, server, both or none, got '%s'",
		                   o->eku);
	if (o->digest && !digest_by_name(o->digest))
		return usage_error(sub, "--digest: expected sha1, sha256 or sha384, got '%s'",
		                   o->digest);
	return 0;
}

static int cmd_issue(int argc, char **argv)
{
	static const char sub[] = "issue";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"out", required_argument, NULL, OPT_OUT},
	        {"user", required_argument, NULL, OPT_USER},
	        {"group", required_argument, NULL, OPT_GROUP},
	        {"device-id", required_argument, NULL, OPT_DEVICE_ID},
	        {"device-trust", required_argument, NULL, OPT_DEVICE_TRUST},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"backdate", required_argument, NULL, OPT_BACKDATE},
	        {"postdate", required_argument, NULL, OPT_POSTDATE},
	        {"eku", required_argument, NULL, OPT_EKU},
	        {"ca-true", no_argument, NULL, OPT_CA_TRUE},
	        {"rsa", required_argument, NULL, OPT_RSA},
	        {"digest", required_argument, NULL, OPT_DIGEST},
	        {"critical-ext", required_argument, NULL, OPT_CRITICAL_EXT},
	        {"ext", required_argument, NULL, OPT_EXT},
	        {"cn", required_argument, NULL, OPT_CN},
	        {"no-email", no_argument, NULL, OPT_NO_EMAIL},
	        {"chain", no_argument, NULL, OPT_CHAIN},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	issue_opts_t o = {0};
	int rc = 0, c;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	ca_t ca = {0};

	if (!list_init(&o.groups, argc) || !list_init(&o.critical_exts, argc) ||
	    !list_init(&o.exts, argc)) {
		rc = refuse(sub, "out of memory");
		goto done;
	}
	while ((c = next_option(sub, argc, argv, opts, help_issue, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = set_once(sub, &o.dir, "dir", &rc);
			break;
		case OPT_OUT:
			ok = set_once(sub, &o.out, "out", &rc);
			break;
		case OPT_USER:
			ok = set_once(sub, &o.user, "user", &rc);
			break;
		case OPT_GROUP:
			o.groups.items[o.groups.count++] = optarg;
			break;
		case OPT_DEVICE_ID:
			ok = set_once(sub, &o.device_id, "device-id", &rc);
			break;
		case OPT_DEVICE_TRUST:
			ok = set_once(sub, &o.device_trust, "device-trust", &rc);
			break;
		case OPT_TTL:
			ok = set_once(sub, &o.ttl, "ttl", &rc);
			break;
		case OPT_BACKDATE:
			ok = set_once(sub, &o.backdate, "backdate", &rc);
			break;
		case OPT_POSTDATE:
			ok = set_once(sub, &o.postdate, "postdate", &rc);
			break;
		case OPT_EKU:
			ok = set_once(sub, &o.eku, "eku", &rc);
			break;
		case OPT_CA_TRUE:
			o.ca_true = true;
			break;
		case OPT_RSA:
			ok = set_once(sub, &o.rsa, "rsa", &rc);
			break;
		case OPT_DIGEST:
			ok = set_once(sub, &o.digest, "digest", &rc);
			break;
		case OPT_CRITICAL_EXT:
			o.critical_exts.items[o.critical_exts.count++] = optarg;
			break;
		case OPT_EXT:
			o.exts.items[o.exts.count++] = optarg;
			break;
		case OPT_CN:
			ok = set_once(sub, &o.cn, "cn", &rc);
			break;
		case OPT_NO_EMAIL:
			o.no_email = true;
			break;
		case OPT_CHAIN:
			o.chain = true;
			break;
		}
		if (!ok)
			goto done;
	}
	if (c == 0)
		goto done;
	if ((rc = issue_validate(sub, &o)) != 0)
		goto done;
	int64_t ttl_s, start_s = 0, shift_s = 0;
	unsigned rsa_bits = 0;
	if (!parse_seconds(sub, "ttl", o.ttl ? o.ttl : ISSUE_DEFAULT_TTL, 1, &ttl_s, &rc) ||
	    (o.backdate && !parse_seconds(sub, "backdate", o.backdate, 0, &shift_s, &rc)) ||
	    (o.postdate && !parse_seconds(sub, "postdate", o.postdate, 0, &shift_s, &rc)) ||
	    (o.rsa && !parse_rsa_bits(sub, o.rsa, &rsa_bits, &rc)))
		goto done;
	if (o.backdate)
		start_s = -shift_s;
	if (o.postdate)
		start_s = shift_s;

	if ((rc = ca_load(sub, o.dir, &ca)) != 0)
		goto done;
	key = gw_x509_key_new(rsa_bits);
	if (!key) {
		rc = refuse_ssl(sub, "cannot generate a key");
		goto done;
	}
	if ((rc = build_login_cert(sub, &o, &ca, key, ttl_s, start_s, &cert)) != 0)
		goto done;
	rc = write_leaf(sub, o.dir, o.out, cert, key, o.chain);
done:
	X509_free(cert);
	EVP_PKEY_free(key);
	ca_finish(&ca);
	free(o.groups.items);
	free(o.critical_exts.items);
	free(o.exts.items);
	return rc;
}

/* ---- ca server -------------------------------------------------------- */

static void help_server(void)
{
	fputs("usage: certgate ca server --dir DIR --out PREFIX --dns NAME... [--ip ADDR]...\n"
	      "                          [--ttl DUR] [--rsa BITS]\n"
	      "\n"
	      "Issues a TLS server certificate (for the gateway or for PostgreSQL) signed\n"
	      "by DIR's CA: CN = the first name, SAN DNS/IP entries, EKU serverAuth.\n"
	      "Writes PREFIX.crt and PREFIX.key (0600).\n"
	      "\n"
	      "  --dir DIR      the CA directory (see certgate ca init)\n"
	      "  --out PREFIX   output file prefix\n"
	      "  --dns NAME     a DNS name (repeatable)\n"
	      "  --ip ADDR      an IPv4 or IPv6 address (repeatable)\n"
	      "                 at least one --dns or --ip is required\n"
	      "  --ttl DUR      validity (default " SERVER_DEFAULT_TTL ")\n"
	      "  --rsa BITS     an RSA key of BITS (1024..8192) instead of P-256\n"
	      "  --help         this text\n",
	      stdout);
}

static int cmd_server(int argc, char **argv)
{
	static const char sub[] = "server";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"out", required_argument, NULL, OPT_OUT},
	        {"dns", required_argument, NULL, OPT_DNS},
	        {"ip", required_argument, NULL, OPT_IP},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"rsa", required_argument, NULL, OPT_RSA},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *out = NULL, *ttl_text = NULL, *rsa_text = NULL;
	list_t dns = {0}, ips = {0};
	int rc = 0, c;
	ca_t ca = {0};
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	X509_NAME *subject = NULL;
	GENERAL_NAMES *names = NULL;

	if (!list_init(&dns, argc) || !list_init(&ips, argc)) {
		rc = refuse(sub, "out of memory");
		goto done;
	}
	while ((c = next_option(sub, argc, argv, opts, help_server, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_OUT:
			ok = set_once(sub, &out, "out", &rc);
			break;
		case OPT_DNS:
			dns.items[dns.count++] = optarg;
			break;
		case OPT_IP:
			ips.items[ips.count++] = optarg;
			break;
		case OPT_TTL:
			ok = set_once(sub, &ttl_text, "ttl", &rc);
			break;
		case OPT_RSA:
			ok = set_once(sub, &rsa_text, "rsa", &rc);
			break;
		}
		if (!ok)
			goto done;
	}
	if (c == 0)
		goto done;
	if (!dir) {
		rc = usage_error(sub, "--dir is required");
		goto done;
	}
	if (!out) {
		rc = usage_error(sub, "--out is required");
		goto done;
	}
	if (dns.count + ips.count == 0) {
		rc = usage_error(sub, "at least one --dns or --ip is required");
		goto done;
	}
	for (int i = 0; i < dns.count; i++) {
		if (!is_token(dns.items[i])) {
			rc = usage_error(sub, "--dns: bad name '%s'", dns.items[i]);
			goto done;
		}
	}
	for (int i = 0; i < ips.count; i++) {
		unsigned char buf[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, ips.items[i], buf) != 1 &&
		    inet_pton(AF_INET6, ips.items[i], buf) != 1) {
			rc = usage_error(sub, "--ip: bad address '%s'", ips.items[i]);
			goto done;
		}
	}
	int64_t ttl_s;
	unsigned rsa_bits = 0;
	if (!parse_seconds(sub, "ttl", ttl_text ? ttl_text : SERVER_DEFAULT_TTL, 1, &ttl_s, &rc) ||
	    (rsa_text && !parse_rsa_bits(sub, rsa_text, &rsa_bits, &rc)))
		goto done;

	if ((rc = ca_load(sub, dir, &ca)) != 0)
		goto done;
	key = gw_x509_key_new(rsa_bits);
	subject = X509_NAME_new();
	names = sk_GENERAL_NAME_new_null();
	if (!key || !subject || !names) {
		rc = refuse_ssl(sub, "cannot generate a key");
		goto done;
	}
	const char *cn = dns.count ? dns.items[0] : ips.items[0];
	if (!gw_x509_name_add(subject, NID_commonName, cn)) {
		rc = refuse_ssl(sub, "subject CN '%s'", cn);
		goto done;
	}
	for (int i = 0; i < dns.count; i++) {
		if (!gw_x509_san_push(names, GEN_DNS, dns.items[i])) {
			rc = refuse_ssl(sub, "--dns '%s'", dns.items[i]);
			goto done;
		}
	}
	for (int i = 0; i < ips.count; i++) {
		if (!gw_x509_san_push_ip(names, ips.items[i])) {
			rc = refuse_ssl(sub, "--ip '%s'", ips.items[i]);
			goto done;
		}
	}
	X509V3_CTX ctx;
	cert = gw_x509_cert_new(subject, ca.cert, key, time(NULL), -CLOCK_SLACK_S,
	                        ttl_s + CLOCK_SLACK_S, &ctx);
	/* RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment. */
	if (!cert || !gw_x509_add_san(cert, names) ||
	    !gw_x509_add_ext(&ctx, cert, NID_basic_constraints, "critical,CA:FALSE") ||
	    !gw_x509_add_ext(&ctx, cert, NID_key_usage,
	                     rsa_bits ? "critical,digitalSignature,keyEncipherment"
	                              : "critical,digitalSignature") ||
	    !gw_x509_add_ext(&ctx, cert, NID_ext_key_usage, "serverAuth") ||
	    !X509_sign(cert, ca.key, EVP_sha256())) {
		rc = refuse_ssl(sub, "cannot make the certificate");
		goto done;
	}
	rc = write_leaf(sub, dir, out, cert, key, false);
done:
	GENERAL_NAMES_free(names);
	X509_NAME_free(subject);
	X509_free(cert);
	EVP_PKEY_free(key);
	ca_finish(&ca);
	free(dns.items);
	free(ips.items);
	return rc;
}

/* ---- revocation list ------------------------------------------------------ */

/* One revoked.txt line: uppercase hex serial, space, YYYYMMDDHHMMSSZ. */
#define REVOKED_TIME_LEN 15

/* Checks revoked.txt's syntax line by line; text may be NULL (no file). */
static int revoked_check(const char *sub, const char *path, const char *text)
{
	int line = 1;
	for (const char *p = text; p && *p; line++) {
		const char *start = p;
		while (*p && ((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F')))
			p++;
		bool ok = p > start && *p == ' ';
		if (ok) {
			p++;
			for (int i = 0; ok && i < REVOKED_TIME_LEN - 1; i++, p++)
				ok = *p >= '0' && *p <= '9';
			ok = ok && p[0] == 'Z' && p[1] == '\n';
			p += 2;
		}
		if (!ok)
			return refuse(sub, "%s:%d: expected \"SERIALHEX YYYYMMDDHHMMSSZ\"", path,
			              line);
	}
	return 0;
}

/* Whether serial_hex is listed in the (already checked) revoked.txt text. */
static bool revoked_contains(const char *text, const char *serial_hex)
{
	size_t n = strlen(serial_hex);
	for (const char *p = text; p && *p;) {
		if (strncmp(p, serial_hex, n) == 0 && p[n] == ' ')
			return true;
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	return false;
}

/* Builds the X509_CRL from revoked.txt's text and signs it. */
static int crl_build(const char *sub, const ca_t *ca, const char *revoked, uint64_t number,
                     int64_t last_offset_s, int64_t ttl_s, X509_CRL **out)
{
	int rc = 1;
	time_t now = time(NULL);
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *last = ASN1_TIME_new(), *next = ASN1_TIME_new();
	ASN1_INTEGER *crl_number = ASN1_INTEGER_new();
	BIGNUM *bn = NULL;
	X509V3_CTX ctx;

	if (!crl || !last || !next || !crl_number || !gw_x509_set_time(last, now, last_offset_s) ||
	    !gw_x509_set_time(next, now, last_offset_s + ttl_s) ||
	    X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) != 1 ||
	    X509_CRL_set1_lastUpdate(crl, last) != 1 || X509_CRL_set1_nextUpdate(crl, next) != 1)
		goto fail_ssl;

	for (const char *p = revoked; p && *p;) {
		char hex[128], when[REVOKED_TIME_LEN + 1];
		const char *space = strchr(p, ' ');
		size_t n = (size_t)(space - p);
		if (n >= sizeof(hex)) {
			rc = refuse(sub, "%s/revoked.txt: serial too long", ca->dir);
			goto done;
		}
		memcpy(hex, p, n);
		hex[n] = '\0';
		memcpy(when, space + 1, REVOKED_TIME_LEN);
		when[REVOKED_TIME_LEN] = '\0';
		p = space + 1 + REVOKED_TIME_LEN + 1;

		X509_REVOKED *entry = X509_REVOKED_new();
		ASN1_TIME *date = ASN1_TIME_new();
		ASN1_INTEGER *serial = NULL;
		bool ok = entry && date && BN_hex2bn(&bn, hex) > 0 &&
		          (serial = BN_to_ASN1_INTEGER(bn, NULL)) != NULL &&
		          ASN1_TIME_set_string_X509(date, when) == 1 &&
		          X509_REVOKED_set_serialNumber(entry, serial) == 1 &&
		          X509_REVOKED_set_revocationDate(entry, date) == 1 &&
		          X509_CRL_add0_revoked(crl, entry) == 1;
		ASN1_INTEGER_free(serial);
		ASN1_TIME_free(date);
		if (!ok) {
			X509_REVOKED_free(entry);
			rc = refuse_ssl(sub, "%s/revoked.txt: entry %s", ca->dir, hex);
			goto done;
		}
	}
	X509_CRL_sort(crl);

	if (!ASN1_INTEGER_set_uint64(crl_number, number) ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, crl_number, 0, X509V3_ADD_DEFAULT) != 1)
		goto fail_ssl;
	X509V3_set_ctx(&ctx, ca->cert, NULL, NULL, crl, 0);
	X509_EXTENSION *aki =
	        X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	int added = aki ? X509_CRL_add_ext(crl, aki, -1) : 0;
	X509_EXTENSION_free(aki);
	if (added != 1 || !X509_CRL_sign(crl, ca->key, EVP_sha256()))
		goto fail_ssl;
	*out = crl;
	crl = NULL;
	rc = 0;
	goto done;

fail_ssl:
	rc = refuse_ssl(sub, "cannot make the CRL");
done:
	BN_free(bn);
	ASN1_INTEGER_free(crl_number);
	ASN1_TIME_free(next);
	ASN1_TIME_free(last);
	X509_CRL_free(crl);
	return rc;
}

/* Rewrites DIR/ca.crl from DIR/revoked.txt with the next CRL number. The
 * number is stored before the CRL so that a failure can skip a number but
 * never reuse one. */
static int crl_write(const char *sub, const ca_t *ca, int64_t last_offset_s, int64_t ttl_s)
{
	char revoked_path[PATH_MAX], number_path[PATH_MAX], crl_path[PATH_MAX];
	if (!join_path(revoked_path, sizeof(revoked_path), ca->dir, "revoked.txt") ||
	    !join_path(number_path, sizeof(number_path), ca->dir, "crlnumber") ||
	    !join_path(crl_path, sizeof(crl_path), ca->dir, "ca.crl"))
		return refuse(sub, "%s: path too long", ca->dir);

	char *revoked = NULL, *number_text = NULL;
	X509_CRL *crl = NULL;
	int rc = read_text(sub, revoked_path, &revoked);
	if (rc == 0)
		rc = revoked_check(sub, revoked_path, revoked);
	if (rc == 0)
		rc = read_text(sub, number_path, &number_text);
	if (rc != 0)
		goto done;

	uint64_t number = 0;
	if (number_text) {
		const char *p = number_text;
		bool ok = *p >= '0' && *p <= '9';
		for (; ok && *p >= '0' && *p <= '9'; p++) {
			ok = number <= (UINT64_MAX - 9) / 10;
			number = number * 10 + (uint64_t)(*p - '0');
		}
		if (!ok || (*p && strcmp(p, "\n") != 0)) {
			rc = refuse(sub, "%s:1: expected a decimal number", number_path);
			goto done;
		}
	}
	number++;
	char next_text[32];
	snprintf(next_text, sizeof(next_text), "%llu\n", (unsigned long long)number);
	if ((rc = write_atomic(sub, number_path, 0644, emit_text, next_text)) != 0)
		goto done;
	if ((rc = crl_build(sub, ca, revoked, number, last_offset_s, ttl_s, &crl)) != 0)
		goto done;
	rc = write_atomic(sub, crl_path, 0644, emit_crl, crl);
done:
	X509_CRL_free(crl);
	free(number_text);
	free(revoked);
	return rc;
}

/* ---- ca revoke / ca crl ------------------------------------------------- */

static void help_revoke(void)
{
	fputs("usage: certgate ca revoke --dir DIR --cert FILE... [--crl-ttl DUR]\n"
	      "\n"
	      "Adds each certificate (issued by DIR's CA) to DIR/revoked.txt, then\n"
	      "rewrites DIR/ca.crl.\n"
	      "\n"
	      "  --dir DIR      the CA directory (see certgate ca init)\n"
	      "  --cert FILE    a PEM certificate to revoke (repeatable)\n"
	      "  --crl-ttl DUR  nextUpdate - lastUpdate of the new CRL (default " CRL_DEFAULT_TTL
	      ")\n"
	      "  --help         this text\n",
	      stdout);
}

static void help_crl(void)
{
	fputs("usage: certgate ca crl --dir DIR [--crl-ttl DUR] [--backdate DUR]\n"
	      "\n"
	      "Rewrites DIR/ca.crl (a v2 CRL signed by the CA) from DIR/revoked.txt;\n"
	      "no revoked.txt gives an empty CRL.\n"
	      "\n"
	      "  --dir DIR       the CA directory (see certgate ca init)\n"
	      "  --crl-ttl DUR   nextUpdate - lastUpdate (default " CRL_DEFAULT_TTL ")\n"
	      "  --backdate DUR  lastUpdate = now - DUR (testing: an expired CRL)\n"
	      "  --help          this text\n",
	      stdout);
}

static int cmd_revoke(int argc, char **argv)
{
	static const char sub[] = "revoke";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"cert", required_argument, NULL, OPT_CERT},
	        {"crl-ttl", required_argument, NULL, OPT_CRL_TTL},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *ttl_text = NULL;
	list_t certs = {0};
	int rc = 0, c;
	ca_t ca = {0};
	char *revoked = NULL, *updated = NULL;
	char revoked_path[PATH_MAX];

	if (!list_init(&certs, argc)) {
		rc = refuse(sub, "out of memory");
		goto done;
	}
	while ((c = next_option(sub, argc, argv, opts, help_revoke, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_CERT:
			certs.items[certs.count++] = optarg;
			break;
		case OPT_CRL_TTL:
			ok = set_once(sub, &ttl_text, "crl-ttl", &rc);
			break;
		}
		if (!ok)
			goto done;
	}
	if (c == 0)
		goto done;
	if (!dir) {
		rc = usage_error(sub, "--dir is required");
		goto done;
	}
	if (certs.count == 0) {
		rc = usage_error(sub, "at least one --cert is required");
		goto done;
	}
	int64_t ttl_s;
	if (!parse_seconds(sub, "crl-ttl", ttl_text ? ttl_text : CRL_DEFAULT_TTL, 1, &ttl_s, &rc))
		goto done;
	if ((rc = ca_load(sub, dir, &ca)) != 0)
		goto done;
	if (!join_path(revoked_path, sizeof(revoked_path), dir, "revoked.txt")) {
		rc = refuse(sub, "%s: path too long", dir);
		goto done;
	}
	if ((rc = read_text(sub, revoked_path, &revoked)) != 0 ||
	    (rc = revoked_check(sub, revoked_path, revoked)) != 0)
		goto done;

	size_t len = revoked ? strlen(revoked) : 0;
	/* Each new line: up to 2 * 20 serial digits (RFC 5280), time, space, \n. */
	size_t cap = len + (size_t)certs.count * (64 + REVOKED_TIME_LEN + 2) + 1;
	updated = malloc(cap);
	if (!updated) {
		rc = refuse(sub, "out of memory");
		goto done;
	}
	memcpy(updated, revoked ? revoked : "", len + 1);

	char when[REVOKED_TIME_LEN + 1];
	time_t now = time(NULL);
	struct tm tm;
	if (!gmtime_r(&now, &tm) || strftime(when, sizeof(when), "%Y%m%d%H%M%SZ", &tm) == 0) {
		rc = refuse(sub, "cannot format the revocation time");
		goto done;
	}
	for (int i = 0; i < certs.count; i++) {
		X509 *x = NULL;
		if ((rc = load_cert(sub, certs.items[i], &x)) != 0)
			goto done;
		char *hex = NULL;
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		int issued = X509_check_issued(ca.cert, x);
		X509_free(x);
		if (bn && !BN_is_negative(bn))
			hex = BN_bn2hex(bn);
		BN_free(bn);
		if (issued != X509_V_OK) {
			OPENSSL_free(hex);
			rc = refuse(sub, "%s: not issued by %s/ca.crt", certs.items[i], dir);
			goto done;
		}
		if (!hex || strlen(hex) > 64) {
			OPENSSL_free(hex);
			rc = refuse_ssl(sub, "%s: bad serial number", certs.items[i]);
			goto done;
		}
		/* Revoking twice is not an error; listing twice would be. */
		if (!revoked_contains(updated, hex)) {
			size_t used = strlen(updated);
			snprintf(updated + used, cap - used, "%s %s\n", hex, when);
		}
		OPENSSL_free(hex);
	}
	if ((rc = write_atomic(sub, revoked_path, 0644, emit_text, updated)) != 0)
		goto done;
	rc = crl_write(sub, &ca, 0, ttl_s);
done:
	free(updated);
	free(revoked);
	ca_finish(&ca);
	free(certs.items);
	return rc;
}

static int cmd_crl(int argc, char **argv)
{
	static const char sub[] = "crl";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"crl-ttl", required_argument, NULL, OPT_CRL_TTL},
	        {"backdate", required_argument, NULL, OPT_BACKDATE},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *ttl_text = NULL, *backdate_text = NULL;
	int rc = 0, c;

	while ((c = next_option(sub, argc, argv, opts, help_crl, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_CRL_TTL:
			ok = set_once(sub, &ttl_text, "crl-ttl", &rc);
			break;
		case OPT_BACKDATE:
			ok = set_once(sub, &backdate_text, "backdate", &rc);
			break;
		}
		if (!ok)
			return rc;
	}
	if (c == 0)
		return rc;
	if (!dir)
		return usage_error(sub, "--dir is required");
	int64_t ttl_s, backdate_s = 0;
	if (!parse_seconds(sub, "crl-ttl", ttl_text ? ttl_text : CRL_DEFAULT_TTL, 1, &ttl_s, &rc) ||
	    (backdate_text && !parse_seconds(sub, "backdate", backdate_text, 0, &backdate_s, &rc)))
		return rc;
	ca_t ca;
	if ((rc = ca_load(sub, dir, &ca)) != 0)
		return rc;
	rc = crl_write(sub, &ca, -backdate_s, ttl_s);
	ca_finish(&ca);
	return rc;
}

/* ---- dispatch --------------------------------------------------------- */

static void help_ca(void)
{
	fputs("usage: certgate ca <init|issue|server|revoke|crl> [options]\n"
	      "\n"
	      "A development/test CA (ECDSA P-256). Not for production.\n"
	      "\n"
	      "  init    create a CA (or an intermediate with --parent)\n"
	      "  issue   a short-lived login certificate with claims\n"
	      "  server  a TLS server certificate\n"
	      "  revoke  revoke certificates and rewrite the CRL\n"
	      "  crl     rewrite the CRL\n"
	      "\n"
	      "'certgate ca COMMAND --help' describes each command.\n",
	      stdout);
}

int gw_ca_main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} commands[] = {
	        {"init", cmd_init},     {"issue", cmd_issue}, {"server", cmd_server},
	        {"revoke", cmd_revoke}, {"crl", cmd_crl},
	};
	if (argc < 2) {
		fprintf(stderr, "certgate: ca: missing command (see 'certgate ca --help')\n");
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		help_ca();
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		/* gw_ca_main may run many times in one process (the tests):
		 * optind = 0 makes glibc's getopt start over. */
		optind = 0;
		opterr = 0;
		int rc = commands[i].run(argc - 1, argv + 1);
		ERR_clear_error();
		return rc;
	}
	fprintf(stderr, "certgate: ca: unknown command '%s' (see 'certgate ca --help')\n", argv[1]);
	return 2;
}
