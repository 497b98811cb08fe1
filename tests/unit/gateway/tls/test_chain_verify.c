/* gateway/tls/chain_verify.c on chains built here (root -> int -> leaf):
 * validity is inclusive of the notAfter second, a judging time (explain
 * --at) moves the clock-skew rule too, strict mode refuses RFC 5280
 * structure but lets a CA without keyUsage through, certgate's leaf policy
 * comes after the chain's defects, the three crl_check modes, and each
 * refusal names its certificate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/chain_verify.h"
#include "tls/x509_build.h"
#include "tls/x509_info.h"

#define DAY  86400
#define YEAR (365 * DAY)

typedef struct node {
	X509 *cert;
	EVP_PKEY *key;
} node_t;

typedef struct spec {
	bool ca;
	bool no_key_usage;
	int64_t start, ttl; /* seconds from now; 0/0: the profile's */
	const char *serial_hex;
} spec_t;

static time_t now;

static const gw_verify_limits_t limits = {
        .max_lifetime_ms = 24 * 3600 * 1000ULL,
        .clock_skew_ms = 30 * 1000,
        .depth = 4,
        .security_level = 2,
        .crl_check = GW_CRL_OFF,
};

static node_t issue(const char *cn, const node_t *issuer, spec_t s)
{
	node_t n = {.key = gw_x509_key_new(0)};
	assert_non_null(n.key);
	X509_NAME *name = X509_NAME_new();
	assert_true(gw_x509_name_add(name, NID_commonName, cn));
	int64_t start = s.start, ttl = s.ttl;
	if (start == 0 && ttl == 0) {
		start = s.ca ? -DAY : -60;
		ttl = s.ca ? (issuer ? 5 : 10) * YEAR : 3600;
	}
	X509V3_CTX ctx;
	n.cert = gw_x509_cert_new(name, issuer ? issuer->cert : NULL, n.key, now, start, ttl, &ctx);
	X509_NAME_free(name);
	assert_non_null(n.cert);
	if (s.ca) {
		assert_true(
		        gw_x509_add_ext(&ctx, n.cert, NID_basic_constraints, "critical,CA:TRUE"));
		if (!s.no_key_usage)
			assert_true(gw_x509_add_ext(&ctx, n.cert, NID_key_usage,
			                            "critical,keyCertSign,cRLSign"));
	} else {
		assert_true(
		        gw_x509_add_ext(&ctx, n.cert, NID_basic_constraints, "critical,CA:FALSE"));
		assert_true(
		        gw_x509_add_ext(&ctx, n.cert, NID_key_usage, "critical,digitalSignature"));
		assert_true(gw_x509_add_ext(&ctx, n.cert, NID_ext_key_usage, "clientAuth"));
		assert_true(gw_x509_add_ext(&ctx, n.cert, NID_subject_alt_name,
		                            "email:alice@example.com"));
	}
	if (s.serial_hex != NULL) {
		BIGNUM *bn = NULL;
		assert_true(BN_hex2bn(&bn, s.serial_hex) > 0);
		ASN1_INTEGER *sn = BN_to_ASN1_INTEGER(bn, NULL);
		assert_int_equal(X509_set_serialNumber(n.cert, sn), 1);
		ASN1_INTEGER_free(sn);
		BN_free(bn);
	}
	assert_true(X509_sign(n.cert, issuer ? issuer->key : n.key, EVP_sha256()) > 0);
	return n;
}

static void node_free(node_t *n)
{
	X509_free(n->cert);
	EVP_PKEY_free(n->key);
}

/* A CRL from issuer listing revoked (may be NULL), valid an hour ago to a
 * week ahead. */
