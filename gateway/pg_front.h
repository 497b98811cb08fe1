/* The postgres front: postgres mode speaks the start of the PostgreSQL
 * wire protocol itself, so psql connects to the gateway with no agent.
 *
 *   client: [GSSENCRequest -> 'N'] SSLRequest -> 'S' -> TLS (or direct TLS
 *           with ALPN "postgresql") -> StartupMessage (user, database,
 *           application_name) -> decision with db_user/db_name
 *   upstream: TCP -> SSLRequest -> 'S' -> TLS verify-full (server_name),
 *           client certificate minted for the db user -> the client's
 *           StartupMessage -> session.start -> relay
 *
 * While relaying, the backend's BackendKeyData is replaced by a key of the
 * gateway's own (so a CancelRequest names the gateway's key and is forwarded
 * only to the upstream of the session that owns it), and with audit_queries
 * every Query and Parse the client sends is audited. Refusals reach psql as
 * an ErrorResponse (SQLSTATE 28000) inside TLS. */
#ifndef GW_PG_FRONT_H
#define GW_PG_FRONT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <sys/types.h>

#include "link.h"

typedef struct gw_session gw_session_t;
typedef struct gw_gateway gw_gateway_t;

#define PGF_MAX_STARTUP 10000 /* PostgreSQL refuses larger startup packets too */
#define PGF_MAX_SQL     4096  /* query events carry at most this much SQL */

/* A connection on a postgres-mode service's own listener: the protocol's
 * first packet comes before any TLS. */
void pgf_accept(gw_session_t *s);
/* Input in a postgres-mode setup state, from either end (nread < 0: EOF or
 * error). */
void pgf_input(gw_session_t *s, gw_end_t *end, const char *data, ssize_t nread);
/* The client's certificate passed: read the StartupMessage inside TLS. */
void pgf_client_ready(gw_session_t *s);
/* TCP to the upstream is up: SSLRequest, TLS, StartupMessage, start. */
void pgf_upstream_connected(gw_session_t *s);
/* Plaintext while relaying (see gw_link_ops_t.filter). */
bool pgf_filter(gw_session_t *s, gw_end_t *from, const char *data, size_t len);
/* An ErrorResponse to the client (inside TLS once it is up). */
void pgf_client_error(gw_session_t *s, const char *sqlstate, const char *message);
/* A live session is ended by the gateway (revoked, expired, killed, idle,
 * shutdown): tells psql why with a FATAL ErrorResponse (57P01) when the
 * stream is between two backend messages. */
void pgf_session_ending(gw_session_t *s, const char *reason);
/* The startup parameters (NULL in tunnel mode or before they are known). */
const char *pgf_db_user(const gw_session_t *s);
const char *pgf_db_name(const gw_session_t *s);
/* db_user, db_name, application_name into an audit/JSON object. */
void pgf_add_fields(const gw_session_t *s, json_t *fields);
void pgf_free(gw_session_t *s);

#endif
