/* The gateway: one libuv loop owning the listeners, the table of
 * connections, the runtime in force and the audit log. The only mutable
 * global state of `certgate serve` lives in the one gw_gateway_t that
 * serve.c creates.
 *
 * core/ knows nothing of the admin API, the metrics exposition or the
 * postgres front: they plug in here. Extensions (the admin API) follow the
 * generations through prepare/commit/rollback on every reload; an observer
 * hears counted events (refusals, handshakes, bytes); postgres mode hooks
 * into sessions through gw_front_ops_t (session.h). */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "cg_audit.h"
#include "cg_errors.h"
#include "cg_log.h"
#include "cg_strmap.h"
#include "core/authz.h"
#include "core/runtime.h"
#include "core/syslog_out.h"

typedef struct gw_session gw_session_t;
typedef struct gw_gateway gw_gateway_t;
typedef struct gw_listener gw_listener_t;

typedef struct gw_front_ops gw_front_ops_t;

/* Something beside the gateway that follows its generations (the admin
 * API): before a reload swaps rt in, prepare gets ready for it (binds a
 * moved listener, loads a file) or adds errors, which refuse the reload
 * whole; then commit or rollback. stop: the gateway drains. destroy: the
 * gateway is gone (after the loop ended). */
typedef struct gw_extension gw_extension_t;
typedef struct gw_extension_ops {
	void (*prepare)(gw_extension_t *ext, const gw_runtime_t *rt, cg_errors_t *errs);
	void (*commit)(gw_extension_t *ext);
	void (*rollback)(gw_extension_t *ext);
	void (*stop)(gw_extension_t *ext);
	void (*destroy)(gw_extension_t *ext);
} gw_extension_ops_t;

struct gw_extension {
	const gw_extension_ops_t *ops;
	gw_extension_t *next;
};

/* Hears what the gateway counts, for metrics. Any member may be NULL.
 * reasons and events come from bounded sets (static strings, rule names). */
typedef struct gw_observer {
	void *ctx;
	void (*refused)(void *ctx, const char *event, const char *reason);
	void (*handshake)(void *ctx, double seconds);
	void (*bytes)(void *ctx, const char *service, uint64_t up, uint64_t down);
	/* the login issuer: a certificate issued (reason NULL) or refused */
	void (*login)(void *ctx, const char *reason);
	/* a permissive deny rule matched an admitted session (authz.would_deny) */
	void (*would_deny)(void *ctx, const char *rule);
} gw_observer_t;

typedef struct gw_counters {
	uint64_t accepted;  /* TCP connections accepted */
	uint64_t sessions;  /* sessions started */
	uint64_t refused;   /* tls.rejected + authz.denied + upstream.failed */
	uint64_t abandoned; /* authorized, the client gone before the upstream */
	uint64_t reloads_ok;
	uint64_t reloads_failed;
} gw_counters_t;

struct gw_gateway {
	uv_loop_t *loop;
	char *config_path;
	gw_runtime_t *rt;    /* in force */
	uint64_t generation; /* 1 at start, +1 per successful reload */
	int64_t started_ms;
	int64_t loaded_ms;
	cg_audit_t *audit;
	gw_syslog_t *syslog; /* audit.syslog: the audit writer's tap */
	gw_listener_t *listeners;
	gw_session_t *sessions; /* every open connection, newest first */
	size_t n_connections;
	size_t n_live;
	cg_strmap_t *user_sessions; /* user claim -> live+starting session count */
	cg_strmap_t *round_robin;   /* service name -> next upstream index */
	cg_strmap_t *cancel_keys;   /* postgres mode: our backend pid -> session */
	cg_strmap_t *handshakes;    /* source (gw_source_key) -> connections in handshake */
	uint32_t instance;          /* random, prefixes session ids */
	uint64_t next_session;
	bool draining;
	bool drained;
	gw_counters_t counters;
	gw_state_t *state; /* run-time state: locks, trust feed, ... */
	gw_extension_t *extensions;
	gw_observer_t observer;
	const gw_front_ops_t *postgres; /* postgres mode; NULL: refused */
	bool ready;                     /* listeners bound, policy loaded */
	uv_timer_t watchdog;            /* sd_notify WATCHDOG=1, when asked for */
	bool watchdog_on;
	uv_timer_t audit_probe; /* while the audit log fails: retry it every second */
	bool audit_probe_on;
	uv_signal_t signals[4];
	cg_log_limit_t accept_log;
	cg_log_limit_t audit_log;
	cg_log_limit_t audit_refusal_log;
	cg_log_limit_t cancel_log; /* postgres mode: CancelRequests with unknown keys */
};

/* Adds ext; it gets every later prepare/commit/rollback/stop/destroy. */
void gw_extension_add(gw_gateway_t *gw, gw_extension_t *ext);
/* Readies every extension for rt (errors refuse it); then exactly one of
 * commit or rollback. */
void gw_extensions_prepare(gw_gateway_t *gw, const gw_runtime_t *rt, cg_errors_t *errs);
void gw_extensions_commit(gw_gateway_t *gw);
void gw_extensions_rollback(gw_gateway_t *gw);
/* After the loop ended: every extension's destroy. */
void gw_extensions_destroy(gw_gateway_t *gw);

/* A refusal (tls.rejected, authz.denied, upstream.failed, session.start):
 * counted, and told to the observer. */
void gw_count_refusal(gw_gateway_t *gw, const char *event, const char *reason);

/* Writes an audit event (steals fields). Failures are logged, rate-limited,
 * and returned as a negative errno. */
int gw_audit(gw_gateway_t *gw, const char *event, json_t *fields);

/* Opens the audit log the way snap's audit section says (chain, state). */
cg_audit_t *gw_audit_open(const pol_snapshot_t *snap, char *err, size_t errlen);

/* Makes audit the gateway's log, fed to gw->syslog (when there is one). */
void gw_audit_use(gw_gateway_t *gw, cg_audit_t *audit);

/* NULL when ready to serve (GET /readyz 200), else why not: "starting",
 * "draining", "audit unavailable" (on_failure refuse and the last audit
 * write failed). */
const char *gw_not_ready_reason(gw_gateway_t *gw);

/* Starts the once-a-second check that brings a failed audit log back: it
 * writes an audit.resumed event (with the count of lost events) as soon as
 * writing works again, so readiness recovers without traffic. The same
 * tick keeps the chain's state file current (cg_audit_save_state). */
void gw_audit_probe_start(gw_gateway_t *gw);

/* The drain is over (no connection left): gateway.stop, the signal
 * watchers, extensions and timers closed, so the loop runs dry. Once. */
void gw_drain_finish(gw_gateway_t *gw);

/* Per-user live session count. */
size_t gw_user_sessions(gw_gateway_t *gw, const char *user);
void gw_user_sessions_add(gw_gateway_t *gw, const char *user, int delta);

/* Connections in their handshake per source (max_handshakes_per_source).
 * A source is an IPv4 address, or the /64 of an IPv6 address: one host
 * usually holds a whole /64. gw_source_key writes sa's key (at most
 * GW_SOURCE_KEY_LEN bytes with the NUL). */
#define GW_SOURCE_KEY_LEN 64
void gw_source_key(const struct sockaddr *sa, char *key, size_t len);
size_t gw_handshakes(gw_gateway_t *gw, const char *source);
void gw_handshakes_add(gw_gateway_t *gw, const char *source, int delta);

#endif
