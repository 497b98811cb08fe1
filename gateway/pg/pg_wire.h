/* The few PostgreSQL wire-protocol constants and messages the gateway
 * itself speaks (all integers big-endian). */
#ifndef GW_PG_WIRE_H
#define GW_PG_WIRE_H

#include <stdbool.h>
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

/* What the first bytes of a connection (or of the TLS stream) are. */
typedef enum {
	PGW_NEED_MORE = 0,  /* a valid prefix so far */
	PGW_DIRECT_TLS,     /* a TLS record: PostgreSQL 17 direct TLS */
	PGW_SSL_REQUEST,    /* exactly 8 bytes */
	PGW_GSSENC_REQUEST, /* exactly 8 bytes */
	PGW_CANCEL_REQUEST, /* 16 bytes: pid, secret */
	PGW_STARTUP,        /* protocol 3.x; *packet_len says how long it is */
	PGW_INVALID,        /* *error says why */
} pgw_packet_t;

/* Classifies the packet starting at p from the n bytes received so far.
 * max bounds a StartupMessage's length (PostgreSQL: 10,000). Sets
 * *packet_len whenever the length is known; *error (static) for INVALID.
 * Never reads past n. */
pgw_packet_t pgw_first_packet(const uint8_t *p, size_t n, size_t max, size_t *packet_len,
                              const char **error);

/* The parameters of a complete StartupMessage of len bytes: pointers into
 * p (NUL-terminated there). database defaults to user, as PostgreSQL does.
 * False when malformed (unterminated, trailing bytes) or without a user. */
typedef struct pgw_startup {
	const char *user;
	const char *database;
	const char *application_name; /* NULL when absent */
} pgw_startup_t;
bool pgw_parse_startup(const uint8_t *p, size_t len, pgw_startup_t *out);

/* A FATAL ErrorResponse ('E') with SQLSTATE and message into buf. Returns
 * its length, or 0 if it does not fit (the message is cut to fit 512 bytes
 * first, so a buf of 600 bytes always suffices). */
size_t pgw_error_response(uint8_t *buf, size_t cap, const char *sqlstate, const char *message);

#endif
