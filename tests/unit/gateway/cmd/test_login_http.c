/* The text helpers of certgate login's HTTPS client
 * (gateway/cmd/login_http.c): form encoding (RFC 3986 unreserved kept),
 * a query added to a URL, https-only URLs, and server text made safe for
 * a terminal. The requests themselves are tested end to end
 * (tests/integration/test_login_client.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmd/login_http.h"

static void test_form_encode(void **state)
{
	(void)state;
	const char *const pairs[] = {"grant_type", "urn:ietf:params:oauth:grant-type:device_code",
	                             "scope",      "openid email",
	                             "x",          "a+b&c=d/é~._-",
	                             NULL};
	char *form = login_form_encode(pairs);
	assert_string_equal(form,
	                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"
	                    "&scope=openid%20email&x=a%2Bb%26c%3Dd%2F%C3%A9~._-");
	free(form);
	const char *const none[] = {NULL};
	form = login_form_encode(none);
	assert_string_equal(form, "");
	free(form);

	const char *const one[] = {"a", "1", NULL};
	char *url = login_url_with_query("https://h/p", one);
	assert_string_equal(url, "https://h/p?a=1");
	free(url);
	url = login_url_with_query("https://h/p?z=0", one);
	assert_string_equal(url, "https://h/p?z=0&a=1");
	free(url);
}

static void test_https_only(void **state)
{
	(void)state;
	assert_true(login_is_https_url("https://gw.example:8444"));
	assert_true(login_is_https_url("HTTPS://gw.example/"));
	assert_false(login_is_https_url("http://gw.example"));
	assert_false(login_is_https_url("https://"));
	assert_false(login_is_https_url("https:///path"));
	assert_false(login_is_https_url("ftp://gw"));
	assert_false(login_is_https_url(NULL));
	/* a URL a server sends is printed: only printable ASCII passes */
	assert_false(login_is_https_url("https://idp.example/\x1b]0;PWNED\x07"));
	assert_false(login_is_https_url("https://idp.example/\x1b[31mFAKE"));
	assert_false(login_is_https_url("https://idp.example/a b"));
	assert_false(login_is_https_url("https://idp.example/\n"));
	assert_false(login_is_https_url("https://idp.example/\x7f"));
	assert_false(login_is_https_url("https://idp.example/\xc3\xa9"));
	assert_true(login_is_https_url("https://idp.example/auth?x=%1B&y=~"));
}

static void test_printable(void **state)
{
	(void)state;
	char out[16];
	assert_string_equal(login_printable("plain text", out, sizeof(out)), "plain text");
	assert_string_equal(login_printable("a\x1b[2Jb\n\xc3\xa9", out, sizeof(out)), "a?[2Jb???");
	assert_string_equal(login_printable("0123456789abcdefghij", out, sizeof(out)),
	                    "0123456789ab..."); /* 15 bytes and its NUL */
	assert_string_equal(login_printable(NULL, out, sizeof(out)), "");

	char err[128];
	login_reply_t r = {
	        .status = 403,
	        .json = json_pack("{s:s,s:s}", "error", "forbidden", "reason", "user not allowed")};
	login_reply_error(&r, "error", "reason", err, sizeof(err));
	assert_string_equal(err, "forbidden: user not allowed");
	json_decref(r.json);
	login_reply_t bare = {.status = 502};
	login_reply_error(&bare, "error", "reason", err, sizeof(err));
	assert_string_equal(err, "HTTP 502");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_form_encode),
	        cmocka_unit_test(test_https_only),
	        cmocka_unit_test(test_printable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
