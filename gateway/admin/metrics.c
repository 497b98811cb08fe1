/* Prometheus text exposition format 0.0.4 (see metrics.h). Every family
 * has HELP and TYPE lines; counters end in _total; label values are
 * escaped. Bytes per service add the live sessions' counts at scrape time
 * to those of ended sessions, so long sessions show up while they run. */
#include "admin/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_time.h"
#include "core/gateway.h"
#include "core/session.h"

static const double bucket_le[GW_HANDSHAKE_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1,    2.5,   5};

void gw_metrics_init(gw_metrics_t *m)
{
	memset(m, 0, sizeof(*m));
	if (uv_mutex_init(&m->lock) != 0)
		abort(); /* at start, before anything runs */
	m->refused = cg_strmap_create();
	m->logins_denied = cg_strmap_create();
	m->would_deny = cg_strmap_create();
	m->bytes = cg_strmap_create();
}

void gw_metrics_finish(gw_metrics_t *m)
{
	cg_strmap_destroy(m->refused, NULL);
	cg_strmap_destroy(m->logins_denied, NULL);
	cg_strmap_destroy(m->would_deny, NULL);
	cg_strmap_destroy(m->bytes, free);
	uv_mutex_destroy(&m->lock);
}

void gw_metrics_refused(gw_metrics_t *m, const char *event, const char *reason)
{
	char key[256];
	snprintf(key, sizeof(key), "%s\x1f%s", event, reason);
	uv_mutex_lock(&m->lock);
	uintptr_t n = (uintptr_t)cg_strmap_get(m->refused, key);
	cg_strmap_put(m->refused, key, (void *)(n + 1));
	uv_mutex_unlock(&m->lock);
}

void gw_metrics_would_deny(gw_metrics_t *m, const char *rule)
{
	uv_mutex_lock(&m->lock);
	uintptr_t n = (uintptr_t)cg_strmap_get(m->would_deny, rule);
	cg_strmap_put(m->would_deny, rule, (void *)(n + 1));
	uv_mutex_unlock(&m->lock);
}

void gw_metrics_handshake(gw_metrics_t *m, double seconds)
{
	uv_mutex_lock(&m->lock);
	m->handshake_count++;
	m->handshake_seconds += seconds;
	for (int i = 0; i < GW_HANDSHAKE_BUCKETS; i++)
		if (seconds <= bucket_le[i]) {
			m->handshake_buckets[i]++;
			break;
		}
	uv_mutex_unlock(&m->lock);
}

const char *gw_admin_denial_name(gw_admin_denial_t why)
{
	static const char *const names[GW_ADMIN_DENIALS] = {
	        [GW_ADMIN_MISSING_TOKEN] = "missing token",
	        [GW_ADMIN_WRONG_TOKEN] = "wrong token",
	        [GW_ADMIN_WEB_PAGE] = "web page",
	        [GW_ADMIN_REBOUND_HOST] = "host not local",
	};
	return why < GW_ADMIN_DENIALS ? names[why] : "?";
}

void gw_metrics_admin_denied(gw_metrics_t *m, gw_admin_denial_t why)
{
	if (why >= GW_ADMIN_DENIALS)
		return;
	uv_mutex_lock(&m->lock);
	m->admin_denied[why]++;
	uv_mutex_unlock(&m->lock);
}

static gw_bytes_t *bytes_of(cg_strmap_t *map, const char *service)
{
	gw_bytes_t *b = cg_strmap_get(map, service);
	if (b == NULL) {
		b = calloc(1, sizeof(*b));
		if (b == NULL)
			return NULL;
		cg_strmap_put(map, service, b);
	}
	return b;
}

void gw_metrics_bytes(gw_metrics_t *m, const char *service, uint64_t up, uint64_t down)
{
	uv_mutex_lock(&m->lock);
	gw_bytes_t *b = bytes_of(m->bytes, service);
	if (b != NULL) {
		b->up += up;
		b->down += down;
	}
	uv_mutex_unlock(&m->lock);
}

static void on_refused(void *ctx, const char *event, const char *reason)
{
	gw_metrics_refused(ctx, event, reason);
}

