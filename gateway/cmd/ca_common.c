/* Shared by the `certgate ca` subcommands (see ca_common.h). */
#include "cmd/ca_common.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cg_duration.h"
#include "cg_file.h"
#include "tls/pem_io.h"

/* ---- messages --------------------------------------------------------- */

static void vline(const char *sub, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));

static void vline(const char *sub, const char *fmt, va_list ap)
{
	fprintf(stderr, "certgate: ca %s: ", sub);
	vfprintf(stderr, fmt, ap);
}

int ca_refuse(const char *sub, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vline(sub, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

int ca_refuse_ssl(const char *sub, const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	va_list ap;
	va_start(ap, fmt);
	vline(sub, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", reason ? reason : "OpenSSL error");
	ERR_clear_error();
	return 1;
}

int ca_usage_error(const char *sub, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vline(sub, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'certgate ca %s --help')\n", sub);
	return 2;
}

/* ---- files ------------------------------------------------------------ */

bool ca_join_path(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);
	return n > 0 && (size_t)n < size;
}

bool ca_suffix_path(char *buf, size_t size, const char *prefix, const char *suffix)
{
	int n = snprintf(buf, size, "%s%s", prefix, suffix);
	return n > 0 && (size_t)n < size;
}

int ca_write(const char *sub, const char *path, mode_t mode, const void *data, size_t len)
{
	int rc = cg_file_write_atomic(path, mode, data, len);
	if (rc < 0)
		return ca_refuse(sub, "%s: %s", path, strerror(-rc));
	return 0;
}

int ca_read_text(const char *sub, const char *path, char **out)
{
	size_t len;
	int rc = cg_file_read(path, MAX_TEXT_FILE, out, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc == -EFBIG)
		return ca_refuse(sub, "%s: file too large", path);
	if (rc < 0)
		return ca_refuse(sub, "%s: %s", path, strerror(-rc));
	return 0;
}

/* ---- the CA folder ------------------------------------------------------ */

void ca_finish(ca_t *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	ca->cert = NULL;
	ca->key = NULL;
}

int ca_load_cert(const char *sub, const char *path, X509 **out)
{
	char why[256];
	*out = gw_pem_read_cert(path, why, sizeof(why));
	return *out != NULL ? 0 : ca_refuse(sub, "%s: %s", path, why);
}

int ca_load(const char *sub, const char *dir, ca_t *ca)
{
	char crt_path[PATH_MAX], key_path[PATH_MAX], why[256];
	memset(ca, 0, sizeof(*ca));
	ca->dir = dir;
	if (!ca_join_path(crt_path, sizeof(crt_path), dir, "ca.crt") ||
	    !ca_join_path(key_path, sizeof(key_path), dir, "ca.key"))
		return ca_refuse(sub, "%s: path too long", dir);
	int rc = 0;
	ca->key = gw_pem_read_key(key_path, why, sizeof(why));
	if (ca->key == NULL)
		rc = ca_refuse(sub, "%s: %s", key_path, why);
	if (rc == 0)
		rc = ca_load_cert(sub, crt_path, &ca->cert);
	if (rc == 0 && X509_check_private_key(ca->cert, ca->key) != 1)
		rc = ca_refuse(sub, "%s: does not match %s", key_path, crt_path);
	if (rc == 0 && X509_check_ca(ca->cert) == 0)
		rc = ca_refuse(sub, "%s: not a CA certificate", crt_path);
	if (rc != 0)
		ca_finish(ca);
	ERR_clear_error();
	return rc;
}

int ca_load_chain(const char *sub, const char *dir, STACK_OF(X509) * *out)
{
	char path[PATH_MAX], why[256];
	if (!ca_join_path(path, sizeof(path), dir, "chain.crt"))
		return ca_refuse(sub, "%s: path too long", dir);
	if (access(path, F_OK) != 0) {
		if (errno != ENOENT)
			return ca_refuse(sub, "%s: %s", path, strerror(errno));
		if (!ca_join_path(path, sizeof(path), dir, "ca.crt"))
			return ca_refuse(sub, "%s: path too long", dir);
	}
	*out = gw_pem_read_certs(path, why, sizeof(why));
	return *out != NULL ? 0 : ca_refuse(sub, "%s: %s", path, why);
}

/* The key as PEM PKCS#8 (and DER with pk8) at path's PREFIX. */
static int write_key(const char *sub, const char *prefix, EVP_PKEY *key, bool pk8)
{
	char path[PATH_MAX];
	if (!ca_suffix_path(path, sizeof(path), prefix, ".key"))
		return ca_refuse(sub, "%s: path too long", prefix);
	size_t len;
	char *pem = gw_pem_key(key, &len);
	if (pem == NULL)
		return ca_refuse_ssl(sub, "%s", path);
	int rc = ca_write(sub, path, 0600, pem, len);
	OPENSSL_clear_free(pem, len);
	if (rc != 0 || !pk8)
		return rc;
	if (!ca_suffix_path(path, sizeof(path), prefix, ".pk8"))
		return ca_refuse(sub, "%s: path too long", prefix);
	unsigned char *der = gw_der_key(key, &len);
	if (der == NULL)
		return ca_refuse_ssl(sub, "%s", path);
	rc = ca_write(sub, path, 0600, der, len);
	OPENSSL_clear_free(der, len);
	return rc;
}

int ca_write_leaf(const char *sub, const char *dir, const char *prefix, X509 *cert, EVP_PKEY *key,
                  bool with_chain, bool pk8)
{
	char crt_path[PATH_MAX];
	if (!ca_suffix_path(crt_path, sizeof(crt_path), prefix, ".crt"))
		return ca_refuse(sub, "%s: path too long", prefix);
	STACK_OF(X509) *certs = NULL;
	int rc = 0;
	if (with_chain)
		rc = ca_load_chain(sub, dir, &certs);
	else if (!(certs = sk_X509_new_null()))
		rc = ca_refuse_ssl(sub, "out of memory");
	if (rc != 0)
		return rc;
	if (!X509_up_ref(cert) || !sk_X509_unshift(certs, cert)) {
		sk_X509_pop_free(certs, X509_free);
		return ca_refuse_ssl(sub, "out of memory");
	}
	size_t len;
	char *pem = gw_pem_certs(certs, &len);
	sk_X509_pop_free(certs, X509_free);
	if (pem == NULL)
		return ca_refuse_ssl(sub, "%s", crt_path);
	rc = write_key(sub, prefix, key, pk8);
	if (rc == 0)
		rc = ca_write(sub, crt_path, 0644, pem, len);
	free(pem);
	return rc;
}

/* ---- options ------------------------------------------------------------ */

bool ca_list_init(list_t *l, int argc)
{
	l->count = 0;
	l->items = calloc((size_t)argc + 1, sizeof(*l->items));
	return l->items != NULL;
}

int ca_next_option(const char *sub, int argc, char **argv, const struct option *opts,
                   void (*help)(void), int *rc)
{
	int c = getopt_long(argc, argv, "+:", opts, NULL);
	switch (c) {
	case -1:
		if (optind < argc) {
			*rc = ca_usage_error(sub, "unexpected argument '%s'", argv[optind]);
			return 0;
		}
		return -1;
	case OPT_HELP:
		help();
		*rc = 0;
		return 0;
	case ':':
		*rc = ca_usage_error(sub, "option '%s' needs a value", argv[optind - 1]);
		return 0;
	case '?':
		*rc = ca_usage_error(sub, "unknown option '%s'", argv[optind - 1]);
		return 0;
	default:
		return c;
	}
}

bool ca_set_once(const char *sub, const char **slot, const char *name, int *rc)
{
	if (*slot) {
		*rc = ca_usage_error(sub, "--%s given twice", name);
		return false;
	}
	*slot = optarg;
	return true;
}

bool ca_parse_seconds(const char *sub, const char *name, const char *text, int64_t min_s,
                      int64_t *out, int *rc)
{
	uint64_t ms;
	if (!cg_duration_parse(text, &ms)) {
		*rc = ca_usage_error(sub, "--%s: bad duration '%s' (like 90s, 15m, 24h, 7d)", name,
		                     text);
		return false;
	}
	if ((int64_t)(ms / 1000) < min_s) {
		*rc = ca_usage_error(sub, "--%s: must be at least %llds", name, (long long)min_s);
		return false;
	}
	*out = (int64_t)(ms / 1000);
	return true;
}

bool ca_parse_rsa_bits(const char *sub, const char *text, unsigned *out, int *rc)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno || end == text || *end || text[0] < '1' || text[0] > '9' || v < RSA_MIN_BITS ||
	    v > RSA_MAX_BITS) {
		*rc = ca_usage_error(sub, "--rsa: bits must be %d..%d, got '%s'", RSA_MIN_BITS,
		                     RSA_MAX_BITS, text);
		return false;
	}
	*out = (unsigned)v;
	return true;
}

bool ca_is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}
