/* Tests gateway/ca.c: `certgate ca init|issue|server|revoke|crl` run
 * in-process in a scratch directory, and every certificate, key and CRL they
 * write checked with OpenSSL: exact claims, validity, modes, chain and
 * revocation verification, and the exit codes of refusals and usage errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cmd/ca.h"

static char scratch[1024]; /* mkdtemp'd; removed by the group teardown */

/* ---- helpers ------------------------------------------------------------ */

/* "scratch/<fmt>", valid until the group teardown frees every path. */
static char **paths;
static size_t n_paths;

static const char *in_scratch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *in_scratch(const char *fmt, ...)
{
	char rel[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	char *buf = malloc(PATH_MAX);
	char **grown = realloc(paths, (n_paths + 1) * sizeof(*paths));
	assert_non_null(buf);
	assert_non_null(grown);
	paths = grown;
	paths[n_paths++] = buf;
	snprintf(buf, PATH_MAX, "%s/%s", scratch, rel);
	return buf;
}

/* Reads what fd received since the redirect into buf (NUL-terminated). */
static void slurp(FILE *f, char *buf, size_t size)
{
	rewind(f);
	size_t n = fread(buf, 1, size - 1, f);
	buf[n] = '\0';
}

/* Runs gw_ca_main with args (NULL-terminated, "ca" prepended); stdout and
 * stderr go to out/err when given (stdout must never reach the TAP
 * stream). */
static int run_io(char *out, size_t out_size, char *err, size_t err_size, const char *const *args)
{
	char *argv[64];
	int argc = 0;
	argv[argc++] = strdup("ca");
	for (; *args; args++) {
		assert_true(argc < 63);
		argv[argc++] = strdup(*args);
	}
	argv[argc] = NULL;

	FILE *out_f = tmpfile(), *err_f = tmpfile();
	assert_non_null(out_f);
	assert_non_null(err_f);
	fflush(stdout);
	fflush(stderr);
	int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
	dup2(fileno(out_f), STDOUT_FILENO);
	if (err)
		dup2(fileno(err_f), STDERR_FILENO);

	int rc = gw_ca_main(argc, argv);

	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, STDOUT_FILENO);
	dup2(saved_err, STDERR_FILENO);
	close(saved_out);
	close(saved_err);
	if (out)
		slurp(out_f, out, out_size);
	if (err)
		slurp(err_f, err, err_size);
	fclose(out_f);
	fclose(err_f);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	/* The CLI must leave the OpenSSL error queue clean behind it. */
	assert_int_equal(ERR_peek_error(), 0);
	return rc;
}

#define ARGS(...)       ((const char *const[]){__VA_ARGS__, NULL})
#define RUN(...)        run_io(NULL, 0, NULL, 0, ARGS(__VA_ARGS__))
#define RUN_ERR(e, ...) run_io(NULL, 0, e, sizeof(e), ARGS(__VA_ARGS__))

static STACK_OF(X509) * load_all(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		fail_msg("%s: cannot open", path);
	STACK_OF(X509) *certs = sk_X509_new_null();
	X509 *x;
	while ((x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL)
		sk_X509_push(certs, x);
	ERR_clear_error();
	fclose(fp);
	assert_true(sk_X509_num(certs) > 0);
	return certs;
}

static X509 *load_cert(const char *path)
{
	STACK_OF(X509) *certs = load_all(path);
	X509 *x = sk_X509_shift(certs);
	sk_X509_pop_free(certs, X509_free);
	return x;
}

static EVP_PKEY *load_key(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		fail_msg("%s: cannot open", path);
	EVP_PKEY *key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(key);
	return key;
}

static X509_CRL *load_crl(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		fail_msg("%s: cannot open", path);
	X509_CRL *crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(crl);
	return crl;
}

static mode_t file_mode(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		fail_msg("%s: missing", path);
	return st.st_mode & 07777;
}

static bool file_has(const char *path, const char *needle)
{
	char buf[16384];
	FILE *fp = fopen(path, "r");
	if (!fp)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

/* The PEM type of the first block in path ("PRIVATE KEY" for PKCS#8). */
static bool pem_type_is(const char *path, const char *type)
{
	BIO *bio = BIO_new_file(path, "r");
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long len = 0;
	bool same = bio != NULL && PEM_read_bio(bio, &name, &header, &data, &len) == 1 &&
	            strcmp(name, type) == 0;
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	BIO_free(bio);
	return same;
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
	return timegm(&tm);
}

static long lifetime_s(X509 *x)
{
	return (long)(asn1_time(X509_get0_notAfter(x)) - asn1_time(X509_get0_notBefore(x)));
}

/* Verifies leaf against trusted roots (X509_STRICT, purpose), with the
 * untrusted intermediates and an optional CRL; returns the X509_V_* code. */
static int verify(X509 *leaf, X509 *root, STACK_OF(X509) * untrusted, X509_CRL *crl,
                  unsigned long flags, int purpose)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	assert_int_equal(X509_STORE_add_cert(store, root), 1);
	if (crl)
		assert_int_equal(X509_STORE_add_crl(store, crl), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
	assert_int_equal(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
	X509_STORE_CTX_set_flags(ctx, flags | X509_V_FLAG_X509_STRICT);
	int rc = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return rc;
}

/* Verifies DIR/PREFIX.crt (its extra certificates as intermediates) against
 * ROOTDIR/ca.crt, with ROOTDIR's CRL under flags X509_V_FLAG_CRL_CHECK. */
static int verify_files(const char *crt, const char *root_crt, const char *crl_path, int purpose)
{
	STACK_OF(X509) *chain = load_all(crt);
	X509 *leaf = sk_X509_shift(chain);
	X509 *root = load_cert(root_crt);
	X509_CRL *crl = crl_path ? load_crl(crl_path) : NULL;
	int rc = verify(leaf, root, chain, crl, crl ? X509_V_FLAG_CRL_CHECK : 0, purpose);
	X509_CRL_free(crl);
	X509_free(root);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return rc;
}

/* -1 absent, else the critical flag. */
static int ext_critical(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);
	return i < 0 ? -1 : X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

static void assert_entry(X509_NAME *name, int i, int nid, const char *value)
{
	X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
	assert_non_null(e);
	assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)), nid);
	const ASN1_STRING *s = X509_NAME_ENTRY_get_data(e);
	assert_int_equal(ASN1_STRING_type(s), V_ASN1_UTF8STRING);
	assert_int_equal((size_t)ASN1_STRING_length(s), strlen(value));
	assert_memory_equal(ASN1_STRING_get0_data(s), value, strlen(value));
}