static void on_handshake(void *ctx, double seconds)
{
	gw_metrics_handshake(ctx, seconds);
}

static void on_bytes(void *ctx, const char *service, uint64_t up, uint64_t down)
{
	gw_metrics_bytes(ctx, service, up, down);
}

static void on_would_deny(void *ctx, const char *rule)
{
	gw_metrics_would_deny(ctx, rule);
}

static void on_login(void *ctx, const char *reason)
{
	gw_metrics_t *m = ctx;
	uv_mutex_lock(&m->lock);
	if (reason == NULL) {
		m->logins_issued++;
	} else {
		uintptr_t n = (uintptr_t)cg_strmap_get(m->logins_denied, reason);
		cg_strmap_put(m->logins_denied, reason, (void *)(n + 1));
	}
	uv_mutex_unlock(&m->lock);
}

void gw_metrics_observe(gw_metrics_t *m, gw_gateway_t *gw)
{
	gw->observer = (gw_observer_t){
	        .ctx = m,
	        .refused = on_refused,
	        .handshake = on_handshake,
	        .bytes = on_bytes,
	        .login = on_login,
	        .would_deny = on_would_deny,
	};
}

/* --- rendering ----------------------------------------------------------- */

typedef struct out {
	char *buf;
	size_t len, cap;
	int failed;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out_t *o, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = 1;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2 + (size_t)n;
		char *grown = realloc(o->buf, cap);
		if (grown == NULL) {
			o->failed = 1;
			return;
		}
		o->buf = grown;
		o->cap = cap;
	}
}

/* A label value with \, " and newline escaped. */
static void put_label(out_t *o, const char *value)
{
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\\' || *p == '"')
			put(o, "\\%c", *p);
		else if (*p == '\n')
			put(o, "\\n");
		else
			put(o, "%c", *p);
	}
}

