/* Tests common/cg_json.c: parse errors with positions, and the path ->
 * line:column map of a multi-line document. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cg_json.h"

/* Columns below were counted by hand; line 6 starts with a tab, line 11 has
 * a two-byte character before the position, line 13 a key with escapes. */
static const char doc_text[] = "{\n"                                                      /* 1 */
                               "  \"gateway\": {\n"                                       /* 2 */
                               "    \"listen\": [\"0.0.0.0:8443\", \"[::]:8443\"],\n"     /* 3 */
                               "    \"max_cert_lifetime\": \"24h\"\n"                     /* 4 */
                               "  },\n"                                                   /* 5 */
                               "\t\"tab\": 1,\n"                                          /* 6 */
                               "  \"services\": [\n"                                      /* 7 */
                               "    { \"name\": \"orders-db\",\n"                         /* 8 */
                               "      \"upstream\": [\"10.1.0.5:5432\",\n"                /* 9 */
                               "                   \"10.1.0.6:5432\"] },\n"               /* 10 */
                               "    {\"name\":\"\xc3\xbc-db\",\"upstream\":[]}\n"         /* 11 */
                               "  ],\n"                                                   /* 12 */
                               "  \"k\\\"e\\\\y\\u00e9\\ud83d\\ude00\": {\"x\": null},\n" /* 13 */
                               "  \"rules\": [[1, [2, 3]], {}]\n"                         /* 14 */
                               "}\n";                                                     /* 15 */

static const struct {
	const char *path;
	const char *where;
} positions[] = {
        {"", "cfg.json:1:1"},
        {"gateway", "cfg.json:2:14"},
        {"gateway.listen", "cfg.json:3:15"},
        {"gateway.listen[0]", "cfg.json:3:16"},
        {"gateway.listen[1]", "cfg.json:3:32"},
        {"gateway.max_cert_lifetime", "cfg.json:4:26"},
        {"tab", "cfg.json:6:9"},
        {"services", "cfg.json:7:15"},
        {"services[0]", "cfg.json:8:5"},
        {"services[0].name", "cfg.json:8:15"},
        {"services[0].upstream", "cfg.json:9:19"},
        {"services[0].upstream[0]", "cfg.json:9:20"},
        {"services[0].upstream[1]", "cfg.json:10:20"},
        {"services[1]", "cfg.json:11:5"},
        {"services[1].name", "cfg.json:11:13"},
        {"services[1].upstream", "cfg.json:11:31"},
        {"k\"e\\y\xc3\xa9\xf0\x9f\x98\x80", "cfg.json:13:32"},
        {"k\"e\\y\xc3\xa9\xf0\x9f\x98\x80.x", "cfg.json:13:38"},
        {"rules", "cfg.json:14:12"},
        {"rules[0]", "cfg.json:14:13"},
        {"rules[0][0]", "cfg.json:14:14"},
        {"rules[0][1]", "cfg.json:14:17"},
        {"rules[0][1][0]", "cfg.json:14:18"},
        {"rules[0][1][1]", "cfg.json:14:21"},
        {"rules[1]", "cfg.json:14:26"},
        /* unknown paths */
        {"services[2]", "cfg.json"},
        {"services[1].upstream[0]", "cfg.json"},
        {"gateway.listen.0", "cfg.json"},
        {"nope", "cfg.json"},
};

static void test_positions(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	cg_jdoc_t *doc = cg_jdoc_parse("cfg.json", doc_text, strlen(doc_text), &errs);
	assert_non_null(doc);
	assert_int_equal(errs.count, 0);
	assert_string_equal(cg_jdoc_name(doc), "cfg.json");

	for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
		char where[256];
		cg_jdoc_where(doc, positions[i].path, where, sizeof(where));
		if (strcmp(where, positions[i].where) != 0)
			fail_msg("path \"%s\": got %s, want %s", positions[i].path, where,
			         positions[i].where);
	}

	/* The jansson tree is the one the positions describe. */
	json_t *root = cg_jdoc_root(doc);
	json_t *svc = json_array_get(json_object_get(root, "services"), 1);
	assert_string_equal(json_string_value(json_object_get(svc, "name")), "\xc3\xbc-db");

	size_t len = 0;
	const char *text = cg_jdoc_text(doc, &len);
	assert_int_equal(len, strlen(doc_text));
	assert_memory_equal(text, doc_text, len);

	cg_jdoc_destroy(doc);
	cg_errors_finish(&errs);
	cg_jdoc_destroy(NULL);
}

