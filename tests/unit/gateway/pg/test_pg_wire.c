/* gateway/pg/pg_wire.c: the client's messages as the query audit reads
 * them (whole, or split at every byte: the same answer), the refusals of
 * what PostgreSQL would not read, and the SASL mechanism list without
 * channel binding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pg/pg_wire.h"

/* --- building messages ------------------------------------------------------ */

typedef struct {
	uint8_t *p;
	size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *data, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void put16(buf_t *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	put(b, x, 2);
}

static void put32(buf_t *b, uint32_t v)
{
	uint8_t x[4];
	pgw_put32(x, v);
	put(b, x, 4);
}

static void put_str(buf_t *b, const char *s)
{
	put(b, s, strlen(s) + 1);
}

/* A message: type, then the body in body (its length field filled in). */
static void message(buf_t *out, char type, const buf_t *body)
{
	put(out, &type, 1);
	put32(out, (uint32_t)body->len + 4);
	if (body->len > 0)
		put(out, body->p, body->len);
}

static void query(buf_t *out, const char *sql)
{
	buf_t b = {0};
	put_str(&b, sql);
	message(out, 'Q', &b);
	free(b.p);
}

static void parse(buf_t *out, const char *name, const char *sql, uint16_t nparams)
{
	buf_t b = {0};
	put_str(&b, name);
	put_str(&b, sql);
	put16(&b, nparams);
	for (uint16_t i = 0; i < nparams; i++)
		put32(&b, 23); /* int4 */
	message(out, 'P', &b);
	free(b.p);
}

/* FunctionCall: oid, nfmt formats, args (length -1 = NULL), result format */
static void fcall(buf_t *out, uint32_t oid, uint16_t nfmt, const int32_t *lens, uint16_t nargs)
{
	buf_t b = {0};
	put32(&b, oid);
	put16(&b, nfmt);
	for (uint16_t i = 0; i < nfmt; i++)
		put16(&b, 1);
	put16(&b, nargs);
	for (uint16_t i = 0; i < nargs; i++) {
		put32(&b, (uint32_t)lens[i]);
		for (int32_t k = 0; k < lens[i]; k++)
			put(&b, "a", 1);
	}
	put16(&b, 0);
	message(out, 'F', &b);
	free(b.p);
}

/* --- reading them ---------------------------------------------------------- */

#define MAX_SEEN 8

typedef struct {
	pgw_fe_status_t last;
	const char *error;
	size_t n;
	pgw_fe_msg_t msg[MAX_SEEN];
	char sql[MAX_SEEN][PGW_SQL_MAX + PGW_LOOKAHEAD + 1];
} seen_t;

/* Feeds p[0..n) in chunks of `step` bytes (0: all at once) to a fresh
 * reader; records every message until the end or an error. */
static void feed(const uint8_t *p, size_t n, size_t step, bool capture, seen_t *out)
{
	memset(out, 0, sizeof(*out));
	pgw_fe_t fe;
	pgw_fe_init(&fe);
	fe.capture = capture;
	size_t at = 0;
	out->last = PGW_FE_MORE;
	while (at < n) {
		size_t chunk = step == 0 || n - at < step ? n - at : step;
		const uint8_t *c = p + at;
		at += chunk;
		while (chunk > 0 || out->last == PGW_FE_MESSAGE) {
			size_t used = 0;
			out->last = pgw_fe_read(&fe, c, chunk, &used, &out->error);
			assert_true(used <= chunk);
			if (out->last == PGW_FE_INVALID || out->last == PGW_FE_NOMEM) {
				pgw_fe_finish(&fe);
				return;
			}
			c += used;
			chunk -= used;
			if (out->last == PGW_FE_MESSAGE) {
				assert_true(out->n < MAX_SEEN);
				out->msg[out->n] = fe.msg;
				if (fe.msg.sql != NULL)
					memcpy(out->sql[out->n], fe.msg.sql, fe.msg.sql_len);
				out->n++;
				out->last = PGW_FE_MORE;
			}
			if (chunk == 0)
				break;
		}
	}
	pgw_fe_finish(&fe);
}

/* The same result whether the bytes come at once or one by one. */
static void feed_both(const buf_t *b, bool capture, seen_t *out)
{
	static seen_t bytewise;
	feed(b->p, b->len, 1, capture, &bytewise);
	feed(b->p, b->len, 0, capture, out);
	assert_int_equal(bytewise.last, out->last);
	assert_int_equal(bytewise.n, out->n);
	for (size_t i = 0; i < out->n; i++) {
		assert_int_equal(bytewise.msg[i].type, out->msg[i].type);
		assert_int_equal(bytewise.msg[i].sql_total, out->msg[i].sql_total);
		assert_int_equal(bytewise.msg[i].sql_len, out->msg[i].sql_len);
		assert_memory_equal(bytewise.sql[i], out->sql[i], out->msg[i].sql_len);
		assert_int_equal(bytewise.msg[i].stmt_total, out->msg[i].stmt_total);
		assert_int_equal(bytewise.msg[i].fn_oid, out->msg[i].fn_oid);
		assert_int_equal(bytewise.msg[i].fn_nargs, out->msg[i].fn_nargs);
		assert_int_equal(bytewise.msg[i].head_len, out->msg[i].head_len);
	}
}

static void test_query_and_others(void **state)
{
	(void)state;
	buf_t b = {0};
	query(&b, "select 1");
	buf_t sync = {0};
	message(&b, 'S', &sync); /* Sync: empty body */
	buf_t bind = {0};
	put(&bind, "\0\0\0\0\0\0\0", 7);
	message(&b, 'B', &bind); /* not read by the audit */
	query(&b, "select 2");
	seen_t s;
	feed_both(&b, true, &s);
	assert_int_equal(s.last, PGW_FE_MORE);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.msg[0].type, 'Q');
	assert_int_equal(s.msg[0].sql_total, 8);
	assert_memory_equal(s.sql[0], "select 1", 8);
	assert_int_equal(s.msg[1].type, 'S');
	assert_int_equal(s.msg[2].type, 'B');
	assert_int_equal(s.msg[2].head_len, 7);
	assert_memory_equal(s.sql[3], "select 2", 8);
	/* without capture: framed and checked, no text kept */
	feed_both(&b, false, &s);
	assert_int_equal(s.n, 4);
	assert_null(s.msg[0].sql);
	assert_int_equal(s.msg[0].sql_total, 8);
	free(b.p);
	free(bind.p);
}

