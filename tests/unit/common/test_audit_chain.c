/* Tests common/cg_audit_chain.c: the hash, the line parser, and the
 * verifier on crafted series: intact, edited (a line, or a line's prev),
 * removed, inserted, reordered, torn, not JSON, unchained, malformed,
 * restarted, a rotated series of files and its boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cg_audit_chain.h"

#define MAX_LINES 16
/* a prev that is not the genesis: a chain picked up further on */
#define OTHER_START   "ab00000000000000000000000000000000000000000000000000000000000000"
#define FOREIGN_START "ff00000000000000000000000000000000000000000000000000000000000000"

/* A chain of n lines as the writer makes them (seq 1.., prev = hash of the
 * line before), first seq `first` with prev `start`. */
typedef struct chain {
	char lines[MAX_LINES][256];
	size_t n;
} chain_t;

static void make_chain(chain_t *c, size_t n, uint64_t first, const char *start)
{
	char prev[CG_CHAIN_HEX];
	snprintf(prev, sizeof(prev), "%s", start);
	c->n = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(c->lines[i], sizeof(c->lines[i]),
		         "{\"ts\":\"2026-12-01T10:00:0%zu.000Z\",\"event\":\"session.start\","
		         "\"seq\":%llu,"
		         "\"prev\":\"%s\",\"user\":\"u%zu\"}",
		         i % 10, (unsigned long long)(first + i), prev, i);
		cg_chain_hash(c->lines[i], strlen(c->lines[i]), prev);
	}
}

/* Feeds files (each a list of line indexes into c, -1 ends a file, -2 ends
 * the list) and returns the verdict. */
static cg_chain_break_t run(cg_chain_verifier_t *v, const chain_t *c, const int *order)
{
	cg_chain_verifier_init(v);
	cg_chain_verifier_next_file(v);
	for (const int *i = order; *i != -2; i++) {
		if (*i == -1) {
			if (i[1] != -2)
				cg_chain_verifier_next_file(v);
			continue;
		}
		(void)cg_chain_verifier_line(v, c->lines[*i], strlen(c->lines[*i]));
	}
	return cg_chain_verifier_finish(v);
}

