/* Fuzzes gateway/pg_wire.c, the postgres front's view of a connection's
 * first bytes: pgw_first_packet classifies them (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage, direct TLS, garbage) and, once a
 * StartupMessage is complete, pgw_parse_startup reads its parameters. The
 * input is what a client sent; the checks are what pg_front.c relies on:
 *   - a classification never changes as more bytes arrive (a prefix is
 *     NEED_MORE or already the final answer);
 *   - a known packet length is within [8, max]; INVALID says why;
 *   - the parsed user/database/application_name point into the packet, are
 *     NUL-terminated there, and user is never empty.
 * The input also serves as the message of a FATAL ErrorResponse, which must
 * always fit 600 bytes and carry its own length; as the client's message
 * stream after login (pgw_fe_read: the same messages and verdict however
 * the bytes are split, never more kept than the bounds); and as an
 * AuthenticationSASL or SASLInitialResponse (pgw_sasl_*: a rewritten list
 * is well formed and has no "-PLUS" name left). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "pg/pg_wire.h"

#define STARTUP_MAX 10000 /* what pg_front.c allows, as PostgreSQL does */

static pgw_packet_t classify(const uint8_t *data, size_t n, size_t *packet_len, const char **error)
{
	uint8_t *copy = fuzz_copy(data, n);
	pgw_packet_t kind = pgw_first_packet(copy, n, STARTUP_MAX, packet_len, error);
	free(copy);
	return kind;
}

/* p points into [base, base + len) and its string ends there too. */
static void check_inside(const uint8_t *base, size_t len, const char *p)
{
	FUZZ_CHECK((const uint8_t *)p >= base && (const uint8_t *)p < base + len);
	FUZZ_CHECK(memchr(p, '\0', len - (size_t)((const uint8_t *)p - base)) != NULL);
}

static void fuzz_startup(const uint8_t *data, size_t len)
{
	uint8_t *packet = fuzz_copy(data, len);
	pgw_startup_t startup;

	if (pgw_parse_startup(packet, len, &startup)) {
		FUZZ_CHECK(startup.user != NULL && startup.user[0] != '\0');
		FUZZ_CHECK(startup.database != NULL && startup.database[0] != '\0');
		check_inside(packet, len, startup.user);
		check_inside(packet, len, startup.database);
		if (startup.application_name)
			check_inside(packet, len, startup.application_name);
		FUZZ_CHECK(packet[len - 1] == '\0');
	}
	free(packet);
}

static void fuzz_error_response(const uint8_t *data, size_t size)
{
	char *message = fuzz_string(data, size);
	const char *sqlstate = size >= 5 ? "28000" : "08P01";
	uint8_t buf[600];
	size_t n = pgw_error_response(buf, sizeof(buf), sqlstate, message);

	FUZZ_CHECK(n > 0 && n <= sizeof(buf));
	FUZZ_CHECK(buf[0] == 'E' && pgw_get32(buf + 1) == n - 1 && buf[n - 1] == '\0');
	/* too small a buffer is refused, never overrun */
	uint8_t *tight = malloc(n - 1);
	FUZZ_CHECK(tight != NULL);
	FUZZ_CHECK(pgw_error_response(tight, n - 1, sqlstate, message) == 0);
	free(tight);
	free(message);
}

/* Reads the stream in chunks of `step` bytes (0: at once). Returns the
 * final status; types[] gets the type of each message read (up to 64). */
static pgw_fe_status_t read_stream(const uint8_t *data, size_t size, size_t step, uint8_t *types,
                                   size_t *n_types, uint32_t *oids)
{
	uint8_t *copy = fuzz_copy(data, size);
	pgw_fe_t fe;
	pgw_fe_init(&fe);
	fe.capture = true;
	pgw_fe_status_t st = PGW_FE_MORE;
	size_t at = 0;
	*n_types = 0;
	while (at < size) {
		size_t chunk = step == 0 || size - at < step ? size - at : step;
		const uint8_t *p = copy + at;
		at += chunk;
		while (chunk > 0) {
			size_t used = 0;
			const char *error = NULL;
			st = pgw_fe_read(&fe, p, chunk, &used, &error);
			FUZZ_CHECK(used <= chunk);
			if (st == PGW_FE_INVALID) {
				FUZZ_CHECK(error != NULL);
				goto done;
			}
			FUZZ_CHECK(st != PGW_FE_NOMEM);
			p += used;
			chunk -= used;
			if (st == PGW_FE_MESSAGE) {
				const pgw_fe_msg_t *m = &fe.msg;
				FUZZ_CHECK(m->sql_len <= PGW_SQL_MAX + PGW_LOOKAHEAD);
				FUZZ_CHECK(m->sql_len <= m->sql_total);
				FUZZ_CHECK(m->stmt_len <= m->stmt_total);
				FUZZ_CHECK(m->head_len <= m->body_len &&
				           m->head_len <= PGW_HEAD_KEEP);
				if (*n_types < 64) {
					oids[*n_types] = m->fn_oid;
					types[(*n_types)++] = m->type;
				}
				st = PGW_FE_MORE;
			} else {
				FUZZ_CHECK(chunk == 0); /* MORE: every byte read */
			}
		}
	}
done:
	pgw_fe_finish(&fe);
	free(copy);
	return st;
}

