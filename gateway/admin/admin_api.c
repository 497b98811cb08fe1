/* The admin endpoints (ADMIN_API.md). Each handler gets a parsed request
 * and fills one reply; every state change is audited with the caller's
 * address (`by`) and takes effect on live sessions before the reply is
 * sent: locks, trust-feed changes, forgotten devices and kills end the
 * sessions they touch at once, through the same decision function new
 * connections use. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "admin/metrics.h"
#include "certgate_config.h"
#include "pol_claims.h"
#include "cg_duration.h"
#include "cg_time.h"
#include "core/authz.h"
#include "core/control.h"
#include "core/session.h"

static json_t *time_json(int64_t ms)
{
	char ts[CG_RFC3339_LEN];
	if (ms == 0)
		return json_null();
	cg_rfc3339_ms(ms, ts);
	return json_string(ts);
}

/* "ttl": a duration string; absent = no expiry. */
static bool parse_ttl(json_t *body, int64_t now, int64_t *expires, gw_http_reply_t *reply)
{
	json_t *ttl = json_object_get(body, "ttl");
	uint64_t ms = 0;
	*expires = 0;
	if (ttl == NULL || json_is_null(ttl))
		return true;
	if (!json_is_string(ttl) || !cg_duration_parse(json_string_value(ttl), &ms) || ms == 0) {
		gw_http_error(reply, 400, "ttl: expected a duration like \"1h\" or \"30m\"");
		return false;
	}
	*expires = now + (int64_t)ms;
	return true;
}

