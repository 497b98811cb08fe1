/* The gateway: one libuv loop owning the listeners, the table of
 * connections, the runtime in force and the audit log. The only mutable
 * global state of `certgate serve` lives in the one gw_gateway_t that
 * serve.c creates. */
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
#include "admin.h"
#include "authz.h"
#include "metrics.h"
#include "runtime.h"

typedef struct gw_session gw_session_t;
typedef struct gw_gateway gw_gateway_t;
typedef struct gw_listener gw_listener_t;

typedef struct gw_counters {
	uint64_t accepted; /* TCP connections accepted */
	uint64_t sessions; /* sessions started */
	uint64_t refused;  /* tls.rejected + authz.denied + upstream.failed */
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
	gw_listener_t *listeners;
	gw_session_t *sessions; /* every open connection, newest first */
	size_t n_connections;
	size_t n_live;
	cg_strmap_t *user_sessions; /* user claim -> live+starting session count */
	cg_strmap_t *round_robin;   /* service name -> next upstream index */
	cg_strmap_t *cancel_keys;   /* postgres mode: our backend pid -> session */
	uint32_t instance;          /* random, prefixes session ids */
	uint64_t next_session;
	bool draining;
	bool drained;
	gw_counters_t counters;
	gw_authz_state_t authz; /* locks and trust feed */
	gw_metrics_t metrics;
	gw_admin_t *admin;   /* NULL without an admin section */
	bool ready;          /* listeners bound, policy loaded */
	uv_timer_t watchdog; /* sd_notify WATCHDOG=1, when asked for */
	bool watchdog_on;
	uv_timer_t audit_probe; /* while the audit log fails: retry it every second */
	bool audit_probe_on;
	uv_signal_t signals[4];
	cg_log_limit_t accept_log;
	cg_log_limit_t audit_log;
	cg_log_limit_t audit_refusal_log;
};

/* Writes an audit event (steals fields). Failures are logged, rate-limited,
 * and returned as a negative errno. */
int gw_audit(gw_gateway_t *gw, const char *event, json_t *fields);

/* Re-reads everything from disk. Valid: swaps it in, re-authorizes live
 * sessions, returns 0. Invalid: leaves the old one in force, fills errs,
 * returns -1. Both audited (admin.reload) with `by`. */
int gw_reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs);

/* NULL when ready to serve (GET /readyz 200), else why not: "starting",
 * "draining", "audit unavailable" (on_failure refuse and the last audit
 * write failed). */
const char *gw_not_ready_reason(gw_gateway_t *gw);

/* Starts the once-a-second check that brings a failed audit log back: it
 * writes an audit.resumed event (with the count of lost events) as soon as
 * writing works again, so readiness recovers without traffic. */
void gw_audit_probe_start(gw_gateway_t *gw);

/* Re-authorizes the live sessions of user (case-insensitive) or device
 * against the runtime in force; those now refused end with reason. */
void gw_reauthorize_matching(gw_gateway_t *gw, const char *user, const char *device,
                             const char *reason);

/* Stops accepting, ends every session (reason "shutdown") and lets the loop
 * run dry. */
void gw_drain(gw_gateway_t *gw);

/* Per-user live session count. */
size_t gw_user_sessions(gw_gateway_t *gw, const char *user);
void gw_user_sessions_add(gw_gateway_t *gw, const char *user, int delta);

#endif
