/* The start of the PostgreSQL wire protocol: classifying a connection's
 * first packet, parsing a StartupMessage, writing an ErrorResponse. Pure
 * functions over byte buffers (fuzzed in tests/fuzz). */
#include "pg/pg_wire.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_utf8.h"

static size_t put_field(uint8_t *buf, size_t at, char type, const char *value, size_t len)
{
	buf[at++] = (uint8_t)type;
	memcpy(buf + at, value, len);
	at += len;
	buf[at++] = '\0';
	return at;
}

/* The message as the client's terminal will show it: it may quote the
 * client's own db user or database name, so control characters (C0, DEL,
 * C1) become '?' and a cut never splits a character. */
static size_t printable_copy(char out[512], const char *message)
{
	size_t n = cg_utf8_cut(message, strnlen(message, 512), 511);
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)message[i];
		if (c == 0xc2 && i + 1 < n && (unsigned char)message[i + 1] >= 0x80 &&
		    (unsigned char)message[i + 1] <= 0x9f) {
			out[at++] = '?';
			i++;
		} else {
			out[at++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
		}
	}
	out[at] = '\0';
	return at;
}

size_t pgw_error_response(uint8_t *buf, size_t cap, const char *sqlstate, const char *raw)
{
	char message[512];
	size_t mlen = printable_copy(message, raw);
	size_t slen = strnlen(sqlstate, 5);
	/* 'E' len 'S'FATAL\0 'V'FATAL\0 'C'xxxxx\0 'M'msg\0 \0 */
	size_t need = 1 + 4 + (1 + 6) * 2 + (1 + slen + 1) + (1 + mlen + 1) + 1;
	if (need > cap)
		return 0;
	size_t at = 5;
	buf[0] = 'E';
	at = put_field(buf, at, 'S', "FATAL", 5);
	at = put_field(buf, at, 'V', "FATAL", 5);
	at = put_field(buf, at, 'C', sqlstate, slen);
	at = put_field(buf, at, 'M', message, mlen);
	buf[at++] = '\0';
	pgw_put32(buf + 1, (uint32_t)(at - 1));
	return at;
}

pgw_packet_t pgw_first_packet(const uint8_t *p, size_t n, size_t max, size_t *packet_len,
                              const char **error)
{
	*error = NULL;
	if (n == 0)
		return PGW_NEED_MORE;
	if (p[0] == PGW_TLS_HANDSHAKE_BYTE)
		return PGW_DIRECT_TLS;
	if (n < 8)
		return PGW_NEED_MORE;
	uint32_t len = pgw_get32(p), code = pgw_get32(p + 4);
	*packet_len = len;
	if (len < 8 || len > max) {
		*error = "bad length";
		return PGW_INVALID;
	}
	if (code == PGW_SSL_REQUEST_CODE || code == PGW_GSSENC_REQUEST_CODE) {
		if (len != 8) {
			*error = "bad length";
			return PGW_INVALID;
		}
		return code == PGW_SSL_REQUEST_CODE ? PGW_SSL_REQUEST : PGW_GSSENC_REQUEST;
	}
	if (code == PGW_CANCEL_REQUEST_CODE) {
		if (len != 16) {
			*error = "bad length";
			return PGW_INVALID;
		}
		return n < 16 ? PGW_NEED_MORE : PGW_CANCEL_REQUEST;
	}
	if (code >> 16 == 3)
		return PGW_STARTUP;
	*error = "unknown request code";
	return PGW_INVALID;
}

bool pgw_parse_startup(const uint8_t *p, size_t len, pgw_startup_t *out)
{
	memset(out, 0, sizeof(*out));
	size_t at = 8;
	while (at < len && p[at] != '\0') {
		const char *name = (const char *)p + at;
		const uint8_t *end = memchr(p + at, '\0', len - at);
		if (end == NULL)
			return false;
		at = (size_t)(end - p) + 1;
		const char *value = (const char *)p + at;
		end = at < len ? memchr(p + at, '\0', len - at) : NULL;
		if (end == NULL)
			return false;
		at = (size_t)(end - p) + 1;
		if (strcmp(name, "user") == 0)
			out->user = value;
		else if (strcmp(name, "database") == 0)
			out->database = value;
		else if (strcmp(name, "application_name") == 0)
			out->application_name = value;
		else if (strcmp(name, "replication") == 0)
			out->replication = value;
	}
	/* the list ends with one more NUL, the last byte of the packet */
	if (at + 1 != len || out->user == NULL || out->user[0] == '\0')
		return false;
	if (out->database == NULL || out->database[0] == '\0')
		out->database = out->user;
	return true;
}

