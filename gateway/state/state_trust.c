/* The live trust feed (see state.h): device id -> level, optionally until
 * a deadline; lapsed entries are dropped when read. A device's record is
 * {"level", "set", "expires", "by"} with times in epoch ms, keyed by the
 * device id; the file holds {"devices": {ID: record}}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state.h"
#include "state/state_model.h"

static void trust_finish(gw_state_t *st)
{
	cg_strmap_destroy(st->trust, free);
	st->trust = NULL;
}

pol_trust_t gw_state_trust_level(gw_state_t *st, const char *device_id, int64_t now_ms)
{
	if (device_id == NULL)
		return POL_TRUST_NONE;
	uv_rwlock_rdlock(&st->rw);
	const gw_trust_entry_t *e = cg_strmap_get(st->trust, device_id);
	pol_trust_t level = e != NULL && (e->expires_ms == 0 || e->expires_ms > now_ms)
	                            ? e->level
	                            : POL_TRUST_NONE; /* lapsed: dropped by the next read here */
	uv_rwlock_rdunlock(&st->rw);
	return level;
}

const gw_trust_entry_t *gw_state_trust_get(gw_state_t *st, const char *device_id, int64_t now_ms)
{
	if (device_id == NULL)
		return NULL;
	gw_trust_entry_t *e = cg_strmap_get(st->trust, device_id);
	if (e == NULL)
		return NULL;
	if (e->expires_ms != 0 && e->expires_ms <= now_ms) {
		GW_STATE_WRITING(st, cg_strmap_remove(st->trust, device_id));
		free(e);
		gw_state_changed(st, GW_STATE_TRUST); /* lapsed: nothing to share */
		return NULL;
	}
	return e;
}

static gw_trust_entry_t *entry_new(pol_trust_t level, int64_t set_ms, int64_t expires_ms,
                                   const char *by)
{
	gw_trust_entry_t *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	e->level = level;
	e->set_ms = set_ms;
	e->expires_ms = expires_ms;
	snprintf(e->by, sizeof(e->by), "%s", by);
	return e;
}

int gw_state_trust_set(gw_state_t *st, const char *device_id, pol_trust_t level, int64_t now_ms,
                       int64_t expires_ms, const char *by)
{
	gw_trust_entry_t *e = entry_new(level, now_ms, expires_ms, by);
	if (e == NULL)
		return -1;
	gw_trust_entry_t *old;
	GW_STATE_WRITING(st, old = cg_strmap_put(st->trust, device_id, e));
	free(old);
	gw_state_record_changed(st, GW_STATE_TRUST, device_id);
	return 0;
}

bool gw_state_trust_clear(gw_state_t *st, const char *device_id)
{
	gw_trust_entry_t *e;
	GW_STATE_WRITING(st, e = cg_strmap_remove(st->trust, device_id));
	if (e == NULL)
		return false;
	free(e);
	gw_state_record_changed(st, GW_STATE_TRUST, device_id);
	return true;
}

/* --- a device's record ------------------------------------------------------- */

static json_t *entry_encode(const void *value)
{
	const gw_trust_entry_t *e = value;
	return json_pack("{s:s, s:I, s:I, s:s}", "level", pol_trust_name(e->level), "set",
	                 (json_int_t)e->set_ms, "expires", (json_int_t)e->expires_ms, "by", e->by);
}

static gw_trust_entry_t *entry_decode(const json_t *j, char *err, size_t errlen)
{
	const char *level_name, *by;
	json_int_t set, expires;
	pol_trust_t level;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT, "{s:s, s:I, s:I, s:s}", "level",
	                   &level_name, "set", &set, "expires", &expires, "by", &by) != 0 ||
	    !pol_trust_parse(level_name, &level)) {
		snprintf(err, errlen, "%s", jerr.text[0] != '\0' ? jerr.text : "unknown level");
		return NULL;
	}
	gw_trust_entry_t *e = entry_new(level, set, expires, by);
	if (e == NULL)
		snprintf(err, errlen, "out of memory");
	return e;
}

static json_t *trust_get_record(gw_state_t *st, const char *key, int64_t *expires_ms)
{
	const gw_trust_entry_t *e = cg_strmap_get(st->trust, key);
	*expires_ms = e != NULL ? e->expires_ms : 0;
	return e != NULL ? entry_encode(e) : NULL;
}

static bool trust_put(gw_state_t *st, const char *key, const json_t *value,
                      gw_state_change_t *change, char *err, size_t errlen)
{
	if (value == NULL) {
		free(cg_strmap_remove(st->trust, key)); /* cleared: access can only widen */
		return true;
	}
	gw_trust_entry_t *e = entry_decode(value, err, errlen);
	if (e == NULL)
		return false;
	free(cg_strmap_put(st->trust, key, e));
	/* like an admin's PUT here: any level set may be below what live
	 * sessions were admitted with */
	*change = (gw_state_change_t){
	        .tightens = true,
	        .device = key,
	        .reason = "revoked: device trust",
	};
	return true;
}

static void trust_keys(gw_state_t *st, void (*fn)(void *ctx, const char *key), void *ctx)
{
	cg_strmap_foreach_key(st->trust, fn, ctx);
}

/* --- the saved form --------------------------------------------------------- */

static json_t *trust_save(gw_state_t *st)
{
	return gw_state_map_save(st->trust, entry_encode);
}

static bool trust_load(gw_state_t *st, const json_t *doc, char *err, size_t errlen)
{
	json_t *devices = NULL;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)doc, &jerr, JSON_STRICT, "{s:o}", "devices", &devices) != 0 ||
	    !json_is_object(devices)) {
		snprintf(err, errlen, "expected {\"devices\": {...}}");
		return false;
	}
	const char *device;
	json_t *j;
	json_object_foreach(devices, device, j)
	{
		char why[160];
		gw_trust_entry_t *e = entry_decode(j, why, sizeof(why));
		if (e == NULL) {
			snprintf(err, errlen, "devices.%s: %s", device, why);
			return false;
		}
		free(cg_strmap_put(st->trust, device, e));
	}
	return true;
}

const gw_state_kind_t gw_state_trust_kind = {
        .name = "trust",
        .save = trust_save,
        .load = trust_load,
        .finish = trust_finish,
        .get = trust_get_record,
        .put = trust_put,
        .keys = trust_keys,
};