static bool optional_string(json_t *body, const char *key, const char **out, gw_http_reply_t *reply)
{
	json_t *v = json_object_get(body, key);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 1024) {
		gw_http_error(reply, 400, "%s: expected a non-empty string", key);
		return false;
	}
	/* shown in refusals, listings and the audit: text, no control bytes */
	if (!pol_claims_text_ok(json_string_value(v), json_string_length(v))) {
		gw_http_error(reply, 400, "%s: expected UTF-8 text without control characters",
		              key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

/* --- health and status --------------------------------------------------- */

static void get_healthz(adm_request_t *req, gw_http_reply_t *reply)
{
	gw_http_json(reply, 200, json_pack("{s:s}", "status", "ok"));
}

/* The run-time state's backend and health: the data path keeps serving
 * while it cannot persist or reach its shared store (what is known stays
 * enforced), so it is told, not made a reason for 503. A shared store
 * also says whether it is connected and how many changes made here wait
 * to be written to it. */
static json_t *state_json(const gw_state_t *st)
{
	const char *problem = gw_state_problem(st);
	json_t *j = json_pack("{s:s, s:b, s:s*, s:I}", "backend", gw_state_backend(st), "ok",
	                      problem == NULL, "problem", problem, "errors",
	                      (json_int_t)gw_state_errors(st));
	if (j != NULL && strcmp(gw_state_backend(st), "postgres") == 0) {
		json_object_set_new(j, "connected", json_boolean(gw_state_connected(st)));
		json_object_set_new(j, "pending", json_integer((json_int_t)gw_state_pending(st)));
	}
	return j;
}

static void get_readyz(adm_request_t *req, gw_http_reply_t *reply)
{
	const char *why = gw_not_ready_reason(req->gw);
	json_t *state = state_json(req->gw->state);
	if (why == NULL)
		gw_http_json(reply, 200,
		             json_pack("{s:s, s:o}", "status", "ready", "state", state));
	else
		gw_http_json(reply, 503,
		             json_pack("{s:s, s:s, s:o}", "status", "not ready", "error", why,
		                       "state", state));
}

/* The audit log's head (an anchor for the chain that lives outside the
 * file: a monitor that keeps seq and hash can tell a rewritten tail) and
 * the syslog copy's counts. */
static json_t *audit_json(gw_gateway_t *gw)
{
	char hash[65];
	uint64_t seq = cg_audit_chain_head(gw->audit, hash);
	json_t *a = json_pack("{s:s, s:b, s:I, s:I}", "path", cg_audit_path(gw->audit), "chain",
	                      cg_audit_chained(gw->audit), "written",
	                      (json_int_t)cg_audit_written(gw->audit), "lost",
	                      (json_int_t)cg_audit_lost(gw->audit));
	if (a != NULL && cg_audit_chained(gw->audit)) {
		json_object_set_new(a, "seq", json_integer((json_int_t)seq));
		json_object_set_new(a, "hash", json_string(hash));
	}
	gw_syslog_stats_t sl = gw_syslog_stats(gw->syslog);
	if (a != NULL && sl.enabled)
		json_object_set_new(a, "syslog",
		                    json_pack("{s:s, s:b, s:I, s:I, s:I}", "address",
		                              gw_syslog_address(gw->syslog), "connected",
		                              sl.connected, "sent", (json_int_t)sl.sent, "lost",
		                              (json_int_t)sl.lost, "queued",
		                              (json_int_t)sl.queued));
	return a;
}

static void get_status(adm_request_t *req, gw_http_reply_t *reply)
{
	gw_gateway_t *gw = req->gw;
	int64_t now = cg_wall_ms();
	uint64_t written, lost;
	gw_audit_counts(gw, &written, &lost);
	gw_http_json(
	        reply, 200,
	        json_pack("{s:s, s:o, s:I, s:I, s:s, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
	                  "version", CERTGATE_VERSION, "started_at", time_json(gw->started_ms),
	                  "uptime_seconds", (json_int_t)((now - gw->started_ms) / 1000),
	                  "generation", (json_int_t)gw->generation, "policy_sha256",
	                  gw->rt->snap->sha256, "loaded_at", time_json(gw->loaded_ms), "ready",
	                  json_boolean(gw_not_ready_reason(gw) == NULL), "counts", "sessions",
	                  (json_int_t)gw->n_live, "connections", (json_int_t)gw->n_connections,
	                  "accepted", (json_int_t)gw->counters.accepted, "refused",
	                  (json_int_t)gw->counters.refused, "sessions_started",
	                  (json_int_t)gw->counters.sessions, "audit_lost", (json_int_t)lost));
	json_object_set_new(reply->json, "workers", json_integer(gw->n_workers));
	json_object_set_new(json_object_get(reply->json, "counts"), "audit_syslog_lost",
	                    json_integer((json_int_t)gw_syslog_stats(gw->syslog).lost));
	json_object_set_new(reply->json, "state", state_json(gw->state));
	json_object_set_new(reply->json, "audit", audit_json(gw));
}

static void post_reload(adm_request_t *req, gw_http_reply_t *reply)
{
	if (req->body_len > 0) {
		gw_http_error(reply, 400, "POST /v1/reload takes no body");
		return;
	}
	if (req->gw->draining) {
		gw_http_error(reply, 503, "the gateway is draining");
		return;
	}
	cg_errors_t errs;
	cg_errors_init(&errs);
	if (gw_reload(req->gw, req->by, &errs) == 0) {
		gw_http_json(reply, 200,
		             json_pack("{s:I}", "generation", (json_int_t)req->gw->generation));
	} else {
		json_t *list = json_array();
		for (size_t i = 0; i < errs.count; i++)
			json_array_append_new(list, json_string(errs.items[i]));
		gw_http_json(
		        reply, 400,
		        json_pack(
		                "{s:s, s:o, s:I}", "error",
		                "the new configuration is invalid; the previous one stays in force",
		                "errors", list, "generation", (json_int_t)req->gw->generation));
	}
	cg_errors_finish(&errs);
}

static void get_policy(adm_request_t *req, gw_http_reply_t *reply)
{
	const pol_snapshot_t *snap = req->gw->rt->snap;
	gw_http_json(reply, 200,
	             json_pack("{s:I, s:s, s:O}", "generation", (json_int_t)req->gw->generation,
	                       "sha256", snap->sha256, "config", snap->shown));
}

/* --- sessions ------------------------------------------------------------ */

typedef struct listing {
	const char *user, *service, *device;
	json_t *list;
} listing_t;

/* On each worker's thread in turn (gw_workers_run): its live sessions. */
static void list_sessions(gw_worker_t *w, void *arg)
{
	listing_t *l = arg;
	for (gw_session_t *s = w->sessions; s != NULL; s = s->next) {
		if (!s->started || s->ended)
			continue;
		if (l->user != NULL && strcasecmp(l->user, s->claims.user) != 0)
			continue;
		if (l->service != NULL && strcmp(l->service, s->service->name) != 0)
			continue;
		if (l->device != NULL &&
		    (s->claims.device_id == NULL || strcmp(l->device, s->claims.device_id) != 0))
			continue;
		json_array_append_new(l->list, gw_session_json(s));
	}
}

/* Newest first, whichever worker runs them. */
static int newer_first(const void *a, const void *b)
{
	const char *ta = json_string_value(json_object_get(*(json_t *const *)a, "started"));
	const char *tb = json_string_value(json_object_get(*(json_t *const *)b, "started"));
	return strcmp(tb != NULL ? tb : "", ta != NULL ? ta : "");
}

static void get_sessions(adm_request_t *req, gw_http_reply_t *reply)
{
	listing_t l = {
	        .user = gw_http_query(req->http, "user"),
	        .service = gw_http_query(req->http, "service"),
	        .device = gw_http_query(req->http, "device"),
	        .list = json_array(),
	};
	gw_workers_run(req->gw, list_sessions, &l);
	size_t n = json_array_size(l.list);
	json_t **items = n > 0 ? malloc(n * sizeof(*items)) : NULL;
	json_t *sorted = l.list;
	if (items != NULL) {
		for (size_t i = 0; i < n; i++)
			items[i] = json_array_get(l.list, i);
		qsort(items, n, sizeof(*items), newer_first);
		sorted = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append(sorted, items[i]);
		free(items);
		json_decref(l.list);
	}
	gw_http_json(reply, 200, json_pack("{s:o}", "sessions", sorted));
}

typedef struct kill {
	const char *id, *by;
	gw_gateway_t *gw;
	bool found;
} kill_t;

static void kill_session(gw_worker_t *w, void *arg)
{
	kill_t *k = arg;
	gw_session_t *s = k->found ? NULL : gw_session_find(w, k->id);
	if (s == NULL)
		return;
	k->found = true;
	json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "session", s->id, "user", s->claims.user,
	                      "service", s->service->name, "by", k->by);
	(void)gw_audit(k->gw, "admin.session_killed", f);
	gw_session_end(s, "killed by admin");
}

static void delete_session(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	kill_t k = {.id = id, .by = req->by, .gw = req->gw};
	gw_workers_run(req->gw, kill_session, &k);
	if (!k.found) {
		gw_http_error(reply, 404, "no live session %s", id);
		return;
	}
	gw_http_json(reply, 200, json_pack("{s:s, s:b}", "id", id, "closed", 1));
}

/* --- trust feed ---------------------------------------------------------- */

static json_t *trust_json(const char *device, const gw_trust_entry_t *e)
{
	return json_pack("{s:s, s:s, s:o, s:o, s:s}", "device", device, "level",
	                 pol_trust_name(e->level), "set_at", time_json(e->set_ms), "expires",
	                 time_json(e->expires_ms), "by", e->by);
}

static void put_trust(adm_request_t *req, gw_http_reply_t *reply, const char *device)
{
	static const char *const allowed[] = {"level", "ttl", NULL};
	json_t *body = gw_http_body_object(req->http, reply, allowed);
	if (body == NULL)
		return;
	int64_t now = cg_wall_ms(), expires;
	pol_trust_t level;
	json_t *lv = json_object_get(body, "level");
	if (!json_is_string(lv) || !pol_trust_parse(json_string_value(lv), &level)) {
		gw_http_error(reply, 400,
		              "level: expected \"always_deny\", \"low\", \"medium\" or \"high\"");
	} else if (parse_ttl(body, now, &expires, reply)) {
		if (gw_state_trust_set(req->gw->state, device, level, now, expires, req->by) < 0) {
			gw_http_error(reply, 500, "out of memory");
		} else {
			json_t *f = json_pack("{s:s, s:s, s:O?, s:s}", "device", device, "level",
			                      pol_trust_name(level), "ttl",
			                      json_object_get(body, "ttl"), "by", req->by);
			(void)gw_audit(req->gw, "admin.trust", f);
			gw_reauthorize_matching(req->gw, NULL, device, "revoked: device trust");
			gw_http_json(reply, 200,
			             trust_json(device,
			                        gw_state_trust_get(req->gw->state, device, now)));
		}
	}
	json_decref(body);
}

static void get_trust(adm_request_t *req, gw_http_reply_t *reply, const char *device)
{
	const gw_trust_entry_t *e = gw_state_trust_get(req->gw->state, device, cg_wall_ms());
	if (e == NULL)
		gw_http_error(reply, 404, "no trust feed value for device %s", device);
	else
		gw_http_json(reply, 200, trust_json(device, e));
}

static void delete_trust(adm_request_t *req, gw_http_reply_t *reply, const char *device)
{
	if (!gw_state_trust_clear(req->gw->state, device)) {
		gw_http_error(reply, 404, "no trust feed value for device %s", device);
		return;
	}
	(void)gw_audit(req->gw, "admin.trust",
	               json_pack("{s:s, s:b, s:s}", "device", device, "cleared", 1, "by", req->by));
	/* clearing can only raise the effective level: nothing to revoke */
	gw_http_json(reply, 200, json_pack("{s:s, s:b}", "device", device, "cleared", 1));
}

/* --- the device registry ------------------------------------------------- */

/* A device as GET /v1/devices lists it: "trust" is the level an admin set
 * (the live feed, null when none), "effective_trust" what the device's
 * next certificate carries (the lower of that and issuer.device_trust;
 * without an issuer block, the level an admin set, or null). */
static json_t *device_json(adm_request_t *req, const char *id, const gw_device_t *d, int64_t now)
{
	const gw_trust_entry_t *feed = gw_state_trust_get(req->gw->state, id, now);
	const pol_issuer_t *issuer = &req->gw->rt->snap->issuer;
	pol_trust_t effective = issuer->enabled ? issuer->device_trust : POL_TRUST_NONE;
	if (feed != NULL && (effective == POL_TRUST_NONE || feed->level < effective))
		effective = feed->level;
	json_t *j = json_pack("{s:s, s:s, s:s?, s:o, s:o, s:s?, s:s?}", "id", id, "user", d->user,
	                      "platform", d->platform, "first_seen", time_json(d->first_seen_ms),
	                      "last_seen", time_json(d->last_seen_ms), "trust",
	                      feed != NULL ? pol_trust_name(feed->level) : NULL, "effective_trust",
	                      effective != POL_TRUST_NONE ? pol_trust_name(effective) : NULL);
	if (j != NULL && feed != NULL && feed->expires_ms != 0)
		json_object_set_new(j, "trust_expires", time_json(feed->expires_ms));
	return j;
}

static void get_devices(adm_request_t *req, gw_http_reply_t *reply)
{
	gw_device_view_t *views;
	size_t n;
	int64_t now = cg_wall_ms();
	if (gw_state_devices_list(req->gw->state, &views, &n) < 0) {
		gw_http_error(reply, 500, "out of memory");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, device_json(req, views[i].id, views[i].device, now));
	free(views);
	gw_http_json(reply, 200, json_pack("{s:o}", "devices", list));
}

/* Forgets a device: its registry entry and the trust an admin set go, its
 * live sessions end now, and every certificate issued for it before now
 * is refused (core/authz.c): a lost laptop's certificate stops working.
 * Its next login registers it anew at the default trust. */
static void delete_device(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	gw_state_t *st = req->gw->state;
	const gw_device_t *d = gw_state_device_get(st, id);
	if (d == NULL) {
		gw_http_error(reply, 404, "no registered device %s", id);
		return;
	}
	json_t *f = json_pack("{s:s, s:s, s:s?, s:s}", "device_id", id, "user", d->user, "platform",
	                      d->platform, "by", req->by);
	if (f == NULL || !gw_state_device_forget(st, id, cg_wall_ms())) {
		json_decref(f);
		gw_http_error(reply, 500, "out of memory");
		return;
	}
	(void)gw_state_trust_clear(st, id);
	(void)gw_audit(req->gw, "device.forgotten", f);
	gw_reauthorize_matching(req->gw, NULL, id, "revoked: device trust");
	gw_http_json(reply, 200, json_pack("{s:s, s:b}", "id", id, "forgotten", 1));
}

/* --- locks --------------------------------------------------------------- */

static json_t *lock_json(const gw_lock_t *lock)
{
	json_t *j = json_pack("{s:s}", "id", lock->id);
	if (lock->user != NULL)
		json_object_set_new(j, "user", json_string(lock->user));
	if (lock->device != NULL)
		json_object_set_new(j, "device", json_string(lock->device));
	json_object_set_new(j, "reason", lock->reason ? json_string(lock->reason) : json_null());
	json_object_set_new(j, "created", time_json(lock->created_ms));
	json_object_set_new(j, "expires", time_json(lock->expires_ms));
	json_object_set_new(j, "by", json_string(lock->by));
	return j;
}

static void post_lock(adm_request_t *req, gw_http_reply_t *reply)
{
	static const char *const allowed[] = {"user", "device", "ttl", "reason", NULL};
	json_t *body = gw_http_body_object(req->http, reply, allowed);
	if (body == NULL)
		return;
	const char *user, *device, *reason;
	int64_t now = cg_wall_ms(), expires;
	if (!optional_string(body, "user", &user, reply) ||
	    !optional_string(body, "device", &device, reply) ||
	    !optional_string(body, "reason", &reason, reply) ||
	    !parse_ttl(body, now, &expires, reply))
		goto done;
	if ((user == NULL) == (device == NULL)) {
		gw_http_error(reply, 400, "give exactly one of \"user\" or \"device\"");
		goto done;
	}
	/* a name no certificate could carry would lock nobody */
	const char *name = user != NULL ? user : device;
	if (!pol_claims_text_ok(name, strlen(name))) {
		gw_http_error(reply, 400, "%s: expected UTF-8 text without control characters",
		              user != NULL ? "user" : "device");
		goto done;
	}
	for (const gw_lock_t *l = gw_state_locks(req->gw->state, now); l != NULL; l = l->next) {
		if ((user != NULL && l->user != NULL && strcasecmp(user, l->user) == 0) ||
		    (device != NULL && l->device != NULL && strcmp(device, l->device) == 0)) {
			gw_http_json(reply, 409,
			             json_pack("{s:s, s:o}", "error", "already locked", "lock",
			                       lock_json(l)));
			goto done;
		}
	}
	const gw_lock_t *lock =
	        gw_state_lock_add(req->gw->state, user, device, reason, now, expires, req->by);
	if (lock == NULL) {
		gw_http_error(reply, 500, "out of memory");
		goto done;
	}
	json_t *f = lock_json(lock);
	json_object_del(f, "created");
	(void)gw_audit(req->gw, "admin.lock", f);
	gw_reauthorize_matching(req->gw, user, device, "revoked: lock");
	gw_http_json(reply, 201, lock_json(lock));
done:
	json_decref(body);
}

static void get_locks(adm_request_t *req, gw_http_reply_t *reply)
{
	json_t *list = json_array();
	for (const gw_lock_t *l = gw_state_locks(req->gw->state, cg_wall_ms()); l != NULL;
	     l = l->next)
		json_array_append_new(list, lock_json(l));
	gw_http_json(reply, 200, json_pack("{s:o}", "locks", list));
}

static void delete_lock(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	const gw_lock_t *lock = gw_state_lock_get(req->gw->state, id, cg_wall_ms());
	if (lock == NULL) {
		gw_http_error(reply, 404, "no lock %s", id);
		return;
	}
	json_t *f = lock_json(lock);
	json_object_del(f, "created");
	json_object_set_new(f, "by", json_string(req->by));
	(void)gw_audit(req->gw, "admin.unlock", f);
	gw_state_lock_remove(req->gw->state, id);
	gw_http_json(reply, 200, json_pack("{s:s, s:b}", "id", id, "lifted", 1));
}

/* --- metrics ------------------------------------------------------------- */

static void get_metrics(adm_request_t *req, gw_http_reply_t *reply)
{
	size_t len;
	char *text = gw_metrics_render(req->metrics, req->gw, &len);
	if (text == NULL) {
		gw_http_error(reply, 500, "out of memory");
		return;
	}
	reply->status = 200;
	reply->text = text;
	reply->text_len = len;
	reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* --- routing ------------------------------------------------------------- */

typedef void (*plain_fn)(adm_request_t *, gw_http_reply_t *);
typedef void (*id_fn)(adm_request_t *, gw_http_reply_t *, const char *);

typedef struct route {
	const char *pattern; /* segments; "{id}" takes one */
	const char *id_name; /* what {id} is, for errors */
	const char *allow;
	bool open; /* no token needed */
	plain_fn get, post, put, del;
	id_fn id_get, id_post, id_put, id_del;
} route_t;

static const route_t routes[] = {
        {"/healthz", NULL, "GET", true, .get = get_healthz},
        {"/readyz", NULL, "GET", true, .get = get_readyz},
        {"/v1/status", NULL, "GET", .get = get_status},
        {"/v1/reload", NULL, "POST", .post = post_reload},
        {"/v1/policy", NULL, "GET", .get = get_policy},
        {"/v1/sessions", NULL, "GET", .get = get_sessions},
        {"/v1/sessions/{id}", "session id", "DELETE", .id_del = delete_session},
        {"/v1/devices", NULL, "GET", .get = get_devices},
        {"/v1/devices/{id}", "device id", "DELETE", .id_del = delete_device},
        {"/v1/devices/{id}/trust", "device id", "GET, PUT, DELETE", .id_get = get_trust,
         .id_put = put_trust, .id_del = delete_trust},
        {"/v1/locks", NULL, "GET, POST", .get = get_locks, .post = post_lock},
        {"/v1/locks/{id}", "lock id", "DELETE", .id_del = delete_lock},
        {"/v1/access-requests", NULL, "GET, POST", .get = adm_get_access_requests,
         .post = adm_post_access_request},
        {"/v1/access-requests/{id}", "request id", "GET", .id_get = adm_get_access_request},
        {"/v1/access-requests/{id}/approve", "request id", "POST",
         .id_post = adm_approve_access_request},
        {"/v1/access-requests/{id}/deny", "request id", "POST", .id_post = adm_deny_access_request},
        {"/metrics", NULL, "GET", .get = get_metrics},
};

/* A path as sent, cut into its segments (escapes intact): "/v1/devices/a%2Fb/trust"
 * is "v1", "devices", "a%2Fb", "trust". */
#define MAX_SEGMENTS 8
typedef struct segments {
	size_t n;
	const char *at[MAX_SEGMENTS];
	size_t len[MAX_SEGMENTS];
} segments_t;

static bool split_path(const char *raw, segments_t *out)
{
	out->n = 0;
	if (raw == NULL || raw[0] != '/')
		return false;
	for (const char *p = raw + 1;; p++) {
		const char *end = strchr(p, '/');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		if (out->n == MAX_SEGMENTS)
			return false;
		out->at[out->n] = p;
		out->len[out->n++] = len;
		if (end == NULL)
			return true;
		p = end;
	}
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s (n bytes) into out (cap bytes, NUL-terminated): the
 * decoded length, -1 for a '%' not followed by two hex digits, -2 when it
 * does not fit. */
static long decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int hi = hex_value(s[i + 1]);
			int lo = hex_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= cap)
			return -2;
		out[o++] = c;
	}
	out[o] = '\0';
	return (long)o;
}

