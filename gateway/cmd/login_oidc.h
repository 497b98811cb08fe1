/* OpenID Connect as a public client, the pieces both flows share:
 * discovery of the identity provider, random state/nonce/PKCE verifier,
 * the S256 challenge (RFC 7636), the authorization request URL, the token
 * endpoint's reply, and the client-side look at the ID token (its payload
 * decoded, not verified: the issuer verifies the signature; here only the
 * nonce, iss and aud are compared, so an injected or mixed-up token is
 * refused before it is sent anywhere). The flows themselves are in
 * login_code.c (authorization code + loopback redirect) and
 * login_device.c (RFC 8628). */
#ifndef GW_LOGIN_OIDC_H
#define GW_LOGIN_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd/login_http.h"

/* 32 random bytes in base64url: 43 characters. */
#define LOGIN_TOKEN_LEN 43

typedef struct login_idp {
	char *issuer;
	char *authorization_endpoint;
	char *token_endpoint;
	char *device_endpoint; /* NULL when the provider has no device grant */
	/* authorization_response_iss_parameter_supported: every answer names
	 * the provider (RFC 9207), so one without iss is not its */
	bool iss_in_answers;
} login_idp_t;

/* What one sign-in needs: the provider, the client, and the deadline. */
typedef struct login_client {
	const login_http_t *http;
	const login_idp_t *idp;
	const char *client_id;
	const char *scope;   /* space-separated */
	int64_t deadline_ms; /* on login_now_ms's clock */
	bool open_browser;   /* code flow: try xdg-open/open */
} login_client_t;

/* GET {issuer}/.well-known/openid-configuration; the document's issuer must
 * equal issuer, its endpoints be https. 0, or -1 with why in err.
 * login_idp_finish frees. */
int login_idp_discover(const login_http_t *http, const char *issuer, login_idp_t *out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));
void login_idp_finish(login_idp_t *idp);

/* out[LOGIN_TOKEN_LEN + 1]: state, nonce or PKCE code verifier. */
bool login_random_token(char out[LOGIN_TOKEN_LEN + 1]) __attribute__((warn_unused_result));
/* The S256 challenge of verifier: base64url(SHA-256(verifier)), 43 chars. */
bool login_pkce_challenge(const char *verifier, char out[LOGIN_TOKEN_LEN + 1])
        __attribute__((warn_unused_result));

/* The authorization request URL (response_type code, PKCE S256), malloc'd. */
char *login_authorization_url(const login_idp_t *idp, const char *client_id,
                              const char *redirect_uri, const char *scope, const char *state,
                              const char *nonce, const char *challenge);

/* The ID token of a token endpoint reply: 200 with a string id_token
 * (malloc'd into *id_token), else -1 with the provider's error in err. */
int login_token_reply(const login_reply_t *reply, char **id_token, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* The ID token's payload, decoded but not verified: iss must equal issuer,
 * aud be or contain client_id, and (when nonce is not NULL) its nonce equal
 * nonce. 0, or -1 with why. */
int login_id_token_check(const char *id_token, const char *issuer, const char *client_id,
                         const char *nonce, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Milliseconds of a monotonic clock (deadlines). */
int64_t login_now_ms(void);

#endif