/* The SAN as "email:x,URI:y,DNS:z,IP:1.2.3.4" ("" when absent). */
static void san_text(X509 *x, char *buf, size_t size)
{
	buf[0] = '\0';
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const char *tag = "?";
		char value[256] = "";
		int type;
		ASN1_STRING *s = GENERAL_NAME_get0_value(gn, &type);
		switch (type) {
		case GEN_EMAIL:
			tag = "email";
			break;
		case GEN_URI:
			tag = "URI";
			break;
		case GEN_DNS:
			tag = "DNS";
			break;
		case GEN_IPADD:
			tag = "IP";
			break;
		}
		if (type == GEN_IPADD) {
			const unsigned char *p = ASN1_STRING_get0_data(s);
			if (ASN1_STRING_length(s) == 4) {
				snprintf(value, sizeof(value), "%d.%d.%d.%d", p[0], p[1], p[2],
				         p[3]);
			} else {
				int n = 0;
				for (int j = 0; j < 16; j += 2)
					n += snprintf(value + n, sizeof(value) - (size_t)n, "%s%X",
					              j ? ":" : "", (p[j] << 8) | p[j + 1]);
			}
		} else {
			snprintf(value, sizeof(value), "%.*s", ASN1_STRING_length(s),
			         (const char *)ASN1_STRING_get0_data(s));
		}
		size_t used = strlen(buf);
		snprintf(buf + used, size - used, "%s%s:%s", used ? "," : "", tag, value);
	}
	GENERAL_NAMES_free(names);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static bool no_tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	bool clean = true;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0)
			clean = false;
	}
	closedir(d);
	return clean;
}

static int group_setup(void **state)
{
	(void)state;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(scratch, sizeof(scratch), "%s/test_ca.XXXXXX", base);
	if (!mkdtemp(scratch))
		return -1;
	/* One root CA most tests share. */
	return RUN("init", "--dir", in_scratch("root"));
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < n_paths; i++)
		free(paths[i]);
	free(paths);
	return nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- ca init -------------------------------------------------------------- */

static void test_init(void **state)
{
	(void)state;
	time_t now = time(NULL);
	const char *crt = in_scratch("root/ca.crt"), *key = in_scratch("root/ca.key");

	assert_int_equal(file_mode(in_scratch("root")), 0700);
	assert_int_equal(file_mode(crt), 0644);
	assert_int_equal(file_mode(key), 0600);
	assert_true(pem_type_is(key, "PRIVATE KEY")); /* PKCS#8 */
	assert_true(no_tmp_files(in_scratch("root")));

	X509 *ca = load_cert(crt);
	EVP_PKEY *pkey = load_key(key);
	assert_int_equal(X509_check_private_key(ca, pkey), 1);
	assert_true(EVP_PKEY_is_a(pkey, "EC"));
	char curve[64];
	assert_int_equal(EVP_PKEY_get_utf8_string_param(pkey, "group", curve, sizeof(curve), NULL),
	                 1);
	assert_string_equal(curve, "prime256v1");

	X509_NAME *subject = X509_get_subject_name(ca);
	assert_int_equal(X509_NAME_entry_count(subject), 1);
	assert_entry(subject, 0, NID_commonName, "certgate dev CA");
	assert_int_equal(X509_NAME_cmp(subject, X509_get_issuer_name(ca)), 0);
	assert_int_equal(X509_get_version(ca), X509_VERSION_3);

	uint32_t flags = X509_get_extension_flags(ca);
	assert_true(flags & EXFLAG_CA);
	assert_true(flags & EXFLAG_SS);
	assert_int_equal(ext_critical(ca, NID_basic_constraints), 1);
	assert_int_equal(ext_critical(ca, NID_key_usage), 1);
	assert_int_equal(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_int_equal(ext_critical(ca, NID_subject_key_identifier), 0);
	assert_int_equal(ext_critical(ca, NID_authority_key_identifier), 0);
	assert_int_equal(
	        ASN1_OCTET_STRING_cmp(X509_get0_subject_key_id(ca), X509_get0_authority_key_id(ca)),
	        0);

	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca), NULL);
	assert_false(BN_is_negative(serial));
	assert_true(BN_num_bits(serial) <= 128);
	assert_true(BN_num_bits(serial) > 64); /* fails with probability 2^-64 */
	BN_free(serial);

	time_t nb = asn1_time(X509_get0_notBefore(ca)), na = asn1_time(X509_get0_notAfter(ca));
	assert_true(nb >= now - 62 && nb <= now - 58);
	assert_true(na >= now + 365 * 86400 - 2 && na <= now + 365 * 86400 + 2);

	/* The root verifies as itself (strict: SKI/AKI in place). */
	assert_int_equal(verify(ca, ca, NULL, NULL, 0, X509_PURPOSE_ANY), X509_V_OK);
	EVP_PKEY_free(pkey);
	X509_free(ca);
}

