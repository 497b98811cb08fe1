/* PostgreSQL messages the gateway writes itself. */
#include "pg_wire.h"

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
