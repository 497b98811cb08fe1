/* JWK Sets into OpenSSL keys (see jwks.h). */
#include "issuer/jwks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include "tls/device_id.h"

#define MAX_KEYS 64

typedef struct jwk {
	char *kid; /* NULL when the JWK has none */
	char *alg; /* NULL when the JWK names none */
	EVP_PKEY *key;
} jwk_t;

struct gw_jwks {
	jwk_t keys[MAX_KEYS];
	size_t n;
};

/* A base64url member as bytes (malloc'd), NULL when absent or invalid. */
static unsigned char *member_bytes(json_t *jwk, const char *name, size_t *len)
{
	const char *text = json_string_value(json_object_get(jwk, name));
	return text != NULL ? gw_b64url_decode(text, strlen(text), len) : NULL;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = bld != NULL ? OSSL_PARAM_BLD_to_param(bld) : NULL;
	EVP_PKEY_CTX *ctx = params != NULL ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
	EVP_PKEY *key = NULL;
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return key;
}

static EVP_PKEY *rsa_key(json_t *jwk)
{
	size_t n_len = 0, e_len = 0;
	unsigned char *n = member_bytes(jwk, "n", &n_len), *e = member_bytes(jwk, "e", &e_len);
	BIGNUM *bn_n = n != NULL ? BN_bin2bn(n, (int)n_len, NULL) : NULL;
	BIGNUM *bn_e = e != NULL ? BN_bin2bn(e, (int)e_len, NULL) : NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	EVP_PKEY *key = NULL;
	if (bn_n != NULL && bn_e != NULL && bld != NULL &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1)
		key = from_params("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	free(n);
	free(e);
	return key;
}

static EVP_PKEY *ec_key(json_t *jwk)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	const char *group = crv == NULL                 ? NULL
	                    : strcmp(crv, "P-256") == 0 ? "prime256v1"
	                    : strcmp(crv, "P-384") == 0 ? "secp384r1"
	                                                : NULL;
	size_t field = crv != NULL && strcmp(crv, "P-384") == 0 ? 48 : 32;
	size_t x_len = 0, y_len = 0;
	unsigned char *x = member_bytes(jwk, "x", &x_len), *y = member_bytes(jwk, "y", &y_len);
	EVP_PKEY *key = NULL;
	unsigned char point[1 + 2 * 48];
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	if (group != NULL && x != NULL && y != NULL && x_len == field && y_len == field &&
	    bld != NULL) {
		point[0] = 0x04; /* uncompressed */
		memcpy(point + 1, x, field);
		memcpy(point + 1 + field, y, field);
		if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ==
		            1 &&
		    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
		                                     1 + 2 * field) == 1)
			key = from_params("EC", bld);
	}
	OSSL_PARAM_BLD_free(bld);
	free(x);
	free(y);
	return key;
}

static EVP_PKEY *okp_key(json_t *jwk)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	size_t x_len = 0;
	unsigned char *x = member_bytes(jwk, "x", &x_len);
	EVP_PKEY *key = NULL;
	if (crv != NULL && strcmp(crv, "Ed25519") == 0 && x != NULL && x_len == 32)
		key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, x_len);
	free(x);
	return key;
}

static char *dup_member(json_t *jwk, const char *name)
{
	const char *text = json_string_value(json_object_get(jwk, name));
	return text != NULL ? strdup(text) : NULL;
}

gw_jwks_t *gw_jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *doc = json_loadb(json, len, 0, &jerr);
	json_t *keys = json_object_get(doc, "keys");
	if (!json_is_array(keys)) {
		snprintf(err, errlen, "not a JWK Set (no \"keys\" array)");
		json_decref(doc);
		return NULL;
	}
	gw_jwks_t *set = calloc(1, sizeof(*set));
	if (set == NULL) {
		snprintf(err, errlen, "out of memory");
		json_decref(doc);
		return NULL;
	}
	size_t i;
	json_t *jwk;
	json_array_foreach(keys, i, jwk)
	{
		const char *kty = json_string_value(json_object_get(jwk, "kty"));
		const char *use = json_string_value(json_object_get(jwk, "use"));
		if (kty == NULL || set->n == MAX_KEYS || (use != NULL && strcmp(use, "sig") != 0))
			continue;
		EVP_PKEY *key = strcmp(kty, "RSA") == 0   ? rsa_key(jwk)
		                : strcmp(kty, "EC") == 0  ? ec_key(jwk)
		                : strcmp(kty, "OKP") == 0 ? okp_key(jwk)
		                                          : NULL;
		if (key == NULL)
			continue; /* a type or curve we cannot verify with */
		jwk_t *k = &set->keys[set->n++];
		k->key = key;
		k->kid = dup_member(jwk, "kid");
		k->alg = dup_member(jwk, "alg");
	}
	json_decref(doc);
	ERR_clear_error();
	if (set->n == 0) {
		snprintf(err, errlen, "no signing key certgate can use in the JWK Set");
		gw_jwks_free(set);
		return NULL;
	}
	return set;
}

void gw_jwks_free(gw_jwks_t *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++) {
		EVP_PKEY_free(set->keys[i].key);
		free(set->keys[i].kid);
		free(set->keys[i].alg);
	}
	free(set);
}

size_t gw_jwks_count(const gw_jwks_t *set)
{
	return set->n;
}

static bool is_curve(EVP_PKEY *key, const char *group)
{
	char name[32];
	size_t len = 0;
	return EVP_PKEY_is_a(key, "EC") &&
	       EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
	                                      &len) == 1 &&
	       strcmp(name, group) == 0;
}

bool gw_jws_alg_fits_key(const char *alg, EVP_PKEY *key)
{
	if (alg[0] == 'R' || alg[0] == 'P') /* RS256.., PS256.. */
		return EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) >= 2048;
	if (strcmp(alg, "ES256") == 0)
		return is_curve(key, "prime256v1");
	if (strcmp(alg, "ES384") == 0)
		return is_curve(key, "secp384r1");
	if (strcmp(alg, "EdDSA") == 0)
		return EVP_PKEY_is_a(key, "ED25519");
	return false;
}

EVP_PKEY *gw_jwks_find(const gw_jwks_t *set, const char *kid, const char *alg)
{
	EVP_PKEY *found = NULL;
	for (size_t i = 0; i < set->n; i++) {
		const jwk_t *k = &set->keys[i];
		if (kid != NULL && (k->kid == NULL || strcmp(k->kid, kid) != 0))
			continue;
		if ((k->alg != NULL && strcmp(k->alg, alg) != 0) ||
		    !gw_jws_alg_fits_key(alg, k->key))
			continue;
		if (kid != NULL)
			return k->key;
		if (found != NULL)
			return NULL; /* several could: the token must name one */
		found = k->key;
	}
	return found;
}
