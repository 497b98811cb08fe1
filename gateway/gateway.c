/* The gateway object: audit, reload, drain and per-user counts (see
 * gateway.h). Everything runs on the loop thread. */
#include "gateway.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certgate_config.h"
#include "cg_time.h"
#include "listener.h"
#include "notify.h"
#include "session.h"

static int reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs);
static int try_resume(gw_gateway_t *gw);

int gw_audit(gw_gateway_t *gw, const char *event, json_t *fields)
{
	if (!cg_audit_healthy(gw->audit))
		(void)try_resume(gw); /* if it fails, so will this event: both counted */
	int rc = cg_audit_emit(gw->audit, event, fields);
	if (rc < 0)
		cg_log_limited(&gw->audit_log, CG_LOG_ERROR, "audit: cannot write to %s: %s",
		               cg_audit_path(gw->audit), strerror(-rc));
	return rc;
}

/* After failed writes, the first line that gets through is audit.resumed
 * with the count of lines lost: whoever writes first (the probe or a
 * real event) records that the log has a hole, and how big. */
static int try_resume(gw_gateway_t *gw)
{
	uint64_t lost = cg_audit_lost(gw->audit);
	json_t *f = json_pack("{s:I}", "lost", (json_int_t)lost);
	int rc = cg_audit_emit(gw->audit, "audit.resumed", f);
	if (rc == 0)
		cg_log(CG_LOG_INFO, "audit: writing to %s again (%llu event(s) lost)",
		       cg_audit_path(gw->audit), (unsigned long long)lost);
	return rc;
}

static void on_audit_probe(uv_timer_t *timer)
{
	gw_gateway_t *gw = timer->data;
	if (!cg_audit_healthy(gw->audit))
		(void)try_resume(gw);
}

void gw_audit_probe_start(gw_gateway_t *gw)
{
	uv_timer_init(gw->loop, &gw->audit_probe);
	gw->audit_probe.data = gw;
	uv_timer_start(&gw->audit_probe, on_audit_probe, 1000, 1000);
	gw->audit_probe_on = true;
}

/* Users compare case-insensitively everywhere (policy globs, locks), so the
 * per-user count is keyed by the lower-cased claim. */
static void user_key(const char *user, char *key, size_t len)
{
	size_t i = 0;
	for (; user[i] != '\0' && i + 1 < len; i++)
		key[i] = (char)((user[i] >= 'A' && user[i] <= 'Z') ? user[i] - 'A' + 'a' : user[i]);
	key[i] = '\0';
}

size_t gw_user_sessions(gw_gateway_t *gw, const char *user)
{
	char key[1100];
	user_key(user, key, sizeof(key));
	return (size_t)(uintptr_t)cg_strmap_get(gw->user_sessions, key);
}

void gw_user_sessions_add(gw_gateway_t *gw, const char *user, int delta)
{
	char key[1100];
	user_key(user, key, sizeof(key));
	size_t n = (size_t)(uintptr_t)cg_strmap_get(gw->user_sessions, key);
	n = delta < 0 && n == 0 ? 0 : n + (size_t)delta;
	if (n == 0)
		cg_strmap_remove(gw->user_sessions, key);
	else
		cg_strmap_put(gw->user_sessions, key, (void *)(uintptr_t)n);
}

/* The audit destination may move with a reload: the new one is opened
 * before the swap, so a reload naming an unwritable path fails whole. */
static cg_audit_t *audit_for(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	if (strcmp(cg_audit_path(gw->audit), snap->audit.path) == 0)
		return gw->audit;
	char err[256];
	cg_audit_t *audit =
	        cg_audit_open(snap->audit.path, snap->audit.on_failure, err, sizeof(err));
	if (audit == NULL)
		cg_errors_add(errs, "%s: audit.path: %s", snap->config_path, err);
	return audit;
}

/* The admin API may appear, move or go with a reload: a new listener is
 * bound before the swap (a reload that cannot bind it fails whole); the
 * caller stops the old one after. Unchanged: the running one. */
static gw_admin_t *admin_for(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	const pol_admin_t *now = &gw->rt->snap->admin, *next = &snap->admin;
	if (now->enabled == next->enabled &&
	    (!next->enabled || strcmp(now->listen, next->listen) == 0))
		return gw->admin;
	if (!next->enabled)
		return NULL;
	if (gw->admin != NULL && now->enabled)
		cg_log(CG_LOG_INFO, "admin API moves from %s to %s", now->listen, next->listen);
	char err[256];
	gw_admin_t *admin = gw_admin_start(gw, next->listen, err, sizeof(err));
	if (admin == NULL)
		cg_errors_add(errs, "%s: admin.listen: %s", snap->config_path, err);
	return admin;
}

static json_t *errors_json(const cg_errors_t *errs)
{
	json_t *list = json_array();
	for (size_t i = 0; i < errs->count; i++)
		json_array_append_new(list, json_string(errs->items[i]));
	return list;
}

const char *gw_not_ready_reason(gw_gateway_t *gw)
{
	if (gw->draining)
		return "draining";
	if (!gw->ready)
		return "starting";
	if (!cg_audit_healthy(gw->audit) && cg_audit_on_failure(gw->audit) == CG_AUDIT_REFUSE)
		return "audit unavailable";
	return NULL;
}

