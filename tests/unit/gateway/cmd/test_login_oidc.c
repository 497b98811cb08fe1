/* The OpenID Connect pieces of certgate login (gateway/cmd/login_oidc.c):
 * the PKCE S256 challenge against RFC 7636's Appendix B, state/nonce/
 * verifier generation, the authorization request URL, the token endpoint's
 * reply and the client-side look at the ID token (iss, aud, nonce). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmd/login_oidc.h"
#include "tls/device_id.h"

/* RFC 7636, Appendix B */
static void test_pkce_rfc7636_vector(void **state)
{
	(void)state;
	char challenge[LOGIN_TOKEN_LEN + 1];
	assert_true(login_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", challenge));
	assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static bool base64url_only(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

/* 43 base64url characters (32 random bytes: a valid RFC 7636 verifier),
 * never the same twice. */
static void test_random_tokens(void **state)
{
	(void)state;
	enum { N = 64 };
	char tokens[N][LOGIN_TOKEN_LEN + 1];
	for (int i = 0; i < N; i++) {
		assert_true(login_random_token(tokens[i]));
		assert_int_equal(strlen(tokens[i]), 43);
		assert_true(base64url_only(tokens[i]));
		size_t n = 0;
		unsigned char *raw = gw_b64url_decode(tokens[i], 43, &n);
		assert_non_null(raw);
		assert_int_equal(n, 32);
		free(raw);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(tokens[i], tokens[j]);
	}
}

static void test_authorization_url(void **state)
{
	(void)state;
	login_idp_t idp = {.authorization_endpoint = "https://idp.example/auth"};
	char *url = login_authorization_url(&idp, "certgate", "http://127.0.0.1:5555/callback",
	                                    "openid email groups", "S1", "N1", "C1");
	assert_string_equal(url, "https://idp.example/auth?response_type=code&client_id=certgate"
	                         "&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback"
	                         "&scope=openid%20email%20groups&state=S1&nonce=N1"
	                         "&code_challenge=C1&code_challenge_method=S256");
	free(url);
	/* an endpoint with a query of its own keeps it */
	idp.authorization_endpoint = "https://idp.example/auth?tenant=x";
	url = login_authorization_url(&idp, "c", "r", "openid", "s", "n", "c");
	assert_non_null(strstr(url, "https://idp.example/auth?tenant=x&response_type=code&"));
	free(url);
}

/* A compact JWS with this payload (the signature is not looked at). */
static char *jwt(const char *payload)
{
	char *h = gw_b64url_encode((const unsigned char *)"{\"alg\":\"RS256\"}", 15);
	char *p = gw_b64url_encode((const unsigned char *)payload, strlen(payload));
	size_t n = strlen(h) + strlen(p) + 8;
	char *out = malloc(n);
	snprintf(out, n, "%s.%s.c2ln", h, p);
	free(h);
	free(p);
	return out;
}

static int check(const char *payload, const char *nonce)
{
	char err[256];
	char *token = jwt(payload);
	int rc = login_id_token_check(token, "https://idp.example", "certgate", nonce, err,
	                              sizeof(err));
	free(token);
	return rc;
}

static void test_id_token_check(void **state)
{
	(void)state;
	const char *good = "{\"iss\":\"https://idp.example\",\"aud\":\"certgate\",\"nonce\":\"N\"}";
	assert_int_equal(check(good, "N"), 0);
	assert_int_equal(check(good, NULL), 0); /* device grant: no nonce */
	/* the nonce: another, or none at all */
	assert_int_equal(check(good, "M"), -1);
	assert_int_equal(check(good, "NN"), -1);
	assert_int_equal(check("{\"iss\":\"https://idp.example\",\"aud\":\"certgate\"}", "N"), -1);
	/* aud as an array */
	assert_int_equal(check("{\"iss\":\"https://idp.example\",\"aud\":[\"x\",\"certgate\"],"
	                       "\"nonce\":\"N\"}",
	                       "N"),
	                 0);
	assert_int_equal(
	        check("{\"iss\":\"https://idp.example\",\"aud\":[\"x\"],\"nonce\":\"N\"}", "N"),
	        -1);
	/* another issuer */
	assert_int_equal(check("{\"iss\":\"https://evil.example\",\"aud\":\"certgate\","
	                       "\"nonce\":\"N\"}",
	                       "N"),
	                 -1);
	/* not a JWT, not JSON */
	char err[256];
	assert_int_equal(login_id_token_check("abc.def", "i", "c", NULL, err, sizeof(err)), -1);
	assert_int_equal(login_id_token_check("a.b.c.d", "i", "c", NULL, err, sizeof(err)), -1);
	assert_int_equal(
	        login_id_token_check("e30.bm90IGpzb24.c2ln", "i", "c", NULL, err, sizeof(err)), -1);
}

static void test_token_reply(void **state)
{
	(void)state;
	char err[512], *token = NULL;
	login_reply_t ok = {.status = 200, .json = json_pack("{s:s}", "id_token", "a.b.c")};
	assert_int_equal(login_token_reply(&ok, &token, err, sizeof(err)), 0);
	assert_string_equal(token, "a.b.c");
	free(token);
	json_decref(ok.json);

	login_reply_t none = {.status = 200, .json = json_pack("{s:s}", "access_token", "x")};
	assert_int_equal(login_token_reply(&none, &token, err, sizeof(err)), -1);
	assert_null(token);
	assert_non_null(strstr(err, "no id_token"));
	json_decref(none.json);

	login_reply_t bad = {.status = 400,
	                     .json = json_pack("{s:s,s:s}", "error", "invalid_grant",
	                                       "error_description",
	                                       "grant request is invalid\x1b[2J")};
	assert_int_equal(login_token_reply(&bad, &token, err, sizeof(err)), -1);
	/* the provider's words, with no terminal escape left in them */
	assert_non_null(strstr(err, "invalid_grant: grant request is invalid?[2J"));
	json_decref(bad.json);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_pkce_rfc7636_vector), cmocka_unit_test(test_random_tokens),
	        cmocka_unit_test(test_authorization_url),   cmocka_unit_test(test_id_token_check),
	        cmocka_unit_test(test_token_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
