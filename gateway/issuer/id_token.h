/* Checking an OpenID Connect ID token (a JWS, RFC 7515/7519) as the issuer
 * must before it signs anything: the algorithm is one the configuration
 * allows (never "none", never HMAC: no key confusion), the key is the
 * identity provider's by kid, the signature verifies with OpenSSL, and the
 * claims say this provider issued it for this client, now, about a user
 * with a clean name (LOGIN.md, "What the issuer checks"). Pure: the keys,
 * the rules and the time come in; the replay check is the caller's.
 *
 * Each refusal is one reason from a fixed set (the HTTP reply, the
 * login.denied line and the metrics label). */
#ifndef GW_ID_TOKEN_H
#define GW_ID_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "issuer/jwks.h"

#define GW_ID_TOKEN_MAX (16 * 1024) /* a longer token is refused unread */

typedef struct gw_id_token_rules {
	const char *issuer;    /* iss must equal it */
	const char *client_id; /* aud must contain it; azp, if present, equal it */
	char *const *algorithms;
	size_t n_algorithms;
	const char *user_claim;   /* e.g. "email" */
	const char *groups_claim; /* e.g. "groups" */
	bool require_email_verified;
	int64_t leeway_ms;
} gw_id_token_rules_t;

typedef struct gw_id_token {
	json_t *claims;      /* the payload (owned) */
	const char *user;    /* in claims */
	const char *subject; /* "sub", may be NULL; in claims */
	json_t *groups;      /* an array of strings, in claims; NULL when absent */
	int64_t expires_ms;
	/* The replay check's key is the signed bytes, token[0, signed_len)
	 * (header.payload): a signature has more than one valid spelling (an
	 * ECDSA S or n - S), the signed bytes one. Refused as used until
	 * replay_until_ms, past the longest leeway any reload may allow. */
	size_t signed_len;
	int64_t replay_until_ms;
	char alg[8];
	char kid[128]; /* "" when the header names none */
} gw_id_token_t;

typedef enum {
	GW_ID_TOKEN_OK,
	GW_ID_TOKEN_UNKNOWN_KEY, /* no key for this kid/alg: maybe the keys rotated */
	GW_ID_TOKEN_REFUSED,
} gw_id_token_result_t;

/* The header's alg and kid, without verifying anything (to pick keys). */
bool gw_id_token_peek(const char *token, char alg[8], char kid[128]);

/* Verifies token against keys and rules at now_ms. OK: out filled (free
 * with gw_id_token_finish). Otherwise *reason says why (static); the
 * subject and user, when they could be read, are still in out. */
gw_id_token_result_t gw_id_token_verify(const char *token, const gw_jwks_t *keys,
                                        const gw_id_token_rules_t *rules, int64_t now_ms,
                                        gw_id_token_t *out, const char **reason);
void gw_id_token_finish(gw_id_token_t *t);

#endif
