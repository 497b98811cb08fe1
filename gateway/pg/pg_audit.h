/* What the client sends once logged in, read before it goes upstream.
 *
 * Every message is framed (pg_wire's reader) so the gateway always knows
 * where the next one starts. With audit_queries, each Query, Parse and
 * FunctionCall is written as a `query` event before its last byte is
 * forwarded, i.e. before PostgreSQL can run it: SQL cut to 4 KiB, a
 * Parse's statement name to 256 bytes, each on a character boundary and
 * flagged. A message PostgreSQL would not read as sent (bad length, a
 * string without its NUL, fields that do not add up) ends the session
 * with a FATAL instead of passing unaudited; so does a FunctionCall on a
 * service with function_calls "refuse". While the client authenticates,
 * its SASL choice is checked too: channel binding cannot cross the
 * gateway (see pg_front.c, prelude). */
#ifndef GW_PG_AUDIT_H
#define GW_PG_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/session.h"
#include "pg/pg_wire.h"

/* What the client is told when the gateway ends a session on this
 * stream's account. */
#define PGA_CHANNEL_BINDING_MESSAGE                                                                \
	"certgate: SCRAM channel binding cannot pass through the gateway (PostgreSQL binds it to " \
	"its own TLS certificate, which only the gateway sees); connect with "                     \
	"channel_binding=disable (sslmode=verify-full still authenticates the gateway)"

typedef struct pga {
	pgw_fe_t reader;
	bool sasl_expected; /* an AuthenticationSASL reached the client: its next 'p'
	                     * is the SASLInitialResponse */
	/* set when the gateway ends the session: the ErrorResponse to send */
	const char *end_sqlstate;
	char end_message[512];
} pga_t;

void pga_init(pga_t *a);
void pga_finish(pga_t *a);

/* The client's plaintext bytes, before they are forwarded upstream.
 * Returns false when it ended the session (the bytes must not go on). */
bool pga_client_bytes(gw_session_t *s, pga_t *a, const uint8_t *data, size_t len);

/* Ends s with reason (session.end), telling the client message with
 * sqlstate (a FATAL ErrorResponse, sent by pg_front's ending hook). */
void pga_end(gw_session_t *s, pga_t *a, const char *reason, const char *sqlstate,
             const char *message);

#endif
