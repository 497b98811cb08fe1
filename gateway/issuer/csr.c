/* Login CSRs (see csr.h). */
#include "issuer/csr.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

static bool key_allowed(EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "RSA"))
		return EVP_PKEY_get_bits(key) >= 2048 && EVP_PKEY_get_bits(key) <= 8192;
	if (!EVP_PKEY_is_a(key, "EC"))
		return false;
	char group[32];
	size_t len = 0;
	return EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                      &len) == 1 &&
	       (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0);
}

EVP_PKEY *gw_csr_check(const char *pem, size_t len, unsigned char **der, size_t *der_len,
                       const char **reason)
{
	*der = NULL;
	if (len > GW_CSR_MAX) {
		*reason = "csr too large";
		return NULL;
	}
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509_REQ *req = bio != NULL ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	EVP_PKEY *key = NULL;
	if (req == NULL) {
		*reason = "csr not pem";
		goto done;
	}
	key = X509_REQ_get_pubkey(req);
	if (key == NULL || X509_REQ_verify(req, key) != 1) {
		*reason = "csr signature invalid";
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	if (!key_allowed(key)) {
		*reason = "csr key not allowed";
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	int n = i2d_X509_REQ(req, der);
	if (n <= 0) {
		*reason = "csr not pem";
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	*der_len = (size_t)n;
done:
	X509_REQ_free(req);
	ERR_clear_error();
	return key;
}