static void test_init_options_and_force(void **state)
{
	(void)state;
	char err[1024];
	const char *dir = in_scratch("deep/er/ca2");
	assert_int_equal(RUN("init", "--dir", dir, "--name", "Acme Test CA", "--ttl", "30d"), 0);
	X509 *first = load_cert(in_scratch("deep/er/ca2/ca.crt"));
	assert_entry(X509_get_subject_name(first), 0, NID_commonName, "Acme Test CA");
	assert_true(lifetime_s(first) == 30 * 86400 + 60);

	/* ca.key exists: refused without --force, one line naming the file. */
	assert_int_equal(RUN_ERR(err, "init", "--dir", dir), 1);
	assert_non_null(strstr(err, "ca2/ca.key"));
	assert_non_null(strstr(err, "--force"));
	assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1);
	X509 *same = load_cert(in_scratch("deep/er/ca2/ca.crt"));
	assert_int_equal(X509_cmp(first, same), 0);

	assert_int_equal(RUN("init", "--dir", dir, "--force"), 0);
	X509 *replaced = load_cert(in_scratch("deep/er/ca2/ca.crt"));
	assert_int_not_equal(X509_cmp(first, replaced), 0);
	assert_entry(X509_get_subject_name(replaced), 0, NID_commonName, "certgate dev CA");
	EVP_PKEY *key = load_key(in_scratch("deep/er/ca2/ca.key"));
	assert_int_equal(X509_check_private_key(replaced, key), 1);
	assert_int_equal(file_mode(in_scratch("deep/er/ca2/ca.key")), 0600);
	EVP_PKEY_free(key);
	X509_free(first);
	X509_free(same);
	X509_free(replaced);
}

/* ---- ca issue ------------------------------------------------------------ */

static void test_issue_login(void **state)
{
	(void)state;
	time_t now = time(NULL);
	assert_int_equal(RUN("issue", "--dir", in_scratch("root"), "--out", in_scratch("alice"),
	                     "--user", "alice@example.com", "--group", "dba", "--group", "analysts",
	                     "--device-id", "laptop-42", "--device-trust", "high"),
	                 0);
	const char *crt = in_scratch("alice.crt"), *key = in_scratch("alice.key");
	assert_int_equal(file_mode(key), 0600);
	assert_int_equal(file_mode(crt), 0644);
	assert_true(pem_type_is(key, "PRIVATE KEY"));
	assert_true(no_tmp_files(scratch));

	X509 *x = load_cert(crt);
	EVP_PKEY *pkey = load_key(key);
	assert_int_equal(X509_check_private_key(x, pkey), 1);
	assert_true(EVP_PKEY_is_a(pkey, "EC"));
	STACK_OF(X509) *all = load_all(crt);
	assert_int_equal(sk_X509_num(all), 1);
	sk_X509_pop_free(all, X509_free);

	X509_NAME *subject = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_entry_count(subject), 3);
	assert_entry(subject, 0, NID_commonName, "alice@example.com");
	assert_entry(subject, 1, NID_organizationalUnitName, "dba");
	assert_entry(subject, 2, NID_organizationalUnitName, "analysts");

	char san[1024];
	san_text(x, san, sizeof(san));
	assert_string_equal(san, "email:alice@example.com,URI:urn:certgate:device:laptop-42,"
	                         "URI:urn:certgate:trust:high");
	assert_int_equal(ext_critical(x, NID_subject_alt_name), 0);

	uint32_t flags = X509_get_extension_flags(x);
	assert_true(flags & EXFLAG_BCONS);
	assert_false(flags & EXFLAG_CA);
	assert_int_equal(ext_critical(x, NID_basic_constraints), 1);
	assert_int_equal(ext_critical(x, NID_key_usage), 1);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	assert_int_equal(ext_critical(x, NID_ext_key_usage), 0);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
	assert_int_equal(ext_critical(x, NID_subject_key_identifier), 0);
	assert_int_equal(ext_critical(x, NID_authority_key_identifier), 0);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);

	/* Default ttl 15m, starting now. */
	assert_int_equal(lifetime_s(x), 15 * 60);
	time_t nb = asn1_time(X509_get0_notBefore(x));
	assert_true(nb >= now - 1 && nb <= now + 2);

	const char *root = in_scratch("root/ca.crt");
	assert_int_equal(verify_files(crt, root, NULL, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
	assert_int_equal(verify_files(crt, root, NULL, X509_PURPOSE_SSL_SERVER),
	                 X509_V_ERR_INVALID_PURPOSE);

	/* Serials are random: a second certificate differs. */
	assert_int_equal(RUN("issue", "--dir", in_scratch("root"), "--out", in_scratch("alice2"),
	                     "--user", "alice@example.com"),
	                 0);
	X509 *y = load_cert(in_scratch("alice2.crt"));
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(y)),
	                     0);
	X509_NAME *ysub = X509_get_subject_name(y);
	assert_int_equal(X509_NAME_entry_count(ysub), 1);
	san_text(y, san, sizeof(san));
	assert_string_equal(san, "email:alice@example.com");
	X509_free(y);
	EVP_PKEY_free(pkey);
	X509_free(x);
}

/* --pk8: the key also as DER PKCS#8 (what pgjdbc reads), 0600, the same
 * key as PREFIX.key; without it no .pk8 is written. */
static void test_issue_pk8(void **state)
{
	(void)state;
	assert_int_equal(RUN("issue", "--dir", in_scratch("root"), "--out", in_scratch("jdbc"),
	                     "--user", "jdbc@example.com", "--pk8"),
	                 0);
	const char *pk8 = in_scratch("jdbc.pk8");
	assert_int_equal(file_mode(pk8), 0600);
	FILE *f = fopen(pk8, "rb");
	assert_non_null(f);
	PKCS8_PRIV_KEY_INFO *info = d2i_PKCS8_PRIV_KEY_INFO_fp(f, NULL);
	fclose(f);
	assert_non_null(info);
	EVP_PKEY *der = EVP_PKCS82PKEY(info);
	PKCS8_PRIV_KEY_INFO_free(info);
	assert_non_null(der);
	X509 *x = load_cert(in_scratch("jdbc.crt"));
	assert_int_equal(X509_check_private_key(x, der), 1);
	EVP_PKEY *pem = load_key(in_scratch("jdbc.key"));
	assert_int_equal(EVP_PKEY_eq(pem, der), 1);
	EVP_PKEY_free(pem);
	EVP_PKEY_free(der);
	X509_free(x);

	assert_int_equal(RUN("issue", "--dir", in_scratch("root"), "--out", in_scratch("nopk8"),
	                     "--user", "nopk8@example.com"),
	                 0);
	assert_int_equal(access(in_scratch("nopk8.pk8"), F_OK), -1);
	assert_true(no_tmp_files(scratch));
}

