/* An HTTP/1.1 server on a libuv loop: libmicrohttpd in external-poll mode
 * with no thread of its own (its epoll fd watched by a uv_poll_t, its
 * timeouts driven by a uv_timer_t), so handlers run on the loop and read
 * what the loop owns without locking. It serves one handler with JSON
 * replies in one shape ({"error": ...} for errors) and capped bodies, and
 * bounds what callers can hold: connections in all and per source address,
 * and the time of each exchange (idle or trickling alike).
 *
 * The room below the admin API and the issuer: it knows HTTP, JSON and
 * libuv, nothing of sessions or policy. */
#ifndef GW_HTTP_SERVER_H
#define GW_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

#define GW_HTTP_MAX_BODY (64 * 1024) /* unless gw_http_options_t says otherwise */

typedef struct gw_http_server gw_http_server_t;

typedef struct gw_http_request {
	struct MHD_Connection *conn;
	const char *method;
	const char *path;     /* percent-decoded by MHD ("%2F" is a '/' here) */
	const char *raw_path; /* as sent: escapes intact, no query string */
	const char *body;     /* NUL-terminated, may be NULL when body_len is 0 */
	size_t body_len;
	char client[64];               /* the caller's address, "ip:port" */
	char source[64];               /* the same without the port */
	struct gw_http_server *server; /* the server's own (gw_http_defer) */
	void *upload;
} gw_http_request_t;

typedef struct gw_http_reply {
	unsigned status;
	json_t *json; /* the body (owned), or NULL when text is set */
	char *text;   /* a non-JSON body (owned, malloc'd), e.g. /metrics */
	size_t text_len;
	const char *content_type;
	const char *allow;     /* Allow header for 405 */
	const char *challenge; /* WWW-Authenticate for 401 */
} gw_http_reply_t;

/* Answers one request: fills reply (status and body). Runs on the loop. */
typedef void (*gw_http_handler_fn)(void *ctx, const gw_http_request_t *req, gw_http_reply_t *reply);

typedef struct gw_http_options {
	const char *name;         /* for log lines: "admin", "issuer" */
	unsigned max_connections; /* in all; more wait in the listen backlog */
	unsigned max_per_source;  /* from one IP address (0: no limit); more are closed at once */
	/* each exchange, from the connection's opening (or the end of the
	 * previous response) to the end of the response, must be over within
	 * this time, or the connection is closed */
	unsigned timeout_s;
	/* when set, called on the loop at least once a second (with the
	 * handler's ctx) while the server runs: for the handler's own upkeep */
	void (*tick)(void *ctx);
	size_t max_body; /* request bodies; 0: GW_HTTP_MAX_BODY */
} gw_http_options_t;

/* Listens on listen ("ip:port") and serves handler. NULL with a reason in
 * err (e.g. "cannot listen on 127.0.0.1:9090: Address in use"). listen
 * NULL: no listener; connections are handed in with gw_http_add_connection
 * (the issuer terminates TLS itself and hands MHD the plaintext). */
gw_http_server_t *gw_http_start(uv_loop_t *loop, const char *listen, const gw_http_options_t *opts,
                                gw_http_handler_fn handler, void *ctx, char *err, size_t errlen);
/* Serves a connected stream socket (the peer's address for the request's
 * `client`); MHD owns fd from then on, also on failure. 0 or -1. */
int gw_http_add_connection(gw_http_server_t *srv, int fd, const struct sockaddr *peer,
                           socklen_t peer_len);
/* Stops serving; memory goes with the last close callback. Accepts NULL. */
void gw_http_stop(gw_http_server_t *srv);

/* The one JSON reply, and the one error shape {"error": "..."}. */
void gw_http_json(gw_http_reply_t *reply, unsigned status, json_t *body);
void gw_http_error(gw_http_reply_t *reply, unsigned status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* --- answering later ---------------------------------------------------------
 * A handler that must wait for something on the loop (the state store's
 * answer) takes the request over with gw_http_defer, returns without a
 * reply, and answers later with gw_http_resume; MHD keeps the connection
 * suspended meanwhile. The request itself (req and its strings) is valid
 * only during the handler's call: copy what the answer needs. */
typedef struct gw_http_pending gw_http_pending_t;

/* Called from inside the handler: the reply is given later. NULL when out
 * of memory (then reply now). */
gw_http_pending_t *gw_http_defer(const gw_http_request_t *req);
/* Sends reply (its contents are taken over) as the answer of a deferred
 * request, and frees p: exactly once per gw_http_defer, on the loop, also
 * from inside the handler. A request whose server stopped meanwhile was
 * answered 503 already; then the reply is dropped. */
void gw_http_resume(gw_http_pending_t *p, gw_http_reply_t *reply);

/* Parses the request body as a JSON object whose keys must all be in
 * allowed (NULL-terminated). On failure fills a 400 reply naming the problem
 * (bad JSON with line:column, not an object, the unknown field) and returns
 * NULL. */
json_t *gw_http_body_object(const gw_http_request_t *req, gw_http_reply_t *reply,
                            const char *const *allowed);

/* A query argument or a request header, or NULL. */
const char *gw_http_query(const gw_http_request_t *req, const char *name);
const char *gw_http_header(const gw_http_request_t *req, const char *name);

#endif
