/* Tests common/cg_utf8.c: strict UTF-8 (jansson's rules), cuts on a
 * character boundary, and the lossy JSON strings the audit uses for
 * untrusted values. Every lossy result is checked to be accepted by
 * jansson and to decode back to the input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cg_utf8.h"

#define B(s) (const unsigned char *)(s), sizeof(s) - 1

static void test_valid(void **state)
{
	(void)state;
	static const struct {
		const char *bytes;
		size_t len;
		bool valid;
	} cases[] = {
	        {"", 0, true},
	        {"plain ascii", 11, true},
	        {"caf\xc3\xa9", 5, true},       /* é */
	        {"\xe2\x82\xac", 3, true},      /* € */
	        {"\xf0\x9f\x98\x80", 4, true},  /* U+1F600 */
	        {"\xf4\x8f\xbf\xbf", 4, true},  /* U+10FFFF */
	        {"a\0b", 3, true},              /* NUL is a character */
	        {"caf\xe9", 4, false},          /* LATIN1 é */
	        {"\xc3", 1, false},             /* cut short */
	        {"\xe2\x82", 2, false},         /* cut short */
	        {"\xc0\xaf", 2, false},         /* overlong / */
	        {"\xe0\x80\xaf", 3, false},     /* overlong */
	        {"\xf0\x80\x80\xaf", 4, false}, /* overlong */
	        {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
	        {"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
	        {"\xf5\x80\x80\x80", 4, false}, /* no such lead */
	        {"\x80", 1, false},             /* lone continuation */
	        {"\xff", 1, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = cg_utf8_valid(cases[i].bytes, cases[i].len);
		if (got != cases[i].valid)
			fail_msg("case %zu: valid=%d, want %d", i, got, cases[i].valid);
		/* jansson agrees: what we call valid, it takes as is */
		json_t *j = json_stringn(cases[i].bytes, cases[i].len);
		assert_int_equal(j != NULL, cases[i].valid);
		json_decref(j);
	}
}

static void test_cut(void **state)
{
	(void)state;
	/* "ab" + é (c3 a9) + € (e2 82 ac) */
	const char *s = "ab\xc3\xa9\xe2\x82\xac";
	size_t n = strlen(s);
	assert_int_equal(cg_utf8_cut(s, n, 100), n);
	assert_int_equal(cg_utf8_cut(s, n, 2), 2);
	assert_int_equal(cg_utf8_cut(s, n, 3), 2); /* inside é */
	assert_int_equal(cg_utf8_cut(s, n, 4), 4);
	assert_int_equal(cg_utf8_cut(s, n, 5), 4); /* inside € */
	assert_int_equal(cg_utf8_cut(s, n, 6), 4);
	assert_int_equal(cg_utf8_cut(s, n, 7), 7);
	assert_int_equal(cg_utf8_cut(s, n, 0), 0);
	/* not UTF-8: cut where asked */
	assert_int_equal(cg_utf8_cut("\x80\x80\x80\x80\x80", 5, 3), 3);
	assert_int_equal(cg_utf8_cut("a\xff\x80\x80x", 5, 2), 2);
	assert_int_equal(cg_utf8_cut("a\xe9\x80\x80x", 5, 2), 1); /* U+9000 */
}

static void test_complete(void **state)
{
	(void)state;
	assert_int_equal(cg_utf8_complete("abc", 3), 3);
	assert_int_equal(cg_utf8_complete("ab\xc3", 3), 2);
	assert_int_equal(cg_utf8_complete("ab\xe2\x82", 4), 2);
	assert_int_equal(cg_utf8_complete("ab\xf0\x9f\x98", 5), 2);
	assert_int_equal(cg_utf8_complete("ab\xe2\x82\xac", 5), 5);
	/* not the beginning of a valid character: left for the escape */
	assert_int_equal(cg_utf8_complete("ab\xff", 3), 3);
	assert_int_equal(cg_utf8_complete("ab\xed\xa0", 4), 4); /* surrogate */
	assert_int_equal(cg_utf8_complete("ab\x80", 3), 3);
	assert_int_equal(cg_utf8_complete("", 0), 0);
}

/* Decodes the escape: \xNN back to the byte. */
static size_t unescape(const char *in, size_t n, unsigned char *out)
{
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '\\' && i + 3 < n && in[i + 1] == 'x') {
			char hex[3] = {in[i + 2], in[i + 3], 0};
			out[at++] = (unsigned char)strtoul(hex, NULL, 16);
			i += 3;
		} else {
			out[at++] = (unsigned char)in[i];
		}
	}
	return at;
}

