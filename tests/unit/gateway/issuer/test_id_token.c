/* ID tokens and JWK Sets (gateway/issuer/id_token.c, jwks.c): every check
 * on tokens signed here with keys made here, RS256, PS256, ES256 and EdDSA,
 * and the refusals: none, HMAC, unknown kid, wrong key, tampered payload,
 * and each claim rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "issuer/id_token.h"
#include "issuer/jwks.h"
#include "tls/device_id.h"

#define ISS    "https://idp.example"
#define CLIENT "certgate"
#define NOW    1800000000000LL /* ms */

static EVP_PKEY *rsa, *ec, *ed, *rogue;
static gw_jwks_t *keys;
static char *const algorithms[] = {"RS256", "PS256", "ES256", "EdDSA"};
static const gw_id_token_rules_t rules = {
        .issuer = ISS,
        .client_id = CLIENT,
        .algorithms = algorithms,
        .n_algorithms = 4,
        .user_claim = "email",
        .groups_claim = "groups",
        .require_email_verified = true,
        .leeway_ms = 60000,
};

static char *b64_bn(const BIGNUM *bn, int len)
{
	unsigned char buf[512];
	int n = len > 0 ? BN_bn2binpad(bn, buf, len) : BN_bn2bin(bn, buf);
	return gw_b64url_encode(buf, (size_t)n);
}

/* A JSON string of a malloc'd C string, which it frees. */
static json_t *take(char *s)
{
	json_t *j = json_string(s);
	free(s);
	return j;
}

/* The public JWK of key under kid. */
static json_t *jwk_of(EVP_PKEY *key, const char *kid)
{
	json_t *j = json_pack("{s:s, s:s}", "kid", kid, "use", "sig");
	if (EVP_PKEY_is_a(key, "RSA")) {
		BIGNUM *n = NULL, *e = NULL;
		EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n);
		EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e);
		json_object_set_new(j, "kty", json_string("RSA"));
		json_object_set_new(j, "n", take(b64_bn(n, 0)));
		json_object_set_new(j, "e", take(b64_bn(e, 0)));
		BN_free(n);
		BN_free(e);
	} else if (EVP_PKEY_is_a(key, "EC")) {
		BIGNUM *x = NULL, *y = NULL;
		EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x);
		EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
		json_object_set_new(j, "kty", json_string("EC"));
		json_object_set_new(j, "crv", json_string("P-256"));
		json_object_set_new(j, "x", take(b64_bn(x, 32)));
		json_object_set_new(j, "y", take(b64_bn(y, 32)));
		BN_free(x);
		BN_free(y);
	} else {
		unsigned char raw[32];
		size_t len = sizeof(raw);
		EVP_PKEY_get_raw_public_key(key, raw, &len);
		json_object_set_new(j, "kty", json_string("OKP"));
		json_object_set_new(j, "crv", json_string("Ed25519"));
		json_object_set_new(j, "x", take(gw_b64url_encode(raw, len)));
	}
	return j;
}

static int setup(void **state)
{
	(void)state;
	rsa = EVP_RSA_gen(2048);
	rogue = EVP_RSA_gen(2048);
	ec = EVP_EC_gen("P-256");
	ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	json_t *set = json_pack("{s:[o, o, o, {s:s, s:s}]}", "keys", jwk_of(rsa, "r1"),
	                        jwk_of(ec, "e1"), jwk_of(ed, "d1"), "kty", "oct", "k", "c2VjcmV0");
	char *text = json_dumps(set, 0);
	char err[256];
	keys = gw_jwks_parse(text, strlen(text), err, sizeof(err));
	free(text);
	json_decref(set);
	return keys != NULL && gw_jwks_count(keys) == 3 ? 0 : -1; /* the "oct" key is skipped */
}

static int teardown(void **state)
{
	(void)state;
	gw_jwks_free(keys);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rogue);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ed);
	return 0;
}

