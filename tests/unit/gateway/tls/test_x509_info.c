/* gateway/tls/x509_info.c: the subject as the audit shows it. A long
 * subject is cut on a character boundary (never inside a UTF-8
 * sequence: jansson would refuse the string and the audit line would lose
 * the field), and strings of other types come out as UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cg_utf8.h"
#include "tls/x509_build.h"
#include "tls/x509_info.h"

/* A certificate whose subject has the given (type, bytes) entries, in
 * order, all as organizationalUnitName except the last (commonName). */
static X509 *cert_with(int type, const char *const *values, size_t n)
{
	EVP_PKEY *key = gw_x509_key_new(0);
	X509_NAME *name = X509_NAME_new();
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		        X509_NAME_add_entry_by_NID(
		                name, i + 1 < n ? NID_organizationalUnitName : NID_commonName, type,
		                (const unsigned char *)values[i], (int)strlen(values[i]), -1, 0),
		        1);
	X509V3_CTX ctx;
	X509 *x = gw_x509_cert_new(name, NULL, key, time(NULL), -60, 3600, &ctx);
	X509_NAME_free(name);
	assert_non_null(x);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	EVP_PKEY_free(key);
	return x;
}

static void test_long_subject_cut_on_a_character(void **state)
{
	(void)state;
	/* "é" is 2 bytes; one ASCII "x" shifts every later character by one
	 * byte, so one of the two sizes cuts inside a character */
	char value[2 * 60 + 2];
	for (int shift = 0; shift < 2; shift++) {
		size_t at = 0;
		if (shift)
			value[at++] = 'x';
		for (int i = 0; i < 60; i++) {
			value[at++] = (char)0xc3;
			value[at++] = (char)0xa9;
		}
		value[at] = '\0';
		const char *values[] = {value, value, value, value, value};
		X509 *x = cert_with(V_ASN1_UTF8STRING, values, 5);
		char full[2048], cut[512];
		gw_cert_subject(x, full, sizeof(full));
		gw_cert_subject(x, cut, sizeof(cut));
		assert_true(strlen(full) > 600);
		assert_true(cg_utf8_valid(full, strlen(full)));
		/* the cut is a prefix of the whole, valid UTF-8, at most 511 bytes,
		 * and at most one byte short of 511 (one 2-byte character) */
		size_t n = strlen(cut);
		assert_true(n <= 511 && n >= 510);
		assert_memory_equal(cut, full, n);
		assert_true(cg_utf8_valid(cut, n));
		X509_free(x);
	}
}

static void test_t61string_latin1(void **state)
{
	(void)state;
	const char *values[] = {"caf\xe9"};
	X509 *x = cert_with(V_ASN1_T61STRING, values, 1);
	char buf[512];
	gw_cert_subject(x, buf, sizeof(buf));
	assert_string_equal(buf, "CN=caf\xc3\xa9"); /* Latin-1 converted to UTF-8 */
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_long_subject_cut_on_a_character),
	        cmocka_unit_test(test_t61string_latin1),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
