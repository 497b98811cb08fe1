/* Locks, forgotten devices, trust feed, access grants and the policy
 * decision, applied the same way to new and live sessions and to the
 * catalog (see authz.h).
 *
 * A forgotten device: DELETE /v1/devices/{id} must make the certificate a
 * lost or stolen machine still holds worthless, although that certificate
 * still carries the device id and a trust claim the policy may accept. So
 * every certificate of the device with a notBefore before the forget is
 * refused; the issuer never gives the device a notBefore before its
 * forget time again (issuer_api.c), so its next login works. */
#include "core/authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_time.h"
#include "cg_utf8.h"

bool gw_authorize(gw_state_t *st, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out)
{
	int64_t now = cg_wall_ms();
	const pol_claims_t *c = req->claims;
	pol_trust_t feed = gw_state_trust_level(st, c->device_id, now);
	gw_lock_match_t lock;
	if (gw_state_lock_match(st, c->user, c->device_id, now, &lock)) {
		memset(out, 0, sizeof(*out));
		out->allow = false;
		out->why = POL_WHY_DENY_RULE;
		out->rule = "lock";
		out->effective_trust = pol_trust_effective(c->device_trust, feed);
		out->valid_until_ms = INT64_MAX; /* a refusal (pol_decision_t) */
		int n = snprintf(out->reason, sizeof(out->reason), "locked%s%s (lock %s)",
		                 lock.reason[0] != '\0' ? ": " : "", lock.reason, lock.id);
		/* an admin's long reason: cut on a character, not inside one */
		if (n >= (int)sizeof(out->reason))
			out->reason[cg_utf8_complete(out->reason, sizeof(out->reason) - 1)] = '\0';
		return false;
	}
	/* certificates count whole seconds: one from the forget's second on is
	 * the device's next login (the issuer starts it there) */
	int64_t forgotten = gw_state_device_forgotten_at(st, c->device_id);
	if (forgotten != 0 && req->cert_not_before_ms < forgotten - forgotten % 1000) {
		memset(out, 0, sizeof(*out));
		out->allow = false;
		out->why = POL_WHY_DENY_RULE;
		out->rule = GW_AUTHZ_FORGOTTEN_RULE;
		out->effective_trust = pol_trust_effective(c->device_trust, feed);
		out->valid_until_ms = INT64_MAX; /* a refusal (pol_decision_t) */
		snprintf(out->reason, sizeof(out->reason), "device forgotten: log in again");
		return false;
	}
	/* just-in-time access: the grant's end, looked up only when a rule
	 * can use it (a pure read: any thread) */
	int64_t grant = 0;
	if (req->assume_grant)
		grant = INT64_MAX;
	else if (rt->snap->has_approvals)
		(void)gw_state_grant_until(st, c->user, req->service->name, now, &grant);
	pol_request_t preq = {
	        .service = req->service->name,
	        .claims = c,
	        .feed_trust = feed,
	        .source = req->source,
	        .db_user = req->db_user,
	        .db_name = req->db_name,
	        .at_ms = now, /* time windows: the clock the locks were judged by */
	        .grant_until_ms = grant,
	        .db_any = req->db_any,
	};
	pol_decide(rt->snap, &preq, out, NULL, NULL);
	return out->allow;
}

const char *gw_authz_revocation_reason(const pol_decision_t *d, const char *trigger_reason)
{
	if (!d->allow && strcmp(d->rule, "lock") == 0)
		return "revoked: lock";
	return trigger_reason;
}
