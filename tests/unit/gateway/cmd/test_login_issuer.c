/* The client side of certgate's issuer (gateway/cmd/login_issuer.c): the
 * platform string sent with a login (uname + PRETTY_NAME, printable,
 * bounded) and the CSR (self-signed by the login key, verifiable, P-256). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cmd/login_issuer.h"
#include "tls/x509_build.h"

static void test_platform(void **state)
{
	(void)state;
	static const struct {
		const char *sys, *rel, *os_release, *want;
	} rows[] = {
	        {"Linux", "6.1.0-18-amd64",
	         "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 "
	         "(bookworm)\"\nID=debian\n",
	         "Linux 6.1.0-18-amd64 Debian GNU/Linux 12 (bookworm)"},
	        /* unquoted, single-quoted, escaped, last line without a newline */
	        {"Linux", "6.6", "ID=arch\nPRETTY_NAME=Arch", "Linux 6.6 Arch"},
	        {"Linux", "6.6", "PRETTY_NAME='Fedora Linux 39'\n", "Linux 6.6 Fedora Linux 39"},
	        {"Linux", "6.6", "PRETTY_NAME=\"say \\\"hi\\\"\"\n", "Linux 6.6 say \"hi\""},
	        /* none, or an empty one */
	        {"Darwin", "23.1.0", NULL, "Darwin 23.1.0"},
	        {"Linux", "6.6", "NAME=x\n", "Linux 6.6"},
	        {"Linux", "6.6", "PRETTY_NAME=\"\"\n", "Linux 6.6"},
	        /* a name that is PRETTY_NAME's prefix only */
	        {"Linux", "6.6", "XPRETTY_NAME=no\n", "Linux 6.6"},
	        /* control characters and non-ASCII never leave the machine raw */
	        {"Linux", "6.6", "PRETTY_NAME=\"Evil\x1b[31m \xc3\xa9\"\n",
	         "Linux 6.6 Evil?[31m ??"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char out[LOGIN_PLATFORM_MAX + 1];
		login_platform(rows[i].sys, rows[i].rel, rows[i].os_release, out);
		assert_string_equal(out, rows[i].want);
	}
	/* at most 128 bytes */
	char long_name[400] = "PRETTY_NAME=\"";
	memset(long_name + strlen(long_name), 'x', 300);
	strcat(long_name, "\"\n");
	char out[LOGIN_PLATFORM_MAX + 1];
	login_platform("Linux", "6.6", long_name, out);
	assert_int_equal(strlen(out), LOGIN_PLATFORM_MAX);
	assert_memory_equal(out, "Linux 6.6 xxx", 13);
	/* this machine's: printable, bounded, starts with the system name */
	login_platform_here(out);
	assert_true(strlen(out) > 0 && strlen(out) <= LOGIN_PLATFORM_MAX);
	for (const char *p = out; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
}

static void test_csr(void **state)
{
	(void)state;
	EVP_PKEY *key = gw_x509_key_new(0), *other = gw_x509_key_new(0);
	X509_REQ *req = login_csr_new(key);
	assert_non_null(req);
	/* proof of possession: the self-signature verifies with the key it carries */
	EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
	assert_int_equal(EVP_PKEY_eq(pub, key), 1);
	assert_int_equal(X509_REQ_verify(req, pub), 1);
	assert_int_not_equal(X509_REQ_verify(req, other), 1);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_platform),
	        cmocka_unit_test(test_csr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
