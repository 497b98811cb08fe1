/* Access requests and the grants they make (see state.h): a list in
 * creation order, ids "req-N" that keep counting across restarts, and a
 * map from (user, service) to the latest end of an approved grant, which is
 * all the decision reads. Saved as {"next": N, "requests": [{"id", "user",
 * "service", "reason", "duration", "state", "created", "requested_by",
 * "decided_by", "decided_reason", "decided", "until"}]} with times and the
 * duration in epoch ms (0 = none).
 *
 * Pending requests are bounded per user and in all; decided ones (denied,
 * expired) are kept for the listing up to GW_ACCESS_HISTORY_MAX, the
 * oldest forgotten first. An approved grant stays approved until
 * gw_state_access_expire marks it expired (the gateway's timer, once per
 * grant); the lookup never counts a grant whose end has passed, so the
 * decision does not depend on that timer.
 *
 * Threads: the lookup (gw_state_grant_until) is the decision's, on any
 * worker, under the state's read lock; every change happens on the control
 * loop under its write lock; the control loop's own reads (listings,
 * counts) need no lock, since only it writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "state/state.h"
#include "state/state_model.h"

static const char *const state_names[GW_ACCESS_STATES] = {
        [GW_ACCESS_PENDING] = "pending",
        [GW_ACCESS_APPROVED] = "approved",
        [GW_ACCESS_DENIED] = "denied",
        [GW_ACCESS_EXPIRED] = "expired",
};

const char *gw_access_state_name(gw_access_state_t state)
{
	return state < GW_ACCESS_STATES ? state_names[state] : "?";
}

bool gw_access_state_parse(const char *text, gw_access_state_t *out)
{
	for (unsigned i = 0; text != NULL && i < GW_ACCESS_STATES; i++) {
		if (strcmp(text, state_names[i]) == 0) {
			*out = (gw_access_state_t)i;
			return true;
		}
	}
	return false;
}

/* --- the grant map ----------------------------------------------------------- */

/* Users compare case-insensitively (like locks and the policy's globs),
 * services exactly. 2 KiB holds any claim (1 KiB) and a service name of a
 * sane length; a longer pair has no key and so never a grant. */
#define GRANT_KEY_MAX 2048

static bool grant_key(const char *user, const char *service, char *key, size_t len)
{
	size_t u = strlen(user), s = strlen(service);
	if (u + 1 + s + 1 > len)
		return false;
	for (size_t i = 0; i < u; i++)
		key[i] = (char)(user[i] >= 'A' && user[i] <= 'Z' ? user[i] - 'A' + 'a' : user[i]);
	key[u] = '\n';
	memcpy(key + u + 1, service, s + 1);
	return true;
}

bool gw_state_grant_until(gw_state_t *st, const char *user, const char *service, int64_t now_ms,
                          int64_t *until_ms)
{
	char key[GRANT_KEY_MAX];
	bool held = false;
	*until_ms = 0;
	if (user == NULL || service == NULL || !grant_key(user, service, key, sizeof(key)))
		return false;
	uv_rwlock_rdlock(&st->rw);
	const int64_t *until = cg_strmap_get(st->grants, key);
	/* none, or lapsed (marked expired by the next expiry pass) */
	if (until != NULL && *until > now_ms) {
		*until_ms = *until;
		held = true;
	}
	uv_rwlock_rdunlock(&st->rw);
	return held;
}

/* Sets the map's entry for (user, service) from the approved requests.
 * Under the write lock (or while the state is opened). */
static bool grant_refresh(gw_state_t *st, const char *user, const char *service)
{
	char key[GRANT_KEY_MAX];
	if (!grant_key(user, service, key, sizeof(key)))
		return true; /* no key, no grant (gw_state_grant_until agrees) */
	int64_t latest = 0;
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		if (r->state == GW_ACCESS_APPROVED && r->until_ms > latest &&
		    strcasecmp(r->user, user) == 0 && strcmp(r->service, service) == 0)
			latest = r->until_ms;
	if (latest == 0) {
		free(cg_strmap_remove(st->grants, key));
		return true;
	}
	int64_t *until = cg_strmap_get(st->grants, key);
	if (until == NULL) {
		if ((until = malloc(sizeof(*until))) == NULL)
			return false;
		*until = latest;
		cg_strmap_put(st->grants, key, until);
	} else {
		*until = latest;
	}
	return true;
}

