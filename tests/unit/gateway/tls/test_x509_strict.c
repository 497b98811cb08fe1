/* gateway/tls/x509_strict.c: the name syntax certgate accepts in a login
 * certificate's SANs (table-driven), and the serial number and extension
 * rules on certificates built here. */
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

#include "tls/x509_build.h"
#include "tls/x509_strict.h"

static const struct {
	const char *name;
	bool valid;
} emails[] = {
        {"alice@example.com", true},
        {"a@b", true},
        {"Alice.O'Neil+db@Mail-1.example.com", true},
        {"!#$%&'*+-/=?^_`{|}~@example.com", true},
        {"alice@localhost", true},
        {"", false},
        {"alice", false},
        {"@example.com", false},
        {"alice@", false},
        {"alice@@example.com", false},
        {"alice@bob@example.com", false},
        {".alice@example.com", false},
        {"alice.@example.com", false},
        {"al..ice@example.com", false},
        {"\"alice\"@example.com", false}, /* quoted local part */
        {"\"a@b\"@example.com", false},
        {"alice@[192.0.2.1]", false}, /* address literal */
        {"al ice@example.com", false},
        {"alice@example.com.", false},
        {"alice@.example.com", false},
        {"alice@exa_mple.com", false},
        {"alice@-example.com", false},
        {"alice@example-.com", false},
        {"al\xc3\xa9@example.com", false}, /* UTF-8: SmtpUTF8Mailbox is another SAN type */
        {"alice@ex\xc3\xa4mple.com", false},
        {"1234567890123456789012345678901234567890123456789012345678901234@example.com",
         true}, /* 64 octets */
        {"12345678901234567890123456789012345678901234567890123456789012345@example.com", false},
};

static const struct {
	const char *name;
	bool valid;
} dns_names[] = {
        {"db.example.com", true},
        {"DB-1.Example.COM", true},
        {"localhost", true},
        {"1.example", true},
        {"*.example.com", true},
        {"xn--bcher-kva.example", true},
        {"", false},
        {".example.com", false},
        {"example.com.", false},
        {"db..example.com", false},
        {"db_1.example.com", false},
        {"-db.example.com", false},
        {"db-.example.com", false},
        {"*", false},
        {"*.", false},
        {"**.example.com", false},
        {"db.*.example.com", false},
        {"d*.example.com", false},
        {"*.*.example.com", false},
        {"db example.com", false},
        {"db.example.com/x", false},
        {"b\xc3\xbc"
         "cher.example",
         false},
        {"123456789012345678901234567890123456789012345678901234567890123.example", true},
        {"1234567890123456789012345678901234567890123456789012345678901234.example", false},
};

static void test_rfc822_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(emails) / sizeof(emails[0]); i++) {
		bool got = gw_rfc822_name_valid(emails[i].name, strlen(emails[i].name));
		if (got != emails[i].valid)
			fail_msg("%s: expected %s", emails[i].name,
			         emails[i].valid ? "valid" : "invalid");
	}
	/* an embedded NUL is not the end of the name */
	assert_false(gw_rfc822_name_valid("alice@example.com\0.evil", 24));
	assert_false(gw_rfc822_name_valid(NULL, 0));
}

static void test_dns_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(dns_names) / sizeof(dns_names[0]); i++) {
		bool got = gw_dns_name_valid(dns_names[i].name, strlen(dns_names[i].name));
		if (got != dns_names[i].valid)
			fail_msg("%s: expected %s", dns_names[i].name,
			         dns_names[i].valid ? "valid" : "invalid");
	}
	assert_false(gw_dns_name_valid("db.example.com\0x", 16));
	/* no wildcard in a host name proper (the domain of an email) */
	assert_false(gw_host_name_valid("*.example.com", 13));
	/* 253 octets in all, no more */
	char name[300];
	memset(name, 'a', sizeof(name));
	for (size_t i = 63; i < sizeof(name); i += 64)
		name[i] = '.';
	assert_true(gw_host_name_valid(name, 253));
	assert_false(gw_host_name_valid(name, 254));
}

