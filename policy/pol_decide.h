/* The decision: a pure function of (snapshot, request). The live gateway,
 * re-authorization of live sessions and `certgate explain` all call it. */
#ifndef POL_DECIDE_H
#define POL_DECIDE_H

#include <stdbool.h>
#include <stdint.h>
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
	int64_t at_ms;                 /* when (epoch ms) time windows are judged; 0 = now */
	/* just-in-time access: the end (epoch ms) of the approved access grant
	 * the user holds for this service, 0 when none. A requires_approval
	 * rule matches only while at_ms is before it. */
	int64_t grant_until_ms;
	/* postgres mode without db_user and db_name: may some database user and
	 * name be used? (the user's catalog, explain without --db-user) */
	bool db_any;
} pol_request_t;

typedef enum {
	POL_WHY_ALLOWED = 0,
	POL_WHY_DENY_RULE,    /* a deny rule matched */
	POL_WHY_DEFAULT_DENY, /* no allow rule matched */
	POL_WHY_TRUST,        /* an allow rule failed only on min_trust */
	POL_WHY_NO_USER,      /* certificate had no user claim */
	POL_WHY_APPROVAL,     /* an allow rule failed only on requires_approval: no grant held */
} pol_why_t;

/* Permissive deny rules named by one decision, at most (the first ones in
 * policy order). */
#define POL_WOULD_DENY_MAX 8

typedef struct pol_decision {
	bool allow;
	pol_why_t why;
	const char *rule; /* deciding rule's name (in the snapshot) or "default-deny" */
	pol_trust_t effective_trust;
	char reason[192]; /* one line for audit and errors */
	/* allowed: the earliest instant (epoch ms) after the request's at_ms
	 * at which a time window could refuse it (the allowing rule's window
	 * closes, or that of a deny rule that otherwise matches opens), or the
	 * access grant a requires_approval rule admitted it by ends;
	 * INT64_MAX when none can, and for every refusal */
	int64_t valid_until_ms;
	/* allowed: the permissive deny rules that matched (names in the
	 * snapshot), in policy order; 0 for every refusal */
	size_t n_would_deny;
	const char *would_deny[POL_WOULD_DENY_MAX];
} pol_decision_t;

/* Called for each rule considered, in policy order (explain). why_not is
 * NULL when the rule matched, else the first condition that failed, e.g.
 * "groups: none of [dba]" or "when: Sat 2026-03-28 10:00 CET
 * (Europe/Berlin): sat is not in days [mon, tue]". */
typedef void (*pol_trace_fn)(void *arg, const pol_rule_t *rule, const char *why_not);

/* Deny overrides: any matching deny rule refuses (a permissive one is only
 * named in would_deny); otherwise a device whose
 * effective trust is always_deny is refused (why POL_WHY_TRUST); otherwise
 * the first matching allow rule admits; otherwise default-deny. A request without a
 * user claim is refused (rule "default-deny", why POL_WHY_NO_USER). A rule
 * with a time window matches only when req->at_ms is inside it; a rule
 * that requires approval only while req->grant_until_ms is after it. trace
 * may be NULL. Reasons:
 *   "denied by rule NAME"
 *   "device trust LOW is below min_trust HIGH of rule NAME"
 *   "rule NAME requires an approved access request for service S (certgate
 *    request S)"
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