/* --- records ------------------------------------------------------------------ */

static void request_free(gw_access_request_t *r)
{
	free(r->user);
	free(r->service);
	free(r->reason);
	free(r->requested_by);
	free(r->decided_by);
	free(r->decided_reason);
	free(r);
}

static void requests_finish(gw_state_t *st)
{
	while (st->requests != NULL) {
		gw_access_request_t *next = st->requests->next;
		request_free(st->requests);
		st->requests = next;
	}
	cg_strmap_destroy(st->grants, free);
	st->grants = NULL;
}

/* strdup that keeps NULL, and tells a failure apart from it. */
static bool copy_text(char **dst, const char *src)
{
	*dst = src != NULL ? strdup(src) : NULL;
	return src == NULL || *dst != NULL;
}

static gw_access_request_t *request_new(const char *user, const char *service, const char *reason,
                                        const char *requested_by)
{
	gw_access_request_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	if (!copy_text(&r->user, user) || !copy_text(&r->service, service) ||
	    !copy_text(&r->reason, reason) || !copy_text(&r->requested_by, requested_by)) {
		request_free(r);
		return NULL;
	}
	return r;
}

static void append(gw_state_t *st, gw_access_request_t *r)
{
	gw_access_request_t **at = &st->requests;
	while (*at != NULL)
		at = &(*at)->next;
	*at = r;
}

/* Forgets the oldest decided requests past GW_ACCESS_HISTORY_MAX. */
static void trim_history(gw_state_t *st, const gw_access_request_t *keep)
{
	size_t decided = 0;
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		decided += r->state == GW_ACCESS_DENIED || r->state == GW_ACCESS_EXPIRED;
	for (gw_access_request_t **at = &st->requests;
	     *at != NULL && decided > GW_ACCESS_HISTORY_MAX;) {
		gw_access_request_t *r = *at;
		if (r != keep && (r->state == GW_ACCESS_DENIED || r->state == GW_ACCESS_EXPIRED)) {
			*at = r->next;
			request_free(r);
			decided--;
		} else {
			at = &r->next;
		}
	}
}

gw_access_result_t gw_state_access_ask(gw_state_t *st, const char *user, const char *service,
                                       const char *reason, int64_t duration_ms, int64_t now_ms,
                                       const char *requested_by, const gw_access_request_t **out)
{
	size_t mine = 0, all = 0;
	*out = NULL;
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next) {
		if (r->state != GW_ACCESS_PENDING)
			continue;
		all++;
		if (strcasecmp(r->user, user) != 0)
			continue;
		if (strcmp(r->service, service) == 0) {
			*out = r;
			return GW_ACCESS_DUPLICATE;
		}
		mine++;
	}
	if (mine >= GW_ACCESS_PENDING_PER_USER)
		return GW_ACCESS_LIMIT_USER;
	if (all >= GW_ACCESS_PENDING_MAX)
		return GW_ACCESS_LIMIT_TOTAL;
	gw_access_request_t *r = request_new(user, service, reason, requested_by);
	if (r == NULL)
		return GW_ACCESS_NO_MEMORY;
	r->duration_ms = duration_ms;
	r->state = GW_ACCESS_PENDING;
	r->created_ms = now_ms;
	if (!gw_state_new_id(st, "req", &st->next_request, r->id, sizeof(r->id))) {
		request_free(r);
		return GW_ACCESS_NO_MEMORY;
	}
	GW_STATE_WRITING(st, append(st, r));
	gw_state_record_changed(st, GW_STATE_REQUESTS, r->id);
	*out = r;
	return GW_ACCESS_OK;
}

