/* A tunnel in front of PostgreSQL with require_inner_tls: the first bytes
 * inside the mTLS tunnel must be an SSLRequest, a CancelRequest or a direct
 * TLS ClientHello, so the inner hop to PostgreSQL is always encrypted end
 * to end; a plaintext StartupMessage is refused with an ErrorResponse. */
#ifndef PGF_PG_INNER_H
#define PGF_PG_INNER_H

#include "core/session.h"

/* gw_front_ops_t.inner_check */
void pgf_inner_check(gw_session_t *s);

#endif
