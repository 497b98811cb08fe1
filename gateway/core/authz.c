/* Locks, trust feed and the policy decision, applied the same way to new
 * and live sessions (see authz.h). */
#include "core/authz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_time.h"

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
	gw_locks_prune(st, now_ms);
	for (gw_lock_t *lock = st->locks; lock != NULL; lock = lock->next) {
		/* users compare case-insensitively, like the policy's user globs */
		if ((lock->user != NULL && user != NULL && strcasecmp(lock->user, user) == 0) ||
		    (lock->device != NULL && device_id != NULL &&
		     strcmp(lock->device, device_id) == 0))
			return lock;
	}
	return NULL;
}

int gw_trust_set(gw_authz_state_t *st, const char *device_id, pol_trust_t level, int64_t now_ms,
                 int64_t expires_ms, const char *by)
{
	gw_trust_entry_t *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -1;
	e->level = level;
	e->set_ms = now_ms;
	e->expires_ms = expires_ms;
	snprintf(e->by, sizeof(e->by), "%s", by);
	free(cg_strmap_put(st->trust_feed, device_id, e));
	return 0;
}

const gw_trust_entry_t *gw_trust_get(gw_authz_state_t *st, const char *device_id, int64_t now_ms)
{
	if (gw_trust_feed_level(st, device_id, now_ms) == POL_TRUST_NONE)
		return NULL; /* absent, or lapsed and just dropped */
	return cg_strmap_get(st->trust_feed, device_id);
}

bool gw_trust_clear(gw_authz_state_t *st, const char *device_id)
{
	gw_trust_entry_t *e = cg_strmap_remove(st->trust_feed, device_id);
	free(e);
	return e != NULL;
}

const gw_lock_t *gw_lock_add(gw_authz_state_t *st, const char *user, const char *device_id,
                             const char *reason, int64_t now_ms, int64_t expires_ms, const char *by)
{
	gw_lock_t *lock = calloc(1, sizeof(*lock));
	if (lock == NULL)
		return NULL;
	lock->user = user != NULL ? strdup(user) : NULL;
	lock->device = device_id != NULL ? strdup(device_id) : NULL;
	lock->reason = reason != NULL ? strdup(reason) : NULL;
	if ((user != NULL && lock->user == NULL) || (device_id != NULL && lock->device == NULL) ||
	    (reason != NULL && lock->reason == NULL)) {
		lock_free(lock);
		return NULL;
	}
	snprintf(lock->id, sizeof(lock->id), "lock-%llu", (unsigned long long)++st->next_lock);
	lock->created_ms = now_ms;
	lock->expires_ms = expires_ms;
	snprintf(lock->by, sizeof(lock->by), "%s", by);
	/* appended: listings come out in creation order */
	gw_lock_t **at = &st->locks;
	while (*at != NULL)
		at = &(*at)->next;
	*at = lock;
	return lock;
}

void gw_locks_prune(gw_authz_state_t *st, int64_t now_ms)
{
	gw_lock_t **at = &st->locks;
	while (*at != NULL) {
		gw_lock_t *lock = *at;
		if (lock->expires_ms != 0 && lock->expires_ms <= now_ms) {
			*at = lock->next;
			lock_free(lock);
		} else {
			at = &lock->next;
		}
	}
}

const gw_lock_t *gw_lock_get(gw_authz_state_t *st, const char *id, int64_t now_ms)
{
	gw_locks_prune(st, now_ms);
	for (gw_lock_t *lock = st->locks; lock != NULL; lock = lock->next)
		if (strcmp(lock->id, id) == 0)
			return lock;
	return NULL;
}

bool gw_lock_remove(gw_authz_state_t *st, const char *id)
{
	for (gw_lock_t **at = &st->locks; *at != NULL; at = &(*at)->next) {
		if (strcmp((*at)->id, id) == 0) {
			gw_lock_t *lock = *at;
			*at = lock->next;
			lock_free(lock);
			return true;
		}
	}
	return false;
}

bool gw_authorize(gw_authz_state_t *st, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out)
{
	int64_t now = cg_wall_ms();
	const pol_claims_t *c = req->claims;
	pol_trust_t feed = gw_trust_feed_level(st, c->device_id, now);
	const gw_lock_t *lock = gw_lock_find(st, c->user, c->device_id, now);
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