static gw_access_request_t *find(gw_state_t *st, const char *id)
{
	for (gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		if (strcmp(r->id, id) == 0)
			return r;
	return NULL;
}

/* Records the decision on r; false (nothing changed) when the grant cannot
 * be entered in the map. Under the write lock. */
static bool apply_decision(gw_state_t *st, gw_access_request_t *r, bool approve, char *by,
                           char *reason, int64_t now_ms)
{
	int64_t until = now_ms > INT64_MAX - r->duration_ms ? INT64_MAX : now_ms + r->duration_ms;
	r->state = approve ? GW_ACCESS_APPROVED : GW_ACCESS_DENIED;
	r->decided_by = by;
	r->decided_reason = reason;
	r->decided_ms = now_ms;
	r->until_ms = approve ? until : 0;
	if (approve && !grant_refresh(st, r->user, r->service)) {
		/* the decision could not see it: it is no grant */
		r->state = GW_ACCESS_PENDING;
		r->decided_by = r->decided_reason = NULL;
		r->decided_ms = r->until_ms = 0;
		return false;
	}
	if (!approve)
		trim_history(st, r); /* r stays: it is the newest decided */
	return true;
}

gw_access_result_t gw_state_access_decide(gw_state_t *st, const char *id, bool approve,
                                          const char *by, const char *reason, int64_t now_ms,
                                          const gw_access_request_t **out)
{
	gw_access_request_t *r = find(st, id);
	*out = r;
	if (r == NULL)
		return GW_ACCESS_NOT_FOUND;
	if (r->state != GW_ACCESS_PENDING)
		return GW_ACCESS_NOT_PENDING;
	char *decided_by, *decided_reason;
	if (!copy_text(&decided_by, by))
		return GW_ACCESS_NO_MEMORY;
	if (!copy_text(&decided_reason, reason)) {
		free(decided_by);
		return GW_ACCESS_NO_MEMORY;
	}
	bool applied;
	GW_STATE_WRITING(
	        st, applied = apply_decision(st, r, approve, decided_by, decided_reason, now_ms));
	if (!applied) {
		free(decided_by);
		free(decided_reason);
		return GW_ACCESS_NO_MEMORY;
	}
	gw_state_record_changed(st, GW_STATE_REQUESTS, id);
	return GW_ACCESS_OK;
}

const gw_access_request_t *gw_state_access_get(gw_state_t *st, const char *id)
{
	return find(st, id);
}

const gw_access_request_t *gw_state_access_list(gw_state_t *st)
{
	return st->requests;
}

void gw_state_access_counts(gw_state_t *st, size_t counts[GW_ACCESS_STATES])
{
	memset(counts, 0, GW_ACCESS_STATES * sizeof(counts[0]));
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		counts[r->state]++;
}

int64_t gw_state_access_next_expiry(gw_state_t *st)
{
	int64_t next = INT64_MAX;
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		if (r->state == GW_ACCESS_APPROVED && r->until_ms < next)
			next = r->until_ms;
	return next;
}

size_t gw_state_access_expire(gw_state_t *st, int64_t now_ms,
                              void (*fn)(void *arg, const gw_access_request_t *req), void *arg)
{
	size_t n = 0;
	for (gw_access_request_t *r = st->requests; r != NULL; r = r->next) {
		if (r->state != GW_ACCESS_APPROVED || r->until_ms > now_ms)
			continue;
		/* the entry only shrinks or goes: no allocation, cannot fail */
		GW_STATE_WRITING(st, {
			r->state = GW_ACCESS_EXPIRED;
			(void)grant_refresh(st, r->user, r->service);
		});
		n++;
		gw_state_record_changed(st, GW_STATE_REQUESTS, r->id);
		if (fn != NULL)
			fn(arg, r); /* reads only: the list stays as it is */
	}
	if (n > 0) {
		GW_STATE_WRITING(st, trim_history(st, NULL));
		gw_state_changed(st, GW_STATE_REQUESTS);
	}
	return n;
}

/* --- the saved form --------------------------------------------------------- */

/* One request as saved (a document's entry; a shared store's row). */
static json_t *request_save(const gw_access_request_t *r)
{
	return json_pack("{s:s, s:s, s:s, s:s*, s:I, s:s, s:I, s:s*, s:s*, s:s*, s:I, s:I}", "id",
	                 r->id, "user", r->user, "service", r->service, "reason", r->reason,
	                 "duration", (json_int_t)r->duration_ms, "state",
	                 gw_access_state_name(r->state), "created", (json_int_t)r->created_ms,
	                 "requested_by", r->requested_by, "decided_by", r->decided_by,
	                 "decided_reason", r->decided_reason, "decided", (json_int_t)r->decided_ms,
	                 "until", (json_int_t)r->until_ms);
}

/* One request read back; NULL with why in err. */
static gw_access_request_t *request_load(const json_t *j, char *err, size_t errlen)
{
	const char *id, *user, *service, *reason = NULL, *state, *requested_by = NULL;
	const char *decided_by = NULL, *decided_reason = NULL;
	json_int_t duration, created, decided, until;
	gw_access_state_t st;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT,
	                   "{s:s, s:s, s:s, s?s, s:I, s:s, s:I, s?s, s?s, s?s, s:I, s:I}", "id",
	                   &id, "user", &user, "service", &service, "reason", &reason, "duration",
	                   &duration, "state", &state, "created", &created, "requested_by",
	                   &requested_by, "decided_by", &decided_by, "decided_reason",
	                   &decided_reason, "decided", &decided, "until", &until) != 0) {
		snprintf(err, errlen, "%s", jerr.text);
		return NULL;
	}
	if (!gw_access_state_parse(state, &st)) {
		snprintf(err, errlen, "state: expected pending, approved, denied or expired");
		return NULL;
	}
	if (!gw_state_text_ok(id, 127) || !gw_state_text_ok(user, 1024) ||
	    !gw_state_text_ok(service, 1024) || !gw_state_text_ok(reason, 4096) ||
	    !gw_state_text_ok(requested_by, 1024) || !gw_state_text_ok(decided_by, 1024) ||
	    !gw_state_text_ok(decided_reason, 4096)) {
		snprintf(err, errlen, "a field is not UTF-8 text without control characters");
		return NULL;
	}
	if (strlen(id) >= sizeof(((gw_access_request_t *)0)->id) || duration <= 0 ||
	    (st != GW_ACCESS_PENDING && decided_by == NULL) ||
	    ((st == GW_ACCESS_APPROVED || st == GW_ACCESS_EXPIRED) && until <= 0)) {
		snprintf(err, errlen, "%s: not a request this gateway writes", id);
		return NULL;
	}
	gw_access_request_t *r = request_new(user, service, reason, requested_by);
	if (r == NULL || !copy_text(&r->decided_by, decided_by) ||
	    !copy_text(&r->decided_reason, decided_reason)) {
		if (r != NULL)
			request_free(r);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->duration_ms = duration;
	r->state = st;
	r->created_ms = created;
	r->decided_ms = decided;
	r->until_ms = until;
	return r;
}

