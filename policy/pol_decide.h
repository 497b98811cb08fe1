/* The decision: a pure function of (snapshot, request). The live gateway,
 * re-authorization of live sessions and `certgate explain` all call it. */
#ifndef POL_DECIDE_H
#define POL_DECIDE_H

#include <stdbool.h>
#include <sys/socket.h>

#include "pol_claims.h"
#include "pol_types.h"

typedef struct pol_request {
	const char *service; /* service name */
	const pol_claims_t *claims;
	pol_trust_t feed_trust;        /* live trust feed value, POL_TRUST_NONE if none */
	const struct sockaddr *source; /* client address; NULL = unknown (matches no `sources`) */
	const char *db_user;           /* postgres mode, else NULL */
	const char *db_name;           /* postgres mode, else NULL */
} pol_request_t;

typedef enum {
	POL_WHY_ALLOWED = 0,
	POL_WHY_DENY_RULE,    /* a deny rule matched */
	POL_WHY_DEFAULT_DENY, /* no allow rule matched */
	POL_WHY_TRUST,        /* an allow rule failed only on min_trust */
	POL_WHY_NO_USER,      /* certificate had no user claim */
} pol_why_t;

typedef struct pol_decision {
	bool allow;
	pol_why_t why;
	const char *rule; /* deciding rule's name (in the snapshot) or "default-deny" */
	pol_trust_t effective_trust;
	char reason[192]; /* one line for audit and errors */
} pol_decision_t;

/* Called for each rule considered, in policy order (explain). why_not is
 * NULL when the rule matched, else the first condition that failed, e.g.
 * "groups: none of [dba]". */
typedef void (*pol_trace_fn)(void *arg, const pol_rule_t *rule, const char *why_not);

/* Deny overrides: any matching deny rule refuses; otherwise a device whose
 * effective trust is always_deny is refused (why POL_WHY_TRUST); otherwise
 * the first matching allow rule admits; otherwise default-deny. A request without a
 * user claim is refused (rule "default-deny", why POL_WHY_NO_USER). trace may
 * be NULL. Reasons:
 *   "denied by rule NAME"
 *   "device trust LOW is below min_trust HIGH of rule NAME"
 *   "device trust always_deny: every rule refuses this device"
 *   "no rule allows user U on service S"
 *   "no rule allows user U as db user D on database N of service S"
 *   "certificate has no user claim" */
void pol_decide(const pol_snapshot_t *snap, const pol_request_t *req, pol_decision_t *out,
                pol_trace_fn trace, void *trace_arg);

/* The placeholders of db_users / db_names patterns:
 *   {user}               the user claim
 *   {user.local}         its part before the last '@' (the whole claim
 *                        without one)
 *   {user.local@DOMAIN}  the same, but only for users of DOMAIN (ASCII
 *                        case-insensitive; DOMAIN is 1 to 253 letters,
 *                        digits, '.', '-'): for any other user the pattern
 *                        matches nothing, so alice@partner.example never
 *                        gets alice@example.com's role
 * The length of the placeholder p starts with, or 0 when it starts none;
 * for the domain-bound one *domain and *domain_len say its DOMAIN (else
 * NULL and 0). */
size_t pol_placeholder(const char *p, const char **domain, size_t *domain_len);

#endif