static void test_hash(void **state)
{
	(void)state;
	char hex[CG_CHAIN_HEX];
	cg_chain_hash("abc", 3, hex);
	assert_string_equal(hex,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cg_chain_hash("", 0, hex);
	assert_string_equal(hex,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_true(cg_chain_hash_valid(hex));
	assert_true(cg_chain_hash_valid(CG_CHAIN_GENESIS));
	hex[3] = 'A';
	assert_false(cg_chain_hash_valid(hex));
	assert_false(cg_chain_hash_valid("abc"));
	assert_false(cg_chain_hash_valid(""));
	char longer[80];
	snprintf(longer, sizeof(longer), "%s0", CG_CHAIN_GENESIS);
	assert_false(cg_chain_hash_valid(longer));
}

static void test_parse(void **state)
{
	(void)state;
	uint64_t seq = 0;
	char prev[CG_CHAIN_HEX], why[128];
	char line[256];
	snprintf(line, sizeof(line), "{\"ts\":\"x\",\"event\":\"e\",\"seq\":7,\"prev\":\"%s\"}",
	         CG_CHAIN_GENESIS);
	assert_int_equal(cg_chain_parse(line, strlen(line), &seq, prev, why, sizeof(why)),
	                 CG_CHAIN_LINE_OK);
	assert_int_equal(seq, 7);
	assert_string_equal(prev, CG_CHAIN_GENESIS);

	static const struct {
		const char *text;
		cg_chain_line_t want;
	} cases[] = {
	        {"", CG_CHAIN_LINE_NOT_JSON},
	        {"not json", CG_CHAIN_LINE_NOT_JSON},
	        {"[1,2]", CG_CHAIN_LINE_NOT_JSON},
	        {"{\"a\":1} trailing", CG_CHAIN_LINE_NOT_JSON},
	        {"{\"seq\":1,\"seq\":2}", CG_CHAIN_LINE_NOT_JSON}, /* duplicate keys */
	        {"{\"ts\":\"x\",\"event\":\"e\"}", CG_CHAIN_LINE_UNCHAINED},
	        {"{\"seq\":1}", CG_CHAIN_LINE_BAD},
	        {"{\"prev\":\"00\"}", CG_CHAIN_LINE_BAD},
	        {"{\"seq\":0,\"prev\":"
	         "\"0000000000000000000000000000000000000000000000000000000000000000\"}",
	         CG_CHAIN_LINE_BAD},
	        {"{\"seq\":\"1\",\"prev\":"
	         "\"0000000000000000000000000000000000000000000000000000000000000000\"}",
	         CG_CHAIN_LINE_BAD},
	        {"{\"seq\":1.5,\"prev\":"
	         "\"0000000000000000000000000000000000000000000000000000000000000000\"}",
	         CG_CHAIN_LINE_BAD},
	        {"{\"seq\":1,\"prev\":"
	         "\"000000000000000000000000000000000000000000000000000000000000000G\"}",
	         CG_CHAIN_LINE_BAD},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = '\0';
		cg_chain_line_t got = cg_chain_parse(cases[i].text, strlen(cases[i].text), &seq,
		                                     prev, why, sizeof(why));
		if (got != cases[i].want)
			fail_msg("%s: got %d, want %d", cases[i].text, got, cases[i].want);
		assert_true(why[0] != '\0');
	}
}

static void test_intact(void **state)
{
	(void)state;
	chain_t c;
	cg_chain_verifier_t v;
	make_chain(&c, 6, 1, CG_CHAIN_GENESIS);
	static const int order[] = {0, 1, 2, 3, 4, 5, -2};
	assert_int_equal(run(&v, &c, order), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 6);
	assert_int_equal(v.first_seq, 1);
	assert_int_equal(v.last_seq, 6);
	char want[CG_CHAIN_HEX];
	cg_chain_hash(c.lines[5], strlen(c.lines[5]), want);
	assert_string_equal(v.last_hash, want);

	/* a chain that starts further on (older files rotated away) is fine */
	make_chain(&c, 3, 1000, OTHER_START);
	static const int three[] = {0, 1, 2, -2};
	assert_int_equal(run(&v, &c, three), CG_CHAIN_INTACT);
	assert_int_equal(v.first_seq, 1000);
}

static void test_edited(void **state)
{
	(void)state;
	chain_t c;
	cg_chain_verifier_t v;
	static const int order[] = {0, 1, 2, 3, 4, -2};

	/* a field of line 3 (seq 3) changed: line 4's prev no longer matches */
	make_chain(&c, 5, 1, CG_CHAIN_GENESIS);
	char *u = strstr(c.lines[2], "\"user\":\"u2\"");
	u[9] = 'X';
	assert_int_equal(run(&v, &c, order), CG_CHAIN_EDITED);
	assert_int_equal(v.break_line, 3);
	assert_non_null(strstr(v.why, "seq 3 was changed"));
	assert_int_equal(v.verified, 2);

	/* line 3's own prev changed: it breaks with both neighbours */
	make_chain(&c, 5, 1, CG_CHAIN_GENESIS);
	char *p = strstr(c.lines[2], "\"prev\":\"") + 8;
	p[0] = p[0] == 'a' ? 'b' : 'a';
	assert_int_equal(run(&v, &c, order), CG_CHAIN_EDITED);
	assert_int_equal(v.break_line, 3);
	assert_non_null(strstr(v.why, "its own hash is not the prev of the line after it"));

	/* the last line edited cannot be seen (nothing follows it); the one
	 * before the last is */
	make_chain(&c, 5, 1, CG_CHAIN_GENESIS);
	strstr(c.lines[4], "\"user\":\"u4\"")[9] = 'X';
	assert_int_equal(run(&v, &c, order), CG_CHAIN_INTACT);
	make_chain(&c, 5, 1, CG_CHAIN_GENESIS);
	strstr(c.lines[3], "\"user\":\"u3\"")[9] = 'X';
	assert_int_equal(run(&v, &c, order), CG_CHAIN_EDITED);
	/* without a line after the last, which of the two changed is open */
	assert_int_equal(v.break_line, 5);
	assert_non_null(strstr(v.why, "that line, or this line's prev, was changed"));
}

static void test_removed_inserted_reordered(void **state)
{
	(void)state;
	chain_t c;
	cg_chain_verifier_t v;
	make_chain(&c, 6, 1, CG_CHAIN_GENESIS);

	static const int removed[] = {0, 1, 3, 4, 5, -2};
	assert_int_equal(run(&v, &c, removed), CG_CHAIN_REMOVED);
	assert_int_equal(v.break_line, 3);
	assert_non_null(strstr(v.why, "seq jumps from 2 to 4: 1 line(s) missing"));
	static const int removed_two[] = {0, 3, 4, 5, -2};
	assert_int_equal(run(&v, &c, removed_two), CG_CHAIN_REMOVED);
	assert_non_null(strstr(v.why, "2 line(s) missing"));

	static const int copied[] = {0, 1, 2, 1, 3, 4, -2};
	assert_int_equal(run(&v, &c, copied), CG_CHAIN_INSERTED);
	assert_int_equal(v.break_line, 4);
	assert_non_null(strstr(v.why, "seq 2 again (expected 4)"));

	/* a line whose seq comes again later: this one is the stranger */
	static const int early_copy[] = {0, 1, 4, 2, 3, 4, 5, -2};
	assert_int_equal(run(&v, &c, early_copy), CG_CHAIN_INSERTED);
	assert_int_equal(v.break_line, 3);
	assert_non_null(strstr(v.why, "this line was inserted"));

	static const int swapped[] = {0, 1, 3, 2, 4, 5, -2};
	assert_int_equal(run(&v, &c, swapped), CG_CHAIN_REORDERED);
	assert_int_equal(v.break_line, 3);
	assert_non_null(strstr(v.why, "seq 4 comes before seq 3"));

	/* moved far back */
	static const int moved[] = {0, 2, 3, 4, 1, 5, -2};
	assert_int_equal(run(&v, &c, moved), CG_CHAIN_REORDERED);
	assert_int_equal(v.break_line, 2);

	/* a foreign line with a made-up prev but the due seq: its prev fails */
	chain_t other;
	make_chain(&other, 6, 1, FOREIGN_START);
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	assert_true(cg_chain_verifier_line(&v, c.lines[0], strlen(c.lines[0])));
	assert_false(cg_chain_verifier_line(&v, other.lines[1], strlen(other.lines[1])));
	(void)cg_chain_verifier_line(&v, c.lines[1], strlen(c.lines[1]));
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_EDITED);
	assert_int_equal(v.break_line, 2);
}

static void test_torn_and_bad_lines(void **state)
{
	(void)state;
	chain_t c;
	cg_chain_verifier_t v;
	make_chain(&c, 4, 1, CG_CHAIN_GENESIS);

	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	for (int i = 0; i < 3; i++)
		assert_true(cg_chain_verifier_line(&v, c.lines[i], strlen(c.lines[i])));
	assert_false(cg_chain_verifier_decided(&v));
	cg_chain_verifier_torn(&v, c.lines[3], 20);
	assert_true(cg_chain_verifier_decided(&v));
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_TORN);
	assert_int_equal(v.break_line, 4);
	assert_int_equal(v.verified, 3);
	assert_non_null(strstr(v.why, "torn last line: 20 byte(s)"));

	static const struct {
		const char *line;
		cg_chain_break_t want;
		const char *why;
	} bad[] = {
	        {"garbage", CG_CHAIN_NOT_JSON, "not JSON"},
	        {"", CG_CHAIN_NOT_JSON, "empty line"},
	        {"{\"ts\":\"x\",\"event\":\"e\"}", CG_CHAIN_UNCHAINED, "in a chained log"},
	        {"{\"seq\":3}", CG_CHAIN_MALFORMED, "seq without prev"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cg_chain_verifier_init(&v);
		cg_chain_verifier_next_file(&v);
		assert_true(cg_chain_verifier_line(&v, c.lines[0], strlen(c.lines[0])));
		assert_false(cg_chain_verifier_line(&v, bad[i].line, strlen(bad[i].line)));
		assert_int_equal(cg_chain_verifier_finish(&v), bad[i].want);
		assert_int_equal(v.break_line, 2);
		if (strstr(v.why, bad[i].why) == NULL)
			fail_msg("%s: %s", bad[i].line, v.why);
	}

	/* a log written with the chain off says so on its first line */
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	assert_false(cg_chain_verifier_line(&v, bad[2].line, strlen(bad[2].line)));
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_UNCHAINED);
	assert_non_null(strstr(v.why, "audit.chain off"));

	/* a line over the limit is judged by its length */
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	assert_false(cg_chain_verifier_line(&v, c.lines[0], CG_CHAIN_MAX_LINE + 1));
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_MALFORMED);

	/* nothing at all is intact: nothing to disprove */
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 0);
}

