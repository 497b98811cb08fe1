/* Locks, trust feed and the policy decision, applied the same way to new
 * and live sessions (see authz.h). */
#include "authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_time.h"
#include "gateway.h"

void gw_authz_state_init(gw_authz_state_t *st)
{
	memset(st, 0, sizeof(*st));
	st->trust_feed = cg_strmap_create();
}

static void lock_free(gw_lock_t *lock)
{
	free(lock->user);
	free(lock->device);
	free(lock->reason);
	free(lock);
}

void gw_authz_state_finish(gw_authz_state_t *st)
{
	cg_strmap_destroy(st->trust_feed, free);
	while (st->locks != NULL) {
		gw_lock_t *next = st->locks->next;
		lock_free(st->locks);
		st->locks = next;
	}
}

pol_trust_t gw_trust_feed_level(gw_authz_state_t *st, const char *device_id, int64_t now_ms)
{
	if (device_id == NULL)
		return POL_TRUST_NONE;
	gw_trust_entry_t *e = cg_strmap_get(st->trust_feed, device_id);
	if (e == NULL)
		return POL_TRUST_NONE;
	if (e->expires_ms != 0 && e->expires_ms <= now_ms) {
		free(cg_strmap_remove(st->trust_feed, device_id));
		return POL_TRUST_NONE;
	}
	return e->level;
}

const gw_lock_t *gw_lock_find(gw_authz_state_t *st, const char *user, const char *device_id,
                              int64_t now_ms)
{
	gw_lock_t **at = &st->locks;
	while (*at != NULL) {
		gw_lock_t *lock = *at;
		if (lock->expires_ms != 0 && lock->expires_ms <= now_ms) {
			*at = lock->next; /* lapsed */
			lock_free(lock);
			continue;
		}
		/* users compare case-insensitively, like the policy's user globs */
		if ((lock->user != NULL && user != NULL && strcasecmp(lock->user, user) == 0) ||
		    (lock->device != NULL && device_id != NULL &&
		     strcmp(lock->device, device_id) == 0))
			return lock;
		at = &lock->next;
	}
	return NULL;
}

bool gw_authorize(gw_gateway_t *gw, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out)
{
	int64_t now = cg_wall_ms();
	const pol_claims_t *c = req->claims;
	pol_trust_t feed = gw_trust_feed_level(&gw->authz, c->device_id, now);
	const gw_lock_t *lock = gw_lock_find(&gw->authz, c->user, c->device_id, now);
	if (lock != NULL) {
		memset(out, 0, sizeof(*out));
		out->allow = false;
		out->why = POL_WHY_DENY_RULE;
		out->rule = "lock";
		out->effective_trust = pol_trust_effective(c->device_trust, feed);
		snprintf(out->reason, sizeof(out->reason), "locked%s%s (lock %s)",
		         lock->reason != NULL ? ": " : "", lock->reason != NULL ? lock->reason : "",
		         lock->id);
		return false;
	}
	pol_request_t preq = {
	        .service = req->service->name,
	        .claims = c,
	        .feed_trust = feed,
	        .source = req->source,
	        .db_user = req->db_user,
	        .db_name = req->db_name,
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
