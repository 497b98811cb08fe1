/* Device ids and proofs (gateway/tls/device_id.c), checked against known
 * answers and against the contract's recipe computed another way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "tls/device_id.h"

/* RFC 4648 test vectors, base64url without padding. */
static void test_b64url_vectors(void **state)
{
	(void)state;
	static const struct {
		const char *raw, *enc;
	} v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
	         {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *enc = gw_b64url_encode((const unsigned char *)v[i].raw, strlen(v[i].raw));
		assert_string_equal(enc, v[i].enc);
		size_t n = 0;
		unsigned char *dec = gw_b64url_decode(enc, strlen(enc), &n);
		assert_non_null(dec);
		assert_int_equal(n, strlen(v[i].raw));
		assert_memory_equal(dec, v[i].raw, n);
		free(dec);
		free(enc);
	}
	static const unsigned char bytes[] = {0xfb, 0xff, 0xfe};
	char *enc = gw_b64url_encode(bytes, sizeof(bytes));
	assert_string_equal(enc, "-__-"); /* the url-safe alphabet */
	free(enc);
	size_t n;
	assert_null(gw_b64url_decode("Zm9v=", 5, &n)); /* padding is not base64url here */
	assert_null(gw_b64url_decode("Zm+v", 4, &n));  /* '+' is standard base64 */
	assert_null(gw_b64url_decode("Z", 1, &n));     /* no whole byte */
	assert_null(gw_b64url_decode("Zh", 2, &n));    /* non-zero leftover bits */
}

static EVP_PKEY *p256(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

/* "d-" + the first 26 characters of lowercase base32 of SHA-256(SPKI DER),
 * computed here bit by bit. */
static void test_device_id_recipe(void **state)
{
	(void)state;
	EVP_PKEY *k = p256();
	unsigned char *spki = NULL;
	int n = i2d_PUBKEY(k, &spki);
	assert_true(n > 0);
	unsigned char md[32];
	unsigned int md_len;
	assert_int_equal(EVP_Digest(spki, (size_t)n, md, &md_len, EVP_sha256(), NULL), 1);
	OPENSSL_free(spki);
	char want[29] = "d-";
	for (int i = 0; i < 26; i++) {
		int value = 0;
		for (int b = 0; b < 5; b++) {
			int bit = i * 5 + b;
			value = value << 1 | ((md[bit / 8] >> (7 - bit % 8)) & 1);
		}
		want[2 + i] = "abcdefghijklmnopqrstuvwxyz234567"[value];
	}
	want[28] = '\0';
	char id[GW_DEVICE_ID_LEN + 1];
	assert_true(gw_device_id(k, id));
	assert_string_equal(id, want);
	EVP_PKEY_free(k);
}

static void test_device_proof(void **state)
{
	(void)state;
	EVP_PKEY *device = p256(), *other = p256();
	static const unsigned char csr[] = "the CSR's DER bytes";
	char *proof = gw_device_prove(device, csr, sizeof(csr));
	assert_non_null(proof);
	assert_true(gw_device_proof_ok(device, csr, sizeof(csr), proof));
	/* another key, other bytes, a damaged proof: refused */
	assert_false(gw_device_proof_ok(other, csr, sizeof(csr), proof));
	assert_false(gw_device_proof_ok(device, csr, sizeof(csr) - 1, proof));
	proof[5] = proof[5] == 'A' ? 'B' : 'A';
	assert_false(gw_device_proof_ok(device, csr, sizeof(csr), proof));
	assert_false(gw_device_proof_ok(device, csr, sizeof(csr), "not base64url!"));
	assert_false(gw_device_proof_ok(device, csr, sizeof(csr), NULL));
	free(proof);
	/* only P-256 device keys */
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	assert_null(gw_device_prove(rsa, csr, sizeof(csr)));
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(device);
	EVP_PKEY_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_b64url_vectors),
	        cmocka_unit_test(test_device_id_recipe),
	        cmocka_unit_test(test_device_proof),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