/* A leaf as the corpus makes them, with what the test changes. */
static X509 *leaf(const char *serial_hex, const char *san, bool twice)
{
	EVP_PKEY *key = gw_x509_key_new(0);
	X509_NAME *name = X509_NAME_new();
	assert_true(gw_x509_name_add(name, NID_commonName, "strict"));
	X509V3_CTX ctx;
	X509 *x = gw_x509_cert_new(name, NULL, key, time(NULL), -60, 3600, &ctx);
	X509_NAME_free(name);
	assert_non_null(x);
	if (serial_hex != NULL) {
		BIGNUM *bn = NULL;
		assert_true(BN_hex2bn(&bn, serial_hex) > 0);
		ASN1_INTEGER *sn = BN_to_ASN1_INTEGER(bn, NULL);
		assert_non_null(sn);
		assert_int_equal(X509_set_serialNumber(x, sn), 1);
		ASN1_INTEGER_free(sn);
		BN_free(bn);
	}
	assert_true(gw_x509_add_ext(&ctx, x, NID_basic_constraints, "critical,CA:FALSE"));
	if (san != NULL)
		assert_true(gw_x509_add_ext(&ctx, x, NID_subject_alt_name, san));
	for (int i = 0; i < (twice ? 2 : 1); i++)
		assert_true(gw_x509_add_ext(&ctx, x, NID_info_access,
		                            "caIssuers;URI:http://ca.example/ca.crt"));
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	EVP_PKEY_free(key);
	return x;
}

static void test_serial_numbers(void **state)
{
	(void)state;
	static const struct {
		const char *hex;
		const char *why;
	} serials[] = {
	        {"1", NULL},
	        {"0", "certificate malformed: serial number zero"},
	        {"-4D2", "certificate malformed: serial number negative"},
	        /* 20 content octets: 0x7F then 19 more */
	        {"7FA5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5", NULL},
	        /* 20 octets of magnitude with the top bit set: 21 in DER */
	        {"80A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5",
	         "certificate malformed: serial number longer than 20 octets"},
	        {"015A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A",
	         "certificate malformed: serial number longer than 20 octets"},
	};
	for (size_t i = 0; i < sizeof(serials) / sizeof(serials[0]); i++) {
		X509 *x = leaf(serials[i].hex, "email:alice@example.com", false);
		const char *why = gw_x509_strict_check(x, true);
		if (serials[i].why == NULL && why != NULL)
			fail_msg("serial %s: refused: %s", serials[i].hex, why);
		if (serials[i].why != NULL && (why == NULL || strcmp(why, serials[i].why) != 0))
			fail_msg("serial %s: expected %s, got %s", serials[i].hex, serials[i].why,
			         why != NULL ? why : "accept");
		X509_free(x);
	}
}

static void test_extensions_and_sans(void **state)
{
	(void)state;
	X509 *x = leaf(NULL, "email:alice@example.com,DNS:db.example.com", false);
	assert_null(gw_x509_strict_check(x, true));
	X509_free(x);

	x = leaf(NULL, "email:alice@example.com", true);
	assert_string_equal(gw_x509_strict_check(x, true),
	                    "certificate malformed: duplicate extension");
	X509_free(x);

	/* the SAN syntax is the login certificate's rule: a CA's is not read */
	x = leaf(NULL, "email:alice@@example.com", false);
	assert_string_equal(gw_x509_strict_check(x, true),
	                    "certificate malformed: invalid email address in subjectAltName");
	assert_null(gw_x509_strict_check(x, false));
	X509_free(x);

	x = leaf(NULL, "email:alice@example.com,DNS:db_1.example.com", false);
	assert_string_equal(gw_x509_strict_check(x, true),
	                    "certificate malformed: invalid dns name in subjectAltName");
	X509_free(x);

	/* an authorityInfoAccess that is not a SEQUENCE OF AccessDescription */
	x = leaf(NULL, NULL, false);
	X509_EXTENSION *ext = X509_get_ext(x, X509_get_ext_by_NID(x, NID_info_access, -1));
	static const unsigned char utf8[] = {0x0c, 0x03, 'u', 'r', 'l'};
	assert_int_equal(ASN1_OCTET_STRING_set(X509_EXTENSION_get_data(ext), utf8, sizeof(utf8)),
	                 1);
	assert_string_equal(gw_x509_strict_check(x, true),
	                    "certificate malformed: invalid authority information access");
	/* a well-formed value with bytes after it is no better */
	X509_free(x);
	x = leaf(NULL, NULL, false);
	ext = X509_get_ext(x, X509_get_ext_by_NID(x, NID_info_access, -1));
	ASN1_OCTET_STRING *data = X509_EXTENSION_get_data(ext);
	unsigned char padded[512];
	int len = ASN1_STRING_length(data);
	assert_true(len + 2 <= (int)sizeof(padded));
	memcpy(padded, ASN1_STRING_get0_data(data), (size_t)len);
	padded[len] = 0x05; /* a NULL after the SEQUENCE */
	padded[len + 1] = 0x00;
	assert_int_equal(ASN1_OCTET_STRING_set(data, padded, len + 2), 1);
	assert_string_equal(gw_x509_strict_check(x, true),
	                    "certificate malformed: invalid authority information access");
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc822_names),
	        cmocka_unit_test(test_dns_names),
	        cmocka_unit_test(test_serial_numbers),
	        cmocka_unit_test(test_extensions_and_sans),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