static void test_rotated_series(void **state)
{
	(void)state;
	chain_t c;
	cg_chain_verifier_t v;
	make_chain(&c, 7, 1, CG_CHAIN_GENESIS);

	/* audit.jsonl.2 audit.jsonl.1 audit.jsonl */
	static const int series[] = {0, 1, 2, -1, 3, 4, -1, 5, 6, -2};
	assert_int_equal(run(&v, &c, series), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 7);
	assert_int_equal(v.file, 2);

	/* an empty file in the middle (rotated right after a rotation) */
	static const int with_empty[] = {0, 1, 2, -1, -1, 3, 4, 5, 6, -2};
	assert_int_equal(run(&v, &c, with_empty), CG_CHAIN_INTACT);

	/* a file of the series left out */
	static const int gap[] = {0, 1, 2, -1, 5, 6, -2};
	assert_int_equal(run(&v, &c, gap), CG_CHAIN_REMOVED);
	assert_int_equal(v.break_file, 1);
	assert_int_equal(v.break_line, 1);
	assert_non_null(strstr(v.why, "a file of the series left out"));

	/* files given in the wrong order */
	static const int swapped[] = {3, 4, -1, 0, 1, 2, -2};
	assert_int_equal(run(&v, &c, swapped), CG_CHAIN_RESTARTED);
	assert_int_equal(v.break_file, 1);
	assert_non_null(strstr(v.why, "given in order"));
	static const int swapped2[] = {5, 6, -1, 3, 4, -2};
	assert_int_equal(run(&v, &c, swapped2), CG_CHAIN_INSERTED);

	/* the last line of the first file edited: found at the boundary */
	chain_t e = c;
	strstr(e.lines[2], "\"user\":\"u2\"")[9] = 'X';
	assert_int_equal(run(&v, &e, series), CG_CHAIN_EDITED);
	assert_int_equal(v.break_file, 0);
	assert_int_equal(v.break_line, 3);

	/* a writer that lost its state: a new chain inside the series */
	chain_t fresh;
	make_chain(&fresh, 2, 1, CG_CHAIN_GENESIS);
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	for (int i = 0; i < 3; i++)
		assert_true(cg_chain_verifier_line(&v, c.lines[i], strlen(c.lines[i])));
	cg_chain_verifier_next_file(&v);
	assert_false(cg_chain_verifier_line(&v, fresh.lines[0], strlen(fresh.lines[0])));
	assert_int_equal(cg_chain_verifier_finish(&v), CG_CHAIN_RESTARTED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_hash),
	        cmocka_unit_test(test_parse),
	        cmocka_unit_test(test_intact),
	        cmocka_unit_test(test_edited),
	        cmocka_unit_test(test_removed_inserted_reordered),
	        cmocka_unit_test(test_torn_and_bad_lines),
	        cmocka_unit_test(test_rotated_series),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
