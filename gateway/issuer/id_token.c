/* ID token checks (see id_token.h). The order follows the trust one can
 * place in each step: the header's shape, the algorithm, the key, the
 * signature; only then the claims, which mean nothing before. */
#include "issuer/id_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "pol_claims.h"
#include "pol_types.h"
#include "tls/device_id.h"

#define MAX_CLAIM  320 /* bytes of a user claim */
#define MAX_GROUPS 100
#define MAX_GROUP  256

typedef struct parts {
	const char *header, *payload, *signature;
	size_t header_len, payload_len, signature_len;
} parts_t;

static bool split(const char *token, parts_t *p)
{
	size_t len = strnlen(token, GW_ID_TOKEN_MAX + 1);
	if (len == 0 || len > GW_ID_TOKEN_MAX)
		return false;
	const char *dot1 = strchr(token, '.');
	const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
	if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		return false;
	*p = (parts_t){
	        .header = token,
	        .header_len = (size_t)(dot1 - token),
	        .payload = dot1 + 1,
	        .payload_len = (size_t)(dot2 - dot1 - 1),
	        .signature = dot2 + 1,
	        .signature_len = len - (size_t)(dot2 + 1 - token),
	};
	return p->header_len > 0 && p->payload_len > 0;
}

static json_t *decode_json(const char *b64, size_t len)
{
	size_t n = 0;
	unsigned char *raw = gw_b64url_decode(b64, len, &n);
	if (raw == NULL)
		return NULL;
	json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* RFC 9068's JWT access tokens say so in typ; one must not pass for an
 * ID token of the same provider and client (RFC 8725 3.11). */
static bool access_token_typ(const char *typ)
{
	return strcasecmp(typ, "at+jwt") == 0 || strcasecmp(typ, "application/at+jwt") == 0;
}

static bool read_header(const parts_t *p, char alg[8], char kid[128])
{
	json_t *h = decode_json(p->header, p->header_len);
	const char *a = json_string_value(json_object_get(h, "alg"));
	json_t *k = json_object_get(h, "kid");
	json_t *typ = json_object_get(h, "typ");
	bool ok = a != NULL && strlen(a) < 8 && (k == NULL || json_is_string(k)) &&
	          (typ == NULL ||
	           (json_is_string(typ) && !access_token_typ(json_string_value(typ)))) &&
	          (k == NULL || strlen(json_string_value(k)) < 128) &&
	          /* critical extensions we cannot know: refuse (RFC 7515 4.1.11) */
	          json_object_get(h, "crit") == NULL;
	if (ok) {
		snprintf(alg, 8, "%s", a);
		snprintf(kid, 128, "%s", k != NULL ? json_string_value(k) : "");
	}
	json_decref(h);
	return ok;
}

bool gw_id_token_peek(const char *token, char alg[8], char kid[128])
{
	parts_t p;
	return split(token, &p) && read_header(&p, alg, kid);
}

static bool allowed(const gw_id_token_rules_t *rules, const char *alg)
{
	for (size_t i = 0; i < rules->n_algorithms; i++)
		if (strcmp(rules->algorithms[i], alg) == 0)
			return true;
	return false;
}

static const EVP_MD *digest_of(const char *alg)
{
	if (strcmp(alg + 2, "256") == 0)
		return EVP_sha256();
	if (strcmp(alg + 2, "384") == 0)
		return EVP_sha384();
	if (strcmp(alg + 2, "512") == 0)
		return EVP_sha512();
	return NULL;
}

/* The length of an ES* signature, R || S (RFC 7518 3.4): exact, so one
 * signature has one spelling (a padded R and S verify alike). */
static size_t ecdsa_raw_len(const char *alg)
{
	if (strcmp(alg, "ES256") == 0)
		return 64;
	if (strcmp(alg, "ES384") == 0)
		return 96;
	if (strcmp(alg, "ES512") == 0)
		return 132;
	return 0;
}

/* ES* signatures are R || S; OpenSSL verifies DER. */
static unsigned char *ecdsa_der(const char *alg, const unsigned char *raw, size_t len,
                                size_t *der_len)
{
	if (len == 0 || len != ecdsa_raw_len(alg))
		return NULL;
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, (int)len / 2, NULL),
	       *s = BN_bin2bn(raw + len / 2, (int)len / 2, NULL);
	unsigned char *der = NULL;
	if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s) == 1) {
		r = s = NULL; /* owned by sig */
		int n = i2d_ECDSA_SIG(sig, &der);
		*der_len = n > 0 ? (size_t)n : 0;
		if (n <= 0)
			der = NULL;
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return der;
}

static bool signature_ok(const parts_t *p, const char *alg, EVP_PKEY *key)
{
	size_t sig_len = 0;
	unsigned char *sig = gw_b64url_decode(p->signature, p->signature_len, &sig_len);
	if (sig == NULL || sig_len == 0) {
		free(sig);
		return false;
	}
	const unsigned char *check = sig;
	size_t check_len = sig_len;
	unsigned char *der = NULL;
	if (alg[0] == 'E' && alg[1] == 'S') {
		der = ecdsa_der(alg, sig, sig_len, &check_len);
		check = der;
	}
	const EVP_MD *md = strcmp(alg, "EdDSA") == 0 ? NULL : digest_of(alg);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	bool ok = check != NULL && ctx != NULL && (md != NULL || strcmp(alg, "EdDSA") == 0) &&
	          EVP_DigestVerifyInit(ctx, &pctx, md, NULL, key) == 1;
	if (ok && alg[0] == 'P') /* PS*: RSA-PSS, salt as long as the digest */
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
	/* the signing input is the header and payload as sent, with their dot */
	size_t input_len = p->header_len + 1 + p->payload_len;
	ok = ok && EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)p->header,
	                            input_len) == 1;
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	free(sig);
	ERR_clear_error();
	return ok;
}

