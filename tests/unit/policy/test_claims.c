/* pol_claims: compiling claim maps and reading claims out of real X509
 * certificates built here with OpenSSL (no key or certificate is kept in the
 * tree). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cg_json.h"
#include "pol_claims.h"

#define OID_EXT_USER "1.3.6.1.4.1.99999.1"
#define OID_EXT_CRIT "1.3.6.1.4.1.99999.2"
#define OID_EXT_BAD  "1.3.6.1.4.1.99999.3"
#define OID_EXT_TAIL "1.3.6.1.4.1.99999.4"
#define OID_EXT_INT  "1.3.6.1.4.1.99999.5"

static EVP_PKEY *key;

static int group_setup(void **state)
{
	(void)state;
	key = EVP_EC_gen("P-256");
	return key ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(key);
	return 0;
}

/* ---- certificate building ---- */

typedef struct san {
	int type; /* GEN_EMAIL, GEN_DNS, GEN_URI */
	const char *value;
	size_t len; /* 0: strlen(value) */
} san_t;

typedef struct subj {
	const char *attr;
	const char *value;
	size_t len; /* 0: strlen */
} subj_t;

static X509 *cert_new(void)
{
	X509 *cert = X509_new();
	assert_non_null(cert);
	assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), 42), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(cert), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(cert), 900));
	assert_int_equal(X509_set_pubkey(cert, key), 1);
	return cert;
}

static void add_subject(X509 *cert, const subj_t *entries, size_t n)
{
	X509_NAME *name = X509_get_subject_name(cert);
	for (size_t i = 0; i < n; i++) {
		int len = entries[i].len ? (int)entries[i].len : -1;
		assert_int_equal(X509_NAME_add_entry_by_txt(name, entries[i].attr, MBSTRING_UTF8,
		                                            (const unsigned char *)entries[i].value,
		                                            len, -1, 0),
		                 1);
	}
	assert_int_equal(X509_set_issuer_name(cert, name), 1);
}

static void add_san(X509 *cert, const san_t *sans, size_t n)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	assert_non_null(names);
	for (size_t i = 0; i < n; i++) {
		GENERAL_NAME *gn = GENERAL_NAME_new();
		ASN1_IA5STRING *str = ASN1_IA5STRING_new();
		size_t len = sans[i].len ? sans[i].len : strlen(sans[i].value);
		assert_non_null(gn);
		assert_non_null(str);
		assert_int_equal(ASN1_STRING_set(str, sans[i].value, (int)len), 1);
		GENERAL_NAME_set0_value(gn, sans[i].type, str);
		assert_true(sk_GENERAL_NAME_push(names, gn) > 0);
	}
	assert_int_equal(
	        X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT), 1);
	GENERAL_NAMES_free(names);
}

/* An extension whose value is the DER of a UTF8String holding bytes. */
static void add_utf8_ext(X509 *cert, const char *oid, const char *bytes, size_t len, int critical)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	ASN1_UTF8STRING *utf8 = ASN1_UTF8STRING_new();
	ASN1_OCTET_STRING *oct = ASN1_OCTET_STRING_new();
	unsigned char *der = NULL;
	int der_len;
	X509_EXTENSION *ext;

	assert_non_null(obj);
	assert_non_null(utf8);
	assert_non_null(oct);
	assert_int_equal(ASN1_STRING_set(utf8, bytes, (int)len), 1);
	der_len = i2d_ASN1_UTF8STRING(utf8, &der);
	assert_true(der_len > 0);
	assert_int_equal(ASN1_OCTET_STRING_set(oct, der, der_len), 1);
	ext = X509_EXTENSION_create_by_OBJ(NULL, obj, critical, oct);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
	OPENSSL_free(der);
	ASN1_OCTET_STRING_free(oct);
	ASN1_UTF8STRING_free(utf8);
	ASN1_OBJECT_free(obj);
}

/* An extension with these exact DER bytes as its value. */
static void add_raw_ext(X509 *cert, const char *oid, const unsigned char *der, size_t len)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
	ASN1_OCTET_STRING *oct = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext;

	assert_non_null(obj);
	assert_non_null(oct);
	assert_int_equal(ASN1_OCTET_STRING_set(oct, der, (int)len), 1);
	ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, oct);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(oct);
	ASN1_OBJECT_free(obj);
}