static void family(out_t *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static bool put_refused(const char *key, void *value, void *arg)
{
	out_t *o = arg;
	const char *sep = strchr(key, '\x1f');
	if (sep == NULL)
		return true;
	put(o, "certgate_connections_refused_total{event=\"%.*s\",reason=\"", (int)(sep - key),
	    key);
	put_label(o, sep + 1);
	put(o, "\"} %" PRIuPTR "\n", (uintptr_t)value);
	return true;
}

static bool put_would_deny(const char *rule, void *value, void *arg)
{
	out_t *o = arg;
	put(o, "certgate_authz_would_deny_total{rule=\"");
	put_label(o, rule);
	put(o, "\"} %" PRIuPTR "\n", (uintptr_t)value);
	return true;
}

static bool put_login_denied(const char *reason, void *value, void *arg)
{
	out_t *o = arg;
	put(o, "certgate_logins_total{result=\"denied\",reason=\"");
	put_label(o, reason);
	put(o, "\"} %" PRIuPTR "\n", (uintptr_t)value);
	return true;
}

static bool copy_bytes(const char *service, void *value, void *arg)
{
	gw_bytes_t *from = value;
	gw_bytes_t *to = bytes_of(arg, service);
	if (to != NULL) {
		to->up += from->up;
		to->down += from->down;
	}
	return true;
}

typedef struct bytes_ctx {
	out_t *o;
	const char *direction;
} bytes_ctx_t;

static bool put_bytes(const char *service, void *value, void *arg)
{
	bytes_ctx_t *ctx = arg;
	gw_bytes_t *b = value;
	put(ctx->o, "certgate_bytes_total{service=\"");
	put_label(ctx->o, service);
	put(ctx->o, "\",direction=\"%s\"} %" PRIu64 "\n", ctx->direction,
	    strcmp(ctx->direction, "up") == 0 ? b->up : b->down);
	return true;
}

/* On each worker's thread in turn: the bytes of its live sessions. */
static void add_live_bytes(gw_worker_t *w, void *arg)
{
	cg_strmap_t *bytes = arg;
	for (gw_session_t *s = w->sessions; s != NULL; s = s->next) {
		if (!s->started || s->ended)
			continue;
		gw_bytes_t *b = bytes_of(bytes, s->service->name);
		if (b != NULL) {
			b->up += s->link.end[GW_CLIENT].bytes_in;
			b->down += s->link.end[GW_UPSTREAM].bytes_in;
		}
	}
}

char *gw_metrics_render(gw_metrics_t *m, gw_gateway_t *gw, size_t *len)
{
	out_t o = {.cap = 8192};
	o.buf = malloc(o.cap);
	if (o.buf == NULL)
		return NULL;
	o.buf[0] = '\0';
	/* the live sessions' bytes first: workers take m->lock when theirs end */
	cg_strmap_t *bytes = cg_strmap_create();
	gw_workers_run(gw, add_live_bytes, bytes);
	uint64_t audit_written, audit_lost;
	gw_audit_counts(gw, &audit_written, &audit_lost);
	uv_mutex_lock(&m->lock);

	family(&o, "certgate_up", "gauge", "1 while the gateway's event loop runs.");
	put(&o, "certgate_up 1\n");
	family(&o, "certgate_ready", "gauge",
	       "1 when listeners are bound, a policy is loaded and the gateway is not draining.");
	put(&o, "certgate_ready %d\n", gw_not_ready_reason(gw) == NULL ? 1 : 0);
	family(&o, "certgate_connections_accepted_total", "counter", "TCP connections accepted.");
	put(&o, "certgate_connections_accepted_total %" PRIu64 "\n", gw->counters.accepted);
	family(&o, "certgate_connections_refused_total", "counter",
	       "Connections refused, by audit event and reason (tls.rejected reason, deciding "
	       "rule of authz.denied, upstream.failed).");
	cg_strmap_foreach(m->refused, put_refused, &o);
	family(&o, "certgate_authz_would_deny_total", "counter",
	       "Sessions admitted that a permissive deny rule would have refused, by rule "
	       "(authz.would_deny).");
	cg_strmap_foreach(m->would_deny, put_would_deny, &o);
	family(&o, "certgate_logins_total", "counter",
	       "Login certificate requests to the issuer: issued, or denied by reason.");
	put(&o, "certgate_logins_total{result=\"issued\"} %" PRIu64 "\n", m->logins_issued);
	cg_strmap_foreach(m->logins_denied, put_login_denied, &o);
	family(&o, "certgate_connections_open", "gauge",
	       "Open client connections (handshaking or in a session).");
	put(&o, "certgate_connections_open %zu\n", gw->n_connections);
	family(&o, "certgate_sessions_live", "gauge", "Sessions started and not yet ended.");
	put(&o, "certgate_sessions_live %zu\n", gw->n_live);
	family(&o, "certgate_sessions_abandoned_total", "counter",
	       "Authorized connections whose client left before the upstream was reached (no "
	       "upstream connection was made).");
	put(&o, "certgate_sessions_abandoned_total %" PRIu64 "\n", gw->counters.abandoned);
	family(&o, "certgate_sessions_started_total", "counter", "Sessions started.");
	put(&o, "certgate_sessions_started_total %" PRIu64 "\n", gw->counters.sessions);

	family(&o, "certgate_handshake_duration_seconds", "histogram",
	       "From the first byte of a client to its completed TLS handshake.");
	uint64_t cumulative = 0;
	for (int i = 0; i < GW_HANDSHAKE_BUCKETS; i++) {
		cumulative += m->handshake_buckets[i];
		put(&o, "certgate_handshake_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
		    bucket_le[i], cumulative);
	}
	put(&o, "certgate_handshake_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
	    m->handshake_count);
	put(&o, "certgate_handshake_duration_seconds_sum %.6f\n", m->handshake_seconds);
	put(&o, "certgate_handshake_duration_seconds_count %" PRIu64 "\n", m->handshake_count);

	/* ended sessions' bytes plus the live ones' so far */
	cg_strmap_foreach(m->bytes, copy_bytes, bytes);
	family(&o, "certgate_bytes_total", "counter",
	       "Plaintext bytes relayed, by service; up = client to upstream.");
	bytes_ctx_t up = {&o, "up"}, down = {&o, "down"};
	cg_strmap_foreach(bytes, put_bytes, &up);
	cg_strmap_foreach(bytes, put_bytes, &down);
	cg_strmap_destroy(bytes, free);

	family(&o, "certgate_reloads_total", "counter", "Configuration reloads, by result.");
	put(&o, "certgate_reloads_total{result=\"ok\"} %" PRIu64 "\n", gw->counters.reloads_ok);
	put(&o, "certgate_reloads_total{result=\"failed\"} %" PRIu64 "\n",
	    gw->counters.reloads_failed);
	family(&o, "certgate_policy_generation", "gauge",
	       "Generation of the configuration in force (1 at start, +1 per reload).");
	put(&o, "certgate_policy_generation %" PRIu64 "\n", gw->generation);
	family(&o, "certgate_audit_events_total", "counter", "Audit events written.");
	put(&o, "certgate_audit_events_total %" PRIu64 "\n", audit_written);
	family(&o, "certgate_audit_lost_events_total", "counter",
	       "Audit events that could not be written.");
	put(&o, "certgate_audit_lost_events_total %" PRIu64 "\n", audit_lost);
	gw_syslog_stats_t sl = gw_syslog_stats(gw->syslog);
	family(&o, "certgate_audit_syslog_sent_total", "counter",
	       "Audit lines handed to the syslog receiver (audit.syslog).");
	put(&o, "certgate_audit_syslog_sent_total %" PRIu64 "\n", sl.sent);
	family(&o, "certgate_audit_syslog_lost_total", "counter",
	       "Audit lines that did not reach syslog: refused, dropped from a full queue, or cut "
	       "off with a broken connection. The file log has them.");
	put(&o, "certgate_audit_syslog_lost_total %" PRIu64 "\n", sl.lost);
	family(&o, "certgate_audit_syslog_queued", "gauge",
	       "Audit lines waiting for the syslog receiver.");
	put(&o, "certgate_audit_syslog_queued %" PRIu64 "\n", sl.queued);
	family(&o, "certgate_state_errors_total", "counter",
	       "Run-time state (locks, trust feed, ...) errors: changes that could not be "
	       "persisted (they stay in force in memory), and shared store failures.");
	put(&o, "certgate_state_errors_total %" PRIu64 "\n", gw_state_errors(gw->state));
	family(&o, "certgate_state_connected", "gauge",
	       "1 while the run-time state is in sync with its shared store (always 1 for "
	       "memory and file).");
	put(&o, "certgate_state_connected %d\n", gw_state_connected(gw->state) ? 1 : 0);
	family(&o, "certgate_state_pending", "gauge",
	       "Changes made here that wait to be written to the shared state store.");
	put(&o, "certgate_state_pending %zu\n", gw_state_pending(gw->state));
	family(&o, "certgate_access_requests", "gauge",
	       "Access requests kept (just-in-time access), by state; approved = grants in "
	       "force. Decided requests past the history bound are forgotten.");
	size_t counts[GW_ACCESS_STATES];
	gw_state_access_counts(gw->state, counts);
	for (unsigned i = 0; i < GW_ACCESS_STATES; i++)
		put(&o, "certgate_access_requests{state=\"%s\"} %zu\n",
		    gw_access_state_name((gw_access_state_t)i), counts[i]);
	family(&o, "certgate_admin_denied_total", "counter",
	       "Admin API requests refused: a missing or wrong bearer token, a request "
	       "made by a web page, a rebound Host.");
	for (unsigned i = 0; i < GW_ADMIN_DENIALS; i++)
		put(&o, "certgate_admin_denied_total{reason=\"%s\"} %" PRIu64 "\n",
		    gw_admin_denial_name((gw_admin_denial_t)i), m->admin_denied[i]);
	family(&o, "certgate_start_time_seconds", "gauge", "Start time, seconds since the epoch.");
	put(&o, "certgate_start_time_seconds %.3f\n", (double)gw->started_ms / 1000.0);
	uv_mutex_unlock(&m->lock);
	family(&o, "certgate_worker_connections", "gauge",
	       "Open connections per worker (gateway.workers): how the acceptor spreads them.");
	for (unsigned i = 0; i < gw->n_workers; i++)
		put(&o, "certgate_worker_connections{worker=\"%u\"} %zu\n", i,
		    atomic_load(&gw->workers[i].connections));

	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
