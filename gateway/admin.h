/* The admin REST API (ADMIN_API.md), served by libmicrohttpd on the
 * gateway's own loop: MHD runs in external-poll mode with its epoll fd
 * watched by a uv_poll_t and its timeout driving a uv_timer_t, so handlers
 * read and change sessions, locks and the trust feed without any locking. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <microhttpd.h>

typedef struct gw_gateway gw_gateway_t;
typedef struct gw_admin gw_admin_t;

/* Starts listening on listen ("ip:port"). NULL with a reason in err. */
gw_admin_t *gw_admin_start(gw_gateway_t *gw, const char *listen, char *err, size_t errlen);
/* Stops serving; the memory goes with the last close callback. */
void gw_admin_stop(gw_admin_t *admin);

/* --- for the endpoint handlers (admin_api.c) ---------------------------- */

#define ADM_MAX_BODY (64 * 1024)

typedef struct adm_request {
	gw_gateway_t *gw;
	struct MHD_Connection *conn;
	const char *method;
	const char *path;
	const char *body;
	size_t body_len;
	char by[64]; /* the caller's address, for audit */
} adm_request_t;

typedef struct adm_reply {
	unsigned status;
	json_t *json; /* the body (owned), or NULL when text is set */
	char *text;   /* a non-JSON body (owned, malloc'd), e.g. /metrics */
	size_t text_len;
	const char *content_type;
	const char *allow; /* Allow header for 405 */
} adm_reply_t;

/* The one JSON reply, and the one error shape {"error": "...", ...extra}. */
void adm_json(adm_reply_t *reply, unsigned status, json_t *body);
void adm_error(adm_reply_t *reply, unsigned status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Parses the request body as a JSON object whose keys must all be in
 * allowed (NULL-terminated). On failure fills a 400 reply naming the problem
 * (bad JSON with line:column, not an object, the unknown field) and returns
 * NULL. */
json_t *adm_body_object(const adm_request_t *req, adm_reply_t *reply, const char *const *allowed);

/* A query argument, or NULL. */
const char *adm_query(const adm_request_t *req, const char *name);

/* Routes one request to its handler (admin_api.c). */
void adm_dispatch(adm_request_t *req, adm_reply_t *reply);
/* Endpoints anyone may call without the token. */
bool adm_is_open_path(const char *path);

#endif