/* A JSON number of seconds as ms, or -1 when absent or not a number. */
static int64_t seconds_ms(json_t *claims, const char *name)
{
	json_t *v = json_object_get(claims, name);
	if (!json_is_number(v))
		return -1;
	double s = json_number_value(v);
	if (s < 0 || s > 1e11)
		return -1;
	return (int64_t)(s * 1000.0);
}

/* NULL when the token was issued to client_id: aud contains it and, with
 * several audiences, azp names it (OIDC Core 3.1.3.7); azp, when present,
 * must name it anyway. Else the reason. */
static const char *audience_check(json_t *claims, const char *client_id)
{
	json_t *aud = json_object_get(claims, "aud");
	json_t *azp_v = json_object_get(claims, "azp");
	const char *azp = json_string_value(azp_v);
	bool found = false;
	if (json_is_string(aud)) {
		found = strcmp(json_string_value(aud), client_id) == 0;
	} else if (json_is_array(aud)) {
		size_t i;
		json_t *a;
		json_array_foreach(aud, i, a)
		{
			if (!json_is_string(a))
				return "wrong audience";
			found = found || strcmp(json_string_value(a), client_id) == 0;
		}
	}
	if (!found)
		return "wrong audience";
	if (azp_v != NULL && (azp == NULL || strcmp(azp, client_id) != 0))
		return "wrong authorized party";
	if (json_is_array(aud) && json_array_size(aud) > 1 && azp == NULL)
		return "wrong audience"; /* which of them it is for is not said */
	return NULL;
}

/* Bounded, and text the gateway will read back from the certificate:
 * pol_claims_text_ok's rule (no C0 or C1 control, no DEL), so no value
 * signed here is one the gateway would ignore. */
static bool clean(const char *s, size_t max)
{
	size_t n = strlen(s);
	return n > 0 && n <= max && pol_claims_text_ok(s, n);
}

static const char *check_claims(json_t *c, const gw_id_token_rules_t *rules, int64_t now,
                                gw_id_token_t *out)
{
	const char *iss = json_string_value(json_object_get(c, "iss"));
	if (iss == NULL || strcmp(iss, rules->issuer) != 0)
		return "wrong issuer";
	const char *audience = audience_check(c, rules->client_id);
	if (audience != NULL)
		return audience;
	int64_t exp = seconds_ms(c, "exp"), iat = seconds_ms(c, "iat"), nbf = seconds_ms(c, "nbf");
	if (exp < 0 || iat < 0)
		return "malformed token";
	if (now >= exp + rules->leeway_ms)
		return "token expired";
	if (json_object_get(c, "nbf") != NULL && (nbf < 0 || nbf > now + rules->leeway_ms))
		return "token not yet valid";
	if (iat > now + rules->leeway_ms)
		return "token issued in the future";
	out->expires_ms = exp;
	out->replay_until_ms = exp + (int64_t)POL_OIDC_LEEWAY_MAX_MS;
	out->subject = json_string_value(json_object_get(c, "sub"));
	json_t *user = json_object_get(c, rules->user_claim);
	if (user == NULL || json_is_null(user))
		return "no user claim";
	if (!json_is_string(user) || !clean(json_string_value(user), MAX_CLAIM))
		return "user claim not a clean string";
	out->user = json_string_value(user);
	if (rules->require_email_verified && strcmp(rules->user_claim, "email") == 0 &&
	    json_object_get(c, "email_verified") != json_true())
		return "email not verified";
	json_t *groups = json_object_get(c, rules->groups_claim);
	if (groups != NULL && !json_is_null(groups)) {
		if (!json_is_array(groups) || json_array_size(groups) > MAX_GROUPS)
			return "groups not an array of strings";
		size_t i;
		json_t *g;
		json_array_foreach(groups, i, g)
		{
			if (!json_is_string(g) || !clean(json_string_value(g), MAX_GROUP))
				return "groups not an array of strings";
		}
		out->groups = groups;
	}
	return NULL;
}

gw_id_token_result_t gw_id_token_verify(const char *token, const gw_jwks_t *keys,
                                        const gw_id_token_rules_t *rules, int64_t now_ms,
                                        gw_id_token_t *out, const char **reason)
{
	memset(out, 0, sizeof(*out));
	parts_t p;
	if (!split(token, &p) || !read_header(&p, out->alg, out->kid)) {
		*reason = "malformed token";
		return GW_ID_TOKEN_REFUSED;
	}
	if (!allowed(rules, out->alg)) {
		*reason = "algorithm not allowed";
		return GW_ID_TOKEN_REFUSED;
	}
	EVP_PKEY *key =
	        keys != NULL ? gw_jwks_find(keys, out->kid[0] ? out->kid : NULL, out->alg) : NULL;
	if (key == NULL) {
		*reason = "unknown signing key";
		return GW_ID_TOKEN_UNKNOWN_KEY;
	}
	if (!signature_ok(&p, out->alg, key)) {
		*reason = "bad signature";
		return GW_ID_TOKEN_REFUSED;
	}
	out->signed_len = p.header_len + 1 + p.payload_len;
	out->claims = decode_json(p.payload, p.payload_len);
	if (out->claims == NULL) {
		*reason = "malformed token";
		return GW_ID_TOKEN_REFUSED;
	}
	*reason = check_claims(out->claims, rules, now_ms, out);
	return *reason == NULL ? GW_ID_TOKEN_OK : GW_ID_TOKEN_REFUSED;
}

void gw_id_token_finish(gw_id_token_t *t)
{
	json_decref(t->claims);
	memset(t, 0, sizeof(*t));
}
