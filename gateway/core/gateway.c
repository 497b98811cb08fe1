/* The gateway object: audit, extensions, shared counts and the end of a
 * drain (see gateway.h). The counts and the audit writer are used by every
 * worker (locks); the rest runs on the control loop. */
#include "core/gateway.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certgate_config.h"
#include "cg_addr.h"
#include "cg_time.h"
#include "core/notify.h"

static int try_resume(gw_gateway_t *gw);

/* Every worker audits: one writer at a time keeps lines whole, in order
 * and counted (and the audit.resumed line first after a failure). */
int gw_audit(gw_gateway_t *gw, const char *event, json_t *fields)
{
	uv_mutex_lock(&gw->audit_lock);
	if (!cg_audit_healthy(gw->audit))
		(void)try_resume(gw); /* if it fails, so will this event: both counted */
	int rc = cg_audit_emit(gw->audit, event, fields);
	if (rc < 0)
		cg_log_limited(&gw->audit_log, CG_LOG_ERROR, "audit: cannot write to %s: %s",
		               cg_audit_path(gw->audit), strerror(-rc));
	uv_mutex_unlock(&gw->audit_lock);
	return rc;
}

bool gw_audit_or_refuse(gw_gateway_t *gw, const char *event, json_t *fields)
{
	int rc = gw_audit(gw, event, fields);
	if (rc == 0)
		return true;
	uv_mutex_lock(&gw->audit_lock);
	bool refuse = cg_audit_on_failure(gw->audit) == CG_AUDIT_REFUSE;
	uv_mutex_unlock(&gw->audit_lock);
	return !refuse;
}

void gw_audit_counts(gw_gateway_t *gw, uint64_t *written, uint64_t *lost)
{
	uv_mutex_lock(&gw->audit_lock);
	*written = cg_audit_written(gw->audit);
	*lost = cg_audit_lost(gw->audit);
	uv_mutex_unlock(&gw->audit_lock);
}

int gw_audit_reopen(gw_gateway_t *gw)
{
	uv_mutex_lock(&gw->audit_lock);
	int rc = cg_audit_reopen(gw->audit);
	uv_mutex_unlock(&gw->audit_lock);
	return rc;
}

void gw_audit_replace(gw_gateway_t *gw, cg_audit_t *audit, cg_audit_on_failure_t on_failure)
{
	uv_mutex_lock(&gw->audit_lock);
	cg_audit_t *old = gw->audit;
	if (audit != old) {
		cg_audit_carry(audit, old); /* counts, chain, the syslog tap */
		gw->audit = audit;
	}
	cg_audit_set_on_failure(gw->audit, on_failure);
	uv_mutex_unlock(&gw->audit_lock);
	if (audit != old)
		cg_audit_close(old);
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
	uv_mutex_lock(&gw->audit_lock);
	if (!cg_audit_healthy(gw->audit))
		(void)try_resume(gw);
	uv_mutex_unlock(&gw->audit_lock);
	(void)cg_audit_save_state(gw->audit); /* a failure is logged there */
}

cg_audit_t *gw_audit_open(const pol_snapshot_t *snap, char *err, size_t errlen)
{
	cg_audit_opts_t opts = {
	        .path = snap->audit.path,
	        .on_failure = snap->audit.on_failure,
	        .chain = snap->audit.chain,
	        .state_path = snap->audit.state,
	};
	return cg_audit_open_opts(&opts, err, errlen);
}

