/* The gateway: the control loop (signals, listeners, reloads, the drain,
 * the extensions), the runtime in force, the audit log, the run-time state
 * and what every worker shares (counts, limits, cancel keys). Sessions
 * belong to the workers (core/worker.h). The only mutable global state of
 * `certgate serve` lives in the one gw_gateway_t that serve.c creates.
 *
 * Threads: the control loop runs on the main thread; with several workers
 * each runs its own. A field is the control loop's unless it says
 * "atomic", "lock" (gw->lock) or "audit_lock".
 *
 * core/ knows nothing of the admin API, the metrics exposition or the
 * postgres front: they plug in here. Extensions (the admin API) follow the
 * generations through prepare/commit/rollback on every reload; an observer
 * hears counted events (refusals, handshakes, bytes); postgres mode hooks
 * into sessions through gw_front_ops_t (session.h). */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stdatomic.h>
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
typedef struct gw_worker gw_worker_t;

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
	atomic_uint_least64_t accepted;  /* TCP connections accepted */
	atomic_uint_least64_t sessions;  /* sessions started */
	atomic_uint_least64_t refused;   /* tls.rejected + authz.denied + upstream.failed */
	atomic_uint_least64_t abandoned; /* authorized, the client gone before the upstream */
	atomic_uint_least64_t reloads_ok;
	atomic_uint_least64_t reloads_failed;
} gw_counters_t;

struct gw_gateway {
	uv_loop_t *loop; /* the control loop (the main thread) */
	char *config_path;
	uv_mutex_t lock;  /* the maps marked "lock" */
	gw_runtime_t *rt; /* in force; each worker holds its own reference (w->rt) */
	atomic_uint_least64_t generation; /* 1 at start, +1 per successful reload */
	int64_t started_ms;
	int64_t loaded_ms;
	cg_audit_t *audit; /* the pointer: audit_lock (the writer locks itself) */
	uv_mutex_t audit_lock;
	gw_syslog_t *syslog;      /* audit.syslog: the audit writer's tap (any thread) */
	gw_listener_t *listeners; /* accept and hand over to the workers */
	gw_worker_t *workers;
	unsigned n_workers;
	unsigned next_worker;        /* where ties in the balancing start */
	atomic_size_t n_connections; /* open, every worker */
	atomic_size_t n_live;        /* sessions started, every worker */
	cg_strmap_t *user_sessions;  /* lock: user claim -> live+starting session count */
	cg_strmap_t *round_robin;    /* lock: service name -> next upstream index */
	cg_strmap_t *cancel_keys;    /* lock: postgres mode: our backend pid -> the keys */
	cg_strmap_t *handshakes;     /* lock: source (gw_source_key) -> connections in handshake */
	uint32_t instance;           /* random, prefixes session ids */
	atomic_uint_least64_t next_session;
	atomic_bool draining;
	bool drained;       /* written under lock */
	uv_async_t emptied; /* a worker closed the last connection of a drain (worker.c) */
	/* functions the workers hand to the control loop (gw_control_post) */
	uv_async_t control_wake;
	struct gw_control_msg *control_queue, *control_tail; /* lock */
	/* rate-limited log lines, shared by every worker (cg_log_limit_t is) */
	cg_log_limit_t accept_log;
	cg_log_limit_t audit_refusal_log;
	cg_log_limit_t cancel_log; /* postgres mode: CancelRequests with unknown keys */
	gw_counters_t counters;
	gw_state_t *state; /* run-time state: locks, trust feed, ... */
	gw_extension_t *extensions;
	gw_observer_t observer;         /* its functions are called from every worker */
	const gw_front_ops_t *postgres; /* postgres mode; NULL: refused */
	bool ready;                     /* listeners bound, policy loaded */
	uv_timer_t watchdog;            /* sd_notify WATCHDOG=1, when asked for */
	bool watchdog_on;
	uv_timer_t audit_probe; /* while the audit log fails: retry it every second */
	bool audit_probe_on;
	uv_timer_t access_timer; /* expires access grants (core/access.c) */
	bool access_timer_on;
	uv_signal_t signals[4];
	cg_log_limit_t audit_log; /* audit_lock */
};

/* Runs stmt under gw->lock (the shared maps). */
#define GW_LOCKED(gw, stmt)                                                                        \
	do {                                                                                       \
		uv_mutex_lock(&(gw)->lock);                                                        \
		stmt;                                                                              \
		uv_mutex_unlock(&(gw)->lock);                                                      \
	} while (0)

/* The locks. 0 or a libuv error. gw_gateway_finish: after every thread has ended. */
int gw_gateway_init(gw_gateway_t *gw, uv_loop_t *loop) __attribute__((warn_unused_result));
void gw_gateway_finish(gw_gateway_t *gw);

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

/* gw_audit for an event a session may not go without (session.start):
 * false when it could not be written and audit.on_failure is refuse. */
bool gw_audit_or_refuse(gw_gateway_t *gw, const char *event, json_t *fields);
/* The audit writer's counts; SIGUSR1's reopen; a reload's new writer (or
 * the same) with its on_failure. Control loop; the lock is taken. */
void gw_audit_counts(gw_gateway_t *gw, uint64_t *written, uint64_t *lost);
int gw_audit_reopen(gw_gateway_t *gw);
void gw_audit_replace(gw_gateway_t *gw, cg_audit_t *audit, cg_audit_on_failure_t on_failure);

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

/* Functions the workers hand to the control loop (the access requests of
 * users, core/session_access.c: the requests are the control loop's).
 * gw_control_start: with the workers (gw_workers_start); gw_drain_finish
 * stops it, and runs what is still queued. gw_control_post runs fn(gw,
 * arg) on the control loop without waiting, at once when here (the
 * caller's worker runs on the control loop: one worker). Any thread. 0,
 * or -ENOMEM / -ECANCELED (the drain is over) and fn will not run. */
typedef void (*gw_control_fn)(gw_gateway_t *gw, void *arg);
int gw_control_start(gw_gateway_t *gw) __attribute__((warn_unused_result));
int gw_control_post(gw_gateway_t *gw, bool here, gw_control_fn fn, void *arg)
        __attribute__((warn_unused_result));

/* Per-user live session count (max_sessions_per_user), every worker
 * together: take one if fewer than limit are held (0: no limit), give it
 * back when done. Any thread. */
bool gw_user_sessions_take(gw_gateway_t *gw, const char *user, uint32_t limit);
void gw_user_sessions_give(gw_gateway_t *gw, const char *user);

/* Connections in their handshake per source (max_handshakes_per_source).
 * A source is an IPv4 address, or the /64 of an IPv6 address: one host
 * usually holds a whole /64. gw_source_key writes sa's key (at most
 * GW_SOURCE_KEY_LEN bytes with the NUL). */
#define GW_SOURCE_KEY_LEN 64
void gw_source_key(const struct sockaddr *sa, char *key, size_t len);
bool gw_handshakes_take(gw_gateway_t *gw, const char *source, uint32_t limit);
void gw_handshakes_give(gw_gateway_t *gw, const char *source);

/* The next upstream index of service, round robin over every worker. */
unsigned gw_round_robin_next(gw_gateway_t *gw, const char *service);

#endif
