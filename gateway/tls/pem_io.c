/* PEM and DER in and out (see pem_io.h). */
#include "tls/pem_io.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static void ssl_phrase(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
	snprintf(err, errlen, "%s: %s", what, reason != NULL ? reason : "OpenSSL error");
	ERR_clear_error();
}

STACK_OF(X509) * gw_pem_read_certs(const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "re");
	if (fp == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	STACK_OF(X509) *certs = sk_X509_new_null();
	if (certs == NULL) {
		fclose(fp);
		snprintf(err, errlen, "out of memory");
		return NULL;
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
			snprintf(err, errlen, "no certificate found");
		else
			ssl_phrase(err, errlen, "cannot read certificate");
		return NULL;
	}
	return certs;
}

X509 *gw_pem_read_cert(const char *path, char *err, size_t errlen)
{
	STACK_OF(X509) *certs = gw_pem_read_certs(path, err, errlen);
	if (certs == NULL)
		return NULL;
	X509 *first = sk_X509_shift(certs);
	sk_X509_pop_free(certs, X509_free);
	return first;
}

EVP_PKEY *gw_pem_read_key(const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "re");
	if (fp == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	EVP_PKEY *key = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	if (key == NULL)
		ssl_phrase(err, errlen, "cannot read private key");
	return key;
}

/* What was written to a memory BIO, as a malloc'd NUL-terminated copy. */
static char *take(BIO *bio, bool ok, size_t *len)
{
	char *out = NULL;
	char *data;
	long n = ok ? BIO_get_mem_data(bio, &data) : -1;
	if (n >= 0 && (out = malloc((size_t)n + 1)) != NULL) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
		*len = (size_t)n;
	}
	BIO_free(bio);
	ERR_clear_error();
	return out;
}

char *gw_pem_certs(const STACK_OF(X509) * certs, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return NULL;
	bool ok = true;
	for (int i = 0; ok && i < sk_X509_num(certs); i++)
		ok = PEM_write_bio_X509(bio, sk_X509_value(certs, i)) == 1;
	return take(bio, ok, len);
}

char *gw_pem_key(EVP_PKEY *key, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_secmem());
	if (bio == NULL)
		return NULL;
	bool ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1;
	return take(bio, ok, len);
}

unsigned char *gw_der_key(EVP_PKEY *key, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_secmem());
	if (bio == NULL)
		return NULL;
	bool ok = i2d_PKCS8PrivateKey_bio(bio, key, NULL, NULL, 0, NULL, NULL) == 1;
	return (unsigned char *)take(bio, ok, len);
}

char *gw_pem_crl(X509_CRL *crl, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return NULL;
	bool ok = PEM_write_bio_X509_CRL(bio, crl) == 1;
	return take(bio, ok, len);
}
