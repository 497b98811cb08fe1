/* Login CSRs (gateway/issuer/csr.c): proof of possession, key kinds and
 * sizes, and the bounds, on requests made here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "issuer/csr.h"

/* A PEM CSR for key; flip: a bit of the signature flipped. */
static char *csr_pem(EVP_PKEY *key, bool flip)
{
	X509_REQ *req = X509_REQ_new();
	X509_REQ_set_pubkey(req, key);
	X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"x", -1, -1, 0);
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	if (flip) {
		const ASN1_BIT_STRING *sig = NULL;
		X509_REQ_get0_signature(req, &sig, NULL);
		((unsigned char *)ASN1_STRING_get0_data(sig))[ASN1_STRING_length(sig) - 2] ^= 1;
	}
	BIO *bio = BIO_new(BIO_s_mem());
	PEM_write_bio_X509_REQ(bio, req);
	char *data;
	long n = BIO_get_mem_data(bio, &data);
	/* Not strndup: the BIO's data has no terminator to stop at. */
	char *out = malloc((size_t)n + 1);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(bio);
	X509_REQ_free(req);
	return out;
}

static const char *check(const char *pem, size_t len)
{
	unsigned char *der = NULL;
	size_t der_len = 0;
	const char *reason = NULL;
	EVP_PKEY *key = gw_csr_check(pem, len, &der, &der_len, &reason);
	if (key != NULL) {
		assert_non_null(der);
		assert_true(der_len > 0);
		reason = NULL;
	}
	EVP_PKEY_free(key);
	OPENSSL_free(der);
	return reason;
}

/* The reason a CSR for key is refused, or NULL. */
static const char *check_key(EVP_PKEY *key, bool flip)
{
	char *pem = csr_pem(key, flip);
	const char *reason = check(pem, strlen(pem));
	free(pem);
	return reason;
}

static void test_csr_checks(void **state)
{
	(void)state;
	EVP_PKEY *p256 = EVP_EC_gen("P-256"), *p384 = EVP_EC_gen("P-384");
	EVP_PKEY *p521 = EVP_EC_gen("P-521"), *rsa2048 = EVP_RSA_gen(2048);
	EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
	assert_null(check_key(p256, false));
	assert_null(check_key(p384, false));
	assert_null(check_key(rsa2048, false));
	assert_string_equal(check_key(rsa1024, false), "csr key not allowed");
	assert_string_equal(check_key(p521, false), "csr key not allowed");
	assert_string_equal(check_key(p256, true), "csr signature invalid");
	assert_string_equal(check("not a request", 13), "csr not pem");
	char *big = calloc(1, GW_CSR_MAX + 2);
	memset(big, 'A', GW_CSR_MAX + 1);
	assert_string_equal(check(big, GW_CSR_MAX + 1), "csr too large");
	free(big);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(p521);
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(rsa1024);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_csr_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