static X509_CRL *crl(const node_t *issuer, X509 *revoked)
{
	X509_CRL *c = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	assert_non_null(c);
	assert_non_null(t);
	assert_int_equal(X509_CRL_set_version(c, 1), 1);
	assert_int_equal(X509_CRL_set_issuer_name(c, X509_get_subject_name(issuer->cert)), 1);
	assert_true(gw_x509_set_time(t, now, -3600));
	assert_int_equal(X509_CRL_set1_lastUpdate(c, t), 1);
	assert_true(gw_x509_set_time(t, now, 7 * DAY));
	assert_int_equal(X509_CRL_set1_nextUpdate(c, t), 1);
	if (revoked != NULL) {
		X509_REVOKED *r = X509_REVOKED_new();
		ASN1_INTEGER *sn = ASN1_INTEGER_dup(X509_get0_serialNumber(revoked));
		assert_true(gw_x509_set_time(t, now, -3600));
		assert_int_equal(X509_REVOKED_set_serialNumber(r, sn), 1);
		assert_int_equal(X509_REVOKED_set_revocationDate(r, t), 1);
		assert_int_equal(X509_CRL_add0_revoked(c, r), 1);
		ASN1_INTEGER_free(sn);
	}
	ASN1_TIME_free(t);
	assert_true(X509_CRL_sign(c, issuer->key, EVP_sha256()) > 0);
	return c;
}

/* Verifies leaf + int against a store holding root and crls (NULL-ended). */
static const char *verify(const node_t *root, const node_t *in, const node_t *leaf,
                          gw_crl_check_t mode, int64_t at_s, X509_CRL **crls, gw_refusal_t *out)
{
	X509_STORE *store = X509_STORE_new();
	assert_non_null(store);
	assert_int_equal(X509_STORE_add_cert(store, root->cert), 1);
	for (size_t i = 0; crls != NULL && crls[i] != NULL; i++)
		assert_int_equal(X509_STORE_add_crl(store, crls[i]), 1);
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	sk_X509_push(untrusted, in->cert);
	gw_verify_limits_t lim = limits;
	lim.crl_check = mode;
	const char *why = gw_chain_verify(store, &lim, leaf->cert, untrusted, at_s, out);
	sk_X509_free(untrusted);
	X509_STORE_free(store);
	return why;
}

static void assert_refused(const char *why, const gw_refusal_t *r, const char *reason,
                           const char *detail)
{
	if (why == NULL)
		fail_msg("accepted, expected %s", reason);
	assert_string_equal(why, reason);
	assert_string_equal(r->reason, reason);
	if (detail == NULL)
		assert_null(r->detail);
	else
		assert_string_equal(r->detail, detail);
}

static void test_validity_inclusive(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t leaf = issue("leaf", &in, (spec_t){0});
	int64_t not_after = gw_cert_not_after_ms(leaf.cert) / 1000;
	gw_refusal_t r = {0};
	assert_null(verify(&root, &in, &leaf, GW_CRL_OFF, 0, NULL, &r));
	assert_null(r.reason);
	/* the very second of notAfter is valid; the next one is not */
	assert_null(verify(&root, &in, &leaf, GW_CRL_OFF, not_after, NULL, &r));
	assert_null(r.reason);
	assert_refused(verify(&root, &in, &leaf, GW_CRL_OFF, not_after + 1, NULL, &r), &r,
	               "certificate expired", "CN=leaf");
	gw_refusal_finish(&r);
	assert_null(r.detail);
	/* the same for a CA of the path */
	int64_t int_not_after = gw_cert_not_after_ms(in.cert) / 1000;
	node_t late = issue("late leaf", &in, (spec_t){.start = 5 * YEAR - DAY, .ttl = 3600});
	assert_null(verify(&root, &in, &late, GW_CRL_OFF, int_not_after, NULL, NULL));
	assert_refused(verify(&root, &in, &late, GW_CRL_OFF, int_not_after + 1, NULL, &r), &r,
	               "certificate expired", "CN=int");
	gw_refusal_finish(&r);
	assert_int_equal(gw_valid_until_ms(1000), 2000);
	node_free(&late);
	node_free(&leaf);
	node_free(&in);
	node_free(&root);
}

static void test_clock_skew_at_the_judging_time(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t leaf = issue("leaf", &in, (spec_t){0});
	int64_t not_before = now - 60;
	gw_refusal_t r = {0};
	assert_null(verify(&root, &in, &leaf, GW_CRL_OFF, not_before - 30, NULL, &r));
	assert_refused(verify(&root, &in, &leaf, GW_CRL_OFF, not_before - 31, NULL, &r), &r,
	               "certificate not yet valid", "CN=leaf");
	gw_refusal_finish(&r);
	node_free(&leaf);
	node_free(&in);
	node_free(&root);
}

