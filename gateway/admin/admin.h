/* The admin REST API (ADMIN_API.md) on the gateway's own loop, through the
 * HTTP server of http/: handlers read and change sessions, locks and the
 * trust feed without locking. It is a gateway extension: each reload's
 * prepare binds a moved or new listener and reads the token file of the
 * new generation (a failure refuses the reload whole), commit swaps them
 * in, rollback throws them away. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "admin/metrics.h"
#include "core/gateway.h"
#include "http/http_server.h"
#include "pol_config.h"

typedef struct gw_admin gw_admin_t;

/* The admin API of gw, counting with metrics: registers itself as an
 * extension; it serves once the first generation is committed. Freed by
 * the extension's destroy. NULL when out of memory. */
gw_admin_t *gw_admin_create(gw_gateway_t *gw, gw_metrics_t *metrics);
/* The address served now, or NULL. */
const char *gw_admin_listening(const gw_admin_t *admin);

/* Reads the admin token file (16 to 1000 printable ASCII characters):
 * a malloc'd string the caller cleanses and frees, or NULL with the error
 * (file:line:col) added to errs. Also used by `certgate check`. */
char *gw_admin_token_load(const pol_file_t *file, cg_errors_t *errs);

/* --- for the endpoint handlers (admin_api.c) ---------------------------- */

typedef struct adm_request {
	gw_gateway_t *gw;
	gw_metrics_t *metrics;
	const gw_http_request_t *http;
	const char *method;
	const char *path; /* as sent (escapes intact); routed by segments */
	const char *body;
	size_t body_len;
	const char *by; /* the caller's address, for audit */
} adm_request_t;

/* The access-request endpoints (admin_access.c). */
void adm_post_access_request(adm_request_t *req, gw_http_reply_t *reply);
void adm_get_access_requests(adm_request_t *req, gw_http_reply_t *reply);
void adm_get_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id);
void adm_approve_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id);
void adm_deny_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id);

/* Routes one request to its handler (admin_api.c). */
void adm_dispatch(adm_request_t *req, gw_http_reply_t *reply);
/* Whether raw_path (as sent) routes to an endpoint anyone may call without
 * the token (/healthz, /readyz). */
bool adm_is_open_path(const char *raw_path);

#endif