/* The finding: a Parse whose statement name alone is longer than what
 * was kept. The SQL is still read and kept, in full. */
static void test_parse_long_name(void **state)
{
	(void)state;
	char *name = malloc(5001);
	memset(name, 'n', 5000);
	name[5000] = '\0';
	buf_t b = {0};
	parse(&b, name, "select secret from vault where id = $1", 1);
	seen_t s;
	feed_both(&b, true, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.msg[0].type, 'P');
	assert_int_equal(s.msg[0].stmt_total, 5000);
	assert_int_equal(s.msg[0].stmt_len, PGW_STMT_MAX + PGW_LOOKAHEAD);
	assert_int_equal(s.msg[0].sql_total, 38);
	assert_memory_equal(s.sql[0], "select secret from vault where id = $1", 38);
	free(name);
	free(b.p);
}

static void test_long_sql_kept_bounded(void **state)
{
	(void)state;
	size_t n = 100000;
	char *sql = malloc(n + 1);
	memset(sql, 'x', n);
	memcpy(sql, "select '", 8);
	sql[n] = '\0';
	buf_t b = {0};
	query(&b, sql);
	parse(&b, "", sql, 0);
	seen_t s;
	feed(b.p, b.len, 4096, true, &s);
	assert_int_equal(s.last, PGW_FE_MORE);
	assert_int_equal(s.n, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(s.msg[i].sql_total, n);
		assert_int_equal(s.msg[i].sql_len, PGW_SQL_MAX + PGW_LOOKAHEAD);
		assert_memory_equal(s.sql[i], sql, PGW_SQL_MAX + PGW_LOOKAHEAD);
	}
	assert_int_equal(s.msg[1].stmt_total, 0);
	free(sql);
	free(b.p);
}