/* Whether the segments match r's pattern; *id_at is the {id} segment's index. */
static bool route_matches(const route_t *r, const segments_t *segs, size_t *id_at)
{
	segments_t pat;
	if (!split_path(r->pattern, &pat) || pat.n != segs->n)
		return false;
	for (size_t i = 0; i < pat.n; i++) {
		if (pat.len[i] == 4 && strncmp(pat.at[i], "{id}", 4) == 0) {
			if (segs->len[i] == 0)
				return false;
			*id_at = i;
			continue;
		}
		char word[32];
		if (decode(segs->at[i], segs->len[i], word, sizeof(word)) != (long)pat.len[i] ||
		    memcmp(word, pat.at[i], pat.len[i]) != 0)
			return false;
	}
	return true;
}

static const route_t *find_route(const char *raw_path, size_t *id_at, const char **id_raw,
                                 size_t *id_len)
{
	segments_t segs;
	if (!split_path(raw_path, &segs))
		return NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (route_matches(&routes[i], &segs, id_at)) {
			if (routes[i].id_name != NULL) {
				*id_raw = segs.at[*id_at];
				*id_len = segs.len[*id_at];
			}
			return &routes[i];
		}
	}
	return NULL;
}

bool adm_is_open_path(const char *raw_path)
{
	size_t id_at = 0, id_len = 0;
	const char *id_raw = NULL;
	const route_t *r = find_route(raw_path, &id_at, &id_raw, &id_len);
	return r != NULL && r->open;
}

