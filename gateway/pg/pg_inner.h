/* The first bytes inside a tunnel, read as PostgreSQL:
 *   - authorized, with require_inner_tls: they must be an SSLRequest, a
 *     CancelRequest or a direct TLS ClientHello, so the inner hop to
 *     PostgreSQL is always encrypted end to end; a plaintext StartupMessage
 *     is refused with an ErrorResponse. A GSSENCRequest is answered 'N',
 *     as PostgreSQL does, and libpq goes on with its SSLRequest.
 *   - refused (GW_SESSION_REFUSING): an SSLRequest is answered with an
 *     ErrorResponse saying why (libpq, pgjdbc and node-pg show one sent in
 *     place of the SSLRequest's answer) instead of a bare close. */
#ifndef PGF_PG_INNER_H
#define PGF_PG_INNER_H

#include "core/session.h"

/* gw_front_ops_t.inner_check: called on every input in GW_SESSION_INNER
 * and GW_SESSION_REFUSING. */
void pgf_inner_check(gw_session_t *s);

#endif