static void test_issue_validity(void **state)
{
	(void)state;
	const char *dir = in_scratch("root"), *root = in_scratch("root/ca.crt");
	time_t now = time(NULL);

	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("ttl"), "--user",
	                     "bob@example.com", "--ttl", "1h30m"),
	                 0);
	X509 *x = load_cert(in_scratch("ttl.crt"));
	assert_int_equal(lifetime_s(x), 90 * 60);
	X509_free(x);

	/* Backdated past its whole life: expired. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("old"), "--user",
	                     "bob@example.com", "--backdate", "2h", "--ttl", "1h"),
	                 0);
	x = load_cert(in_scratch("old.crt"));
	time_t nb = asn1_time(X509_get0_notBefore(x));
	assert_true(nb >= now - 7200 - 1 && nb <= now - 7200 + 2);
	assert_int_equal(lifetime_s(x), 3600);
	X509_free(x);
	assert_int_equal(verify_files(in_scratch("old.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_ERR_CERT_HAS_EXPIRED);

	/* Backdated a little: still valid, for less than its ttl. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("aged"), "--user",
	                     "bob@example.com", "--backdate", "10m"),
	                 0);
	x = load_cert(in_scratch("aged.crt"));
	assert_int_equal(lifetime_s(x), 15 * 60);
	X509_free(x);
	assert_int_equal(verify_files(in_scratch("aged.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_OK);

	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("future"), "--user",
	                     "bob@example.com", "--postdate", "1h"),
	                 0);
	x = load_cert(in_scratch("future.crt"));
	nb = asn1_time(X509_get0_notBefore(x));
	assert_true(nb >= now + 3600 - 1 && nb <= now + 3600 + 2);
	assert_int_equal(lifetime_s(x), 15 * 60);
	X509_free(x);
	assert_int_equal(
	        verify_files(in_scratch("future.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	        X509_V_ERR_CERT_NOT_YET_VALID);
}

static void test_issue_testing_options(void **state)
{
	(void)state;
	const char *dir = in_scratch("root"), *root = in_scratch("root/ca.crt");
	char san[1024];
	X509 *x;

	static const struct {
		const char *eku;
		uint32_t xku; /* UINT32_MAX: no extension */
	} ekus[] = {
	        {"client", XKU_SSL_CLIENT},
	        {"server", XKU_SSL_SERVER},
	        {"both", XKU_SSL_CLIENT | XKU_SSL_SERVER},
	        {"none", UINT32_MAX},
	};
	for (size_t i = 0; i < sizeof(ekus) / sizeof(ekus[0]); i++) {
		assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("eku"), "--user",
		                     "e@example.com", "--eku", ekus[i].eku),
		                 0);
		x = load_cert(in_scratch("eku.crt"));
		assert_int_equal(X509_get_extended_key_usage(x), ekus[i].xku);
		assert_int_equal(ext_critical(x, NID_ext_key_usage),
		                 ekus[i].xku == UINT32_MAX ? -1 : 0);
		X509_free(x);
	}
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("eku"), "--user",
	                     "e@example.com", "--eku", "server"),
	                 0);
	assert_int_equal(verify_files(in_scratch("eku.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_ERR_INVALID_PURPOSE);

	/* A leaf claiming to be a CA. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("catrue"), "--user",
	                     "c@example.com", "--ca-true"),
	                 0);
	x = load_cert(in_scratch("catrue.crt"));
	assert_true(X509_get_extension_flags(x) & EXFLAG_CA);
	assert_int_equal(ext_critical(x, NID_basic_constraints), 1);
	X509_free(x);

	/* Weak RSA key, SHA-1 and SHA-384 signatures. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("rsa"), "--user",
	                     "r@example.com", "--rsa", "1024", "--digest", "sha1"),
	                 0);
	x = load_cert(in_scratch("rsa.crt"));
	EVP_PKEY *pkey = load_key(in_scratch("rsa.key"));
	assert_true(EVP_PKEY_is_a(pkey, "RSA"));
	assert_int_equal(EVP_PKEY_get_bits(pkey), 1024);
	assert_int_equal(X509_check_private_key(x, pkey), 1);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA1);
	assert_int_equal(file_mode(in_scratch("rsa.key")), 0600);
	EVP_PKEY_free(pkey);
	X509_free(x);
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("sha384"), "--user",
	                     "r@example.com", "--digest", "sha384"),
	                 0);
	x = load_cert(in_scratch("sha384.crt"));
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA384);
	X509_free(x);

	/* Unknown critical extension: a verifier must refuse the leaf. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("crit"), "--user",
	                     "u@example.com", "--critical-ext", "1.3.6.1.4.1.55555.1"),
	                 0);
	assert_int_equal(verify_files(in_scratch("crit.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION);

	/* Custom claim extensions hold UTF8Strings. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("ext"), "--user",
	                     "u@example.com", "--ext", "1.3.6.1.4.1.55555.2=team blue", "--ext",
	                     "1.3.6.1.4.1.55555.3=a=b\xc3\xa9"),
	                 0);
	x = load_cert(in_scratch("ext.crt"));
	static const struct {
		const char *oid, *value;
	} exts[] = {{"1.3.6.1.4.1.55555.2", "team blue"}, {"1.3.6.1.4.1.55555.3", "a=b\xc3\xa9"}};
	for (size_t i = 0; i < 2; i++) {
		ASN1_OBJECT *obj = OBJ_txt2obj(exts[i].oid, 1);
		int idx = X509_get_ext_by_OBJ(x, obj, -1);
		ASN1_OBJECT_free(obj);
		assert_true(idx >= 0);
		X509_EXTENSION *ext = X509_get_ext(x, idx);
		assert_int_equal(X509_EXTENSION_get_critical(ext), 0);
		ASN1_OCTET_STRING *data = X509_EXTENSION_get_data(ext);
		const unsigned char *p = ASN1_STRING_get0_data(data);
		ASN1_UTF8STRING *s = d2i_ASN1_UTF8STRING(NULL, &p, ASN1_STRING_length(data));
		assert_non_null(s);
		assert_int_equal((size_t)ASN1_STRING_length(s), strlen(exts[i].value));
		assert_memory_equal(ASN1_STRING_get0_data(s), exts[i].value, strlen(exts[i].value));
		ASN1_UTF8STRING_free(s);
	}
	X509_free(x);
	assert_int_equal(verify_files(in_scratch("ext.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_OK);

	/* --cn and --no-email: the user claim falls back to the CN. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("cn"), "--user",
	                     "carol@example.com", "--cn", "Carol", "--no-email", "--device-id",
	                     "d1"),
	                 0);
	x = load_cert(in_scratch("cn.crt"));
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
	assert_entry(X509_get_subject_name(x), 0, NID_commonName, "Carol");
	san_text(x, san, sizeof(san));
	assert_string_equal(san, "URI:urn:certgate:device:d1");
	X509_free(x);
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("nosan"), "--user", "carol",
	                     "--no-email"),
	                 0);
	x = load_cert(in_scratch("nosan.crt"));
	assert_int_equal(ext_critical(x, NID_subject_alt_name), -1);
	assert_entry(X509_get_subject_name(x), 0, NID_commonName, "carol");
	X509_free(x);

	/* --chain on a root: leaf then the root. */
	assert_int_equal(RUN("issue", "--dir", dir, "--out", in_scratch("withchain"), "--user",
	                     "u@example.com", "--chain"),
	                 0);
	STACK_OF(X509) *certs = load_all(in_scratch("withchain.crt"));
	X509 *ca = load_cert(root);
	assert_int_equal(sk_X509_num(certs), 2);
	assert_int_equal(X509_cmp(sk_X509_value(certs, 1), ca), 0);
	X509_free(ca);
	sk_X509_pop_free(certs, X509_free);
}

static void test_issue_replaces_files_atomically(void **state)
{
	(void)state;
	const char *dir = in_scratch("root");
	/* Pre-existing world-readable files and a stale .tmp are replaced. */
	FILE *fp = fopen(in_scratch("renew.key"), "w");
	fputs("old\n", fp);
	fclose(fp);
	chmod(in_scratch("renew.key"), 0644);
	fp = fopen(in_scratch("renew.crt.tmp"), "w");
	fclose(fp);
	mode_t old_umask = umask(0);
	int rc =
	        RUN("issue", "--dir", dir, "--out", in_scratch("renew"), "--user", "r@example.com");
	umask(old_umask);
	assert_int_equal(rc, 0);
	assert_int_equal(file_mode(in_scratch("renew.key")), 0600);
	assert_int_equal(file_mode(in_scratch("renew.crt")), 0644);
	assert_true(no_tmp_files(scratch));

	/* And with a strict umask the certificate is still 0644. */
	old_umask = umask(077);
	rc = RUN("issue", "--dir", dir, "--out", in_scratch("renew"), "--user", "r@example.com");
	umask(old_umask);
	assert_int_equal(rc, 0);
	assert_int_equal(file_mode(in_scratch("renew.crt")), 0644);
	X509 *x = load_cert(in_scratch("renew.crt"));
	EVP_PKEY *k = load_key(in_scratch("renew.key"));
	assert_int_equal(X509_check_private_key(x, k), 1);
	EVP_PKEY_free(k);
	X509_free(x);
}

/* ---- ca server ----------------------------------------------------------- */

static void test_server(void **state)
{
	(void)state;
	const char *dir = in_scratch("root"), *root = in_scratch("root/ca.crt");
	time_t now = time(NULL);
	char san[1024];

	assert_int_equal(RUN("server", "--dir", dir, "--out", in_scratch("gw"), "--dns",
	                     "gateway.internal", "--dns", "localhost", "--ip", "127.0.0.1", "--ip",
	                     "::1"),
	                 0);
	assert_int_equal(file_mode(in_scratch("gw.key")), 0600);
	X509 *x = load_cert(in_scratch("gw.crt"));
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
	assert_entry(X509_get_subject_name(x), 0, NID_commonName, "gateway.internal");
	san_text(x, san, sizeof(san));
	assert_string_equal(san,
	                    "DNS:gateway.internal,DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1");
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	assert_false(X509_get_extension_flags(x) & EXFLAG_CA);
	assert_int_equal(ext_critical(x, NID_basic_constraints), 1);
	assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
	assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
	assert_int_equal(X509_check_host(x, "other.internal", 0, 0, NULL), 0);
	assert_int_equal(lifetime_s(x), 90 * 86400 + 60);
	time_t nb = asn1_time(X509_get0_notBefore(x));
	assert_true(nb >= now - 62 && nb <= now - 58);
	X509_free(x);
	assert_int_equal(verify_files(in_scratch("gw.crt"), root, NULL, X509_PURPOSE_SSL_SERVER),
	                 X509_V_OK);
	assert_int_equal(verify_files(in_scratch("gw.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_ERR_INVALID_PURPOSE);

	/* IP only, RSA: keyEncipherment too, CN = the address. */
	assert_int_equal(RUN("server", "--dir", dir, "--out", in_scratch("pg"), "--ip", "10.0.0.5",
	                     "--rsa", "2048", "--ttl", "1d"),
	                 0);
	x = load_cert(in_scratch("pg.crt"));
	EVP_PKEY *k = load_key(in_scratch("pg.key"));
	assert_true(EVP_PKEY_is_a(k, "RSA"));
	assert_int_equal(EVP_PKEY_get_bits(k), 2048);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	assert_entry(X509_get_subject_name(x), 0, NID_commonName, "10.0.0.5");
	assert_int_equal(lifetime_s(x), 86400 + 60);
	EVP_PKEY_free(k);
	X509_free(x);
	assert_int_equal(verify_files(in_scratch("pg.crt"), root, NULL, X509_PURPOSE_SSL_SERVER),
	                 X509_V_OK);
}

/* ---- revocation ------------------------------------------------------------ */

static void test_revoke_and_crl(void **state)
{
	(void)state;
	const char *dir = in_scratch("rev"), *root = in_scratch("rev/ca.crt");
	const char *crl_path = in_scratch("rev/ca.crl");
	char err[1024];
	assert_int_equal(RUN("init", "--dir", dir), 0);
	assert_int_equal(
	        RUN("issue", "--dir", dir, "--out", in_scratch("rev-a"), "--user", "a@example.com"),
	        0);
	assert_int_equal(
	        RUN("issue", "--dir", dir, "--out", in_scratch("rev-b"), "--user", "b@example.com"),
	        0);

	/* An empty CRL: both certificates verify with CRL checking on. */
	assert_int_equal(RUN("crl", "--dir", dir), 0);
	assert_int_equal(file_mode(crl_path), 0644);
	X509_CRL *crl = load_crl(crl_path);
	assert_true(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) <= 0);
	X509_CRL_free(crl);
	assert_true(file_has(in_scratch("rev/crlnumber"), "1\n"));
	assert_int_equal(
	        verify_files(in_scratch("rev-a.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT),
	        X509_V_OK);

	assert_int_equal(RUN("revoke", "--dir", dir, "--cert", in_scratch("rev-a.crt")), 0);
	X509 *a = load_cert(in_scratch("rev-a.crt"));
	X509 *ca = load_cert(root);
	crl = load_crl(crl_path);
	X509_REVOKED *entry = NULL;
	assert_int_equal(X509_CRL_get0_by_serial(crl, &entry, X509_get0_serialNumber(a)), 1);
	assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 1);
	assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
	assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)), 0);
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
	assert_int_equal(X509_CRL_get_signature_nid(crl), NID_ecdsa_with_SHA256);
	assert_true(X509_CRL_get_ext_by_NID(crl, NID_authority_key_identifier, -1) >= 0);
	ASN1_INTEGER *number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	assert_non_null(number);
	assert_int_equal(ASN1_INTEGER_get(number), 2);
	ASN1_INTEGER_free(number);
	time_t last = asn1_time(X509_CRL_get0_lastUpdate(crl));
	assert_int_equal(asn1_time(X509_CRL_get0_nextUpdate(crl)) - last, 7 * 86400);
	X509_CRL_free(crl);

	/* revoked.txt has the serial in hex. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(a), NULL);
	char *hex = BN_bn2hex(bn);
	assert_true(file_has(in_scratch("rev/revoked.txt"), hex));
	OPENSSL_free(hex);
	BN_free(bn);

	assert_int_equal(
	        verify_files(in_scratch("rev-a.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT),
	        X509_V_ERR_CERT_REVOKED);
	assert_int_equal(
	        verify_files(in_scratch("rev-b.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT),
	        X509_V_OK);
	/* Without CRL checking the revoked one still verifies. */
	assert_int_equal(verify_files(in_scratch("rev-a.crt"), root, NULL, X509_PURPOSE_SSL_CLIENT),
	                 X509_V_OK);

	/* Revoking again lists it once; b joins; ca crl keeps both. */
	assert_int_equal(RUN("revoke", "--dir", dir, "--cert", in_scratch("rev-a.crt"), "--cert",
	                     in_scratch("rev-b.crt"), "--crl-ttl", "1h"),
	                 0);
	crl = load_crl(crl_path);
	assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
	last = asn1_time(X509_CRL_get0_lastUpdate(crl));
	assert_int_equal(asn1_time(X509_CRL_get0_nextUpdate(crl)) - last, 3600);
	X509_CRL_free(crl);
	assert_int_equal(RUN("crl", "--dir", dir), 0);
	crl = load_crl(crl_path);
	assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
	number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	assert_int_equal(ASN1_INTEGER_get(number), 4);
	ASN1_INTEGER_free(number);
	X509_CRL_free(crl);
	assert_int_equal(
	        verify_files(in_scratch("rev-b.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT),
	        X509_V_ERR_CERT_REVOKED);

	/* An expired CRL. */
	time_t now = time(NULL);
	assert_int_equal(RUN("crl", "--dir", dir, "--backdate", "8d"), 0);
	crl = load_crl(crl_path);
	last = asn1_time(X509_CRL_get0_lastUpdate(crl));
	assert_true(last >= now - 8 * 86400 - 1 && last <= now - 8 * 86400 + 2);
	X509_CRL_free(crl);
	int rc = verify_files(in_scratch("rev-b.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT);
	assert_true(rc == X509_V_ERR_CRL_HAS_EXPIRED || rc == X509_V_ERR_CERT_REVOKED);
	rc = RUN("issue", "--dir", dir, "--out", in_scratch("rev-c"), "--user", "c@example.com");
	assert_int_equal(rc, 0);
	assert_int_equal(
	        verify_files(in_scratch("rev-c.crt"), root, crl_path, X509_PURPOSE_SSL_CLIENT),
	        X509_V_ERR_CRL_HAS_EXPIRED);

	/* A certificate from another CA cannot be revoked here. */
	assert_int_equal(RUN_ERR(err, "revoke", "--dir", dir, "--cert", in_scratch("alice.crt")),
	                 1);
	assert_non_null(strstr(err, "alice.crt: not issued by"));
	/* Missing certificate file. */
	assert_int_equal(RUN_ERR(err, "revoke", "--dir", dir, "--cert", in_scratch("nope.crt")), 1);
	assert_non_null(strstr(err, "nope.crt: No such file or directory"));
	assert_true(no_tmp_files(dir));
	X509_free(ca);
	X509_free(a);
}

/* ---- intermediate CA ------------------------------------------------------ */

static void test_intermediate_chain(void **state)
{
	(void)state;
	const char *root_crt = in_scratch("root/ca.crt");
	const char *inter = in_scratch("inter");
	assert_int_equal(RUN("init", "--dir", inter, "--parent", in_scratch("root")), 0);

	STACK_OF(X509) *ca_file = load_all(in_scratch("inter/ca.crt"));
	STACK_OF(X509) *chain_file = load_all(in_scratch("inter/chain.crt"));
	X509 *root = load_cert(root_crt);
	assert_int_equal(sk_X509_num(ca_file), 1);
	assert_int_equal(sk_X509_num(chain_file), 2);
	X509 *ica = sk_X509_value(ca_file, 0);
	assert_int_equal(X509_cmp(sk_X509_value(chain_file, 0), ica), 0);
	assert_int_equal(X509_cmp(sk_X509_value(chain_file, 1), root), 0);
	assert_entry(X509_get_subject_name(ica), 0, NID_commonName, "certgate dev intermediate CA");
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(ica), X509_get_subject_name(root)), 0);
	assert_true(X509_get_extension_flags(ica) & EXFLAG_CA);
	assert_int_equal(X509_check_issued(root, ica), X509_V_OK);
	assert_int_equal(verify(ica, root, NULL, NULL, 0, X509_PURPOSE_ANY), X509_V_OK);

	/* A leaf from the intermediate, with the chain appended. */
	assert_int_equal(RUN("issue", "--dir", inter, "--out", in_scratch("dave"), "--user",
	                     "dave@example.com", "--chain"),
	                 0);
	STACK_OF(X509) *leaf_file = load_all(in_scratch("dave.crt"));
	assert_int_equal(sk_X509_num(leaf_file), 3);
	assert_int_equal(X509_cmp(sk_X509_value(leaf_file, 1), ica), 0);
	assert_int_equal(X509_cmp(sk_X509_value(leaf_file, 2), root), 0);
	assert_int_equal(
	        verify_files(in_scratch("dave.crt"), root_crt, NULL, X509_PURPOSE_SSL_CLIENT),
	        X509_V_OK);
	/* Without --chain the root alone cannot verify it. */
	assert_int_equal(RUN("issue", "--dir", inter, "--out", in_scratch("dave2"), "--user",
	                     "dave@example.com"),
	                 0);
	assert_int_equal(
	        verify_files(in_scratch("dave2.crt"), root_crt, NULL, X509_PURPOSE_SSL_CLIENT),
	        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

	/* The intermediate revokes with its own CRL. */
	assert_int_equal(RUN("revoke", "--dir", inter, "--cert", in_scratch("dave.crt")), 0);
	assert_int_equal(verify_files(in_scratch("dave.crt"), root_crt, in_scratch("inter/ca.crl"),
	                              X509_PURPOSE_SSL_CLIENT),
	                 X509_V_ERR_CERT_REVOKED);

	/* Re-initialised as a root with --force: the old chain is gone. */
	assert_int_equal(RUN("init", "--dir", inter, "--force"), 0);
	assert_int_equal(access(in_scratch("inter/chain.crt"), F_OK), -1);
	assert_int_equal(access(in_scratch("inter/ca.crl"), F_OK), -1);

	sk_X509_pop_free(leaf_file, X509_free);
	X509_free(root);
	sk_X509_pop_free(chain_file, X509_free);
	sk_X509_pop_free(ca_file, X509_free);
}

/* ---- refusals, usage errors, help ----------------------------------------- */

static void test_usage_errors(void **state)
{
	(void)state;
	const char *dir = in_scratch("root");
	const char *out = in_scratch("usage");
	/* Each row is one argv after "ca"; all must exit 2 with one line on
	 * stderr that points at --help. */
	const char *const rows[][16] = {
	        {"bogus"},
	        {"--bogus"},
	        {"init"},
	        {"init", "--name", "x"},
	        {"init", "--dir", dir, "--ttl", "forever"},
	        {"init", "--dir", dir, "--ttl", "0"},
	        {"init", "--dir", dir, "extra"},
	        {"init", "--dir"},
	        {"init", "--dir", dir, "--dir", dir},
	        {"init", "--dir", dir, "--name", ""},
	        {"issue", "--out", out, "--user", "u@example.com"},
	        {"issue", "--dir", dir, "--user", "u@example.com"},
	        {"issue", "--dir", dir, "--out", out},
	        {"issue", "--dir", dir, "--out", out, "--user", "not an email"},
	        {"issue", "--dir", dir, "--out", out, "--user", "nobody"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--device-trust",
	         "total"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--device-trust",
	         "HIGH"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--device-id",
	         "a b"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ttl", "15"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ttl", "500ms"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--backdate", "1h",
	         "--postdate", "1h"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--eku", "email"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--digest", "md5"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--rsa", "512"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--rsa", "2048x"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ext", "1.2.3"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ext",
	         "not.an.oid=x"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--critical-ext",
	         "zzz"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ext",
	         "1.3.6.1.4.1.55555.9=a", "--ext", "1.3.6.1.4.1.55555.9=b"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--group", ""},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "-x"},
	        {"issue", "--dir", dir, "--out", out, "--user", "u@example.com", "--ttl"},
	        {"server", "--dir", dir, "--out", out},
	        {"server", "--dir", dir, "--out", out, "--ip", "999.1.1.1"},
	        {"server", "--dir", dir, "--out", out, "--ip", "localhost"},
	        {"server", "--dir", dir, "--dns", "x"},
	        {"server", "--out", out, "--dns", "x"},
	        {"server", "--dir", dir, "--out", out, "--dns", "x", "--user", "u"},
	        {"revoke", "--dir", dir},
	        {"revoke", "--cert", out},
	        {"revoke", "--dir", dir, "--cert", out, "--crl-ttl", "soon"},
	        {"crl"},
	        {"crl", "--dir", dir, "--backdate", "yesterday"},
	        {"crl", "--dir", dir, "--crl-ttl", "0"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char err[1024];
		int rc = run_io(NULL, 0, err, sizeof(err), rows[i]);
		if (rc != 2)
			fail_msg("row %zu (%s %s): exit %d, want 2; stderr: %s", i, rows[i][0],
			         rows[i][1] ? rows[i][1] : "", rc, err);
		if (strncmp(err, "certgate: ca", 12) != 0 || !strstr(err, "--help") ||
		    strchr(err, '\n') != err + strlen(err) - 1)
			fail_msg("row %zu: want one line pointing at --help, got: %s", i, err);
	}
	/* "ca" alone. */
	char err[1024];
	assert_int_equal(run_io(NULL, 0, err, sizeof(err), (const char *const[]){NULL}), 2);
	assert_non_null(strstr(err, "--help"));
	/* No usage error wrote anything. */
	assert_int_equal(access(in_scratch("usage.crt"), F_OK), -1);
	assert_int_equal(access(in_scratch("usage.key"), F_OK), -1);
}

static void test_refusals(void **state)
{
	(void)state;
	char err[1024];
	const char *missing = in_scratch("no-such-ca");

	assert_int_equal(RUN_ERR(err, "issue", "--dir", missing, "--out", in_scratch("x"), "--user",
	                         "u@example.com"),
	                 1);
	assert_non_null(strstr(err, "certgate: ca issue: "));
	assert_non_null(strstr(err, "no-such-ca/ca.key: No such file or directory"));
	assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1);
	assert_int_equal(access(in_scratch("x.key"), F_OK), -1);

	assert_int_equal(
	        RUN_ERR(err, "server", "--dir", missing, "--out", in_scratch("x"), "--dns", "a"),
	        1);
	assert_int_equal(
	        RUN_ERR(err, "revoke", "--dir", missing, "--cert", in_scratch("alice.crt")), 1);
	assert_int_equal(RUN_ERR(err, "crl", "--dir", missing), 1);
	assert_int_equal(RUN_ERR(err, "init", "--dir", in_scratch("child"), "--parent", missing),
	                 1);
	assert_int_equal(access(in_scratch("child"), F_OK), -1);

	/* A key that does not match the certificate. */
	assert_int_equal(RUN("init", "--dir", in_scratch("mismatch")), 0);
	assert_int_equal(RUN("init", "--dir", in_scratch("other")), 0);
	assert_int_equal(rename(in_scratch("other/ca.key"), in_scratch("mismatch/ca.key")), 0);
	assert_int_equal(RUN_ERR(err, "issue", "--dir", in_scratch("mismatch"), "--out",
	                         in_scratch("x"), "--user", "u@example.com"),
	                 1);
	assert_non_null(strstr(err, "does not match"));

	/* Unwritable output location. */
	assert_int_equal(RUN_ERR(err, "issue", "--dir", in_scratch("root"), "--out",
	                         in_scratch("no/such/dir/x"), "--user", "u@example.com"),
	                 1);
	assert_non_null(strstr(err, "No such file or directory"));

	/* A corrupt revoked.txt is refused with its line number. */
	assert_int_equal(RUN("init", "--dir", in_scratch("badrev")), 0);
	FILE *fp = fopen(in_scratch("badrev/revoked.txt"), "w");
	fputs("0A 20240101000000Z\nnonsense\n", fp);
	fclose(fp);
	assert_int_equal(RUN_ERR(err, "crl", "--dir", in_scratch("badrev")), 1);
	assert_non_null(strstr(err, "revoked.txt:2:"));
}

static void test_help(void **state)
{
	(void)state;
	static const char *const subs[] = {"init", "issue", "server", "revoke", "crl"};
	char out[8192], err[1024];
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		assert_int_equal(
		        run_io(out, sizeof(out), err, sizeof(err), ARGS(subs[i], "--help")), 0);
		char want[64];
		snprintf(want, sizeof(want), "usage: certgate ca %s ", subs[i]);
		assert_non_null(strstr(out, want));
		assert_string_equal(err, "");
	}
	/* --help wins over anything else on the line. */
	assert_int_equal(
	        run_io(out, sizeof(out), err, sizeof(err), ARGS("issue", "--help", "--ttl", "x")),
	        0);
	assert_non_null(strstr(out, "testing options"));
	assert_non_null(strstr(out, "--critical-ext"));
	assert_int_equal(run_io(out, sizeof(out), err, sizeof(err), ARGS("--help")), 0);
	assert_non_null(strstr(out, "usage: certgate ca "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_init),
	        cmocka_unit_test(test_init_options_and_force),
	        cmocka_unit_test(test_issue_login),
	        cmocka_unit_test(test_issue_pk8),
	        cmocka_unit_test(test_issue_validity),
	        cmocka_unit_test(test_issue_testing_options),
	        cmocka_unit_test(test_issue_replaces_files_atomically),
	        cmocka_unit_test(test_server),
	        cmocka_unit_test(test_revoke_and_crl),
	        cmocka_unit_test(test_intermediate_chain),
	        cmocka_unit_test(test_usage_errors),
	        cmocka_unit_test(test_refusals),
	        cmocka_unit_test(test_help),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