static json_t *claims(void)
{
	return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:b, s:[s, s]}", "iss", ISS, "aud", CLIENT,
	                 "sub", "u-1", "iat", (json_int_t)(NOW / 1000), "exp",
	                 (json_int_t)(NOW / 1000 + 600), "email", "alice@example.com",
	                 "email_verified", 1, "groups", "dba", "staff");
}

/* A compact JWS over header and payload, signed with key as alg asks;
 * typ in the header when not NULL. */
static char *sign_typ(const char *alg, const char *kid, const char *typ, json_t *payload,
                      EVP_PKEY *key)
{
	json_t *h = json_pack("{s:s}", "alg", alg);
	if (kid != NULL)
		json_object_set_new(h, "kid", json_string(kid));
	if (typ != NULL)
		json_object_set_new(h, "typ", json_string(typ));
	char *hj = json_dumps(h, JSON_COMPACT), *pj = json_dumps(payload, JSON_COMPACT);
	char *hb = gw_b64url_encode((unsigned char *)hj, strlen(hj));
	char *pb = gw_b64url_encode((unsigned char *)pj, strlen(pj));
	char input[8192];
	snprintf(input, sizeof(input), "%s.%s", hb, pb);
	unsigned char sig[512];
	size_t sig_len = sizeof(sig);
	char *sb = strdup("");
	if (key != NULL) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;
		const EVP_MD *digest = strcmp(alg, "EdDSA") == 0 ? NULL : EVP_sha256();
		assert_int_equal(EVP_DigestSignInit(md, &pctx, digest, NULL, key), 1);
		if (alg[0] == 'P') {
			EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
		}
		assert_int_equal(
		        EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input, strlen(input)),
		        1);
		EVP_MD_CTX_free(md);
		if (strcmp(alg, "ES256") == 0) { /* DER to R || S */
			const unsigned char *p = sig;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
			sig_len = 64;
			BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
			BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
			ECDSA_SIG_free(es);
		}
		free(sb);
		sb = gw_b64url_encode(sig, sig_len);
	}
	char *token = malloc(strlen(input) + strlen(sb) + 2);
	sprintf(token, "%s.%s", input, sb);
	free(hj);
	free(pj);
	free(hb);
	free(pb);
	free(sb);
	json_decref(h);
	return token;
}

static char *sign(const char *alg, const char *kid, json_t *payload, EVP_PKEY *key)
{
	return sign_typ(alg, kid, NULL, payload, key);
}

static const char *verify(const char *token, gw_id_token_result_t want)
{
	gw_id_token_t t;
	const char *reason = NULL;
	gw_id_token_result_t got = gw_id_token_verify(token, keys, &rules, NOW, &t, &reason);
	gw_id_token_finish(&t);
	if (got != want)
		fail_msg("gw_id_token_verify: %d (reason %s), expected %d, for %.120s...", got,
		         reason != NULL ? reason : "none", want, token);
	return reason;
}

static void test_each_algorithm_verifies(void **state)
{
	(void)state;
	const struct {
		const char *alg, *kid;
		EVP_PKEY *key;
	} ok[] = {{"RS256", "r1", NULL},
	          {"PS256", "r1", NULL},
	          {"ES256", "e1", NULL},
	          {"EdDSA", "d1", NULL},
	          {"ES256", NULL, NULL}};
	EVP_PKEY *by_kid[] = {rsa, rsa, ec, ed, ec};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		json_t *c = claims();
		char *token = sign(ok[i].alg, ok[i].kid, c, by_kid[i]);
		gw_id_token_t t;
		const char *reason = NULL;
		assert_int_equal(gw_id_token_verify(token, keys, &rules, NOW, &t, &reason),
		                 GW_ID_TOKEN_OK);
		assert_string_equal(t.user, "alice@example.com");
		assert_string_equal(t.subject, "u-1");
		assert_int_equal(json_array_size(t.groups), 2);
		gw_id_token_finish(&t);
		free(token);
		json_decref(c);
	}
}