/* value is a prefix of word, at least min bytes long, in any case */
static bool prefix_of(const char *value, const char *word, size_t min)
{
	size_t n = strlen(value);
	return n >= min && n <= strlen(word) && strncasecmp(value, word, n) == 0;
}

bool pgw_replication_off(const char *value)
{
	return value == NULL || strcmp(value, "0") == 0 || prefix_of(value, "false", 1) ||
	       prefix_of(value, "no", 1) || prefix_of(value, "off", 2);
}

/* --- the client's messages ----------------------------------------------- */

/* The field being read. PostgreSQL reads (postgres.c, fastpath.c):
 *   Query     String text
 *   Parse     String name, String text, Int16 n, Int32[n] parameter types
 *   FunctionCall  Int32 oid, Int16 n, Int16[n] formats, Int16 nargs,
 *             nargs x (Int32 len (-1: NULL), Byte[len]), Int16 result format
 * and then requires the message to end (pq_getmsgend). */
enum {
	ST_END,     /* every field read: the message must end here */
	ST_REST,    /* a message the audit does not read: skipped */
	ST_Q_SQL,   /* Query: the text */
	ST_P_NAME,  /* Parse: the statement name */
	ST_P_SQL,   /* Parse: the text */
	ST_P_N,     /* Parse: Int16 parameter count */
	ST_P_TYPES, /* Parse: the parameter types, skipped */
	ST_F_OID,   /* FunctionCall: Int32 function OID */
	ST_F_NFMT,  /* Int16 argument format count */
	ST_F_FMTS,  /* the formats, skipped */
	ST_F_NARGS, /* Int16 argument count */
	ST_F_ALEN,  /* Int32 argument length */
	ST_F_ARG,   /* the argument, skipped */
	ST_F_RFMT,  /* Int16 result format */
};

void pgw_fe_init(pgw_fe_t *fe)
{
	memset(fe, 0, sizeof(*fe));
}

void pgw_fe_finish(pgw_fe_t *fe)
{
	free(fe->sql_buf);
	fe->sql_buf = NULL;
}

static void expect_int(pgw_fe_t *fe, int step, uint8_t len)
{
	fe->step = step;
	fe->num_len = len;
	fe->num_have = 0;
}

static void skipped(pgw_fe_t *fe);

static void expect_skip(pgw_fe_t *fe, int step, uint32_t bytes)
{
	fe->step = step;
	fe->skip = bytes;
	if (bytes == 0)
		skipped(fe);
}

/* The next FunctionCall field after an argument (or the argument count). */
static void next_argument(pgw_fe_t *fe)
{
	if (fe->args > 0) {
		fe->args--;
		expect_int(fe, ST_F_ALEN, 4);
	} else {
		expect_int(fe, ST_F_RFMT, 2);
	}
}

/* An integer field is complete: the next step. False: invalid. */
static bool integer_read(pgw_fe_t *fe, const char **error)
{
	uint32_t v = fe->num_len == 2 ? (uint32_t)fe->num[0] << 8 | fe->num[1] : pgw_get32(fe->num);
	switch (fe->step) {
	case ST_P_N:
		expect_skip(fe, ST_P_TYPES, 4 * v);
		break;
	case ST_F_OID:
		fe->msg.fn_oid = v;
		expect_int(fe, ST_F_NFMT, 2);
		break;
	case ST_F_NFMT:
		expect_skip(fe, ST_F_FMTS, 2 * v);
		break;
	case ST_F_NARGS:
		fe->msg.fn_nargs = (uint16_t)v;
		fe->args = v;
		next_argument(fe);
		break;
	case ST_F_ALEN:
		if (v == 0xffffffffu) { /* NULL */
			next_argument(fe);
		} else if (v & 0x80000000u) {
			*error = "negative argument length in a FunctionCall";
			return false;
		} else {
			expect_skip(fe, ST_F_ARG, v);
		}
		break;
	case ST_F_RFMT:
		fe->step = ST_END;
		break;
	}
	return true;
}