static void test_lossy(void **state)
{
	(void)state;
	static const struct {
		const char *bytes;
		size_t len;
		const char *want;
		bool escaped;
	} cases[] = {
	        {"alice", 5, "alice", false},
	        {"caf\xc3\xa9", 5, "caf\xc3\xa9", false},
	        {"back\\slash", 10, "back\\slash", false}, /* valid: untouched */
	        {"caf\xe9", 4, "caf\\xe9", true},
	        {"\xff\xfe", 2, "\\xff\\xfe", true},
	        {"a\\x\xff", 4, "a\\x5cx\\xff", true}, /* the backslash too */
	        {"\xc3\xa9\xc3", 3, "\xc3\xa9\\xc3", true},
	        {"\xed\xa0\x80", 3, "\\xed\\xa0\\x80", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool escaped = false;
		json_t *j = cg_json_string_lossy(cases[i].bytes, cases[i].len, &escaped);
		assert_non_null(j);
		assert_string_equal(json_string_value(j), cases[i].want);
		assert_int_equal(escaped, cases[i].escaped);
		if (escaped) {
			unsigned char back[64];
			size_t n = unescape(json_string_value(j), json_string_length(j), back);
			assert_int_equal(n, cases[i].len);
			assert_memory_equal(back, cases[i].bytes, n);
		}
		json_decref(j);
	}
}

/* Every byte string of length 1 and 2, and a sample of length 3: the
 * result always exists and decodes back. */
static void test_lossy_exhaustive(void **state)
{
	(void)state;
	unsigned char in[3], back[16];
	for (unsigned a = 0; a < 256; a++) {
		for (unsigned b = 0; b < 256; b++) {
			in[0] = (unsigned char)a;
			in[1] = (unsigned char)b;
			in[2] = (unsigned char)(a ^ b ^ 0x80);
			for (size_t len = 1; len <= 3; len++) {
				bool escaped = false;
				json_t *j = cg_json_string_lossy(in, len, &escaped);
				assert_non_null(j);
				if (escaped) {
					size_t n = unescape(json_string_value(j),
					                    json_string_length(j), back);
					assert_int_equal(n, len);
					assert_memory_equal(back, in, len);
				} else {
					assert_int_equal(json_string_length(j), len);
				}
				json_decref(j);
			}
		}
	}
}

static void test_set_lossy(void **state)
{
	(void)state;
	json_t *f = json_object();
	assert_int_equal(cg_json_set_lossy_str(f, "db_user", "alice"), 0);
	assert_null(json_object_get(f, "escaped"));
	assert_int_equal(cg_json_set_lossy(f, "db_name",
	                                   B("\xff"
	                                     "db")),
	                 0);
	assert_int_equal(cg_json_set_lossy_str(f, "subject", "CN=caf\xe9"), 0);
	assert_int_equal(cg_json_set_lossy(f, "db_name", B("\xfe")), 0); /* listed once */
	assert_int_equal(cg_json_set_lossy_str(f, "application_name", NULL), 0);
	char *text = json_dumps(f, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(text);
	assert_string_equal(text, "{\"db_user\":\"alice\",\"db_name\":\"\\\\xfe\","
	                          "\"escaped\":[\"db_name\",\"subject\"],"
	                          "\"subject\":\"CN=caf\\\\xe9\",\"application_name\":null}");
	free(text);
	json_decref(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_valid),
	        cmocka_unit_test(test_cut),
	        cmocka_unit_test(test_complete),
	        cmocka_unit_test(test_lossy),
	        cmocka_unit_test(test_lossy_exhaustive),
	        cmocka_unit_test(test_set_lossy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
