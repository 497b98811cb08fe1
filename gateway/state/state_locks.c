/* Locks (see state.h): a list in creation order, lapsed ones pruned when
 * read. Ids are "lock-N", N counting on across restarts, when one gateway
 * keeps them; with a shared store every gateway makes locks, so an id is
 * "lock-" and 16 random hex digits there (no two gateways can pick the
 * same one, and no round trip is needed to pick it).
 *
 * A lock's record is {"user" | "device", "reason", "created", "expires",
 * "by"} with times in epoch ms (0 = none), keyed by its id; the file holds
 * {"next": N, "locks": [{"id", ...the record}]}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "state/state.h"
#include "state/state_model.h"

#define LOCK_ID_MAX sizeof(((gw_lock_t *)0)->id)

static void lock_free(gw_lock_t *lock)
{
	if (lock == NULL)
		return;
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
 * back from a file is dropped again; a shared store drops them itself). */
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

/* Listings come out in creation order: a new lock goes after every lock
 * created before it (one made here now goes last; one made elsewhere
 * finds its place). */
static void insert(gw_state_t *st, gw_lock_t *lock)
{
	gw_lock_t **at = &st->locks;
	while (*at != NULL && (*at)->created_ms <= lock->created_ms)
		at = &(*at)->next;
	lock->next = *at;
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

static gw_lock_t *find_id(gw_state_t *st, const char *id, gw_lock_t ***where)
{
	for (gw_lock_t **at = &st->locks; *at != NULL; at = &(*at)->next) {
		if (strcmp((*at)->id, id) == 0) {
			if (where != NULL)
				*where = at;
			return *at;
		}
	}
	return NULL;
}

const gw_lock_t *gw_state_lock_add(gw_state_t *st, const char *user, const char *device_id,
                                   const char *reason, int64_t now_ms, int64_t expires_ms,
                                   const char *by)
{
	gw_lock_t *lock = lock_new(user, device_id, reason);
	if (lock == NULL ||
	    !gw_state_new_id(st, "lock", &st->next_lock, lock->id, sizeof(lock->id))) {
		lock_free(lock);
		return NULL;
	}
	lock->created_ms = now_ms;
	lock->expires_ms = expires_ms;
	snprintf(lock->by, sizeof(lock->by), "%s", by);
	GW_STATE_WRITING(st, {
		prune(st, now_ms);
		insert(st, lock);
	});
	gw_state_record_changed(st, GW_STATE_LOCKS, lock->id);
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
	return find_id(st, id, NULL);
}

bool gw_state_lock_remove(gw_state_t *st, const char *id)
{
	gw_lock_t **at;
	gw_lock_t *lock = find_id(st, id, &at);
	if (lock == NULL)
		return false;
	GW_STATE_WRITING(st, *at = lock->next);
	gw_state_record_changed(st, GW_STATE_LOCKS, id);
	lock_free(lock);
	return true;
}

const gw_lock_t *gw_state_locks(gw_state_t *st, int64_t now_ms)
{
	GW_STATE_WRITING(st, prune(st, now_ms));
	return st->locks;
}

/* --- a lock's record ---------------------------------------------------------- */

static json_t *lock_encode(const gw_lock_t *l)
{
	return json_pack("{s:s*, s:s*, s:s*, s:I, s:I, s:s}", "user", l->user, "device", l->device,
	                 "reason", l->reason, "created", (json_int_t)l->created_ms, "expires",
	                 (json_int_t)l->expires_ms, "by", l->by);
}

/* The lock a record describes, id set; NULL with err. */
static gw_lock_t *lock_decode(const char *id, const json_t *j, char *err, size_t errlen)
{
	const char *user = NULL, *device = NULL, *reason = NULL, *by;
	json_int_t created, expires;
	json_error_t jerr;
	if (strlen(id) >= LOCK_ID_MAX) {
		snprintf(err, errlen, "lock id longer than %zu bytes", LOCK_ID_MAX - 1);
		return NULL;
	}
	if (!gw_state_text_ok(id, LOCK_ID_MAX)) {
		snprintf(err, errlen, "lock id: expected UTF-8 text without control characters");
		return NULL;
	}
	if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT, "{s?s, s?s, s?s, s:I, s:I, s:s}",
	                   "user", &user, "device", &device, "reason", &reason, "created", &created,
	                   "expires", &expires, "by", &by) != 0 ||
	    (user == NULL) == (device == NULL)) {
		snprintf(err, errlen, "%s",
		         jerr.text[0] != '\0' ? jerr.text : "expected one of user or device");
		return NULL;
	}
	if (!gw_state_text_ok(user, 1024) || !gw_state_text_ok(device, 1024) ||
	    !gw_state_text_ok(reason, 1024) || !gw_state_text_ok(by, 1024)) {
		snprintf(err, errlen, "%s: a field is not UTF-8 text without control characters",
		         id);
		return NULL;
	}
	gw_lock_t *lock = lock_new(user, device, reason);
	if (lock == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(lock->id, sizeof(lock->id), "%s", id);
	snprintf(lock->by, sizeof(lock->by), "%s", by);
	lock->created_ms = created;
	lock->expires_ms = expires;
	return lock;
}

