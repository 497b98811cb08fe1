/* The start of the PostgreSQL wire protocol: classifying a connection's
 * first packet, parsing a StartupMessage, writing an ErrorResponse. Pure
 * functions over byte buffers (fuzzed in tests/fuzz). */
#include "pg/pg_wire.h"

#include <string.h>

static size_t put_field(uint8_t *buf, size_t at, char type, const char *value, size_t len)
{
	buf[at++] = (uint8_t)type;
	memcpy(buf + at, value, len);
	at += len;
	buf[at++] = '\0';
	return at;
}

size_t pgw_error_response(uint8_t *buf, size_t cap, const char *sqlstate, const char *message)
{
	size_t mlen = strnlen(message, 512);
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
	}
	/* the list ends with one more NUL, the last byte of the packet */
	if (at + 1 != len || out->user == NULL || out->user[0] == '\0')
		return false;
	if (out->database == NULL || out->database[0] == '\0')
		out->database = out->user;
	return true;
}