static void test_strict_structure(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	/* legal: a CA without keyUsage (X509_V_FLAG_X509_STRICT alone refuses it) */
	node_t bare = issue("bare int", &root, (spec_t){.ca = true, .no_key_usage = true});
	node_t leaf = issue("leaf", &bare, (spec_t){0});
	gw_refusal_t r = {0};
	assert_null(verify(&root, &bare, &leaf, GW_CRL_OFF, 0, NULL, &r));
	assert_null(r.reason);
	/* a CA without subjectKeyIdentifier: re-signed without it */
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t leaf2 = issue("leaf", &in, (spec_t){0});
	X509_EXTENSION_free(X509_delete_ext(
	        in.cert, X509_get_ext_by_NID(in.cert, NID_subject_key_identifier, -1)));
	assert_true(X509_sign(in.cert, root.key, EVP_sha256()) > 0);
	assert_refused(verify(&root, &in, &leaf2, GW_CRL_OFF, 0, NULL, &r), &r,
	               "certificate malformed: ca without subject key identifier", "CN=int");
	gw_refusal_finish(&r);
	node_free(&leaf2);
	node_free(&in);
	node_free(&leaf);
	node_free(&bare);
	node_free(&root);
}

static void test_leaf_policy_comes_last(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t long_lived = issue("long", &in, (spec_t){.start = -60, .ttl = 10 * DAY});
	node_t both =
	        issue("both", &in, (spec_t){.start = -60, .ttl = 10 * DAY, .serial_hex = "0"});
	gw_refusal_t r = {0};
	assert_refused(verify(&root, &in, &long_lived, GW_CRL_OFF, 0, NULL, &r), &r,
	               "lifetime exceeds max_cert_lifetime", "CN=long");
	gw_refusal_finish(&r);
	/* a structural defect and a long lifetime: the defect is named */
	assert_refused(verify(&root, &in, &both, GW_CRL_OFF, 0, NULL, &r), &r,
	               "certificate malformed: serial number zero", "CN=both");
	gw_refusal_finish(&r);
	/* ... and a revoked intermediate before either */
	X509_CRL *crls[] = {crl(&root, in.cert), crl(&in, NULL), NULL};
	assert_refused(verify(&root, &in, &both, GW_CRL_CHAIN, 0, crls, &r), &r,
	               "certificate revoked", "CN=int");
	gw_refusal_finish(&r);
	X509_CRL_free(crls[0]);
	X509_CRL_free(crls[1]);
	node_free(&both);
	node_free(&long_lived);
	node_free(&in);
	node_free(&root);
}

