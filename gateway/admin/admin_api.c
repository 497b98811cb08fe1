/* The admin endpoints (ADMIN_API.md). Each handler gets a parsed request
 * and fills one reply; every state change is audited with the caller's
 * address (`by`) and takes effect on live sessions before the reply is
 * sent: locks, trust-feed changes and kills end the sessions they touch at
 * once, through the same decision function new connections use. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "admin/metrics.h"
#include "certgate_config.h"
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
	*out = json_string_value(v);
	return true;
}

/* --- health and status --------------------------------------------------- */

static void get_healthz(adm_request_t *req, gw_http_reply_t *reply)
{
	gw_http_json(reply, 200, json_pack("{s:s}", "status", "ok"));
}

/* The run-time state's backend and health: the data path keeps serving
 * while it cannot persist (what is known stays enforced), so it is told,
 * not made a reason for 503. */
static json_t *state_json(const gw_state_t *st)
{
	const char *problem = gw_state_problem(st);
	return json_pack("{s:s, s:b, s:s*, s:I}", "backend", gw_state_backend(st), "ok",
	                 problem == NULL, "problem", problem, "errors",
	                 (json_int_t)gw_state_errors(st));
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

static void get_status(adm_request_t *req, gw_http_reply_t *reply)
{
	gw_gateway_t *gw = req->gw;
	int64_t now = cg_wall_ms();
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
	                  (json_int_t)gw->counters.sessions, "audit_lost",
	                  (json_int_t)cg_audit_lost(gw->audit)));
	json_object_set_new(reply->json, "state", state_json(gw->state));
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

static void get_sessions(adm_request_t *req, gw_http_reply_t *reply)
{
	const char *user = gw_http_query(req->http, "user");
	const char *service = gw_http_query(req->http, "service");
	const char *device = gw_http_query(req->http, "device");
	json_t *list = json_array();
	for (gw_session_t *s = req->gw->sessions; s != NULL; s = s->next) {
		if (!s->started || s->ended)
			continue;
		if (user != NULL && strcasecmp(user, s->claims.user) != 0)
			continue;
		if (service != NULL && strcmp(service, s->service->name) != 0)
			continue;
		if (device != NULL &&
		    (s->claims.device_id == NULL || strcmp(device, s->claims.device_id) != 0))
			continue;
		json_array_append_new(list, gw_session_json(s));
	}
	gw_http_json(reply, 200, json_pack("{s:o}", "sessions", list));
}

static void delete_session(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	gw_session_t *s = gw_session_find(req->gw, id);
	if (s == NULL) {
		gw_http_error(reply, 404, "no live session %s", id);
		return;
	}
	json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "session", s->id, "user", s->claims.user,
	                      "service", s->service->name, "by", req->by);
	(void)gw_audit(req->gw, "admin.session_killed", f);
	gw_session_end(s, "killed by admin");
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

bool adm_is_open_path(const char *path)
{
	return strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0;
}

typedef void (*plain_fn)(adm_request_t *, gw_http_reply_t *);
typedef void (*id_fn)(adm_request_t *, gw_http_reply_t *, const char *);

typedef struct route {
	const char *prefix; /* exact path, or the part before {id} */
	const char *suffix; /* after {id}; NULL for exact paths */
	const char *allow;
	plain_fn get, post, put, del;
	id_fn id_get, id_put, id_del;
} route_t;

static const route_t routes[] = {
        {"/healthz", NULL, "GET", .get = get_healthz},
        {"/readyz", NULL, "GET", .get = get_readyz},
        {"/v1/status", NULL, "GET", .get = get_status},
        {"/v1/reload", NULL, "POST", .post = post_reload},
        {"/v1/policy", NULL, "GET", .get = get_policy},
        {"/v1/sessions", NULL, "GET", .get = get_sessions},
        {"/v1/sessions/", "", "DELETE", .id_del = delete_session},
        {"/v1/devices/", "/trust", "GET, PUT, DELETE", .id_get = get_trust, .id_put = put_trust,
         .id_del = delete_trust},
        {"/v1/locks", NULL, "GET, POST", .get = get_locks, .post = post_lock},
        {"/v1/locks/", "", "DELETE", .id_del = delete_lock},
        {"/metrics", NULL, "GET", .get = get_metrics},
};

/* For "/v1/devices/{id}/trust": the id between prefix and suffix, without
 * '/' and not empty, copied to id. */
static bool match_id(const route_t *r, const char *path, char *id, size_t len)
{
	size_t np = strlen(r->prefix), ns = strlen(r->suffix), n = strlen(path);
	if (n <= np + ns || strncmp(path, r->prefix, np) != 0 ||
	    strcmp(path + n - ns, r->suffix) != 0)
		return false;
	size_t idlen = n - np - ns;
	if (idlen >= len || memchr(path + np, '/', idlen) != NULL)
		return false;
	memcpy(id, path + np, idlen);
	id[idlen] = '\0';
	return true;
}

void adm_dispatch(adm_request_t *req, gw_http_reply_t *reply)
{
	const char *m = req->method;
	char id[256];
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const route_t *r = &routes[i];
		if (r->suffix == NULL) {
			if (strcmp(req->path, r->prefix) != 0)
				continue;
			plain_fn fn = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ? r->get
			              : strcmp(m, "POST") == 0                        ? r->post
			              : strcmp(m, "PUT") == 0                         ? r->put
			              : strcmp(m, "DELETE") == 0                      ? r->del
			                                                              : NULL;
			if (fn == NULL)
				goto not_allowed;
			fn(req, reply);
			return;
		}
		if (!match_id(r, req->path, id, sizeof(id)))
			continue;
		id_fn fn = strcmp(m, "GET") == 0      ? r->id_get
		           : strcmp(m, "PUT") == 0    ? r->id_put
		           : strcmp(m, "DELETE") == 0 ? r->id_del
		                                      : NULL;
		if (fn == NULL)
			goto not_allowed;
		fn(req, reply, id);
		return;
	not_allowed:
		gw_http_error(reply, 405, "%s is not allowed on %s (allowed: %s)", m, req->path,
		              r->allow);
		reply->allow = r->allow;
		return;
	}
	gw_http_error(reply, 404, "no such endpoint: %s", req->path);
}