/* A skip is complete (or was empty): the next step. */
static void skipped(pgw_fe_t *fe)
{
	switch (fe->step) {
	case ST_P_TYPES:
		fe->step = ST_END;
		break;
	case ST_F_FMTS:
		expect_int(fe, ST_F_NARGS, 2);
		break;
	case ST_F_ARG:
		next_argument(fe);
		break;
	}
}

/* A string field: scans for its NUL, keeping the first cap bytes. Returns
 * the bytes consumed; *done when the NUL was among them. */
static size_t string_bytes(const uint8_t *p, size_t n, char *keep, size_t cap, size_t *kept,
                           size_t *total, bool *done)
{
	const uint8_t *nul = memchr(p, '\0', n);
	size_t text = nul != NULL ? (size_t)(nul - p) : n;
	if (keep != NULL && *kept < cap) {
		size_t copy = text < cap - *kept ? text : cap - *kept;
		memcpy(keep + *kept, p, copy);
		*kept += copy;
	}
	*total += text;
	*done = nul != NULL;
	return nul != NULL ? text + 1 : n;
}

/* Reads body bytes p[0..n) (n <= fe->left) for the current field(s).
 * Returns the bytes consumed (at least 1), or 0 with *error. */
static size_t body_bytes(pgw_fe_t *fe, const uint8_t *p, size_t n, const char **error)
{
	pgw_fe_msg_t *m = &fe->msg;
	bool done = false;
	size_t used;
	switch (fe->step) {
	case ST_END:
		*error = "bytes after the end of a message's fields";
		return 0;
	case ST_REST:
		return n;
	case ST_P_NAME:
		used = string_bytes(p, n, fe->capturing ? m->stmt : NULL, sizeof(m->stmt),
		                    &m->stmt_len, &m->stmt_total, &done);
		if (done)
			fe->step = ST_P_SQL;
		return used;
	case ST_Q_SQL:
	case ST_P_SQL:
		used = string_bytes(p, n, fe->capturing ? fe->sql_buf : NULL,
		                    PGW_SQL_MAX + PGW_LOOKAHEAD, &m->sql_len, &m->sql_total, &done);
		if (done) {
			if (fe->step == ST_Q_SQL)
				fe->step = ST_END;
			else
				expect_int(fe, ST_P_N, 2);
		}
		return used;
	case ST_P_TYPES:
	case ST_F_FMTS:
	case ST_F_ARG:
		used = n < fe->skip ? n : fe->skip;
		fe->skip -= (uint32_t)used;
		if (fe->skip == 0)
			skipped(fe);
		return used;
	default: /* an integer */
		used = (size_t)(fe->num_len - fe->num_have);
		if (used > n)
			used = n;
		memcpy(fe->num + fe->num_have, p, used);
		fe->num_have += (uint8_t)used;
		if (fe->num_have == fe->num_len && !integer_read(fe, error))
			return 0;
		return used;
	}
}

/* The header is complete: starts reading the message. */
static pgw_fe_status_t begin_message(pgw_fe_t *fe, const char **error)
{
	uint32_t len = pgw_get32(fe->hdr + 1);
	if (len < 4 || len > PGW_MAX_MESSAGE) {
		*error = len < 4 ? "message length under 4"
		                 : "message longer than PostgreSQL allows";
		return PGW_FE_INVALID;
	}
	pgw_fe_msg_t *m = &fe->msg;
	m->head_len = m->stmt_len = m->stmt_total = m->sql_len = m->sql_total = 0;
	m->sql = NULL;
	m->fn_oid = 0;
	m->fn_nargs = 0;
	m->type = fe->hdr[0];
	m->body_len = len - 4;
	fe->left = len - 4;
	fe->capturing = false;
	switch (m->type) {
	case 'Q':
	case 'P':
		fe->step = m->type == 'Q' ? ST_Q_SQL : ST_P_NAME;
		if (fe->capture && fe->sql_buf == NULL) {
			fe->sql_buf = malloc(PGW_SQL_MAX + PGW_LOOKAHEAD);
			if (fe->sql_buf == NULL)
				return PGW_FE_NOMEM;
		}
		fe->capturing = fe->capture;
		m->sql = fe->capturing ? fe->sql_buf : NULL;
		break;
	case 'F':
		expect_int(fe, ST_F_OID, 4);
		break;
	default:
		fe->step = ST_REST;
		break;
	}
	return PGW_FE_MORE;
}