static void test_algorithm_and_key_refusals(void **state)
{
	(void)state;
	json_t *c = claims();
	char *none = sign("none", "r1", c, NULL);
	assert_string_equal(verify(none, GW_ID_TOKEN_REFUSED), "algorithm not allowed");
	char *hs = sign("HS256", "r1", c, NULL);
	assert_string_equal(verify(hs, GW_ID_TOKEN_REFUSED), "algorithm not allowed");
	char *unknown = sign("RS256", "r9", c, rogue);
	assert_string_equal(verify(unknown, GW_ID_TOKEN_UNKNOWN_KEY), "unknown signing key");
	char *wrong = sign("RS256", "r1", c, rogue);
	assert_string_equal(verify(wrong, GW_ID_TOKEN_REFUSED), "bad signature");
	/* an RSA kid used with an EC algorithm: no key fits */
	char *mixed = sign("ES256", "r1", c, ec);
	assert_string_equal(verify(mixed, GW_ID_TOKEN_UNKNOWN_KEY), "unknown signing key");
	/* a valid signature, then the payload swapped */
	char *good = sign("RS256", "r1", c, rsa);
	json_object_set_new(c, "email", json_string("eve@example.com"));
	char *other = sign("RS256", "r1", c, rsa);
	char *dot1 = strchr(good, '.'), *dot2 = strchr(dot1 + 1, '.');
	char *odot1 = strchr(other, '.'), *odot2 = strchr(odot1 + 1, '.');
	char tampered[8192];
	snprintf(tampered, sizeof(tampered), "%.*s%.*s%s", (int)(dot1 - good), good,
	         (int)(odot2 - odot1), odot1, dot2);
	assert_string_equal(verify(tampered, GW_ID_TOKEN_REFUSED), "bad signature");
	assert_string_equal(verify("a.b", GW_ID_TOKEN_REFUSED), "malformed token");
	assert_string_equal(verify("a.b.c.d", GW_ID_TOKEN_REFUSED), "malformed token");
	free(none);
	free(hs);
	free(unknown);
	free(wrong);
	free(mixed);
	free(good);
	free(other);
	json_decref(c);
}

/* One claim changed, the reason expected. */
static void claim_case(const char *key, json_t *value, const char *reason)
{
	json_t *c = claims();
	if (value == NULL)
		json_object_del(c, key);
	else
		json_object_set_new(c, key, value);
	char *token = sign("RS256", "r1", c, rsa);
	const char *got = verify(token, reason == NULL ? GW_ID_TOKEN_OK : GW_ID_TOKEN_REFUSED);
	if (reason != NULL)
		assert_string_equal(got, reason);
	free(token);
	json_decref(c);
}

static void test_claim_rules(void **state)
{
	(void)state;
	json_int_t now = NOW / 1000;
	claim_case("iss", json_string("https://evil.example"), "wrong issuer");
	claim_case("aud", json_string("other-app"), "wrong audience");
	claim_case("aud", json_pack("[s, s]", CLIENT, "other"), "wrong audience"); /* no azp */
	claim_case("azp", json_string("other-app"), "wrong authorized party");
	claim_case("exp", json_integer(now - 61), "token expired");
	claim_case("exp", json_integer(now - 30), NULL); /* within the leeway */
	claim_case("nbf", json_integer(now + 120), "token not yet valid");
	claim_case("iat", json_integer(now + 120), "token issued in the future");
	claim_case("iat", NULL, "malformed token");
	claim_case("email", NULL, "no user claim");
	claim_case("email", json_integer(7), "user claim not a clean string");
	claim_case("email", json_string("alice\n@example.com"), "user claim not a clean string");
	claim_case("email_verified", json_false(), "email not verified");
	claim_case("email_verified", json_string("true"), "email not verified");
	claim_case("groups", json_string("dba"), "groups not an array of strings");
	claim_case("groups", json_pack("[s, i]", "dba", 3), "groups not an array of strings");
	claim_case("groups", NULL, NULL);
}

/* Claims changed as in the JSON object changes (members set, null ones
 * removed), the reason expected (NULL: accepted). */
