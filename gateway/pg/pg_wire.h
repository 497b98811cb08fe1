/* The few PostgreSQL wire-protocol constants and messages the gateway
 * itself speaks or reads (all integers big-endian): the first packet, the
 * StartupMessage, ErrorResponse, the client's messages for the query
 * audit, and the SASL mechanism list. Pure functions over byte buffers. */
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
	const char *replication;      /* NULL when absent */
} pgw_startup_t;
bool pgw_parse_startup(const uint8_t *p, size_t len, pgw_startup_t *out);

/* Whether a StartupMessage's replication value asks for an ordinary
 * session: PostgreSQL's parse_bool false ("false", "no", "off", "0" and
 * their unique prefixes, any case). Anything else is a walsender
 * ("database": logical; true: physical, tied to no database, which a rule
 * on database names could not judge) or refused by PostgreSQL. */
bool pgw_replication_off(const char *value);

/* PostgreSQL cuts longer user and database names to NAMEDATALEN - 1
 * bytes without a word (ProcessStartupPacket): the gateway refuses them. */
#define PGW_NAME_MAX 63

/* A FATAL ErrorResponse ('E') with SQLSTATE and message into buf. Returns
 * its length, or 0 if it does not fit (the message is cut to fit 512 bytes
 * first, so a buf of 600 bytes always suffices). */
size_t pgw_error_response(uint8_t *buf, size_t cap, const char *sqlstate, const char *message);

/* --- the client's messages once logged in, read as they pass ------------- */

#define PGW_MAX_MESSAGE 0x3ffffffeu /* PostgreSQL's own limit (PQ_LARGE_MESSAGE_LIMIT) */
#define PGW_SQL_MAX     4096        /* SQL text kept for the audit */
#define PGW_STMT_MAX    256         /* a Parse's statement name kept for the audit */
#define PGW_LOOKAHEAD   4           /* bytes kept past a cut: it can land on a character */
#define PGW_HEAD_KEEP   64          /* the first bytes of every message body */

/* What one client message said, as far as the audit reads it. */
typedef struct pgw_fe_msg {
	uint8_t type;                /* 'Q', 'P', 'F', ... */
	uint32_t body_len;           /* the body's length (the length field - 4) */
	uint8_t head[PGW_HEAD_KEEP]; /* its first bytes */
	size_t head_len;
	/* Parse: the statement name; Query and Parse: the SQL text. The first
	 * *_MAX + PGW_LOOKAHEAD bytes when captured, and the whole length */
	char stmt[PGW_STMT_MAX + PGW_LOOKAHEAD];
	size_t stmt_len, stmt_total;
	const char *sql; /* the reader's buffer; NULL when not captured */
	size_t sql_len, sql_total;
	/* FunctionCall ('F') */
	uint32_t fn_oid;
	uint16_t fn_nargs;
} pgw_fe_msg_t;

/* Follows the client's message stream across reads, checking every
 * message's framing, and the fields of Query (text), Parse (name, text,
 * parameter types) and FunctionCall (function OID, argument formats,
 * arguments, result format) exactly as PostgreSQL reads them: what passes
 * is what PostgreSQL runs. Memory is bounded whatever the input. */
typedef struct pgw_fe {
	uint8_t hdr[5]; /* type byte, Int32 length */
	uint8_t hdr_len;
	uint32_t left; /* body bytes still to come */
	int step;      /* the field being read */
	uint8_t num[4];
	uint8_t num_len, num_have;
	uint32_t skip;
	uint32_t args;  /* FunctionCall: arguments still to read */
	bool capture;   /* keep names and SQL text (the caller sets it) */
	bool capturing; /* ... for the current message */
	char *sql_buf;  /* PGW_SQL_MAX + PGW_LOOKAHEAD bytes, allocated when needed */
	pgw_fe_msg_t msg;
} pgw_fe_t;

typedef enum {
	PGW_FE_MORE,    /* every byte read; no message ended */
	PGW_FE_MESSAGE, /* a message ended: fe->msg; *used bytes were read */
	PGW_FE_INVALID, /* not what PostgreSQL would read: *error (static) says why */
	PGW_FE_NOMEM,   /* the SQL buffer could not be allocated */
} pgw_fe_status_t;

void pgw_fe_init(pgw_fe_t *fe);
void pgw_fe_finish(pgw_fe_t *fe); /* frees the SQL buffer */

/* Reads from p[0..n) up to the end of the next message. Call again with
 * the rest after PGW_FE_MESSAGE. After INVALID or NOMEM the stream is
 * lost: do not call again. */
pgw_fe_status_t pgw_fe_read(pgw_fe_t *fe, const uint8_t *p, size_t n, size_t *used,
                            const char **error);

/* --- SASL: channel binding cannot cross the gateway ----------------------- */

#define PGW_AUTH_SASL 10 /* AuthenticationSASL: the mechanisms the server offers */

/* A whole AuthenticationSASL message (type 'R', code 10) of *n bytes at m:
 * removes every mechanism bound to the TLS channel (a name ending in
 * "-PLUS", RFC 5802), in place, and fixes the length field and *n.
 * Returns how many mechanisms are left, or -1 when the message is
 * malformed (then m is unchanged). */
int pgw_sasl_drop_channel_binding(uint8_t *m, size_t *n);

typedef enum {
	PGW_SASL_UNBOUND, /* no channel binding: can pass through */
	PGW_SASL_PLUS,    /* the client chose a "-PLUS" mechanism */
	PGW_SASL_FLAG_Y,  /* SCRAM with gs2 flag "y": the client can bind but sees no
	                   * offer; PostgreSQL on TLS refuses it as a downgrade */
} pgw_sasl_choice_t;

/* What a SASLInitialResponse body (mechanism name, Int32 length, data)
 * says about channel binding, from its first n bytes. */
pgw_sasl_choice_t pgw_sasl_initial(const uint8_t *body, size_t n);

#endif
