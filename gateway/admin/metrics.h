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

/* Why the admin API refused a request (admin.denied, its metric). */
typedef enum {
	GW_ADMIN_MISSING_TOKEN,
	GW_ADMIN_WRONG_TOKEN,
	GW_ADMIN_WEB_PAGE,     /* Origin, or Sec-Fetch-Site other than none */
	GW_ADMIN_REBOUND_HOST, /* no token_file, and a Host that is a name */
	GW_ADMIN_DENIALS
} gw_admin_denial_t;

/* admin.denied's reason: "missing token", "wrong token", "web page",
 * "host not local" */
const char *gw_admin_denial_name(gw_admin_denial_t why);

typedef struct gw_metrics {
	uv_mutex_t lock;
	uint64_t handshake_buckets[GW_HANDSHAKE_BUCKETS]; /* cumulative at render */
	uint64_t handshake_count;
	double handshake_seconds;
	cg_strmap_t *refused; /* "event\x1freason" -> uint64 count */
	cg_strmap_t *bytes;   /* service -> gw_bytes_t* of ended sessions */
	uint64_t logins_issued;
	cg_strmap_t *logins_denied; /* reason -> uint64 count */
	cg_strmap_t *would_deny;    /* permissive rule -> uint64 count (authz.would_deny) */
	uint64_t admin_denied[GW_ADMIN_DENIALS]; /* admin requests refused, by reason */
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
/* An admin request refused (admin.denied). */
void gw_metrics_admin_denied(gw_metrics_t *m, gw_admin_denial_t why);
/* A permissive deny rule matched an admitted session. */
void gw_metrics_would_deny(gw_metrics_t *m, const char *rule);
/* Bytes of a session that ended. */
void gw_metrics_bytes(gw_metrics_t *m, const char *service, uint64_t up, uint64_t down);

/* The exposition of everything the gateway knows, malloc'd (caller frees),
 * NUL-terminated; *len its length. */
char *gw_metrics_render(gw_metrics_t *m, gw_gateway_t *gw, size_t *len);

#endif