static const char *end_error(int step)
{
	switch (step) {
	case ST_Q_SQL:
	case ST_P_NAME:
	case ST_P_SQL:
		return "a string without its terminating NUL";
	default:
		return "a message shorter than its fields";
	}
}

pgw_fe_status_t pgw_fe_read(pgw_fe_t *fe, const uint8_t *p, size_t n, size_t *used,
                            const char **error)
{
	size_t at = 0;
	*error = NULL;
	*used = 0;
	if (fe->hdr_len < sizeof(fe->hdr)) {
		size_t take = sizeof(fe->hdr) - fe->hdr_len;
		if (take > n)
			take = n;
		memcpy(fe->hdr + fe->hdr_len, p, take);
		fe->hdr_len += (uint8_t)take;
		at = take;
		if (fe->hdr_len < sizeof(fe->hdr)) {
			*used = at;
			return PGW_FE_MORE;
		}
		pgw_fe_status_t st = begin_message(fe, error);
		if (st != PGW_FE_MORE)
			return st;
	}
	pgw_fe_msg_t *m = &fe->msg;
	size_t take = n - at < fe->left ? n - at : fe->left;
	if (m->head_len < sizeof(m->head)) {
		size_t copy = sizeof(m->head) - m->head_len;
		if (copy > take)
			copy = take;
		memcpy(m->head + m->head_len, p + at, copy);
		m->head_len += copy;
	}
	while (take > 0) {
		size_t k = body_bytes(fe, p + at, take, error);
		if (k == 0)
			return PGW_FE_INVALID;
		at += k;
		take -= k;
		fe->left -= (uint32_t)k;
	}
	*used = at;
	if (fe->left > 0)
		return PGW_FE_MORE;
	if (fe->step != ST_END && fe->step != ST_REST) {
		*error = end_error(fe->step);
		return PGW_FE_INVALID;
	}
	fe->hdr_len = 0;
	return PGW_FE_MESSAGE;
}

/* --- SASL ----------------------------------------------------------------- */

static bool ends_with_plus(const char *name, size_t len)
{
	return len >= 5 && memcmp(name + len - 5, "-PLUS", 5) == 0;
}

int pgw_sasl_drop_channel_binding(uint8_t *m, size_t *n)
{
	/* 'R', Int32 length, Int32 10, names (each NUL-terminated), "" */
	if (*n < 10 || m[0] != 'R' || pgw_get32(m + 1) != *n - 1 ||
	    pgw_get32(m + 5) != PGW_AUTH_SASL)
		return -1;
	size_t at = 9, out = 9;
	int left = 0;
	/* check the whole list first, so a malformed message stays unchanged */
	for (size_t i = at;;) {
		const uint8_t *nul = memchr(m + i, '\0', *n - i);
		if (nul == NULL)
			return -1;
		size_t len = (size_t)(nul - (m + i));
		i += len + 1;
		if (len == 0) {
			if (i != *n)
				return -1; /* bytes after the empty name */
			break;
		}
	}
	for (;;) {
		size_t len = strlen((const char *)m + at);
		if (len == 0)
			break;
		if (!ends_with_plus((const char *)m + at, len)) {
			memmove(m + out, m + at, len + 1);
			out += len + 1;
			left++;
		}
		at += len + 1;
	}
	m[out++] = '\0';
	pgw_put32(m + 1, (uint32_t)(out - 1));
	*n = out;
	return left;
}

pgw_sasl_choice_t pgw_sasl_initial(const uint8_t *body, size_t n)
{
	const uint8_t *nul = memchr(body, '\0', n);
	if (nul == NULL)
		return PGW_SASL_UNBOUND; /* no name we know is that long */
	size_t len = (size_t)(nul - body);
	if (ends_with_plus((const char *)body, len))
		return PGW_SASL_PLUS;
	size_t data = len + 1 + 4;
	if (len > 6 && memcmp(body, "SCRAM-", 6) == 0 && n > data &&
	    pgw_get32(body + len + 1) != 0xffffffffu && body[data] == 'y')
		return PGW_SASL_FLAG_Y;
	return PGW_SASL_UNBOUND;
}