static void test_function_call(void **state)
{
	(void)state;
	buf_t b = {0};
	const int32_t lens[] = {4, -1, 0, 3};
	fcall(&b, 764, 1, lens, 4); /* lo_import-like: text, NULL, empty, bytes */
	fcall(&b, 1598, 0, NULL, 0);
	fcall(&b, 42, 2, lens, 2);
	seen_t s;
	feed_both(&b, true, &s);
	assert_int_equal(s.last, PGW_FE_MORE);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.msg[0].type, 'F');
	assert_int_equal(s.msg[0].fn_oid, 764);
	assert_int_equal(s.msg[0].fn_nargs, 4);
	assert_int_equal(s.msg[1].fn_oid, 1598);
	assert_int_equal(s.msg[1].fn_nargs, 0);
	assert_int_equal(s.msg[2].fn_oid, 42);
	assert_int_equal(s.msg[2].fn_nargs, 2);
	free(b.p);
}

/* Messages PostgreSQL would not read as sent: refused, whatever the split. */
static void test_refused(void **state)
{
	(void)state;
	static const struct {
		char type;
		const char *body;
		size_t len;
		const char *why;
	} cases[] = {
	        {'Q', "select 1", 8, "a string without its terminating NUL"},
	        {'Q', "", 0, "a string without its terminating NUL"},
	        {'Q', "select 1\0x", 10, "bytes after the end of a message's fields"},
	        {'P', "name-only", 9, "a string without its terminating NUL"},
	        {'P', "s\0select 1", 10, "a string without its terminating NUL"},
	        {'P', "s\0select 1\0", 11, "a message shorter than its fields"},
	        {'P', "s\0select 1\0\0\1", 13, "a message shorter than its fields"},
	        {'P', "s\0select 1\0\0\0z", 14, "bytes after the end of a message's fields"},
	        {'F', "\0\0\2\374\0", 5, "a message shorter than its fields"},
	        {'F', "\0\0\2\374\0\0\0\1\0\0\0\1", 12, "a message shorter than its fields"},
	        {'F', "\0\0\2\374\0\0\0\1\200\0\0\0\0\0", 14,
	         "negative argument length in a FunctionCall"},
	        {'F', "\0\0\2\374\0\0\0\0\0\0\0", 11, "bytes after the end of a message's fields"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_t body = {0}, b = {0};
		query(&b, "select 0"); /* read before the bad one */
		if (cases[i].len > 0)
			put(&body, cases[i].body, cases[i].len);
		message(&b, cases[i].type, &body);
		query(&b, "select 3");
		for (size_t step = 0; step <= 1; step++) {
			seen_t s;
			feed(b.p, b.len, step, true, &s);
			if (s.last != PGW_FE_INVALID || s.n != 1 ||
			    strcmp(s.error, cases[i].why) != 0)
				fail_msg("case %zu (step %zu): status %d after %zu messages: %s", i,
				         step, s.last, s.n, s.error ? s.error : "(none)");
		}
		free(body.p);
		free(b.p);
	}
}

static void test_framing(void **state)
{
	(void)state;
	static const uint8_t short_len[] = {'S', 0, 0, 0, 3};
	static const uint8_t huge[] = {'Q', 0x40, 0, 0, 0};
	static const uint8_t at_limit[] = {'d', 0x3f, 0xff, 0xff, 0xfe, 'x'};
	seen_t s;
	feed(short_len, sizeof(short_len), 0, true, &s);
	assert_int_equal(s.last, PGW_FE_INVALID);
	assert_string_equal(s.error, "message length under 4");
	feed(huge, sizeof(huge), 0, true, &s);
	assert_int_equal(s.last, PGW_FE_INVALID);
	assert_string_equal(s.error, "message longer than PostgreSQL allows");
	feed(at_limit, sizeof(at_limit), 0, true, &s); /* CopyData at the limit: waits */
	assert_int_equal(s.last, PGW_FE_MORE);
	assert_int_equal(s.n, 0);
}

/* --- SASL ------------------------------------------------------------------ */

static size_t sasl(uint8_t *m, const char *const *names, size_t n)
{
	buf_t b = {0};
	put32(&b, PGW_AUTH_SASL);
	for (size_t i = 0; i < n; i++)
		put_str(&b, names[i]);
	put(&b, "", 1);
	buf_t out = {0};
	message(&out, 'R', &b);
	memcpy(m, out.p, out.len);
	size_t len = out.len;
	free(b.p);
	free(out.p);
	return len;
}

static void test_sasl_drop_channel_binding(void **state)
{
	(void)state;
	uint8_t m[256], want[256];
	const char *pg[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
	const char *plain[] = {"SCRAM-SHA-256"};
	size_t n = sasl(m, pg, 2), wn = sasl(want, plain, 1);
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &n), 1);
	assert_int_equal(n, wn);
	assert_memory_equal(m, want, n);
	/* nothing to drop: unchanged */
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &n), 1);
	assert_memory_equal(m, want, n);
	/* only channel-bound mechanisms: none left */
	const char *only[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"};
	n = sasl(m, only, 2);
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &n), 0);
	assert_int_equal(n, 10);
	assert_memory_equal(m, "R\0\0\0\11\0\0\0\12\0", 10);
	/* malformed: unchanged, -1 */
	n = sasl(m, pg, 2);
	uint8_t copy[256];
	memcpy(copy, m, n);
	size_t cut = n - 1; /* no final empty name */
	pgw_put32(m + 1, (uint32_t)cut - 1);
	memcpy(copy, m, n);
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &cut), -1);
	assert_memory_equal(m, copy, n);
	size_t wrong = n; /* the length field disagrees */
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &wrong), -1);
	n = sasl(m, pg, 2);
	m[6] = 11; /* not AuthenticationSASL */
	assert_int_equal(pgw_sasl_drop_channel_binding(m, &n), -1);
}