static X509 *cert_sign(X509 *cert)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	int len;
	X509 *copy;

	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	/* round-trip through DER, as a peer certificate would arrive */
	len = i2d_X509(cert, &der);
	assert_true(len > 0);
	p = der;
	copy = d2i_X509(NULL, &p, len);
	assert_non_null(copy);
	OPENSSL_free(der);
	X509_free(cert);
	return copy;
}

/* The certificate `certgate ca issue` would write, plus extras. */
static X509 *full_cert(void)
{
	static const subj_t subject[] = {
	        {"CN", "alice", 0}, {"OU", "dba", 0}, {"O", "Example", 0}, {"OU", "analysts", 0}};
	static const san_t sans[] = {
	        {GEN_DNS, "alice-laptop.example.com", 0},
	        {GEN_EMAIL, "alice@example.com", 0},
	        {GEN_URI, "urn:certgate:device:dev-1", 0},
	        {GEN_URI, "https://example.com/alice", 0},
	        {GEN_URI, "urn:certgate:trust:high", 0},
	        {GEN_DNS, "alice.example.com", 0},
	        {GEN_EMAIL, "alice2@example.com", 0},
	};
	X509 *cert = cert_new();
	add_subject(cert, subject, 4);
	add_san(cert, sans, 7);
	add_utf8_ext(cert, OID_EXT_USER, "alice-from-ext", 14, 0);
	add_utf8_ext(cert, OID_EXT_CRIT, "critical-user", 13, 1);
	return cert_sign(cert);
}

/* ---- claim maps ---- */

typedef struct map_fixture {
	pol_claims_map_t map;
	cg_jdoc_t *doc;
} map_fixture_t;

static void compile_ok(map_fixture_t *f, const char *json)
{
	cg_errors_t errs;
	cg_errors_init(&errs);
	f->doc = NULL;
	if (json) {
		f->doc = cg_jdoc_parse("claims.json", json, strlen(json), &errs);
		assert_non_null(f->doc);
	}
	assert_true(pol_claims_map_compile(
	        &f->map, f->doc, f->doc ? json_object_get(cg_jdoc_root(f->doc), "claims") : NULL,
	        &errs));
	assert_int_equal(errs.count, 0);
	cg_errors_finish(&errs);
}

static void map_done(map_fixture_t *f)
{
	pol_claims_map_finish(&f->map);
	cg_jdoc_destroy(f->doc);
}

static void extract_ok(const pol_claims_map_t *map, X509 *cert, pol_claims_t *out)
{
	assert_true(pol_claims_extract(map, cert, out));
}

static void test_default_map(void **state)
{
	map_fixture_t f;
	pol_claims_t c;
	X509 *cert = full_cert();
	(void)state;

	compile_ok(&f, NULL);
	assert_int_equal(f.map.user.count, 2);
	assert_int_equal(f.map.user.items[0].kind, POL_SRC_SAN_EMAIL);
	assert_int_equal(f.map.user.items[1].kind, POL_SRC_SUBJECT);
	assert_string_equal(f.map.user.items[1].arg, "CN");
	assert_int_equal(f.map.device_id.items[0].kind, POL_SRC_SAN_URI);
	assert_string_equal(f.map.device_id.items[0].arg, "urn:certgate:device:");

	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "alice@example.com"); /* first SAN email */
	assert_int_equal(c.n_groups, 2);                  /* all OUs, subject order */
	assert_string_equal(c.groups[0], "dba");
	assert_string_equal(c.groups[1], "analysts");
	assert_string_equal(c.device_id, "dev-1");
	assert_int_equal(c.device_trust, POL_TRUST_HIGH);
	pol_claims_finish(&c);
	X509_free(cert);
	map_done(&f);
}

