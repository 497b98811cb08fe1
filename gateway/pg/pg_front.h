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
 * only to the upstream of the session that owns it), AuthenticationSASL
 * loses SCRAM-SHA-256-PLUS (channel binding cannot cross the gateway), and
 * the client's messages go through pg_audit.c (framing, the query audit,
 * refusals). User and database names over 63 bytes are refused: PostgreSQL
 * would cut them to another name. Refusals reach psql as an ErrorResponse
 * (SQLSTATE 28000) inside TLS. */
#ifndef GW_PG_FRONT_H
#define GW_PG_FRONT_H

#include "core/session.h"

#define PGF_MAX_STARTUP 10000 /* PostgreSQL refuses larger startup packets too */

/* The postgres front's hooks into sessions (serve sets gw->postgres). */
extern const gw_front_ops_t pgf_ops;

#endif