static json_t *requests_save(gw_state_t *st)
{
	json_t *list = json_array();
	for (const gw_access_request_t *r = st->requests; list != NULL && r != NULL; r = r->next) {
		json_t *j = request_save(r);
		if (j == NULL || json_array_append_new(list, j) != 0) {
			json_decref(list);
			return NULL;
		}
	}
	return list != NULL ? json_pack("{s:I, s:o}", "next", (json_int_t)st->next_request,
	                                "requests", list)
	                    : NULL;
}

static bool requests_load(gw_state_t *st, const json_t *doc, char *err, size_t errlen)
{
	json_int_t next = 0;
	json_t *list = NULL;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)doc, &jerr, JSON_STRICT, "{s:I, s:o}", "next", &next,
	                   "requests", &list) != 0 ||
	    !json_is_array(list) || next < 0) {
		snprintf(err, errlen, "expected {\"next\": N, \"requests\": [...]}: %s", jerr.text);
		return false;
	}
	st->next_request = (uint64_t)next;
	size_t i;
	json_t *j;
	json_array_foreach(list, i, j)
	{
		char why[160];
		gw_access_request_t *r = request_load(j, why, sizeof(why));
		if (r == NULL) {
			snprintf(err, errlen, "requests[%zu]: %s", i, why);
			return false;
		}
		if (find(st, r->id) != NULL ||
		    !gw_state_id_loaded("req", r->id, &st->next_request)) {
			snprintf(err, errlen, "requests[%zu]: %s: a second request with this id", i,
			         r->id);
			request_free(r);
			return false;
		}
		append(st, r);
		if (r->state == GW_ACCESS_APPROVED && !grant_refresh(st, r->user, r->service)) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
	}
	return true;
}

/* --- a request's record, shared ----------------------------------------- */

/* How long the store keeps a request that can change no more (denied,
 * expired) before pruning it; the listing here keeps fewer
 * (GW_ACCESS_HISTORY_MAX). */