static size_t initial(uint8_t *body, const char *mech, const char *data)
{
	size_t n = strlen(mech) + 1;
	memcpy(body, mech, n);
	pgw_put32(body + n, data != NULL ? (uint32_t)strlen(data) : 0xffffffffu);
	n += 4;
	if (data != NULL) {
		memcpy(body + n, data, strlen(data));
		n += strlen(data);
	}
	return n;
}

static void test_sasl_initial(void **state)
{
	(void)state;
	uint8_t b[128];
	size_t n = initial(b, "SCRAM-SHA-256", "n,,n=,r=abcdef");
	assert_int_equal(pgw_sasl_initial(b, n), PGW_SASL_UNBOUND);
	n = initial(b, "SCRAM-SHA-256", "y,,n=,r=abcdef");
	assert_int_equal(pgw_sasl_initial(b, n), PGW_SASL_FLAG_Y);
	n = initial(b, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc");
	assert_int_equal(pgw_sasl_initial(b, n), PGW_SASL_PLUS);
	n = initial(b, "SCRAM-SHA-256", NULL);
	assert_int_equal(pgw_sasl_initial(b, n), PGW_SASL_UNBOUND);
	/* only the name seen so far */
	assert_int_equal(pgw_sasl_initial((const uint8_t *)"SCRAM-SHA-256", 13), PGW_SASL_UNBOUND);
	assert_int_equal(pgw_sasl_initial((const uint8_t *)"", 0), PGW_SASL_UNBOUND);
}

/* --- the StartupMessage's replication value ---------------------------------- */

static void test_replication_off(void **state)
{
	(void)state;
	/* PostgreSQL's parse_bool false: false, no, off, 0, unique prefixes, any case */
	const char *off[] = {"false", "f", "FaLs", "No", "n", "OFF", "of", "0"};
	for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
		if (!pgw_replication_off(off[i]))
			fail_msg("replication=%s must be an ordinary session", off[i]);
	}
	assert_true(pgw_replication_off(NULL)); /* no replication parameter */
	/* a walsender ("database": logical; true: physical), or a value
	 * PostgreSQL refuses ("o" is on or off, "" nothing): never off */
	const char *walsender[] = {"true", "on", "1",      "yes",  "database", "DATABASE", "o",
	                           "",     "00", "falsey", "offf", " off",     "nope",     "t"};
	for (size_t i = 0; i < sizeof(walsender) / sizeof(walsender[0]); i++) {
		if (pgw_replication_off(walsender[i]))
			fail_msg("replication=\"%s\" taken for an ordinary session", walsender[i]);
	}
}