void gw_audit_use(gw_gateway_t *gw, cg_audit_t *audit)
{
	gw->audit = audit;
	if (gw->syslog != NULL)
		cg_audit_set_tap(audit, gw_syslog_tap, gw->syslog);
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

/* A count per key, the key gone at 0. */
static size_t count_get(cg_strmap_t *map, const char *key)
{
	return (size_t)(uintptr_t)cg_strmap_get(map, key);
}

static void count_add(cg_strmap_t *map, const char *key, int delta)
{
	size_t n = count_get(map, key);
	n = delta < 0 && n == 0 ? 0 : n + (size_t)delta;
	if (n == 0)
		cg_strmap_remove(map, key);
	else
		cg_strmap_put(map, key, (void *)(uintptr_t)n);
}

/* One more for key unless limit (non-zero) are held already. */
static bool count_take(gw_gateway_t *gw, cg_strmap_t *map, const char *key, uint32_t limit)
{
	bool taken = false;
	GW_LOCKED(gw, {
		taken = limit == 0 || count_get(map, key) < limit;
		if (taken)
			count_add(map, key, 1);
	});
	return taken;
}

static void count_give(gw_gateway_t *gw, cg_strmap_t *map, const char *key)
{
	GW_LOCKED(gw, count_add(map, key, -1));
}

bool gw_user_sessions_take(gw_gateway_t *gw, const char *user, uint32_t limit)
{
	char key[1100];
	user_key(user, key, sizeof(key));
	return count_take(gw, gw->user_sessions, key, limit);
}

void gw_user_sessions_give(gw_gateway_t *gw, const char *user)
{
	char key[1100];
	user_key(user, key, sizeof(key));
	count_give(gw, gw->user_sessions, key);
}

unsigned gw_round_robin_next(gw_gateway_t *gw, const char *service)
{
	uintptr_t next = 0;
	GW_LOCKED(gw, {
		next = (uintptr_t)cg_strmap_get(gw->round_robin, service);
		cg_strmap_put(gw->round_robin, service, (void *)(next + 1));
	});
	return (unsigned)next;
}

void gw_source_key(const struct sockaddr *sa, char *key, size_t len)
{
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 net = *(const struct sockaddr_in6 *)sa;
		if (!IN6_IS_ADDR_V4MAPPED(&net.sin6_addr)) {
			char ip[GW_SOURCE_KEY_LEN];
			memset(net.sin6_addr.s6_addr + 8, 0, 8);
			cg_sockaddr_format_ip((const struct sockaddr *)&net, ip, sizeof(ip));
			snprintf(key, len, "%s/64", ip);
			return;
		}
	}
	cg_sockaddr_format_ip(sa, key, len);
}

bool gw_handshakes_take(gw_gateway_t *gw, const char *source, uint32_t limit)
{
	return count_take(gw, gw->handshakes, source, limit);
}

void gw_handshakes_give(gw_gateway_t *gw, const char *source)
{
	count_give(gw, gw->handshakes, source);
}

void gw_extension_add(gw_gateway_t *gw, gw_extension_t *ext)
{
	gw_extension_t **at = &gw->extensions;
	while (*at != NULL)
		at = &(*at)->next;
	ext->next = NULL;
	*at = ext;
}

void gw_extensions_prepare(gw_gateway_t *gw, const gw_runtime_t *rt, cg_errors_t *errs)
{
	for (gw_extension_t *e = gw->extensions; e != NULL; e = e->next)
		e->ops->prepare(e, rt, errs);
}

void gw_extensions_commit(gw_gateway_t *gw)
{
	for (gw_extension_t *e = gw->extensions; e != NULL; e = e->next)
		e->ops->commit(e);
}

void gw_extensions_rollback(gw_gateway_t *gw)
{
	for (gw_extension_t *e = gw->extensions; e != NULL; e = e->next)
		e->ops->rollback(e);
}

void gw_extensions_destroy(gw_gateway_t *gw)
{
	while (gw->extensions != NULL) {
		gw_extension_t *e = gw->extensions;
		gw->extensions = e->next;
		e->ops->destroy(e);
	}
}

void gw_count_refusal(gw_gateway_t *gw, const char *event, const char *reason)
{
	gw->counters.refused++;
	if (gw->observer.refused != NULL)
		gw->observer.refused(gw->observer.ctx, event, reason);
}

const char *gw_not_ready_reason(gw_gateway_t *gw)
{
	if (gw->draining)
		return "draining";
	if (!gw->ready)
		return "starting";
	uv_mutex_lock(&gw->audit_lock);
	bool refusing =
	        !cg_audit_healthy(gw->audit) && cg_audit_on_failure(gw->audit) == CG_AUDIT_REFUSE;
	uv_mutex_unlock(&gw->audit_lock);
	if (refusing)
		return "audit unavailable";
	return NULL;
}

