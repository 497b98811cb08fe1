/* The device registry (see state.h): device id -> the user and platform
 * of its logins, when it was first and last seen, and when it was last
 * forgotten. Forgetting drops what is known of a device but keeps the
 * time (a few bytes): certificates issued for it before then stay refused,
 * also once it registers again at its next login. Bounded: past
 * GW_STATE_DEVICES_MAX entries (forgotten ones included) a new device is
 * refused, never an old one dropped.
 *
 * A device's record is {"user", "platform", "first_seen", "last_seen",
 * "forgotten"} with times in epoch ms (0 = never) and "user"/"platform"
 * null where unknown; a forgotten device has user null. Saved as
 * {"devices": {ID: record}}.
 *
 * Shared between gateways (state_pg*.c), a forget never goes back: a
 * record read from the store keeps the later of its forget time and the
 * one known here, and a registration whose latest login came before that
 * forget's second (a login on one gateway racing a forget on another)
 * counts as forgotten. The model then differs from the store's row and
 * the merged record is written back, so every gateway ends with the
 * forget. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_claims.h"
#include "state/state.h"
#include "state/state_model.h"

#define PLATFORM_MAX 128 /* what the issuer accepts (LOGIN.md) */

static void device_free(void *value)
{
	gw_device_t *d = value;
	if (d == NULL)
		return;
	free(d->user);
	free(d->platform);
	free(d);
}

static void devices_finish(gw_state_t *st)
{
	cg_strmap_destroy(st->devices, device_free);
	st->devices = NULL;
}

/* Replaces *slot with a copy of text (NULL clears it). False when out of
 * memory (the slot then keeps its value). */
static bool set_text(char **slot, const char *text)
{
	char *copy = NULL;
	if (text != NULL && (copy = strdup(text)) == NULL)
		return false;
	free(*slot);
	*slot = copy;
	return true;
}

bool gw_state_device_room(gw_state_t *st, const char *device_id)
{
	return cg_strmap_get(st->devices, device_id) != NULL ||
	       cg_strmap_count(st->devices) < GW_STATE_DEVICES_MAX;
}

/* gw_state_device_seen under the write lock. */
static int device_seen(gw_state_t *st, const char *device_id, const char *user,
                       const char *platform, int64_t now_ms, bool *registered)
{
	*registered = false;
	gw_device_t *d = cg_strmap_get(st->devices, device_id);
	if (d == NULL) {
		if (cg_strmap_count(st->devices) >= GW_STATE_DEVICES_MAX)
			return -2;
		if ((d = calloc(1, sizeof(*d))) == NULL)
			return -1;
		if (!set_text(&d->user, user) || !set_text(&d->platform, platform)) {
			device_free(d);
			return -1;
		}
		d->first_seen_ms = d->last_seen_ms = now_ms;
		cg_strmap_put(st->devices, device_id, d);
		*registered = true;
		return 0;
	}
	bool anew = d->user == NULL; /* forgotten: registered anew */
	if (!set_text(&d->user, user) || (platform != NULL && !set_text(&d->platform, platform)))
		return -1;
	if (anew)
		d->first_seen_ms = now_ms;
	d->last_seen_ms = now_ms;
	*registered = anew;
	return 0;
}

int gw_state_device_seen(gw_state_t *st, const char *device_id, const char *user,
                         const char *platform, int64_t now_ms, bool *registered)
{
	int rc;
	GW_STATE_WRITING(st, rc = device_seen(st, device_id, user, platform, now_ms, registered));
	if (rc == 0)
		gw_state_record_changed(st, GW_STATE_DEVICES, device_id);
	return rc;
}

const gw_device_t *gw_state_device_get(gw_state_t *st, const char *device_id)
{
	const gw_device_t *d = device_id != NULL ? cg_strmap_get(st->devices, device_id) : NULL;
	return d != NULL && d->user != NULL ? d : NULL;
}

/* Certificates count whole seconds, so the forget rule cuts at the start of
 * the forget's second (gw_state_device_forgotten_at). A forget within or
 * before the second of the last one (twice in a second; a clock stepped
 * back) moves the cut to the next second: whatever was issued after the
 * last forget is refused too, and the cut never moves back. */
