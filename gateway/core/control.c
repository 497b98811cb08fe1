/* What an operator does to a running gateway: reload (build the new
 * generation beside the one in force, swap, re-authorize every live
 * session), drain, and re-authorize the sessions a lock or a trust change
 * touches. Runs on the control loop; what touches sessions runs on each
 * worker's thread in turn (gw_workers_run). */
#include "core/control.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_time.h"
#include "core/listener.h"
#include "core/notify.h"
#include "core/session.h"

static int reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs);

/* The audit destination may move with a reload: the new one is opened
 * before the swap, so a reload naming an unwritable path fails whole. The
 * chain cannot be turned on or off under a file that stays: a writer
 * holds its chained file locked, and lines with and without seq would
 * break the chain anyway. */
static cg_audit_t *audit_for(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	if (strcmp(cg_audit_path(gw->audit), snap->audit.path) == 0) {
		if (cg_audit_chained(gw->audit) != snap->audit.chain)
			cg_errors_add(errs,
			              "%s: audit.chain: changed while audit.path stays %s; restart "
			              "certgate to change it (or move the log to a new path)",
			              snap->config_path, snap->audit.path);
		return gw->audit;
	}
	char err[512];
	cg_audit_t *audit = gw_audit_open(snap, err, sizeof(err));
	if (audit == NULL)
		cg_errors_add(errs, "%s: audit.path: %s", snap->config_path, err);
	return audit;
}

/* audit.state moved while the log stays: the state is written there now. */
static void audit_state_follow(gw_gateway_t *gw, const pol_snapshot_t *snap)
{
	const char *now = cg_audit_state_path(gw->audit), *next = snap->audit.state;
	if ((now == NULL && next == NULL) ||
	    (now != NULL && next != NULL && strcmp(now, next) == 0))
		return;
	int rc = cg_audit_set_state_path(gw->audit, next);
	if (rc < 0)
		cg_log(CG_LOG_WARN, "audit: cannot write the chain state %s: %s", next,
		       strerror(-rc));
}

static bool same_string(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The run-time state stays where it was opened: moving it while sessions,
 * locks and grants depend on it needs a restart; so does the number of
 * workers. */
static void check_kept(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	if (snap->gateway.workers != gw->rt->snap->gateway.workers)
		cg_errors_add(errs,
		              "%s: gateway.workers: changed from %u to %u; restart certgate to "
		              "change the number of workers",
		              snap->config_path, gw->rt->snap->gateway.workers,
		              snap->gateway.workers);
	const pol_state_cfg_t *now = &gw->rt->snap->state, *next = &snap->state;
	if (now->enabled != next->enabled || !same_string(now->backend, next->backend) ||
	    !same_string(now->dir, next->dir) || !same_string(now->dsn, next->dsn) ||
	    !same_string(now->schema, next->schema))
		cg_errors_add(errs,
		              "%s: state: changed; the state cannot move while certgate runs "
		              "(restart it to use the new state block)",
		              snap->config_path);
}

static json_t *errors_json(const cg_errors_t *errs)
{
	json_t *list = json_array();
	for (size_t i = 0; i < errs->count; i++)
		json_array_append_new(list, json_string(errs->items[i]));
	return list;
}

typedef struct matching {
	const char *user, *device, *reason;
} matching_t;

static void reauthorize_matching(gw_worker_t *w, void *arg)
{
	const matching_t *m = arg;
	gw_session_t *next;
	for (gw_session_t *s = w->sessions; s != NULL; s = next) {
		next = s->next;
		const pol_claims_t *c = &s->claims;
		bool match =
		        (m->user != NULL && c->user != NULL && strcasecmp(m->user, c->user) == 0) ||
		        (m->device != NULL && c->device_id != NULL &&
		         strcmp(m->device, c->device_id) == 0);
		if (match)
			gw_session_reauthorize(s, w->rt, m->reason);
	}
}

void gw_reauthorize_matching(gw_gateway_t *gw, const char *user, const char *device,
                             const char *reason)
{
	matching_t m = {user, device, reason};
	gw_workers_run(gw, reauthorize_matching, &m);
}

/* Every live session must still be admitted by the generation now in
 * force: the worker takes it, then checks its sessions against it. */
static void adopt_generation(gw_worker_t *w, void *arg)
{
	gw_runtime_t *old = w->rt;
	w->rt = gw_runtime_ref(arg);
	gw_session_t *next;
	for (gw_session_t *s = w->sessions; s != NULL; s = next) {
		next = s->next;
		gw_session_reauthorize(s, w->rt, "revoked: policy");
	}
	gw_runtime_unref(old); /* the gateway still holds it: never the last */
}

static void end_all(gw_worker_t *w, void *arg)
{
	gw_session_t *next;
	for (gw_session_t *s = w->sessions; s != NULL; s = next) {
		next = s->next;
		gw_session_end(s, arg);
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
	gw_runtime_t *rt = gw_runtime_load(gw->config_path, errs);
	if (rt != NULL) {
		gw_listeners_prepare(gw, rt->snap, errs);
		audit = audit_for(gw, rt->snap, errs);
		check_kept(gw, rt->snap, errs);
		gw_extensions_prepare(gw, rt, errs);
	}
	if (errs->count != before) {
		if (rt != NULL) {
			gw_listeners_rollback(gw);
			gw_extensions_rollback(gw);
		}
		if (audit != NULL && audit != gw->audit)
			cg_audit_close(audit);
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
	gw_extensions_commit(gw);
	if (audit == gw->audit)
		audit_state_follow(gw, rt->snap);
	gw_audit_replace(gw, audit, rt->snap->audit.on_failure);
	gw_syslog_configure(gw->syslog, &rt->snap->audit.syslog);
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
	gw_workers_run(gw, adopt_generation, rt);
	retire(gw, old);
	return 0;
}

void gw_drain(gw_gateway_t *gw)
{
	if (!gw->draining) {
		gw->draining = true;
		gw_notify_stopping();
		cg_log(CG_LOG_INFO, "draining: %zu connection(s) to close",
		       atomic_load(&gw->n_connections));
		gw_listeners_close_all(gw);
		gw_workers_run(gw, end_all, "shutdown");
	}
	if (gw->n_connections == 0)
		gw_drain_finish(gw);
}