/* The {id} of a path, percent-decoded ('/' in an id is sent as %2F) and
 * held to the claim grammar: an id no certificate could carry is refused
 * here, before it reaches the tables or the audit log. */
static bool take_id(const route_t *r, const char *raw, size_t len, char *id, size_t cap,
                    gw_http_reply_t *reply)
{
	long n = decode(raw, len, id, cap);
	if (n == -1) {
		gw_http_error(reply, 400, "%s: invalid percent-encoding in the path", r->id_name);
		return false;
	}
	if (n < 0 || !pol_claims_text_ok(id, (size_t)n)) {
		gw_http_error(reply, 400,
		              "%s: expected 1 to %d bytes of UTF-8 text without control characters "
		              "(percent-encoded in the path, '/' as %%2F)",
		              r->id_name, POL_CLAIM_MAX_LEN);
		return false;
	}
	return true;
}

void adm_dispatch(adm_request_t *req, gw_http_reply_t *reply)
{
	const char *m = req->method;
	size_t id_at = 0, id_len = 0;
	const char *id_raw = NULL;
	const route_t *r = find_route(req->path, &id_at, &id_raw, &id_len);
	if (r == NULL) {
		char shown[300];
		/* the path as sent is ASCII from MHD's request line, but may hold
		 * anything: show at most its start, and only if printable */
		snprintf(shown, sizeof(shown), "%.256s", req->path != NULL ? req->path : "");
		if (!pol_claims_text_ok(shown, strlen(shown)))
			snprintf(shown, sizeof(shown), "(unprintable)");
		gw_http_error(reply, 404, "no such endpoint: %s", shown);
		return;
	}
	bool is_get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
	if (r->id_name == NULL) {
		plain_fn fn = is_get                     ? r->get
		              : strcmp(m, "POST") == 0   ? r->post
		              : strcmp(m, "PUT") == 0    ? r->put
		              : strcmp(m, "DELETE") == 0 ? r->del
		                                         : NULL;
		if (fn == NULL)
			goto not_allowed;
		fn(req, reply);
		return;
	}
	id_fn fn = strcmp(m, "GET") == 0      ? r->id_get
	           : strcmp(m, "POST") == 0   ? r->id_post
	           : strcmp(m, "PUT") == 0    ? r->id_put
	           : strcmp(m, "DELETE") == 0 ? r->id_del
	                                      : NULL;
	if (fn == NULL)
		goto not_allowed;
	char id[POL_CLAIM_MAX_LEN + 1];
	if (take_id(r, id_raw, id_len, id, sizeof(id), reply))
		fn(req, reply, id);
	return;
not_allowed:
	gw_http_error(reply, 405, "%s is not allowed on %s (allowed: %s)",
	              pol_claims_text_ok(m, strlen(m)) ? m : "this method", r->pattern, r->allow);
	reply->allow = r->allow;
}
