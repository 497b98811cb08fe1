/* The user's catalog (docs/login.md, "The services you may reach"): a
 * client that asks the shared listener for the TLS server name
 * POL_CATALOG_SNI ("certgate-catalog") gets, after the same mutual TLS as
 * any connection, one JSON document and the end of the connection: the
 * services the policy admits its certificate now, decided one by one by
 * gw_authorize, the function every connection is decided by (locks, a
 * forgotten device, the trust feed, the client's address; a postgres-mode
 * service is listed when some database user and name may be used). The
 * session's side (audit, send, close) is session_catalog.c's. */
#ifndef GW_CATALOG_H
#define GW_CATALOG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "core/runtime.h"
#include "pol_claims.h"
#include "pol_decide.h"
#include "state/state.h"

/* The document for claims under rt and the run-time state (what
 * gw_catalog_answer sends): {"user", "groups", "device_id",
 * "device_trust", "services": [{"name", "mode", "description",
 * "client_port"[, "port"]}]}, plus "refused" (and no services) when the
 * certificate itself is refused (a lock, a forgotten device, a device
 * trust of always_deny, no user claim). *names: the names listed (new array). NULL when out of
 * memory. */
/* Whether d refuses the certificate itself, whatever the service (a lock,
 * a forgotten device, a device trust of always_deny, no user claim). */
bool gw_catalog_refuses_all(const pol_decision_t *d);

json_t *gw_catalog_build(gw_state_t *st, const gw_runtime_t *rt, const pol_claims_t *claims,
                         const struct sockaddr *source, int64_t not_before_ms, json_t **names);

#endif
