/* An identity provider's signing keys (a JWK Set, RFC 7517) turned into
 * OpenSSL keys: RSA (n, e), EC P-256/P-384 (x, y) and OKP Ed25519 (x).
 * Keys for encryption ("use": "enc") and key types certgate cannot verify
 * with are skipped; a set with no usable key is an error. Pure: no I/O. */
#ifndef GW_JWKS_H
#define GW_JWKS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

typedef struct gw_jwks gw_jwks_t;

/* Parses the JWKS document. NULL with why in err. */
gw_jwks_t *gw_jwks_parse(const char *json, size_t len, char *err, size_t errlen);
void gw_jwks_free(gw_jwks_t *set); /* accepts NULL */
size_t gw_jwks_count(const gw_jwks_t *set);

/* The key that may verify a JWS with this alg and kid: kid given, the key
 * with that kid (and a type fitting alg, and alg if the JWK names one);
 * kid NULL, the only key fitting alg. NULL when none (or several without
 * kid). The key belongs to set. */
EVP_PKEY *gw_jwks_find(const gw_jwks_t *set, const char *kid, const char *alg);

/* Whether key has the type and size alg needs (RS*: RSA >= 2048; ES256:
 * P-256; ES384: P-384; EdDSA: Ed25519). */
bool gw_jws_alg_fits_key(const char *alg, EVP_PKEY *key);

#endif