static void claims_case(const char *changes, const char *reason)
{
	json_t *c = claims();
	json_error_t err;
	json_t *ch = json_loads(changes, 0, &err);
	assert_non_null(ch);
	const char *name;
	json_t *v;
	json_object_foreach(ch, name, v)
	{
		if (json_is_null(v))
			json_object_del(c, name);
		else
			json_object_set(c, name, v);
	}
	char *token = sign("RS256", "r1", c, rsa);
	const char *got = verify(token, reason == NULL ? GW_ID_TOKEN_OK : GW_ID_TOKEN_REFUSED);
	if (reason != NULL)
		assert_string_equal(got, reason);
	free(token);
	json_decref(ch);
	json_decref(c);
}

/* The token split at its dots: header.payload (the signed bytes) and the
 * signature's raw bytes. */
static size_t split_signature(const char *token, char *signed_part, size_t cap, unsigned char *sig,
                              size_t sig_cap)
{
	const char *dot = strrchr(token, '.');
	assert_non_null(dot);
	assert_true((size_t)(dot - token) < cap);
	memcpy(signed_part, token, (size_t)(dot - token));
	signed_part[dot - token] = '\0';
	size_t len = 0;
	unsigned char *raw = gw_b64url_decode(dot + 1, strlen(dot + 1), &len);
	assert_non_null(raw);
	assert_true(len <= sig_cap);
	memcpy(sig, raw, len);
	free(raw);
	return len;
}

static char *with_signature(const char *signed_part, const unsigned char *sig, size_t len)
{
	char *sb = gw_b64url_encode(sig, len);
	char *token = malloc(strlen(signed_part) + strlen(sb) + 2);
	sprintf(token, "%s.%s", signed_part, sb);
	free(sb);
	return token;
}

/* An ES256 signature (RFC 7518 3.4) is R || S, 32 bytes each: R and S
 * zero-padded to 48 bytes (a 96-byte signature, ES384's length) verify
 * alike in DER, so they were a second spelling of one signature and the
 * used-token check, keyed on the whole token, took the token for a new one.
 * Only the exact length is a signature. S as n - S is valid ECDSA too: the
 * signature check cannot refuse it, which is why the replay key is the
 * signed bytes (tests/integration/test_login.py
 * test_es256_signature_respelling_is_a_replay). */
static void test_es256_signature_has_one_spelling(void **state)
{
	(void)state;
	static const char order_hex[] =
	        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
	json_t *c = claims();
	char *token = sign("ES256", "e1", c, ec);
	assert_null(verify(token, GW_ID_TOKEN_OK));
	char signed_part[8192];
	unsigned char sig[64];
	assert_int_equal(split_signature(token, signed_part, sizeof(signed_part), sig, sizeof(sig)),
	                 64);

	/* R and S zero-padded to 48 bytes each */
	unsigned char padded[96] = {0};
	memcpy(padded + 16, sig, 32);
	memcpy(padded + 48 + 16, sig + 32, 32);
	char *t96 = with_signature(signed_part, padded, sizeof(padded));
	assert_string_equal(verify(t96, GW_ID_TOKEN_REFUSED), "bad signature");
	/* the same 64 bytes with one zero byte more or less */
	unsigned char longer[65] = {0};
	memcpy(longer + 1, sig, 64);
	char *t65 = with_signature(signed_part, longer, sizeof(longer));
	assert_string_equal(verify(t65, GW_ID_TOKEN_REFUSED), "bad signature");
	char *t63 = with_signature(signed_part, sig, 63);
	assert_string_equal(verify(t63, GW_ID_TOKEN_REFUSED), "bad signature");

	/* S as n - S: a valid signature of the same bytes, another spelling */
	BIGNUM *n = NULL, *s = BN_bin2bn(sig + 32, 32, NULL);
	assert_true(BN_hex2bn(&n, order_hex) > 0);
	assert_int_equal(BN_sub(s, n, s), 1);
	unsigned char flipped[64];
	memcpy(flipped, sig, 32);
	assert_int_equal(BN_bn2binpad(s, flipped + 32, 32), 32);
	assert_memory_not_equal(flipped, sig, 64);
	char *tneg = with_signature(signed_part, flipped, sizeof(flipped));
	assert_null(verify(tneg, GW_ID_TOKEN_OK));
	BN_free(n);
	BN_free(s);
	free(t96);
	free(t65);
	free(t63);
	free(tneg);
	free(token);
	json_decref(c);
}