static void test_crlf_and_compact(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	const char crlf[] = "{\r\n  \"a\": 1,\r\n  \"b\": [true,false]\r\n}\r\n";
	cg_jdoc_t *doc = cg_jdoc_parse("c", crlf, strlen(crlf), &errs);
	assert_non_null(doc);
	char where[64];
	cg_jdoc_where(doc, "a", where, sizeof(where));
	assert_string_equal(where, "c:2:8");
	cg_jdoc_where(doc, "b[1]", where, sizeof(where));
	assert_string_equal(where, "c:3:14");
	cg_jdoc_destroy(doc);

	const char compact[] = "[{\"a\":[1,2.5e3,\"x\\\"y\",{\"b\":-0}]}]";
	doc = cg_jdoc_parse("d", compact, strlen(compact), &errs);
	assert_non_null(doc);
	cg_jdoc_where(doc, "[0].a[3].b", where, sizeof(where));
	assert_string_equal(where, "d:1:28");
	cg_jdoc_where(doc, "[0].a[2]", where, sizeof(where));
	assert_string_equal(where, "d:1:16");
	cg_jdoc_destroy(doc);
	assert_int_equal(errs.count, 0);
	cg_errors_finish(&errs);
}

static void test_syntax_error(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	const char bad[] = "{\n  \"a\": 1,\n  \"b\": tru\n}\n";
	assert_null(cg_jdoc_parse("bad.json", bad, strlen(bad), &errs));
	assert_int_equal(errs.count, 1);
	/* jansson reports the column where it gave up on the token. */
	assert_string_equal(errs.items[0], "bad.json:3:10: invalid token near 'tru'");

	const char trailing[] = "{\"a\": 1} x";
	assert_null(cg_jdoc_parse("t.json", trailing, strlen(trailing), &errs));
	assert_int_equal(errs.count, 2);
	assert_true(strncmp(errs.items[1], "t.json:1:", 9) == 0);

	assert_null(cg_jdoc_parse("empty.json", "", 0, &errs));
	assert_int_equal(errs.count, 3);
	assert_true(strncmp(errs.items[2], "empty.json:", 11) == 0);
	cg_errors_finish(&errs);
}

static void test_duplicate_key(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	const char dup[] =
	        "{\n  \"gateway\": {\n    \"cert\": \"a\",\n    \"cert\": \"b\"\n  }\n}\n";
	assert_null(cg_jdoc_parse("dup.json", dup, strlen(dup), &errs));
	assert_int_equal(errs.count, 1);
	assert_true(strncmp(errs.items[0], "dup.json:4:", 11) == 0);
	assert_non_null(strstr(errs.items[0], "duplicate object key"));
	cg_errors_finish(&errs);
}

static void test_jdoc_error(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	cg_jdoc_t *doc = cg_jdoc_parse("cfg.json", doc_text, strlen(doc_text), &errs);
	assert_non_null(doc);

	cg_jdoc_error(doc, &errs, "services[0].upstream[1]", "expected \"%s\"", "host:port");
	cg_jdoc_error(doc, &errs, "", "unknown key %d", 7);
	cg_jdoc_error(doc, &errs, "services[9]", "missing");
	assert_int_equal(errs.count, 3);
	assert_string_equal(errs.items[0],
	                    "cfg.json:10:20: services[0].upstream[1]: expected \"host:port\"");
	assert_string_equal(errs.items[1], "cfg.json:1:1: unknown key 7");
	assert_string_equal(errs.items[2], "cfg.json: services[9]: missing");
	cg_jdoc_destroy(doc);
	cg_errors_finish(&errs);
}

static void test_deep_nesting(void **state)
{
	(void)state;
	enum { DEPTH = 1000 };
	char *text = malloc(2 * DEPTH + 1);
	char *path = malloc(3 * DEPTH + 1);
	assert_non_null(text);
	assert_non_null(path);
	memset(text, '[', DEPTH);
	memset(text + DEPTH, ']', DEPTH);
	text[2 * DEPTH] = '\0';
	path[0] = '\0';
	for (int i = 0; i < DEPTH - 1; i++)
		strcat(path, "[0]");

	cg_errors_t errs;
	cg_errors_init(&errs);
	cg_jdoc_t *doc = cg_jdoc_parse("deep", text, strlen(text), &errs);
	assert_non_null(doc);
	char where[64];
	cg_jdoc_where(doc, path, where, sizeof(where));
	assert_string_equal(where, "deep:1:1000");
	cg_jdoc_destroy(doc);
	cg_errors_finish(&errs);
	free(text);
	free(path);
}

/* Regression (tests/fuzz/corpus/parse/crash-json-nul): jansson skipped a
 * NUL byte right after a number or literal and accepted the text, while the
 * position scanner stopped at it and every later value lost its position. */