static void test_custom_map(void **state)
{
	map_fixture_t f;
	pol_claims_t c;
	X509 *cert = full_cert();
	(void)state;

	compile_ok(&f, "{ \"claims\": {\n"
	               "  \"user\": [\"ext:" OID_EXT_USER "\", \"san:email\"],\n"
	               "  \"groups\": [\"subject:O\", \"subject:OU\"],\n"
	               "  \"device_id\": [\"san:dns\"],\n"
	               "  \"device_trust\": [\"subject:2.5.4.3\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "alice-from-ext");
	/* groups: all values of the first source present (O), not OU's */
	assert_int_equal(c.n_groups, 1);
	assert_string_equal(c.groups[0], "Example");
	assert_string_equal(c.device_id, "alice-laptop.example.com");
	/* CN "alice" is no trust level: fail closed */
	assert_int_equal(c.device_trust, POL_TRUST_ALWAYS_DENY);
	pol_claims_finish(&c);
	map_done(&f);

	/* a critical extension is never read; the next source wins */
	compile_ok(&f, "{ \"claims\": { \"user\": [\"ext:" OID_EXT_CRIT "\", \"subject:CN\"],\n"
	               "  \"groups\": [\"san:dns\"], \"device_id\": [\"san:uri:https://\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "alice");
	assert_int_equal(c.n_groups, 2); /* all matching SANs */
	assert_string_equal(c.groups[0], "alice-laptop.example.com");
	assert_string_equal(c.groups[1], "alice.example.com");
	assert_string_equal(c.device_id, "example.com/alice");
	assert_int_equal(c.device_trust, POL_TRUST_HIGH); /* default source */
	pol_claims_finish(&c);
	map_done(&f);

	/* sources that match nothing: claims absent */
	compile_ok(&f, "{ \"claims\": { \"user\": [\"ext:1.2.3.4\", \"subject:L\"],\n"
	               "  \"groups\": [\"subject:title\"], \"device_id\": [\"san:uri:urn:x:\"],\n"
	               "  \"device_trust\": [\"san:uri:urn:nothing:\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_null(c.user);
	assert_int_equal(c.n_groups, 0);
	assert_null(c.groups);
	assert_null(c.device_id);
	assert_int_equal(c.device_trust, POL_TRUST_NONE);
	pol_claims_finish(&c);
	map_done(&f);
	X509_free(cert);
}

/* The first source that yields a value wins, in the configured order. */
static void test_first_present_wins(void **state)
{
	static const subj_t subject[] = {{"CN", "bob", 0}, {"OU", "ops", 0}};
	static const san_t sans[] = {{GEN_DNS, "bob.example.com", 0}};
	map_fixture_t f;
	pol_claims_t c;
	X509 *cert = cert_new();
	(void)state;

	add_subject(cert, subject, 2);
	add_san(cert, sans, 1);
	cert = cert_sign(cert);
	compile_ok(&f, NULL);
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "bob"); /* no SAN email: subject CN */
	assert_int_equal(c.n_groups, 1);
	assert_null(c.device_id);
	assert_int_equal(c.device_trust, POL_TRUST_NONE); /* absent */
	pol_claims_finish(&c);
	map_done(&f);

	compile_ok(&f, "{ \"claims\": { \"user\": [\"san:dns\", \"subject:CN\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "bob.example.com");
	pol_claims_finish(&c);
	map_done(&f);
	X509_free(cert);
}

static pol_trust_t trust_of(const char *uri)
{
	san_t sans[] = {{GEN_EMAIL, "t@example.com", 0}, {GEN_URI, uri, 0}};
	map_fixture_t f;
	pol_claims_t c;
	pol_trust_t t;
	X509 *cert = cert_new();

	add_san(cert, sans, 2);
	cert = cert_sign(cert);
	compile_ok(&f, NULL);
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "t@example.com");
	t = c.device_trust;
	pol_claims_finish(&c);
	map_done(&f);
	X509_free(cert);
	return t;
}

static void test_trust_levels(void **state)
{
	(void)state;
	assert_int_equal(trust_of("urn:certgate:trust:always_deny"), POL_TRUST_ALWAYS_DENY);
	assert_int_equal(trust_of("urn:certgate:trust:low"), POL_TRUST_LOW);
	assert_int_equal(trust_of("urn:certgate:trust:medium"), POL_TRUST_MEDIUM);
	assert_int_equal(trust_of("urn:certgate:trust:high"), POL_TRUST_HIGH);
	/* unknown levels fail closed */
	assert_int_equal(trust_of("urn:certgate:trust:HIGH"), POL_TRUST_ALWAYS_DENY);
	assert_int_equal(trust_of("urn:certgate:trust:superhigh"), POL_TRUST_ALWAYS_DENY);
	assert_int_equal(trust_of("urn:certgate:trust:high%00"), POL_TRUST_ALWAYS_DENY);
	/* an empty level is present but meaningless: fail closed too */
	assert_int_equal(trust_of("urn:certgate:trust:"), POL_TRUST_ALWAYS_DENY);
	/* no trust URI at all */
	assert_int_equal(trust_of("urn:certgate:device:d"), POL_TRUST_NONE);
}

/* Values with an embedded NUL, control characters, bad UTF-8, or too long
 * are treated as absent: the next value or source is used. */
static void test_bad_values_absent(void **state)
{
	static const subj_t subject[] = {
	        {"CN", "mallory", 0}, {"OU", "ops\nadmin", 0}, {"OU", "dev", 0}};
	static const san_t sans[] = {
	        {GEN_EMAIL, "admin@example.com\0@evil.example", 32},
	        {GEN_URI, "urn:certgate:device:d\x01", 0},
	        {GEN_URI, "urn:certgate:device:dev-9", 0},
	        {GEN_URI, "urn:certgate:trust:hi\0gh", 24},
	};
	char longval[1100];
	map_fixture_t f;
	pol_claims_t c;
	X509 *cert = cert_new();
	(void)state;

	add_subject(cert, subject, 3);
	add_san(cert, sans, 4);
	memset(longval, 'a', sizeof(longval));
	add_utf8_ext(cert, OID_EXT_USER, longval, sizeof(longval), 0);
	add_utf8_ext(cert, OID_EXT_BAD, "\xc3\x28 bad utf8", 11, 0);
	{
		/* a UTF8String followed by stray bytes; an INTEGER */
		static const unsigned char tail[] = {0x0c, 0x03, 'e', 'v', 'e', 0x00};
		static const unsigned char integer[] = {0x02, 0x01, 0x05};
		add_raw_ext(cert, OID_EXT_TAIL, tail, sizeof(tail));
		add_raw_ext(cert, OID_EXT_INT, integer, sizeof(integer));
	}
	cert = cert_sign(cert);

	compile_ok(&f, NULL);
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "mallory"); /* the email with a NUL is absent */
	assert_int_equal(c.n_groups, 1);        /* "ops\nadmin" is absent */
	assert_string_equal(c.groups[0], "dev");
	assert_string_equal(c.device_id, "dev-9");
	assert_int_equal(c.device_trust, POL_TRUST_ALWAYS_DENY);
	pol_claims_finish(&c);
	map_done(&f);

	compile_ok(&f, "{ \"claims\": { \"user\": [\"ext:" OID_EXT_USER "\", \"ext:" OID_EXT_BAD
	               "\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_null(c.user); /* too long, then invalid UTF-8 */
	pol_claims_finish(&c);
	map_done(&f);

	compile_ok(&f, "{ \"claims\": { \"user\": [\"ext:" OID_EXT_TAIL "\", \"ext:" OID_EXT_INT
	               "\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_null(c.user); /* trailing bytes, then not a UTF8String */
	pol_claims_finish(&c);
	map_done(&f);
	X509_free(cert);

	/* a subject CN with an embedded NUL and nothing else: no user */
	{
		static const subj_t nul_cn[] = {{"CN", "alice\0bob", 9}};
		cert = cert_new();
		add_subject(cert, nul_cn, 1);
		cert = cert_sign(cert);
		compile_ok(&f, NULL);
		extract_ok(&f.map, cert, &c);
		assert_null(c.user);
		pol_claims_finish(&c);
		map_done(&f);
		X509_free(cert);
	}
}

/* The claim grammar on its own (the admin API checks device ids with it). */
static void test_text_ok(void **state)
{
	char exact[POL_CLAIM_MAX_LEN + 1];
	(void)state;
	assert_true(pol_claims_text_ok("laptop-1", 8));
	assert_true(pol_claims_text_ok("a/b", 3));
	assert_true(pol_claims_text_ok("Zo\xc3\xab", 4));
	assert_true(pol_claims_text_ok("\xf0\x9f\x94\x92", 4)); /* U+1F512 */
	assert_false(pol_claims_text_ok("", 0));
	assert_false(pol_claims_text_ok(NULL, 0));
	assert_false(pol_claims_text_ok("\xff", 1));
	assert_false(pol_claims_text_ok("a\0b", 3));
	assert_false(pol_claims_text_ok("a\nb", 3));
	assert_false(pol_claims_text_ok("a\x7f", 2));
	assert_false(pol_claims_text_ok("\xc2\x85", 2));         /* C1 control NEL */
	assert_false(pol_claims_text_ok("\xc0\xaf", 2));         /* overlong '/' */
	assert_false(pol_claims_text_ok("\xed\xa0\x80", 3));     /* surrogate */
	assert_false(pol_claims_text_ok("\xf4\x90\x80\x80", 4)); /* over U+10FFFF */
	assert_false(pol_claims_text_ok("\xe2\x82", 2));         /* truncated */
	memset(exact, 'x', sizeof(exact));
	assert_true(pol_claims_text_ok(exact, POL_CLAIM_MAX_LEN));
	assert_false(pol_claims_text_ok(exact, POL_CLAIM_MAX_LEN + 1));
}

/* UTF-8 is fine when it is valid; 1024 bytes is the longest value. */
static void test_utf8_and_length(void **state)
{
	static const subj_t subject[] = {{"CN", "Zoë Ångström", 0}};
	char exact[1024];
	map_fixture_t f;
	pol_claims_t c;
	X509 *cert = cert_new();
	(void)state;

	add_subject(cert, subject, 1);
	memset(exact, 'b', sizeof(exact));
	add_utf8_ext(cert, OID_EXT_USER, exact, sizeof(exact), 0);
	cert = cert_sign(cert);
	compile_ok(&f, NULL);
	extract_ok(&f.map, cert, &c);
	assert_string_equal(c.user, "Zoë Ångström");
	pol_claims_finish(&c);
	map_done(&f);

	compile_ok(&f, "{ \"claims\": { \"user\": [\"ext:" OID_EXT_USER "\"] } }");
	extract_ok(&f.map, cert, &c);
	assert_non_null(c.user);
	assert_int_equal(strlen(c.user), 1024);
	pol_claims_finish(&c);
	map_done(&f);
	X509_free(cert);
}

static void test_copy(void **state)
{
	map_fixture_t f;
	pol_claims_t c, d;
	X509 *cert = full_cert();
	(void)state;

	compile_ok(&f, NULL);
	extract_ok(&f.map, cert, &c);
	assert_true(pol_claims_copy(&d, &c));
	pol_claims_finish(&c);
	assert_string_equal(d.user, "alice@example.com");
	assert_int_equal(d.n_groups, 2);
	assert_string_equal(d.groups[1], "analysts");
	assert_string_equal(d.device_id, "dev-1");
	assert_int_equal(d.device_trust, POL_TRUST_HIGH);
	pol_claims_finish(&d);
	assert_null(d.user);

	/* empty claims copy to empty claims */
	memset(&c, 0, sizeof(c));
	c.device_trust = POL_TRUST_NONE;
	assert_true(pol_claims_copy(&d, &c));
	assert_null(d.user);
	assert_null(d.groups);
	assert_int_equal(d.device_trust, POL_TRUST_NONE);
	pol_claims_finish(&d);
	map_done(&f);
	X509_free(cert);
}

static void test_compile_errors(void **state)
{
	static const char json[] =
	        "{ \"claims\": {\n"                                                /* 1 */
	        "  \"user\": [\"san:mail\", \"subject:\", \"subject:NOPE\", 7],\n" /* 2 */
	        "  \"groups\": [],\n"                                              /* 3 */
	        "  \"device_id\": [\"san:uri:\", \"ext:CN\", \"ext:1.2.\"],\n"     /* 4 */
	        "  \"device_trust\": \"san:uri:urn:certgate:trust:\",\n"           /* 5 */
	        "  \"role\": [\"subject:OU\"] } }\n";                              /* 6 */
	const char *const expected[] = {
	        "claims.json:6:11: claims.role: unknown key (expected user, groups, device_id or "
	        "device_trust)",
	        "claims.json:2:12: claims.user[0]: unknown source (expected subject:ATTR, "
	        "san:email, san:dns, san:uri:PREFIX or ext:OID)",
	        "claims.json:2:24: claims.user[1]: expected a subject attribute after "
	        "\"subject:\" (CN, OU, O, ... or a dotted OID)",
	        "claims.json:2:36: claims.user[2]: unknown subject attribute (expected a short "
	        "name "
	        "like CN, OU, O or a dotted OID)",
	        "claims.json:2:52: claims.user[3]: expected a string",
	        "claims.json:3:13: claims.groups: expected a non-empty array of sources",
	        "claims.json:4:17: claims.device_id[0]: expected a URI prefix after \"san:uri:\"",
	        "claims.json:4:29: claims.device_id[1]: expected a dotted OID after \"ext:\" (like "
	        "1.3.6.1.4.1.99999.1)",
	        "claims.json:4:39: claims.device_id[2]: expected a dotted OID after \"ext:\" (like "
	        "1.3.6.1.4.1.99999.1)",
	        "claims.json:5:19: claims.device_trust: expected a non-empty array of sources",
	};
	const size_t n = sizeof(expected) / sizeof(expected[0]);
	cg_errors_t errs;
	cg_jdoc_t *doc;
	pol_claims_map_t map;
	size_t missing = 0;
	(void)state;

	cg_errors_init(&errs);
	doc = cg_jdoc_parse("claims.json", json, strlen(json), &errs);
	assert_non_null(doc);
	assert_false(pol_claims_map_compile(&map, doc, json_object_get(cg_jdoc_root(doc), "claims"),
	                                    &errs));
	for (size_t i = 0; i < n; i++) {
		bool found = false;
		for (size_t k = 0; k < errs.count && !found; k++)
			found = strcmp(errs.items[k], expected[i]) == 0;
		if (!found) {
			print_message("missing: %s\n", expected[i]);
			missing++;
		}
	}
	if (missing || errs.count != n)
		for (size_t k = 0; k < errs.count; k++)
			print_message("got: %s\n", errs.items[k]);
	assert_int_equal(missing, 0);
	assert_int_equal(errs.count, n);
	/* nothing is left allocated in map after a failed compile */
	assert_null(map.user.items);
	assert_null(map.device_id.items);
	pol_claims_map_finish(&map);
	cg_errors_finish(&errs);
	cg_jdoc_destroy(doc);
}

/* A reload re-reads live sessions' claims only when the map changed. */
static void test_map_equal(void **state)
{
	map_fixture_t a, b, c, d;
	(void)state;
	compile_ok(&a, NULL); /* the defaults */
	compile_ok(&b, "{ \"claims\": { \"user\": [\"san:email\", \"subject:CN\"] } }");
	compile_ok(&c, "{ \"claims\": { \"user\": [\"subject:CN\", \"san:email\"] } }");
	compile_ok(&d, "{ \"claims\": { \"groups\": [\"subject:O\"] } }");
	assert_true(pol_claims_map_equal(&a.map, &b.map));  /* spelled out, same as default */
	assert_false(pol_claims_map_equal(&a.map, &c.map)); /* order matters */
	assert_false(pol_claims_map_equal(&a.map, &d.map));
	assert_true(pol_claims_map_equal(&d.map, &d.map));
	map_done(&a);
	map_done(&b);
	map_done(&c);
	map_done(&d);
}

static void test_no_certificate(void **state)
{
	map_fixture_t f;
	pol_claims_t c;
	(void)state;
	compile_ok(&f, NULL);
	extract_ok(&f.map, NULL, &c);
	assert_null(c.user);
	assert_int_equal(c.device_trust, POL_TRUST_NONE);
	pol_claims_finish(&c);
	map_done(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_default_map),
	        cmocka_unit_test(test_custom_map),
	        cmocka_unit_test(test_first_present_wins),
	        cmocka_unit_test(test_trust_levels),
	        cmocka_unit_test(test_bad_values_absent),
	        cmocka_unit_test(test_utf8_and_length),
	        cmocka_unit_test(test_text_ok),
	        cmocka_unit_test(test_copy),
	        cmocka_unit_test(test_compile_errors),
	        cmocka_unit_test(test_map_equal),
	        cmocka_unit_test(test_no_certificate),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