static json_t *locks_get(gw_state_t *st, const char *key, int64_t *expires_ms)
{
	const gw_lock_t *lock = find_id(st, key, NULL);
	*expires_ms = lock != NULL ? lock->expires_ms : 0;
	return lock != NULL ? lock_encode(lock) : NULL;
}

static bool locks_put(gw_state_t *st, const char *key, const json_t *value,
                      gw_state_change_t *change, char *err, size_t errlen)
{
	gw_lock_t **at;
	gw_lock_t *old = find_id(st, key, &at);
	gw_lock_t *lock = NULL;
	if (value != NULL && (lock = lock_decode(key, value, err, errlen)) == NULL)
		return false;
	if (old != NULL) {
		*at = old->next;
		lock_free(old);
	}
	if (lock == NULL)
		return true; /* lifted: access can only widen */
	insert(st, lock);
	*change = (gw_state_change_t){
	        .tightens = true,
	        .user = lock->user,
	        .device = lock->device,
	        .reason = "revoked: lock",
	};
	return true;
}

static void locks_keys(gw_state_t *st, void (*fn)(void *ctx, const char *key), void *ctx)
{
	for (const gw_lock_t *l = st->locks; l != NULL; l = l->next)
		fn(ctx, l->id);
}

/* --- the saved form --------------------------------------------------------- */

static json_t *locks_save(gw_state_t *st)
{
	json_t *list = json_array();
	for (const gw_lock_t *l = st->locks; list != NULL && l != NULL; l = l->next) {
		json_t *j = lock_encode(l);
		if (j == NULL || json_object_set_new(j, "id", json_string(l->id)) != 0 ||
		    json_array_append_new(list, j) != 0) {
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
		char why[160];
		const char *id = json_string_value(json_object_get(j, "id"));
		json_t *record = json_is_object(j) ? json_deep_copy(j) : NULL;
		if (record != NULL)
			json_object_del(record, "id");
		gw_lock_t *lock = id != NULL && record != NULL
		                          ? lock_decode(id, record, why, sizeof(why))
		                          : NULL;
		json_decref(record);
		if (lock == NULL) {
			snprintf(err, errlen, "locks[%zu]: %s", i,
			         id == NULL ? "expected an object with an \"id\"" : why);
			return false;
		}
		const char *bad = find_id(st, lock->id, NULL) != NULL ? "a second lock with this id"
		                  : !gw_state_id_loaded("lock", lock->id, &st->next_lock)
		                          ? "not an id this gateway writes"
		                          : NULL;
		if (bad != NULL) {
			snprintf(err, errlen, "locks[%zu]: %s: %s", i, lock->id, bad);
			lock_free(lock);
			return false;
		}
		/* the file's order is creation order */
		gw_lock_t **at = &st->locks;
		while (*at != NULL)
			at = &(*at)->next;
		*at = lock;
	}
	return true;
}

const gw_state_kind_t gw_state_locks_kind = {
        .name = "locks",
        .save = locks_save,
        .load = locks_load,
        .finish = locks_finish,
        .get = locks_get,
        .put = locks_put,
        .keys = locks_keys,
};