static int64_t next_forget_ms(int64_t last_ms, int64_t now_ms)
{
	if (last_ms == 0 || now_ms / 1000 > last_ms / 1000)
		return now_ms;
	return (last_ms / 1000 + 1) * 1000;
}

bool gw_state_device_forget(gw_state_t *st, const char *device_id, int64_t now_ms)
{
	gw_device_t *d = cg_strmap_get(st->devices, device_id);
	if (d == NULL || d->user == NULL)
		return false;
	GW_STATE_WRITING(st, {
		free(d->user);
		free(d->platform);
		d->user = d->platform = NULL;
		d->first_seen_ms = d->last_seen_ms = 0;
		d->forgotten_ms = next_forget_ms(d->forgotten_ms, now_ms);
	});
	gw_state_record_changed(st, GW_STATE_DEVICES, device_id);
	return true;
}

int64_t gw_state_device_forgotten_at(gw_state_t *st, const char *device_id)
{
	if (device_id == NULL)
		return 0;
	uv_rwlock_rdlock(&st->rw);
	const gw_device_t *d = cg_strmap_get(st->devices, device_id);
	int64_t at = d != NULL ? d->forgotten_ms : 0;
	uv_rwlock_rdunlock(&st->rw);
	return at;
}

typedef struct collect {
	gw_device_view_t *views;
	size_t n;
} collect_t;

static bool collect_one(const char *id, void *value, void *arg)
{
	collect_t *c = arg;
	const gw_device_t *d = value;
	if (d->user != NULL)
		c->views[c->n++] = (gw_device_view_t){.id = id, .device = d};
	return true;
}

static int by_first_seen(const void *a, const void *b)
{
	const gw_device_view_t *x = a, *y = b;
	if (x->device->first_seen_ms != y->device->first_seen_ms)
		return x->device->first_seen_ms < y->device->first_seen_ms ? -1 : 1;
	return strcmp(x->id, y->id);
}

int gw_state_devices_list(gw_state_t *st, gw_device_view_t **out, size_t *n)
{
	collect_t c = {.views = malloc((cg_strmap_count(st->devices) + 1) * sizeof(*c.views))};
	*out = NULL;
	*n = 0;
	if (c.views == NULL)
		return -1;
	cg_strmap_foreach(st->devices, collect_one, &c);
	qsort(c.views, c.n, sizeof(*c.views), by_first_seen);
	*out = c.views;
	*n = c.n;
	return 0;
}

/* --- the saved form --------------------------------------------------------- */

static json_t *device_encode(const void *value)
{
	const gw_device_t *d = value;
	return json_pack("{s:s?, s:s?, s:I, s:I, s:I}", "user", d->user, "platform", d->platform,
	                 "first_seen", (json_int_t)d->first_seen_ms, "last_seen",
	                 (json_int_t)d->last_seen_ms, "forgotten", (json_int_t)d->forgotten_ms);
}

static json_t *devices_save(gw_state_t *st)
{
	return gw_state_map_save(st->devices, device_encode);
}

/* A member that is a string or null: false for anything else. */
static bool text_or_null(const json_t *v, const char **out)
{
	*out = json_string_value(v);
	return json_is_null(v) || *out != NULL;
}

/* A saved device as the registry could have made it. */
static const char *load_one(const char *id, json_t *j, gw_device_t **out)
{
	const char *user = NULL, *platform = NULL;
	json_t *ju = NULL, *jp = NULL;
	json_int_t first, last, forgotten;
	json_error_t jerr;
	*out = NULL;
	if (!pol_claims_text_ok(id, strlen(id)))
		return "not a device id";
	if (json_unpack_ex(j, &jerr, JSON_STRICT, "{s:o, s:o, s:I, s:I, s:I}", "user", &ju,
	                   "platform", &jp, "first_seen", &first, "last_seen", &last, "forgotten",
	                   &forgotten) != 0 ||
	    !text_or_null(ju, &user) || !text_or_null(jp, &platform))
		return "expected {\"user\", \"platform\", \"first_seen\", \"last_seen\", "
		       "\"forgotten\"}";
	if (first < 0 || last < 0 || forgotten < 0)
		return "a time before 1970";
	if (user == NULL ? platform != NULL || forgotten == 0
	                 : !pol_claims_text_ok(user, strlen(user)) ||
	                           (platform != NULL && strlen(platform) > PLATFORM_MAX))
		return "neither a registered nor a forgotten device";
	gw_device_t *d = calloc(1, sizeof(*d));
	if (d == NULL || !set_text(&d->user, user) || !set_text(&d->platform, platform)) {
		device_free(d);
		return "out of memory";
	}
	d->first_seen_ms = first;
	d->last_seen_ms = last;
	d->forgotten_ms = forgotten;
	*out = d;
	return NULL;
}