static void test_crl_check_modes(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t leaf = issue("leaf", &in, (spec_t){0});
	gw_refusal_t r = {0};

	/* the root revokes the intermediate; the intermediate's CRL is empty */
	X509_CRL *revoking[] = {crl(&root, in.cert), crl(&in, NULL), NULL};
	assert_refused(verify(&root, &in, &leaf, GW_CRL_CHAIN, 0, revoking, &r), &r,
	               "certificate revoked", "CN=int");
	gw_refusal_finish(&r);
	assert_refused(verify(&root, &in, &leaf, GW_CRL_ALL, 0, revoking, &r), &r,
	               "certificate revoked", "CN=int");
	gw_refusal_finish(&r);
	assert_null(verify(&root, &in, &leaf, GW_CRL_LEAF, 0, revoking, NULL));

	/* only the root's CRL, nothing revoked: chain checks where a CRL is */
	X509_CRL *root_only[] = {crl(&root, NULL), NULL};
	assert_null(verify(&root, &in, &leaf, GW_CRL_CHAIN, 0, root_only, NULL));
	assert_refused(verify(&root, &in, &leaf, GW_CRL_LEAF, 0, root_only, &r), &r,
	               "crl unavailable for this ca", "CN=int");
	gw_refusal_finish(&r);
	assert_refused(verify(&root, &in, &leaf, GW_CRL_ALL, 0, root_only, &r), &r,
	               "crl unavailable for this ca", "CN=int");
	gw_refusal_finish(&r);

	/* only the intermediate's CRL, listing the leaf: every mode checks the
	 * leaf first */
	X509_CRL *int_only[] = {crl(&in, leaf.cert), NULL};
	for (gw_crl_check_t mode = GW_CRL_LEAF; mode <= GW_CRL_ALL; mode++) {
		assert_refused(verify(&root, &in, &leaf, mode, 0, int_only, &r), &r,
		               "certificate revoked", "CN=leaf");
		gw_refusal_finish(&r);
	}
	/* off: nothing is checked */
	assert_null(verify(&root, &in, &leaf, GW_CRL_OFF, 0, int_only, NULL));

	/* only the intermediate's CRL, empty: all wants one from the root for
	 * the intermediate, and names the root */
	X509_CRL *int_empty[] = {crl(&in, NULL), NULL};
	assert_null(verify(&root, &in, &leaf, GW_CRL_LEAF, 0, int_empty, NULL));
	assert_null(verify(&root, &in, &leaf, GW_CRL_CHAIN, 0, int_empty, NULL));
	assert_refused(verify(&root, &in, &leaf, GW_CRL_ALL, 0, int_empty, &r), &r,
	               "crl unavailable for this ca", "CN=root");
	gw_refusal_finish(&r);

	X509_CRL *all[] = {revoking[0], revoking[1], root_only[0], int_only[0], int_empty[0]};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		X509_CRL_free(all[i]);
	node_free(&leaf);
	node_free(&in);
	node_free(&root);
}

static void test_unknown_ca_names_the_ca(void **state)
{
	(void)state;
	node_t root = issue("root", NULL, (spec_t){.ca = true});
	node_t other = issue("other root", NULL, (spec_t){.ca = true});
	node_t in = issue("int", &root, (spec_t){.ca = true});
	node_t leaf = issue("leaf", &in, (spec_t){0});
	gw_refusal_t r = {0};
	assert_refused(verify(&other, &in, &leaf, GW_CRL_OFF, 0, NULL, &r), &r, "unknown ca",
	               "CN=root");
	gw_refusal_finish(&r);
	node_free(&leaf);
	node_free(&in);
	node_free(&other);
	node_free(&root);
}

static void test_reasons(void **state)
{
	(void)state;
	static const struct {
		int err;
		const char *reason;
	} table[] = {
	        {X509_V_ERR_PERMITTED_VIOLATION, "name constraints violated"},
	        {X509_V_ERR_EXCLUDED_VIOLATION, "name constraints violated"},
	        {X509_V_ERR_UNSUPPORTED_NAME_SYNTAX, "name constraints unsupported"},
	        {X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER,
	         "certificate malformed: missing authority key identifier"},
	        {X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER,
	         "certificate malformed: ca without subject key identifier"},
	        {X509_V_ERR_CA_BCONS_NOT_CRITICAL,
	         "certificate malformed: basic constraints not critical"},
	        {X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA,
	         "certificate malformed: leaf asserts keyCertSign"},
	        {X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL,
	         "certificate malformed: empty subject with non-critical subjectAltName"},
	        {X509_V_ERR_INVALID_EXTENSION, "certificate malformed: invalid extension"},
	        {X509_V_ERR_CERT_REVOKED, "certificate revoked"},
	        {X509_V_ERR_UNABLE_TO_GET_CRL, "crl unavailable for this ca"},
	        {X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION, "unhandled critical extension"},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		assert_string_equal(gw_verify_reason(table[i].err), table[i].reason);
}

int main(void)
{
	now = time(NULL);
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_validity_inclusive),
	        cmocka_unit_test(test_clock_skew_at_the_judging_time),
	        cmocka_unit_test(test_strict_structure),
	        cmocka_unit_test(test_leaf_policy_comes_last),
	        cmocka_unit_test(test_crl_check_modes),
	        cmocka_unit_test(test_unknown_ca_names_the_ca),
	        cmocka_unit_test(test_reasons),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