int gw_gateway_init(gw_gateway_t *gw, uv_loop_t *loop)
{
	gw->loop = loop;
	int rc = uv_mutex_init(&gw->lock);
	if (rc == 0)
		rc = uv_mutex_init(&gw->audit_lock);
	return rc;
}

void gw_gateway_finish(gw_gateway_t *gw)
{
	uv_mutex_destroy(&gw->lock);
	uv_mutex_destroy(&gw->audit_lock);
}

/* --- functions the workers hand to the control loop --------------------------- */

struct gw_control_msg {
	struct gw_control_msg *next;
	gw_control_fn fn;
	void *arg;
};

static struct gw_control_msg *control_take(gw_gateway_t *gw)
{
	struct gw_control_msg *m;
	GW_LOCKED(gw, {
		m = gw->control_queue;
		if (m != NULL) {
			gw->control_queue = m->next;
			if (gw->control_queue == NULL)
				gw->control_tail = NULL;
		}
	});
	return m;
}

static void run_control(uv_async_t *async)
{
	gw_gateway_t *gw = async->data;
	struct gw_control_msg *m;
	while ((m = control_take(gw)) != NULL) {
		m->fn(gw, m->arg);
		free(m);
	}
}

int gw_control_start(gw_gateway_t *gw)
{
	int rc = uv_async_init(gw->loop, &gw->control_wake, run_control);
	gw->control_wake.data = gw;
	return rc;
}

int gw_control_post(gw_gateway_t *gw, bool here, gw_control_fn fn, void *arg)
{
	if (here) {
		fn(gw, arg);
		return 0;
	}
	struct gw_control_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->fn = fn;
	m->arg = arg;
	bool queued = false;
	/* under the lock: control_stop cannot close the handle meanwhile */
	GW_LOCKED(gw, {
		if (!gw->drained) {
			if (gw->control_tail != NULL)
				gw->control_tail->next = m;
			else
				gw->control_queue = m;
			gw->control_tail = m;
			uv_async_send(&gw->control_wake);
			queued = true;
		}
	});
	if (!queued) {
		free(m);
		return -ECANCELED;
	}
	return 0;
}

/* The drain is over: no more posts; those still queued run now. */
static void control_stop(gw_gateway_t *gw)
{
	/* gw->drained is set: nothing is queued after this */
	uv_close((uv_handle_t *)&gw->control_wake, NULL);
	run_control(&gw->control_wake);
}

void gw_drain_finish(gw_gateway_t *gw)
{
	if (gw->drained)
		return;
	GW_LOCKED(gw, gw->drained = true); /* no worker wakes `emptied` after this */
	uv_close((uv_handle_t *)&gw->emptied, NULL);
	control_stop(gw);
	json_t *f = json_pack("{s:s, s:I}", "version", CERTGATE_VERSION, "generation",
	                      (json_int_t)gw->generation);
	(void)gw_audit(gw, "gateway.stop", f);
	gw_syslog_stop(gw->syslog); /* after gateway.stop: it goes too */
	for (size_t i = 0; i < sizeof(gw->signals) / sizeof(gw->signals[0]); i++)
		if (!uv_is_closing((uv_handle_t *)&gw->signals[i]))
			uv_close((uv_handle_t *)&gw->signals[i], NULL);
	/* closing the watchers restored the default actions: a second SIGTERM
	 * now would kill a gateway that is already exiting cleanly */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	for (gw_extension_t *e = gw->extensions; e != NULL; e = e->next)
		e->ops->stop(e);
	if (gw->audit_probe_on)
		uv_close((uv_handle_t *)&gw->audit_probe, NULL);
	gw->audit_probe_on = false;
	if (gw->watchdog_on)
		uv_close((uv_handle_t *)&gw->watchdog, NULL);
	gw->watchdog_on = false;
	if (gw->access_timer_on)
		uv_close((uv_handle_t *)&gw->access_timer, NULL);
	gw->access_timer_on = false;
}