static bool devices_load(gw_state_t *st, const json_t *doc, char *err, size_t errlen)
{
	json_t *devices = NULL;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)doc, &jerr, JSON_STRICT, "{s:o}", "devices", &devices) != 0 ||
	    !json_is_object(devices)) {
		snprintf(err, errlen, "expected {\"devices\": {...}}");
		return false;
	}
	const char *id;
	json_t *j;
	json_object_foreach(devices, id, j)
	{
		gw_device_t *d;
		const char *why = load_one(id, j, &d);
		if (why != NULL) {
			if (pol_claims_text_ok(id, strlen(id)))
				snprintf(err, errlen, "devices.%.64s: %s", id, why);
			else
				snprintf(err, errlen, "devices: %s", why);
			return false;
		}
		device_free(cg_strmap_put(st->devices, id, d));
	}
	return true;
}

/* --- a device's record, shared ------------------------------------------- */

static json_t *devices_get(gw_state_t *st, const char *key, int64_t *expires_ms)
{
	const gw_device_t *d = cg_strmap_get(st->devices, key);
	*expires_ms = 0; /* a device's record never lapses: a forget must not */
	return d != NULL ? device_encode(d) : NULL;
}

/* d keeps a forget at least as late as forgotten_ms; a registration whose
 * latest login came before the second the forget cuts at (see
 * next_forget_ms) is dropped: the device stays forgotten. */
static void keep_forget(gw_device_t *d, int64_t forgotten_ms)
{
	if (forgotten_ms > d->forgotten_ms)
		d->forgotten_ms = forgotten_ms;
	int64_t cut_ms = d->forgotten_ms - d->forgotten_ms % 1000;
	if (d->user != NULL && d->forgotten_ms != 0 && d->last_seen_ms < cut_ms) {
		free(d->user);
		free(d->platform);
		d->user = d->platform = NULL;
		d->first_seen_ms = d->last_seen_ms = 0;
	}
}

static bool devices_put(gw_state_t *st, const char *key, const json_t *value,
                        gw_state_change_t *change, char *err, size_t errlen)
{
	gw_device_t *old = cg_strmap_get(st->devices, key);
	int64_t known = old != NULL ? old->forgotten_ms : 0;
	bool was_registered = old != NULL && old->user != NULL;
	gw_device_t *d = NULL;
	if (value != NULL) {
		const char *why = load_one(key, (json_t *)value, &d);
		if (why != NULL) {
			snprintf(err, errlen, "%s", why);
			return false;
		}
	} else if (known != 0) {
		/* the store lost the record: the forget stays here (written back) */
		if ((d = calloc(1, sizeof(*d))) == NULL) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
	}
	if (d == NULL) {
		device_free(cg_strmap_remove(st->devices, key));
		return true;
	}
	keep_forget(d, known);
	device_free(cg_strmap_put(st->devices, key, d));
	if (d->forgotten_ms > known || (was_registered && d->user == NULL))
		*change = (gw_state_change_t){
		        .tightens = true,
		        .device = key,
		        .reason = "revoked: device trust",
		};
	return true;
}

static void devices_keys(gw_state_t *st, void (*fn)(void *ctx, const char *key), void *ctx)
{
	cg_strmap_foreach_key(st->devices, fn, ctx);
}

const gw_state_kind_t gw_state_devices_kind = {
        .name = "devices",
        .save = devices_save,
        .load = devices_load,
        .finish = devices_finish,
        .get = devices_get,
        .put = devices_put,
        .keys = devices_keys,
};
