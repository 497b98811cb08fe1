/* Authorization as the gateway applies it, for new connections and for the
 * re-authorization of live ones alike: locks first, then the policy decision
 * (pol_decide) with the device's live trust-feed value. Locks and the feed
 * live in the run-time state (state/state.h). */
#ifndef GW_AUTHZ_H
#define GW_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pol_decide.h"
#include "core/runtime.h"
#include "state/state.h"

typedef struct gw_authz_request {
	const pol_service_t *service;
	const pol_claims_t *claims;
	const struct sockaddr *source;
	const char *db_user; /* postgres mode */
	const char *db_name;
} gw_authz_request_t;

/* Decides req under rt's policy and the run-time state st (locks, trust
 * feed, the user's access grant for the service), as of now (time
 * windows, grants). A lock refuses with rule "lock". Returns out->allow;
 * out->valid_until_ms says when a time window or the end of a grant could
 * change an admission (the session re-authorizes then). */
bool gw_authorize(gw_state_t *st, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out);

/* The session.end reason for a live session refused by d: "revoked: lock"
 * for a lock, else the trigger's reason (e.g. "revoked: policy"). */
const char *gw_authz_revocation_reason(const pol_decision_t *d, const char *trigger_reason);

#endif
