/* Just-in-time access (ADMIN_API.md, access requests): a user asks for a
 * service for a while and says why, through the admin API or over mutual
 * TLS with the login certificate; an approver approves (a grant until now
 * plus the duration) or denies; the grant expires. Every step is audited
 * (access.requested, access.approved, access.denied, access.expired) and
 * reaches live sessions at once: an approval or an expiry re-authorizes
 * the user's sessions (gw_reauthorize_matching), and the decision holds a
 * session admitted by a grant only until the grant's end.
 *
 * The grants expire on one timer of the control loop, armed for the
 * earliest end, so access.expired is written once per grant whatever the
 * number of sessions. The records live in the run-time state (state.h,
 * requests.json). Control loop only. */
#ifndef GW_ACCESS_H
#define GW_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/gateway.h"
#include "state/state.h"

/* The longest grant one may ask for, and the longest reason one may give. */
#define GW_ACCESS_MAX_DURATION_MS (7LL * 24 * 3600 * 1000)
#define GW_ACCESS_REASON_MAX      500

typedef enum {
	GW_ACCESS_DONE = 0,
	GW_ACCESS_INVALID,     /* the input (HTTP 400) */
	GW_ACCESS_SELF,        /* an approver's own request (403) */
	GW_ACCESS_UNKNOWN,     /* no such request (404) */
	GW_ACCESS_CONFLICT,    /* decided already, or pending already (409) */
	GW_ACCESS_LIMITED,     /* too many requests pending (429) */
	GW_ACCESS_UNAVAILABLE, /* the audit log cannot be written (503) */
	GW_ACCESS_FAILED,      /* out of memory (500) */
} gw_access_verdict_t;

/* A verdict's outcome: the request concerned (the new one; the one already
 * pending or decided for a conflict) and, for a refusal, why in one line. */
typedef struct gw_access_outcome {
	gw_access_verdict_t verdict;
	const gw_access_request_t *req; /* NULL when there is none */
	char why[256];
} gw_access_outcome_t;

/* user asks for service for duration ("1h": 1 s to 7 days) because of
 * reason. by: who asked (the user over mTLS, the admin caller's address).
 * The service must be one a rule of the policy in force requires approval
 * for. Audited (access.requested) when recorded, with extra's members
 * added (the mTLS channel's session, client, device_id; stolen, may be
 * NULL). */
void gw_access_ask(gw_gateway_t *gw, const char *user, const char *service, const char *reason,
                   const char *duration, const char *by, json_t *extra, gw_access_outcome_t *out);

/* Whether a rule of snap that requires approval names service (else there
 * is nothing to ask for). Any thread. */
bool gw_access_possible(const pol_snapshot_t *snap, const char *service);

/* Approves or denies the pending request id: by names the approver (who
 * may not approve a request of their own, compared like users are),
 * reason is theirs (may be NULL), caller is the admin API caller's address
 * (audited as "from"). An approval re-authorizes the user's live sessions
 * and arms the expiry timer. */
void gw_access_decide(gw_gateway_t *gw, const char *id, bool approve, const char *by,
                      const char *reason, const char *caller, gw_access_outcome_t *out);

/* The request as the admin API and the user's channel show it: {"id",
 * "user", "service", "reason", "duration", "state", "created",
 * "requested_by", "decided_by", "decided_reason", "decided", "until"},
 * times RFC 3339 or null. */
json_t *gw_access_request_json(const gw_access_request_t *req);

/* Starts expiring grants (after the state is loaded: grants that ended
 * while the gateway was down expire at once). gw_drain_finish stops it. */
void gw_access_start(gw_gateway_t *gw);

/* The timer's next run may have moved (a grant approved): re-arm it. */
void gw_access_rearm(gw_gateway_t *gw);

#endif