static size_t startup_packet(uint8_t *out, size_t cap, const char *const *kv, size_t n)
{
	buf_t b = {0};
	put32(&b, 0);
	put32(&b, 196608);
	for (size_t i = 0; i < n; i++)
		put_str(&b, kv[i]);
	put(&b, "", 1);
	pgw_put32(b.p, (uint32_t)b.len);
	assert_true(b.len <= cap);
	memcpy(out, b.p, b.len);
	size_t len = b.len;
	free(b.p);
	return len;
}

static void test_startup_replication_parsed(void **state)
{
	(void)state;
	uint8_t p[256];
	pgw_startup_t st;
	const char *with[] = {"user", "alice", "replication", "database", "database", "postgres"};
	size_t n = startup_packet(p, sizeof(p), with, 6);
	assert_true(pgw_parse_startup(p, n, &st));
	assert_string_equal(st.user, "alice");
	assert_string_equal(st.database, "postgres");
	assert_non_null(st.replication);
	assert_string_equal(st.replication, "database");
	assert_false(pgw_replication_off(st.replication));
	const char *without[] = {"user", "alice", "database", "postgres"};
	n = startup_packet(p, sizeof(p), without, 4);
	assert_true(pgw_parse_startup(p, n, &st));
	assert_null(st.replication);
	assert_true(pgw_replication_off(st.replication));
}

/* --- the gateway's own ErrorResponse ----------------------------------------- */

/* The 'M' field of an ErrorResponse built by pgw_error_response. */
static const char *error_message(const uint8_t *e, size_t n)
{
	assert_true(n > 5);
	assert_int_equal(e[0], 'E');
	assert_int_equal(pgw_get32(e + 1), n - 1);
	assert_int_equal(e[n - 1], '\0');
	for (size_t at = 5; at < n - 1;) {
		const char *field = (const char *)e + at;
		if (field[0] == 'M')
			return field + 1;
		at += strlen(field) + 1;
	}
	fail_msg("no M field");
	return NULL;
}

static void test_error_response_control_characters(void **state)
{
	(void)state;
	uint8_t e[600];
	/* the client's db user quoted in a refusal: ESC, BEL, CR LF, DEL and the
	 * C1 CSI (U+009B) become '?'; other UTF-8 (U+00E9, U+00A0) is kept */
	size_t n = pgw_error_response(e, sizeof(e), "28000",
	                              "as db user \x1b[2Jevil\a\r\n\x7f \xc2\x9b"
	                              "31m caf\xc3\xa9\xc2\xa0!");
	assert_true(n > 0);
	const char *m = error_message(e, n);
	assert_string_equal(m, "as db user ?[2Jevil???? ?31m caf\xc3\xa9\xc2\xa0!");
	for (const char *c = m; *c != '\0'; c++) {
		if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
			fail_msg("control byte 0x%02x in the message", (unsigned char)*c);
	}
	/* a long message: cut to 511 bytes, never inside a character; a
	 * replaced byte takes one byte */
	char longer[700];
	memset(longer, 'a', sizeof(longer));
	memcpy(longer + 508, "\x1b\xc3\xa9", 3); /* bytes 508, 509-510 */
	longer[sizeof(longer) - 1] = '\0';
	n = pgw_error_response(e, sizeof(e), "08P01", longer);
	assert_true(n > 0);
	m = error_message(e, n);
	assert_int_equal(strlen(m), 511);
	assert_memory_equal(m + 508, "?\xc3\xa9", 3);
	memset(longer, 'a', sizeof(longer) - 1);
	memcpy(longer + 510, "\xc3\xa9", 2); /* U+00E9 over bytes 510-511: the cut falls inside */
	n = pgw_error_response(e, sizeof(e), "08P01", longer);
	m = error_message(e, n);
	assert_int_equal(strlen(m), 510);
	assert_int_equal((unsigned char)m[509], 'a');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_query_and_others),
	        cmocka_unit_test(test_parse_long_name),
	        cmocka_unit_test(test_long_sql_kept_bounded),
	        cmocka_unit_test(test_function_call),
	        cmocka_unit_test(test_refused),
	        cmocka_unit_test(test_framing),
	        cmocka_unit_test(test_sasl_drop_channel_binding),
	        cmocka_unit_test(test_sasl_initial),
	        cmocka_unit_test(test_replication_off),
	        cmocka_unit_test(test_startup_replication_parsed),
	        cmocka_unit_test(test_error_response_control_characters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