/* Claim text follows the gateway's own rule (pol_claims_text_ok): no C1
 * control either (U+0080..U+009F, two bytes in UTF-8, which a byte check
 * below 0x20 let through), so no value signed here is one the gateway
 * would ignore when it reads the certificate back. Other non-ASCII text
 * stays accepted. */
static void test_claim_text_has_no_c1_control(void **state)
{
	(void)state;
	claims_case("{\"email\": \"al\\u0085ice@example.com\"}", "user claim not a clean string");
	claims_case("{\"email\": \"alice\\u009f@example.com\"}", "user claim not a clean string");
	claims_case("{\"email\": \"alice\\u0080@example.com\"}", "user claim not a clean string");
	claims_case("{\"groups\": [\"dba\", \"st\\u0085aff\"]}", "groups not an array of strings");
	claims_case("{\"groups\": [\"\\u009b31m\"]}", "groups not an array of strings");
	claims_case("{\"email\": \"al\\u00e9ice@example.com\"}", NULL);
	claims_case("{\"email\": \"alice\\u00a0@example.com\"}", NULL);
	claims_case("{\"groups\": [\"dba\", \"\\u540d\\u524d\"]}", NULL);
}

/* A JWT access token (RFC 9068: typ "at+jwt") of the same provider and
 * client must not pass for an ID token (RFC 8725 3.11): refused whatever
 * the case of its typ; "JWT" and no typ stay accepted. */
static void test_access_tokens_refused(void **state)
{
	(void)state;
	const struct {
		const char *typ, *reason;
	} cases[] = {
	        {"at+jwt", "malformed token"},
	        {"application/at+jwt", "malformed token"},
	        {"AT+JWT", "malformed token"},
	        {"Application/At+Jwt", "malformed token"},
	        {"JWT", NULL},
	        {NULL, NULL},
	};
	json_t *c = claims();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *token = sign_typ("ES256", "e1", cases[i].typ, c, ec);
		const char *got = verify(token, cases[i].reason == NULL ? GW_ID_TOKEN_OK
		                                                        : GW_ID_TOKEN_REFUSED);
		if (cases[i].reason != NULL)
			assert_string_equal(got, cases[i].reason);
		free(token);
	}
	json_decref(c);
}

/* An azp naming this client does not make up for an aud that does not
 * contain it: the token was issued to someone else ("wrong audience", not
 * "wrong authorized party", which hid the reason). */
static void test_azp_does_not_hide_a_wrong_audience(void **state)
{
	(void)state;
	claims_case("{\"aud\": \"other-app\", \"azp\": \"certgate\"}", "wrong audience");
	claims_case("{\"aud\": [\"other-app\", \"more\"], \"azp\": \"certgate\"}",
	            "wrong audience");
	claims_case("{\"aud\": \"other-app\", \"azp\": \"other-app\"}", "wrong audience");
	claims_case("{\"aud\": [\"certgate\", \"other-app\"], \"azp\": \"other-app\"}",
	            "wrong authorized party");
	claims_case("{\"aud\": \"certgate\", \"azp\": \"other-app\"}", "wrong authorized party");
	claims_case("{\"aud\": [\"certgate\", \"other-app\"], \"azp\": \"certgate\"}", NULL);
	claims_case("{\"aud\": \"certgate\", \"azp\": \"certgate\"}", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_algorithm_verifies),
	        cmocka_unit_test(test_algorithm_and_key_refusals),
	        cmocka_unit_test(test_claim_rules),
	        cmocka_unit_test(test_es256_signature_has_one_spelling),
	        cmocka_unit_test(test_claim_text_has_no_c1_control),
	        cmocka_unit_test(test_access_tokens_refused),
	        cmocka_unit_test(test_azp_does_not_hide_a_wrong_audience),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
