/* The few PostgreSQL wire-protocol constants and messages the gateway
 * itself speaks (all integers big-endian). */
#ifndef GW_PG_WIRE_H
#define GW_PG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define PGW_SSL_REQUEST_CODE    80877103u
#define PGW_GSSENC_REQUEST_CODE 80877104u
#define PGW_CANCEL_REQUEST_CODE 80877102u
#define PGW_PROTOCOL_3_0        196608u
#define PGW_TLS_HANDSHAKE_BYTE  0x16

static inline uint32_t pgw_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void pgw_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* A FATAL ErrorResponse ('E') with SQLSTATE and message into buf. Returns
 * its length, or 0 if it does not fit (the message is cut to fit 512 bytes
 * first, so a buf of 600 bytes always suffices). */
size_t pgw_error_response(uint8_t *buf, size_t cap, const char *sqlstate, const char *message);

#endif