void gw_reauthorize_matching(gw_gateway_t *gw, const char *user, const char *device,
                             const char *reason)
{
	for (gw_session_t *s = gw->sessions; s != NULL; s = s->next) {
		const pol_claims_t *c = &s->claims;
		bool match = (user != NULL && c->user != NULL && strcasecmp(user, c->user) == 0) ||
		             (device != NULL && c->device_id != NULL &&
		              strcmp(device, c->device_id) == 0);
		if (match)
			gw_session_reauthorize(s, gw->rt, reason);
	}
}

/* The runtime a reload replaced is released on the next turn of the loop,
 * not before the reply: its last reference (the gateway's, or that of the
 * last session moved off it) would free a whole generation there, and for
 * 10,000 rules that is the parsed configuration's texts, the index, the
 * shown JSON and every rule's strings, hundreds of thousands of blocks,
 * which nobody needs to wait for. Sessions not moved keep their own
 * references as before. */
typedef struct retired {
	uv_timer_t timer;
	gw_runtime_t *rt;
} retired_t;

static void on_retired_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void on_retire(uv_timer_t *timer)
{
	retired_t *r = timer->data;
	gw_runtime_unref(r->rt);
	uv_close((uv_handle_t *)&r->timer, on_retired_closed);
}

static void retire(gw_gateway_t *gw, gw_runtime_t *old)
{
	retired_t *r = malloc(sizeof(*r));
	if (r == NULL) {
		gw_runtime_unref(old); /* no memory: release it now */
		return;
	}
	r->rt = old;
	uv_timer_init(gw->loop, &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, on_retire, 0, 0);
}

int gw_reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs)
{
	gw_notify_reloading();
	int rc = reload(gw, by, errs);
	gw_notify_ready(rc == 0 ? "reloaded" : "reload failed; the previous configuration stays");
	return rc;
}

static int reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs)
{
	size_t before = errs->count;
	cg_audit_t *audit = NULL;
	gw_admin_t *admin = gw->admin;
	gw_runtime_t *rt = gw_runtime_load(gw->config_path, errs);
	if (rt != NULL) {
		gw_listeners_prepare(gw, rt->snap, errs);
		audit = audit_for(gw, rt->snap, errs);
		admin = admin_for(gw, rt->snap, errs);
	}
	if (errs->count != before) {
		if (rt != NULL)
			gw_listeners_rollback(gw);
		if (audit != NULL && audit != gw->audit)
			cg_audit_close(audit);
		if (admin != gw->admin)
			gw_admin_stop(admin);
		gw_runtime_unref(rt);
		gw->counters.reloads_failed++;
		for (size_t i = before; i < errs->count; i++)
			cg_log(CG_LOG_ERROR, "reload refused: %s", errs->items[i]);
		json_t *f = json_pack("{s:b, s:I, s:o, s:s}", "ok", 0, "generation",
		                      (json_int_t)gw->generation, "errors", errors_json(errs), "by",
		                      by);
		(void)gw_audit(gw, "admin.reload", f);
		return -1;
	}
	gw_listeners_commit(gw);
	if (admin != gw->admin) {
		gw_admin_stop(gw->admin);
		gw->admin = admin;
	}
	if (audit != gw->audit) {
		cg_audit_carry_counts(audit, gw->audit);
		cg_audit_close(gw->audit);
		gw->audit = audit;
	}
	cg_audit_set_on_failure(gw->audit, rt->snap->audit.on_failure);
	gw_runtime_t *old = gw->rt;
	gw->rt = rt;
	gw->generation++;
	gw->loaded_ms = cg_wall_ms();
	gw->counters.reloads_ok++;
	json_t *f = json_pack("{s:b, s:I, s:[], s:s}", "ok", 1, "generation",
	                      (json_int_t)gw->generation, "errors", "by", by);
	(void)gw_audit(gw, "admin.reload", f);
	cg_log(CG_LOG_INFO, "reloaded %s: generation %llu", gw->config_path,
	       (unsigned long long)gw->generation);
	/* every live session must still be admitted by what is now in force */
	for (gw_session_t *s = gw->sessions; s != NULL; s = s->next)
		gw_session_reauthorize(s, rt, "revoked: policy");
	retire(gw, old);
	return 0;
}

static void finish_drain(gw_gateway_t *gw)
{
	json_t *f = json_pack("{s:s, s:I}", "version", CERTGATE_VERSION, "generation",
	                      (json_int_t)gw->generation);
	(void)gw_audit(gw, "gateway.stop", f);
	for (size_t i = 0; i < sizeof(gw->signals) / sizeof(gw->signals[0]); i++)
		if (!uv_is_closing((uv_handle_t *)&gw->signals[i]))
			uv_close((uv_handle_t *)&gw->signals[i], NULL);
	/* closing the watchers restored the default actions: a second SIGTERM
	 * now would kill a gateway that is already exiting cleanly */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	gw_admin_stop(gw->admin);
	gw->admin = NULL;
	if (gw->audit_probe_on)
		uv_close((uv_handle_t *)&gw->audit_probe, NULL);
	gw->audit_probe_on = false;
	if (gw->watchdog_on)
		uv_close((uv_handle_t *)&gw->watchdog, NULL);
	gw->watchdog_on = false;
}

void gw_drain(gw_gateway_t *gw)
{
	if (!gw->draining) {
		gw->draining = true;
		gw_notify_stopping();
		cg_log(CG_LOG_INFO, "draining: %zu connection(s) to close", gw->n_connections);
		gw_listeners_close_all(gw);
		for (gw_session_t *s = gw->sessions; s != NULL; s = s->next)
			gw_session_end(s, "shutdown");
	}
	if (gw->n_connections == 0 && !gw->drained) {
		gw->drained = true;
		finish_drain(gw);
	}
}
