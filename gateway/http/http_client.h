/* HTTPS requests from the loop without blocking it: libcurl's multi
 * interface driven by libuv (a uv_poll_t per socket curl opens, one
 * uv_timer_t for curl's timeouts). The issuer fetches its identity
 * provider's discovery document and keys with it; a slow or dead IdP
 * delays only the request that waits for it.
 *
 * Every request verifies the peer (the system store, or ca_file), follows
 * no redirect, and is bounded in time and size. */
#ifndef GW_HTTP_CLIENT_H
#define GW_HTTP_CLIENT_H

#include <stddef.h>

#include <uv.h>

typedef struct gw_http_client gw_http_client_t;

typedef struct gw_http_response {
	long status;      /* HTTP status, 0 when no answer came */
	const char *body; /* NUL-terminated (valid during the callback) */
	size_t body_len;
	const char *error; /* NULL, or why there is no answer ("timeout", curl's text) */
} gw_http_response_t;

typedef void (*gw_http_done_fn)(void *ctx, const gw_http_response_t *res);

/* A client on loop. NULL when libcurl cannot be set up. */
gw_http_client_t *gw_http_client_create(uv_loop_t *loop);
/* Cancels what is in flight (no callbacks) and frees once the handles have
 * closed. Accepts NULL. */
void gw_http_client_destroy(gw_http_client_t *client);

/* GET url (https only); done is called exactly once, from the loop. ca_file
 * NULL: the system store. max_bytes bounds the body (more is an error),
 * timeout_ms the whole request. 0, or -1 when it could not even start (done
 * is not called then). */
int gw_http_get(gw_http_client_t *client, const char *url, const char *ca_file, size_t max_bytes,
                long timeout_ms, gw_http_done_fn done, void *ctx);

#endif
