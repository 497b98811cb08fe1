/* Gateway metrics and their Prometheus text exposition (GET /metrics).
 * Every worker counts into them (the observer): one lock guards them. */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cg_strmap.h"
#include "core/gateway.h"

#define GW_HANDSHAKE_BUCKETS 12

typedef struct gw_metrics {
	uv_mutex_t lock;
	uint64_t handshake_buckets[GW_HANDSHAKE_BUCKETS]; /* cumulative at render */
	uint64_t handshake_count;
	double handshake_seconds;
	cg_strmap_t *refused; /* "event\x1freason" -> uint64 count */
	cg_strmap_t *bytes;   /* service -> gw_bytes_t* of ended sessions */
	uint64_t logins_issued;
	cg_strmap_t *logins_denied;    /* reason -> uint64 count */
	cg_strmap_t *would_deny;       /* permissive rule -> uint64 count (authz.would_deny) */
	uint64_t admin_denied_missing; /* admin requests refused: no token */
	uint64_t admin_denied_wrong;   /* admin requests refused: a wrong one */
} gw_metrics_t;

typedef struct gw_bytes {
	uint64_t up, down;
} gw_bytes_t;

void gw_metrics_init(gw_metrics_t *m);
void gw_metrics_finish(gw_metrics_t *m);

/* Makes m hear what gw counts (gw->observer). */
void gw_metrics_observe(gw_metrics_t *m, gw_gateway_t *gw);

/* A refusal: event is "tls.rejected", "authz.denied" or "upstream.failed";
 * reason must come from a bounded set (a static reason or a rule name). */
void gw_metrics_refused(gw_metrics_t *m, const char *event, const char *reason);
void gw_metrics_handshake(gw_metrics_t *m, double seconds);
/* An admin request refused for its token: token_given false = none sent. */
void gw_metrics_admin_denied(gw_metrics_t *m, bool token_given);
/* A permissive deny rule matched an admitted session. */
void gw_metrics_would_deny(gw_metrics_t *m, const char *rule);
/* Bytes of a session that ended. */
void gw_metrics_bytes(gw_metrics_t *m, const char *service, uint64_t up, uint64_t down);

/* The exposition of everything the gateway knows, malloc'd (caller frees),
 * NUL-terminated; *len its length. */
char *gw_metrics_render(gw_metrics_t *m, gw_gateway_t *gw, size_t *len);

#endif
