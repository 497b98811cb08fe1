/* OpenID Connect pieces shared by both flows (see login_oidc.h). */
#include "cmd/login_oidc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tls/device_id.h"

#define MAX_ID_TOKEN (64 * 1024)

int64_t login_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- discovery ---------------------------------------------------------------- */

void login_idp_finish(login_idp_t *idp)
{
	free(idp->issuer);
	free(idp->authorization_endpoint);
	free(idp->token_endpoint);
	free(idp->device_endpoint);
	memset(idp, 0, sizeof(*idp));
}

/* An https endpoint of the discovery document into *out (NULL when absent
 * and not required). */
static int endpoint(const json_t *doc, const char *key, bool required, char **out, char *err,
                    size_t errlen)
{
	const json_t *v = json_object_get(doc, key);
	*out = NULL;
	if (v == NULL && !required)
		return 0;
	char shown[200];
	if (!json_is_string(v)) {
		snprintf(err, errlen, "the identity provider's discovery document has no %s", key);
		return -1;
	}
	if (!login_is_https_url(json_string_value(v))) {
		snprintf(err, errlen, "the identity provider's %s is not an https:// URL: %s", key,
		         login_printable(json_string_value(v), shown, sizeof(shown)));
		return -1;
	}
	*out = strdup(json_string_value(v));
	if (*out == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int login_idp_discover(const login_http_t *http, const char *issuer, login_idp_t *out, char *err,
                       size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char url[2048], shown[200], why[512];
	size_t n = strlen(issuer);
	while (n > 0 && issuer[n - 1] == '/')
		n--;
	if ((size_t)snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration", (int)n,
	                     issuer) >= sizeof(url)) {
		snprintf(err, errlen, "the identity provider's issuer URL is too long");
		return -1;
	}
	login_reply_t reply;
	if (login_http_get(http, url, &reply, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "OpenID discovery failed: %s", why);
		return -1;
	}
	int rc = -1;
	if (reply.status != 200 || reply.json == NULL) {
		login_reply_error(&reply, "error", "error_description", why, sizeof(why));
		snprintf(err, errlen, "OpenID discovery failed: GET %s: %s%s", url, why,
		         reply.status == 200 ? " (not a JSON object)" : "");
		goto done;
	}
	const char *doc_issuer = login_json_str(reply.json, "issuer");
	if (doc_issuer == NULL || strcmp(doc_issuer, issuer) != 0) {
		snprintf(err, errlen,
		         "OpenID discovery: the document at %s names the issuer \"%s\", not \"%s\"",
		         url, login_printable(doc_issuer ? doc_issuer : "", shown, sizeof(shown)),
		         issuer);
		goto done;
	}
	out->issuer = strdup(issuer);
	if (out->issuer == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (endpoint(reply.json, "authorization_endpoint", true, &out->authorization_endpoint, err,
	             errlen) < 0 ||
	    endpoint(reply.json, "token_endpoint", true, &out->token_endpoint, err, errlen) < 0 ||
	    endpoint(reply.json, "device_authorization_endpoint", false, &out->device_endpoint, err,
	             errlen) < 0)
		goto done;
	out->iss_in_answers = json_is_true(
	        json_object_get(reply.json, "authorization_response_iss_parameter_supported"));
	rc = 0;
done:
	login_reply_finish(&reply);
	if (rc < 0)
		login_idp_finish(out);
	return rc;
}

/* --- state, nonce, PKCE ------------------------------------------------------- */

static bool b64url_into(const unsigned char *data, size_t len, char out[LOGIN_TOKEN_LEN + 1])
{
	char *enc = gw_b64url_encode(data, len);
	bool ok = enc != NULL && strlen(enc) == LOGIN_TOKEN_LEN;
	if (ok)
		memcpy(out, enc, LOGIN_TOKEN_LEN + 1);
	free(enc);
	return ok;
}

bool login_random_token(char out[LOGIN_TOKEN_LEN + 1])
{
	unsigned char raw[32];
	bool ok = RAND_bytes(raw, sizeof(raw)) == 1 && b64url_into(raw, sizeof(raw), out);
	OPENSSL_cleanse(raw, sizeof(raw));
	return ok;
}

bool login_pkce_challenge(const char *verifier, char out[LOGIN_TOKEN_LEN + 1])
{
	unsigned char digest[32];
	unsigned int n = 0;
	return EVP_Digest(verifier, strlen(verifier), digest, &n, EVP_sha256(), NULL) == 1 &&
	       n == sizeof(digest) && b64url_into(digest, sizeof(digest), out);
}

char *login_authorization_url(const login_idp_t *idp, const char *client_id,
                              const char *redirect_uri, const char *scope, const char *state,
                              const char *nonce, const char *challenge)
{
	const char *const pairs[] = {"response_type",
	                             "code",
	                             "client_id",
	                             client_id,
	                             "redirect_uri",
	                             redirect_uri,
	                             "scope",
	                             scope,
	                             "state",
	                             state,
	                             "nonce",
	                             nonce,
	                             "code_challenge",
	                             challenge,
	                             "code_challenge_method",
	                             "S256",
	                             NULL};
	return login_url_with_query(idp->authorization_endpoint, pairs);
}

/* --- tokens -------------------------------------------------------------------- */

int login_token_reply(const login_reply_t *reply, char **id_token, char *err, size_t errlen)
{
	*id_token = NULL;
	char why[512];
	if (reply->status != 200) {
		login_reply_error(reply, "error", "error_description", why, sizeof(why));
		snprintf(err, errlen, "the identity provider's token endpoint refused: %s", why);
		return -1;
	}
	const char *token = login_json_str(reply->json, "id_token");
	if (token == NULL || *token == '\0') {
		snprintf(err, errlen,
		         "the identity provider's token reply has no id_token (is \"openid\" "
		         "among the scopes?)");
		return -1;
	}
	if (strlen(token) > MAX_ID_TOKEN) {
		snprintf(err, errlen, "the identity provider's ID token is over %d bytes",
		         MAX_ID_TOKEN);
		return -1;
	}
	*id_token = strdup(token);
	if (*id_token == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static bool aud_has(const json_t *aud, const char *client_id)
{
	if (json_is_string(aud))
		return strcmp(json_string_value(aud), client_id) == 0;
	size_t i;
	const json_t *v;
	json_array_foreach(aud, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), client_id) == 0)
			return true;
	}
	return false;
}

int login_id_token_check(const char *id_token, const char *issuer, const char *client_id,
                         const char *nonce, char *err, size_t errlen)
{
	const char *dot1 = strchr(id_token, '.');
	const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
		snprintf(err, errlen, "the identity provider's ID token is not a signed JWT");
		return -1;
	}
	size_t len = 0;
	unsigned char *payload = gw_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &len);
	json_t *claims = payload != NULL ? json_loadb((const char *)payload, len,
	                                              JSON_REJECT_DUPLICATES, NULL)
	                                 : NULL;
	free(payload);
	int rc = -1;
	char shown[200];
	if (!json_is_object(claims)) {
		snprintf(err, errlen, "the identity provider's ID token payload is not JSON");
		goto done;
	}
	const char *iss = login_json_str(claims, "iss");
	if (iss == NULL || strcmp(iss, issuer) != 0) {
		snprintf(err, errlen, "the ID token was issued by \"%s\", not by %s",
		         login_printable(iss ? iss : "", shown, sizeof(shown)), issuer);
		goto done;
	}
	if (!aud_has(json_object_get(claims, "aud"), client_id)) {
		snprintf(err, errlen, "the ID token is not for the client %s", client_id);
		goto done;
	}
	if (nonce != NULL) {
		const char *got = login_json_str(claims, "nonce");
		if (got == NULL || strlen(got) != strlen(nonce) ||
		    CRYPTO_memcmp(got, nonce, strlen(nonce)) != 0) {
			snprintf(err, errlen,
			         "the ID token's nonce is not this login's (a replayed or injected "
			         "token): refused");
			goto done;
		}
	}
	rc = 0;
done:
	json_decref(claims);
	return rc;
}