static void test_nul_byte(void **state)
{
	(void)state;
	static const char after_number[] = "[true,false  ,9\0, {}]";
	static const char after_literal[] = "{\n  \"a\": true\0,\n  \"b\": 1\n}";
	static const char in_string[] = "[\"a\0b\"]";
	cg_errors_t errs;

	cg_errors_init(&errs);
	assert_null(cg_jdoc_parse("nul.json", after_number, sizeof(after_number) - 1, &errs));
	assert_null(cg_jdoc_parse("nul.json", after_literal, sizeof(after_literal) - 1, &errs));
	assert_null(cg_jdoc_parse("nul.json", in_string, sizeof(in_string) - 1, &errs));
	assert_int_equal(errs.count, 3);
	assert_string_equal(errs.items[0], "nul.json:1:16: NUL byte in the document");
	assert_string_equal(errs.items[1], "nul.json:2:12: NUL byte in the document");
	assert_string_equal(errs.items[2], "nul.json:1:4: NUL byte in the document");
	cg_errors_finish(&errs);
}

static void test_load(void **state)
{
	(void)state;
	char dir[] = "/tmp/cg-json-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/certgate.json", dir);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(doc_text, f);
	fclose(f);

	cg_errors_t errs;
	cg_errors_init(&errs);
	cg_jdoc_t *doc = cg_jdoc_load(path, &errs);
	assert_non_null(doc);
	assert_string_equal(cg_jdoc_name(doc), path);
	char where[512], want[512];
	cg_jdoc_where(doc, "services[1].upstream", where, sizeof(where));
	snprintf(want, sizeof(want), "%s:11:31", path);
	assert_string_equal(where, want);
	cg_jdoc_destroy(doc);

	/* missing file */
	char missing[256];
	snprintf(missing, sizeof(missing), "%s/nope.json", dir);
	assert_null(cg_jdoc_load(missing, &errs));
	assert_int_equal(errs.count, 1);
	snprintf(want, sizeof(want), "%s: No such file or directory", missing);
	assert_string_equal(errs.items[0], want);

	/* a directory */
	assert_null(cg_jdoc_load(dir, &errs));
	assert_int_equal(errs.count, 2);
	snprintf(want, sizeof(want), "%s: Is a directory", dir);
	assert_string_equal(errs.items[1], want);

	/* more than 16 MiB: refused before parsing */
	f = fopen(path, "w");
	assert_non_null(f);
	fputc('[', f);
	for (int i = 0; i < 16 * 1024 * 1024; i++)
		fputc(' ', f);
	fputs("]", f);
	fclose(f);
	assert_null(cg_jdoc_load(path, &errs));
	assert_int_equal(errs.count, 3);
	snprintf(want, sizeof(want), "%s: file too large (more than 16 MiB)", path);
	assert_string_equal(errs.items[2], want);

	/* exactly 16 MiB is fine */
	assert_int_equal(truncate(path, 16 * 1024 * 1024 - 1), 0);
	f = fopen(path, "a");
	assert_non_null(f);
	fputc(']', f);
	fclose(f);
	doc = cg_jdoc_load(path, &errs);
	assert_non_null(doc);
	assert_int_equal(errs.count, 3);
	cg_jdoc_destroy(doc);

	cg_errors_finish(&errs);
	unlink(path);
	rmdir(dir);
}

/* The first lookups scan for their one path, later ones read the map of
 * every path: both must answer alike, also when two values share a path
 * ("a.b" the key, and "b" inside "a": the later one, as the map keeps). */
static void test_scan_and_map_agree(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	const char text[] = "{\"a.b\": 1,\n \"x\": [true, {\"y\": 2}],\n \"a\": {\"b\": 3}}";
	const char *paths[] = {"a.b", "x[1].y", "a", "x", "", "nope", "x[1]", "a.b", "x[0]"};
	const char *want[] = {"j:3:13", "j:2:20", "j:3:7", "j:2:7", "j:1:1",
	                      "j",      "j:2:14", "j:3:13", "j:2:8"};
	cg_jdoc_t *doc = cg_jdoc_parse("j", text, strlen(text), &errs);
	assert_non_null(doc);
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char where[64];
		cg_jdoc_where(doc, paths[i], where, sizeof(where));
		if (strcmp(where, want[i]) != 0)
			fail_msg("lookup %zu, path \"%s\": got %s, want %s", i, paths[i], where,
			         want[i]);
	}
	cg_jdoc_destroy(doc);
	cg_errors_finish(&errs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_positions),    cmocka_unit_test(test_crlf_and_compact),
	        cmocka_unit_test(test_syntax_error), cmocka_unit_test(test_duplicate_key),
	        cmocka_unit_test(test_jdoc_error),   cmocka_unit_test(test_deep_nesting),
	        cmocka_unit_test(test_load),         cmocka_unit_test(test_nul_byte),
	        cmocka_unit_test(test_scan_and_map_agree),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
