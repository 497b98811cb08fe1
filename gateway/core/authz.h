/* Authorization as the gateway applies it, for new connections, the
 * re-authorization of live ones and the user's catalog alike: locks first,
 * then a forgotten device's older certificates, then the policy decision
 * (pol_decide) with the device's live trust-feed value. Locks, the feed
 * and the device registry live in the run-time state (state/state.h). */
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
	bool db_any; /* postgres mode, no db user/name: may some be used? (the catalog) */
	/* the certificate's notBefore (epoch ms): a device forgotten after it
	 * refuses the certificate */
	int64_t cert_not_before_ms;
	/* decide as if the user held an unending access grant for the service:
	 * would an approval admit them? (`certgate request`) */
	bool assume_grant;
} gw_authz_request_t;

/* The rule named by a refusal for a forgotten device's older certificate. */
#define GW_AUTHZ_FORGOTTEN_RULE "forgotten-device"

/* Decides req under rt's policy and the run-time state st (locks, trust
 * feed, device registry, the user's access grant for the service), as of
 * now (time windows, grants). A lock refuses with rule "lock"; a
 * certificate whose device was forgotten after its notBefore with rule
 * GW_AUTHZ_FORGOTTEN_RULE and reason "device forgotten: log in again".
 * Returns out->allow; out->valid_until_ms says when a time window or the
 * end of a grant could change an admission (the session re-authorizes
 * then). */
bool gw_authorize(gw_state_t *st, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out);

/* The session.end reason for a live session refused by d: "revoked: lock"
 * for a lock, else the trigger's reason (e.g. "revoked: policy"). */
const char *gw_authz_revocation_reason(const pol_decision_t *d, const char *trigger_reason);

#endif
