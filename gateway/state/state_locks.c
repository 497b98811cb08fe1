/* Locks (see state.h): a list in creation order, ids "lock-N" that keep
 * counting across restarts, lapsed ones pruned when read. Saved as
 * {"next": N, "locks": [{"id", "user" | "device", "reason", "created",
 * "expires", "by"}]} with times in epoch ms (0 = none). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "state/state.h"
#include "state/state_model.h"

static void lock_free(gw_lock_t *lock)
{
	free(lock->user);
	free(lock->device);
	free(lock->reason);
	free(lock);
}

static void locks_finish(gw_state_t *st)
{
	while (st->locks != NULL) {
		gw_lock_t *next = st->locks->next;
		lock_free(st->locks);
		st->locks = next;
	}
}

/* Drops lapsed locks; persisted with the next change (a lapsed lock read
 * back from a file is dropped again). */
static void prune(gw_state_t *st, int64_t now_ms)
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

static void append(gw_state_t *st, gw_lock_t *lock)
{
	gw_lock_t **at = &st->locks;
	while (*at != NULL)
		at = &(*at)->next;
	*at = lock;
}

static gw_lock_t *lock_new(const char *user, const char *device_id, const char *reason)
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
	return lock;
}

const gw_lock_t *gw_state_lock_add(gw_state_t *st, const char *user, const char *device_id,
                                   const char *reason, int64_t now_ms, int64_t expires_ms,
                                   const char *by)
{
	gw_lock_t *lock = lock_new(user, device_id, reason);
	if (lock == NULL)
		return NULL;
	snprintf(lock->id, sizeof(lock->id), "lock-%llu", (unsigned long long)++st->next_lock);
	lock->created_ms = now_ms;
	lock->expires_ms = expires_ms;
	snprintf(lock->by, sizeof(lock->by), "%s", by);
	GW_STATE_WRITING(st, {
		prune(st, now_ms);
		append(st, lock); /* listings come out in creation order */
	});
	gw_state_changed(st, GW_STATE_LOCKS);
	return lock;
}

bool gw_state_lock_match(gw_state_t *st, const char *user, const char *device_id, int64_t now_ms,
                         gw_lock_match_t *out)
{
	bool found = false;
	uv_rwlock_rdlock(&st->rw);
	for (const gw_lock_t *lock = st->locks; lock != NULL && !found; lock = lock->next) {
		if (lock->expires_ms != 0 && lock->expires_ms <= now_ms)
			continue; /* lapsed: pruned by the next change */
		/* users compare case-insensitively, like the policy's user globs */
		if ((lock->user != NULL && user != NULL && strcasecmp(lock->user, user) == 0) ||
		    (lock->device != NULL && device_id != NULL &&
		     strcmp(lock->device, device_id) == 0)) {
			found = true;
			snprintf(out->id, sizeof(out->id), "%s", lock->id);
			snprintf(out->reason, sizeof(out->reason), "%s",
			         lock->reason != NULL ? lock->reason : "");
		}
	}
	uv_rwlock_rdunlock(&st->rw);
	return found;
}

const gw_lock_t *gw_state_lock_get(gw_state_t *st, const char *id, int64_t now_ms)
{
	GW_STATE_WRITING(st, prune(st, now_ms));
	for (gw_lock_t *lock = st->locks; lock != NULL; lock = lock->next)
		if (strcmp(lock->id, id) == 0)
			return lock;
	return NULL;
}

bool gw_state_lock_remove(gw_state_t *st, const char *id)
{
	for (gw_lock_t **at = &st->locks; *at != NULL; at = &(*at)->next) {
		if (strcmp((*at)->id, id) == 0) {
			gw_lock_t *lock = *at;
			GW_STATE_WRITING(st, *at = lock->next);
			lock_free(lock);
			gw_state_changed(st, GW_STATE_LOCKS);
			return true;
		}
	}
	return false;
}

const gw_lock_t *gw_state_locks(gw_state_t *st, int64_t now_ms)
{
	GW_STATE_WRITING(st, prune(st, now_ms));
	return st->locks;
}

/* --- the saved form --------------------------------------------------------- */

static json_t *locks_save(gw_state_t *st)
{
	json_t *list = json_array();
	for (const gw_lock_t *l = st->locks; list != NULL && l != NULL; l = l->next) {
		json_t *j = json_pack("{s:s, s:s*, s:s*, s:s*, s:I, s:I, s:s}", "id", l->id, "user",
		                      l->user, "device", l->device, "reason", l->reason, "created",
		                      (json_int_t)l->created_ms, "expires",
		                      (json_int_t)l->expires_ms, "by", l->by);
		if (j == NULL || json_array_append_new(list, j) != 0) {
			json_decref(list);
			return NULL;
		}
	}
	return list != NULL
	               ? json_pack("{s:I, s:o}", "next", (json_int_t)st->next_lock, "locks", list)
	               : NULL;
}

static bool locks_load(gw_state_t *st, const json_t *doc, char *err, size_t errlen)
{
	json_int_t next = 0;
	json_t *list = NULL;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)doc, &jerr, JSON_STRICT, "{s:I, s:o}", "next", &next, "locks",
	                   &list) != 0 ||
	    !json_is_array(list) || next < 0) {
		snprintf(err, errlen, "expected {\"next\": N, \"locks\": [...]}: %s", jerr.text);
		return false;
	}
	st->next_lock = (uint64_t)next;
	size_t i;
	json_t *j;
	json_array_foreach(list, i, j)
	{
		const char *id, *user = NULL, *device = NULL, *reason = NULL, *by;
		json_int_t created, expires;
		if (json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s, s?s, s?s, s?s, s:I, s:I, s:s}",
		                   "id", &id, "user", &user, "device", &device, "reason", &reason,
		                   "created", &created, "expires", &expires, "by", &by) != 0 ||
		    (user == NULL) == (device == NULL) ||
		    strlen(id) >= sizeof(((gw_lock_t *)0)->id)) {
			snprintf(err, errlen, "locks[%zu]: %s", i,
			         jerr.text[0] != '\0' ? jerr.text
			                              : "expected one of user or device");
			return false;
		}
		gw_lock_t *lock = lock_new(user, device, reason);
		if (lock == NULL) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		snprintf(lock->id, sizeof(lock->id), "%s", id);
		snprintf(lock->by, sizeof(lock->by), "%s", by);
		lock->created_ms = created;
		lock->expires_ms = expires;
		append(st, lock);
	}
	return true;
}

const gw_state_kind_t gw_state_locks_kind = {
        .name = "locks",
        .save = locks_save,
        .load = locks_load,
        .finish = locks_finish,
};
