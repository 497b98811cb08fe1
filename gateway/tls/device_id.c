/* Device ids and their proofs (see device_id.h). */
#include "tls/device_id.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* RFC 4648 base32, lowercase, no padding: 5 bits per character. */
static void base32_lower(const unsigned char *in, size_t len, char *out, size_t chars)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
	uint32_t buffer = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len && n < chars; i++) {
		buffer = (buffer << 8) | in[i];
		bits += 8;
		while (bits >= 5 && n < chars) {
			out[n++] = alphabet[(buffer >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0 && n < chars)
		out[n++] = alphabet[(buffer << (5 - bits)) & 31];
	out[n] = '\0';
}

bool gw_device_id(EVP_PKEY *key, char out[GW_DEVICE_ID_LEN + 1])
{
	unsigned char *spki = NULL;
	int n = i2d_PUBKEY(key, &spki);
	if (n <= 0)
		return false;
	unsigned char md[32];
	unsigned int md_len = 0;
	bool ok = EVP_Digest(spki, (size_t)n, md, &md_len, EVP_sha256(), NULL) == 1 && md_len == 32;
	OPENSSL_free(spki);
	if (!ok)
		return false;
	out[0] = 'd';
	out[1] = '-';
	base32_lower(md, sizeof(md), out + 2, GW_DEVICE_ID_LEN - 2);
	return true;
}

static bool is_p256(EVP_PKEY *key)
{
	char group[32];
	size_t len = 0;
	return EVP_PKEY_is_a(key, "EC") &&
	       EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                      &len) == 1 &&
	       strcmp(group, "prime256v1") == 0;
}

char *gw_device_prove(EVP_PKEY *device_key, const unsigned char *data, size_t len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	char *out = NULL;
	if (md != NULL && is_p256(device_key) &&
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, device_key) == 1 &&
	    EVP_DigestSign(md, NULL, &sig_len, data, len) == 1 &&
	    (sig = OPENSSL_malloc(sig_len)) != NULL &&
	    EVP_DigestSign(md, sig, &sig_len, data, len) == 1)
		out = gw_b64url_encode(sig, sig_len);
	OPENSSL_free(sig);
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return out;
}

bool gw_device_proof_ok(EVP_PKEY *device_key, const unsigned char *data, size_t len,
                        const char *proof)
{
	if (proof == NULL || !is_p256(device_key))
		return false;
	size_t sig_len = 0;
	unsigned char *sig = gw_b64url_decode(proof, strlen(proof), &sig_len);
	if (sig == NULL)
		return false;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md != NULL &&
	          EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, device_key) == 1 &&
	          EVP_DigestVerify(md, sig, sig_len, data, len) == 1;
	EVP_MD_CTX_free(md);
	free(sig);
	ERR_clear_error();
	return ok;
}

char *gw_b64url_encode(const unsigned char *data, size_t len)
{
	static const char alphabet[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(len / 3 * 4 + 5);
	if (out == NULL)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		out[n++] = alphabet[(v >> 18) & 63];
		out[n++] = alphabet[(v >> 12) & 63];
		if (i + 1 < len)
			out[n++] = alphabet[(v >> 6) & 63];
		if (i + 2 < len)
			out[n++] = alphabet[v & 63];
	}
	out[n] = '\0';
	return out;
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

unsigned char *gw_b64url_decode(const char *text, size_t text_len, size_t *out_len)
{
	if (text_len % 4 == 1)
		return NULL; /* no whole byte in a lone character */
	unsigned char *out = malloc(text_len / 4 * 3 + 3);
	if (out == NULL)
		return NULL;
	uint32_t buffer = 0;
	int bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < text_len; i++) {
		int v = b64url_value(text[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		buffer = (buffer << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			out[n++] = (unsigned char)(buffer >> (bits - 8));
			bits -= 8;
		}
	}
	/* the leftover bits must be zero: one encoding per byte string */
	if (bits > 0 && (buffer & ((1u << bits) - 1)) != 0) {
		free(out);
		return NULL;
	}
	*out_len = n;
	return out;
}