static void fuzz_client_stream(const uint8_t *data, size_t size)
{
	uint8_t types[64], split_types[64];
	uint32_t oids[64], split_oids[64];
	size_t n = 0, split_n = 0;
	pgw_fe_status_t whole = read_stream(data, size, 0, types, &n, oids);
	for (size_t step = 1; step <= 7; step += 3) {
		pgw_fe_status_t split =
		        read_stream(data, size, step, split_types, &split_n, split_oids);
		FUZZ_CHECK(split == whole && split_n == n);
		FUZZ_CHECK(memcmp(types, split_types, n) == 0);
		FUZZ_CHECK(memcmp(oids, split_oids, n * sizeof(oids[0])) == 0);
	}
}

static void fuzz_sasl(const uint8_t *data, size_t size)
{
	uint8_t *m = fuzz_copy(data, size);
	size_t n = size;
	int left = pgw_sasl_drop_channel_binding(m, &n);
	if (left < 0) {
		FUZZ_CHECK(n == size && memcmp(m, data, size) == 0);
	} else {
		FUZZ_CHECK(n <= size && n >= 10 && m[0] == 'R' && pgw_get32(m + 1) == n - 1);
		FUZZ_CHECK(m[n - 1] == '\0' && (n == 10 || m[n - 2] == '\0'));
		int names = 0;
		for (size_t at = 9; m[at] != '\0'; names++) {
			size_t len = strlen((const char *)m + at);
			FUZZ_CHECK(len < 5 || memcmp(m + at + len - 5, "-PLUS", 5) != 0);
			at += len + 1;
		}
		FUZZ_CHECK(names == left);
	}
	free(m);
	m = fuzz_copy(data, size);
	pgw_sasl_choice_t c = pgw_sasl_initial(m, size);
	FUZZ_CHECK(c == PGW_SASL_UNBOUND || c == PGW_SASL_PLUS || c == PGW_SASL_FLAG_Y);
	free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t packet_len = 0, part_len = 0;
	const char *error = NULL, *part_error = NULL;
	pgw_packet_t kind;

	if (size > STARTUP_MAX + 64)
		return 0;
	kind = classify(data, size, &packet_len, &error);
	FUZZ_CHECK(kind >= PGW_NEED_MORE && kind <= PGW_INVALID);
	FUZZ_CHECK((kind == PGW_INVALID) == (error != NULL));
	switch (kind) {
	case PGW_SSL_REQUEST:
	case PGW_GSSENC_REQUEST:
		FUZZ_CHECK(size >= 8 && packet_len == 8);
		break;
	case PGW_CANCEL_REQUEST:
		FUZZ_CHECK(size >= 16 && packet_len == 16);
		break;
	case PGW_STARTUP:
		FUZZ_CHECK(packet_len >= 8 && packet_len <= STARTUP_MAX);
		if (packet_len <= size)
			fuzz_startup(data, packet_len);
		break;
	case PGW_DIRECT_TLS:
		FUZZ_CHECK(size >= 1 && data[0] == PGW_TLS_HANDSHAKE_BYTE);
		break;
	case PGW_NEED_MORE:
	case PGW_INVALID:
		break;
	}

	/* the answer for every prefix (capped: the first 64 bytes decide) */
	for (size_t k = 0; k < size && k < 64; k++) {
		pgw_packet_t part = classify(data, k, &part_len, &part_error);
		FUZZ_CHECK(part == PGW_NEED_MORE || part == kind);
		if (part != PGW_NEED_MORE && part != PGW_DIRECT_TLS)
			FUZZ_CHECK(part_len == packet_len);
	}

	fuzz_error_response(data, size);
	fuzz_client_stream(data, size);
	fuzz_sasl(data, size);
	return 0;
}