#define DECIDED_KEPT_MS (30LL * 24 * 3600 * 1000)

static json_t *requests_get(gw_state_t *st, const char *key, int64_t *expires_ms)
{
	const gw_access_request_t *r = find(st, key);
	*expires_ms = 0;
	if (r == NULL)
		return NULL;
	if (r->state == GW_ACCESS_DENIED)
		*expires_ms = r->decided_ms + DECIDED_KEPT_MS;
	else if (r->state == GW_ACCESS_EXPIRED)
		*expires_ms = r->until_ms + DECIDED_KEPT_MS;
	return request_save(r);
}

/* r goes after every request created before it (creation order, whichever
 * gateway made it). */
static void insert(gw_state_t *st, gw_access_request_t *r)
{
	gw_access_request_t **at = &st->requests;
	while (*at != NULL && (*at)->created_ms <= r->created_ms)
		at = &(*at)->next;
	r->next = *at;
	*at = r;
}

/* The grant (user, service) holds now, 0 if none: what the decision reads. */
static int64_t grant_of(gw_state_t *st, const char *user, const char *service)
{
	char key[GRANT_KEY_MAX];
	const int64_t *until =
	        grant_key(user, service, key, sizeof(key)) ? cg_strmap_get(st->grants, key) : NULL;
	return until != NULL ? *until : 0;
}

/* Under the write lock (state_pg_sync.c's apply holds it). A change of a
 * grant, either way, reaches the observer: an approval elsewhere extends
 * what this gateway's sessions of the user may run to, an expiry or a
 * later denial ends them (the same re-check as a decision here), and the
 * expiry timer is armed again. */
static bool requests_put(gw_state_t *st, const char *key, const json_t *value,
                         gw_state_change_t *change, char *err, size_t errlen)
{
	gw_access_request_t *r = NULL;
	if (value != NULL) {
		if ((r = request_load(value, err, errlen)) == NULL)
			return false;
		if (strcmp(r->id, key) != 0) {
			snprintf(err, errlen, "its id is not its key");
			request_free(r);
			return false;
		}
	}
	gw_access_request_t *old = NULL;
	for (gw_access_request_t **at = &st->requests; *at != NULL; at = &(*at)->next) {
		if (strcmp((*at)->id, key) == 0) {
			old = *at;
			*at = old->next;
			break;
		}
	}
	const gw_access_request_t *who = r != NULL ? r : old;
	if (who == NULL)
		return true;
	int64_t before = grant_of(st, who->user, who->service);
	if (r != NULL)
		insert(st, r);
	bool ok = (old == NULL || grant_refresh(st, old->user, old->service)) &&
	          (r == NULL || grant_refresh(st, r->user, r->service));
	int64_t after = grant_of(st, who->user, who->service);
	if (!ok) {
		/* the map could not follow: the model keeps what it had */
		if (r != NULL) {
			for (gw_access_request_t **at = &st->requests; *at != NULL;
			     at = &(*at)->next)
				if (*at == r) {
					*at = r->next;
					break;
				}
			request_free(r);
		}
		if (old != NULL) {
			insert(st, old);
			(void)grant_refresh(st, old->user, old->service);
		}
		snprintf(err, errlen, "out of memory");
		return false;
	}
	if (before != after) {
		/* a removed request's user goes with it: the change keeps a copy,
		 * valid until the next put (apply copies it at once) */
		static char removed_user[GRANT_KEY_MAX];
		if (r == NULL)
			snprintf(removed_user, sizeof(removed_user), "%s", old->user);
		*change = (gw_state_change_t){
		        .tightens = true,
		        .user = r != NULL ? r->user : removed_user,
		        .reason = "revoked: policy",
		};
	}
	if (old != NULL)
		request_free(old);
	return true;
}

static void requests_keys(gw_state_t *st, void (*fn)(void *ctx, const char *key), void *ctx)
{
	for (const gw_access_request_t *r = st->requests; r != NULL; r = r->next)
		fn(ctx, r->id);
}

const gw_state_kind_t gw_state_requests_kind = {
        .name = "requests",
        .save = requests_save,
        .load = requests_load,
        .finish = requests_finish,
        .get = requests_get,
        .put = requests_put,
        .keys = requests_keys,
};
