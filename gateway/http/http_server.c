/* libmicrohttpd on a libuv loop (see http_server.h).
 *
 * MHD runs with MHD_USE_EPOLL and no thread of its own: its epoll fd is
 * watched by a uv_poll_t, and a uv_timer_t runs it when MHD_get_timeout
 * says, and at least once a second whatever it says. Two things MHD does
 * not do by itself in this mode, done here:
 *  - At its connection limit MHD takes its listening socket out of its
 *    epoll set, and puts it back only at the start of a later MHD_run. When
 *    the run that closed connections was the last thing to happen (every
 *    held connection timed out at once), nothing would ever run it again:
 *    the server stayed deaf for good. So MHD_run is repeated at once after
 *    a run in which a connection closed (MHD_OPTION_NOTIFY_CONNECTION), and
 *    the standing timer covers anything else missed.
 *  - MHD's connection timeout is an idle timeout: a client that trickles a
 *    byte now and then (slowloris) holds its connection for ever. Here
 *    every exchange (from the connection's opening, or the end of its
 *    previous response, to the end of the next response) must finish
 *    within timeout_s; a connection past its deadline is shut down, which
 *    MHD sees as the peer going away.
 * The listening socket is opened here (not by MHD) so a bind failure
 * reports its errno (or there is none: connections handed in by
 * gw_http_add_connection). Request bodies are capped (max_body): a
 * declared Content-Length over the cap is answered 413 at once; a body that
 * grows over it (chunked) is discarded to its end, then answered 413.
 *
 * A handler may answer later (gw_http_defer): the connection is suspended
 * (MHD_suspend_connection) until gw_http_resume hands the reply over;
 * resuming wakes MHD's epoll set through its inter-thread channel, and the
 * next MHD_run calls the access handler again, which sends the reply kept
 * for it. MHD refuses to stop with a connection still suspended, so a
 * stopping server answers every waiting request 503 first. */
#include "http/http_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_addr.h"
#include "cg_log.h"
#include "cg_utf8.h"

/* The longest the loop leaves MHD alone, whatever MHD_get_timeout says. */
#define SAFETY_TICK_MS 1000
/* MHD_run again at once after a run that closed connections, at most this
 * many times in a row (then the timer takes over at 0 ms). */
#define RERUNS 4
/* Connections the kernel queues while MHD is at its limit. Deep enough that
 * the connections of a flood that just went (closed but still queued) do
 * not push a new caller's SYN out; MHD drains them in milliseconds. */
#define LISTEN_BACKLOG 1024

typedef struct upload upload_t;

/* A request answered later (gw_http_defer). Owned by whoever must call
 * gw_http_resume; the server only points at it while it waits. */
struct gw_http_pending {
	gw_http_server_t *srv; /* NULL once the server answered it (stopping) */
	upload_t *up;
	struct MHD_Connection *conn;
	struct gw_http_pending *prev, *next; /* srv->waiting */
	bool in_handler;                     /* the handler has not returned yet */
	bool answered;                       /* resumed from inside the handler */
	gw_http_reply_t reply;               /* that answer */
};

/* One open TCP connection (MHD's socket context). */
typedef struct conn {
	struct conn *prev, *next;
	int fd;            /* MHD's socket: shut down (never closed) here */
	uint64_t deadline; /* uv_now() by which the exchange must be over */
	bool cut;          /* shut down for its deadline already */
	bool linked;       /* in the server's list */
	char client[64];
} conn_t;

struct gw_http_server {
	struct MHD_Daemon *mhd;
	uv_loop_t *loop;
	uv_poll_t poll;
	uv_timer_t timer;
	int handles;
	bool stopping;
	bool closed_some; /* a connection closed during the last MHD_run */
	gw_http_handler_fn handler;
	void *ctx;
	char name[16];
	size_t max_body;
	uint64_t exchange_ms; /* timeout_s */
	void (*tick)(void *ctx);
	uint64_t last_tick; /* uv_now() of its last call */
	unsigned max_connections, max_per_source;
	conn_t *conns; /* open connections, oldest deadline first */
	conn_t *conns_tail;
	gw_http_pending_t *waiting; /* suspended requests */
	cg_log_limit_t mhd_log, cut_log;
};

/* One request (MHD's con_cls), made when its request line is in. */
struct upload {
	char *raw_path; /* the path as sent, escapes intact, without the query */
	char *buf;
	size_t len;
	bool started; /* the access handler has seen it */
	bool too_large;
	bool answered;
	gw_http_pending_t *pending; /* answered later: waiting */
	bool has_later;             /* resumed: later is the answer to send */
	gw_http_reply_t later;
};

static void schedule(gw_http_server_t *srv);
static void on_timer(uv_timer_t *timer);

/* --- replies ------------------------------------------------------------- */

void gw_http_json(gw_http_reply_t *reply, unsigned status, json_t *body)
{
	json_decref(reply->json);
	reply->status = status;
	reply->json = body;
}

void gw_http_error(gw_http_reply_t *reply, unsigned status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t len = n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
	/* the message may quote the request: never a character cut in two,
	 * and bytes that are not UTF-8 escaped, so the reply is always JSON */
	len = cg_utf8_complete(msg, len);
	json_t *body = json_object();
	if (body != NULL && cg_json_set_lossy(body, "error", msg, len) != 0) {
		json_decref(body);
		body = NULL;
	}
	gw_http_json(reply, status, body);
}

const char *gw_http_query(const gw_http_request_t *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *gw_http_header(const gw_http_request_t *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

json_t *gw_http_body_object(const gw_http_request_t *req, gw_http_reply_t *reply,
                            const char *const *allowed)
{
	json_error_t jerr;
	if (req->body_len == 0) {
		gw_http_error(reply, 400, "a JSON object body is required");
		return NULL;
	}
	json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (body == NULL) {
		gw_http_error(reply, 400, "invalid JSON at line %d, column %d: %s", jerr.line,
		              jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(body)) {
		json_decref(body);
		gw_http_error(reply, 400, "the body must be a JSON object");
		return NULL;
	}
	const char *key;
	json_t *value;
	json_object_foreach(body, key, value)
	{
		bool known = false;
		for (const char *const *a = allowed; *a != NULL && !known; a++)
			known = strcmp(*a, key) == 0;
		if (!known) {
			gw_http_error(reply, 400, "unknown field \"%s\"", key);
			json_decref(body);
			return NULL;
		}
	}
	return body;
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, gw_http_reply_t *reply)
{
	char *text = reply->text;
	size_t len = reply->text_len;
	const char *type = reply->content_type;
	if (text == NULL) {
		if (reply->json == NULL)
			gw_http_error(reply, 500, "no reply");
		text = json_dumps(reply->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
		len = text != NULL ? strlen(text) : 0;
		type = "application/json";
	}
	json_decref(reply->json);
	reply->json = NULL;
	if (text == NULL)
		return MHD_NO;
	/* a trailing newline keeps curl output tidy */
	char *body = realloc(text, len + 2);
	if (body == NULL) {
		free(text);
		return MHD_NO;
	}
	if (type != NULL && strcmp(type, "application/json") == 0)
		body[len++] = '\n';
	struct MHD_Response *resp =
	        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (reply->status == 401 && reply->challenge != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, reply->challenge);
	if (reply->allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, reply->allow);
	enum MHD_Result rc = MHD_queue_response(conn, reply->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* --- MHD callbacks ------------------------------------------------------- */

static void caller(struct MHD_Connection *conn, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *info =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(buf, len, "unknown");
	if (info != NULL && info->client_addr != NULL)
		cg_sockaddr_format(info->client_addr, buf, len);
}

static void source(struct MHD_Connection *conn, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *info =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(buf, len, "unknown");
	if (info != NULL && info->client_addr != NULL)
		cg_sockaddr_format_ip(info->client_addr, buf, len);
}

static enum MHD_Result answer_413(gw_http_server_t *srv, struct MHD_Connection *conn, upload_t *up)
{
	gw_http_reply_t reply = {0};
	gw_http_error(&reply, 413, "request body larger than %zu bytes", srv->max_body);
	up->answered = true;
	return send_reply(conn, &reply);
}

/* The request line is in (MHD calls this before it unescapes the path):
 * keeps the path as sent, so a handler can tell "%2F" inside a path
 * segment from a "/" between segments. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	upload_t *up = calloc(1, sizeof(*up));
	if (up == NULL)
		return NULL;
	up->raw_path = strndup(uri, strcspn(uri, "?"));
	if (up->raw_path == NULL) {
		free(up);
		return NULL;
	}
	return up;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	gw_http_server_t *srv = cls;
	upload_t *up = *con_cls;
	if (up == NULL)
		return MHD_NO; /* out of memory at the request line: close */
	if (!up->started) {
		up->started = true;
		const char *declared = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                                   MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (declared != NULL && strtoull(declared, NULL, 10) > srv->max_body) {
			up->too_large = true;
			return answer_413(srv, conn, up);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (up->too_large)
			return MHD_YES; /* discarded */
		if (up->len + n > srv->max_body) {
			/* MHD takes no response in the middle of an upload: the
			 * rest is discarded and 413 sent once the body is in */
			up->too_large = true;
			free(up->buf);
			up->buf = NULL;
			up->len = 0;
			return MHD_YES;
		}
		char *grown = realloc(up->buf, up->len + n + 1);
		if (grown == NULL)
			return MHD_NO;
		memcpy(grown + up->len, upload_data, n);
		up->buf = grown;
		up->len += n;
		up->buf[up->len] = '\0';
		return MHD_YES;
	}
	if (up->answered)
		return MHD_YES;
	if (up->has_later) { /* resumed */
		up->has_later = false;
		up->answered = true;
		return send_reply(conn, &up->later);
	}
	if (up->pending != NULL)
		return MHD_YES; /* still waiting */
	if (up->too_large)
		return answer_413(srv, conn, up);
	gw_http_request_t req = {
	        .conn = conn,
	        .method = method,
	        .path = url,
	        .raw_path = up->raw_path,
	        .body = up->buf,
	        .body_len = up->len,
	        .server = srv,
	        .upload = up,
	};
	caller(conn, req.client, sizeof(req.client));
	source(conn, req.source, sizeof(req.source));
	gw_http_reply_t reply = {0};
	srv->handler(srv->ctx, &req, &reply);
	gw_http_pending_t *p = up->pending;
	if (p != NULL) {
		json_decref(reply.json); /* the answer comes through p */
		free(reply.text);
		p->in_handler = false;
		if (!p->answered) {
			p->next = srv->waiting;
			if (srv->waiting != NULL)
				srv->waiting->prev = p;
			srv->waiting = p;
			MHD_suspend_connection(conn);
			return MHD_YES;
		}
		reply = p->reply;
		up->pending = NULL;
		free(p);
	}
	up->answered = true;
	return send_reply(conn, &reply);
}

/* --- answering later ----------------------------------------------------- */

gw_http_pending_t *gw_http_defer(const gw_http_request_t *req)
{
	upload_t *up = req->upload;
	gw_http_pending_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->srv = req->server;
	p->up = up;
	p->conn = req->conn;
	p->in_handler = true;
	up->pending = p;
	return p;
}

static void reply_drop(gw_http_reply_t *reply)
{
	json_decref(reply->json);
	free(reply->text);
	*reply = (gw_http_reply_t){0};
}

static void waiting_unlink(gw_http_server_t *srv, gw_http_pending_t *p)
{
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		srv->waiting = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	p->prev = p->next = NULL;
}

/* Hands later to p's request and wakes its connection; p is done with. */
static void wake(gw_http_pending_t *p, gw_http_reply_t *later)
{
	gw_http_server_t *srv = p->srv;
	upload_t *up = p->up;
	waiting_unlink(srv, p);
	up->later = *later;
	*later = (gw_http_reply_t){0};
	up->has_later = true;
	up->pending = NULL;
	p->srv = NULL;
	MHD_resume_connection(p->conn);
}

void gw_http_resume(gw_http_pending_t *p, gw_http_reply_t *reply)
{
	if (p->in_handler) {
		p->reply = *reply;
		*reply = (gw_http_reply_t){0};
		p->answered = true;
		return; /* on_request sends it and frees p */
	}
	gw_http_server_t *srv = p->srv;
	if (srv == NULL) { /* answered 503 when the server stopped */
		reply_drop(reply);
		free(p);
		return;
	}
	wake(p, reply);
	free(p);
	/* MHD's channel wakes the poll; run soon in any case */
	uv_timer_start(&srv->timer, on_timer, 0, 0);
}

/* --- connections and their deadlines -------------------------------------- */

static void conn_unlink(gw_http_server_t *srv, conn_t *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		srv->conns_tail = c->prev;
	c->prev = c->next = NULL;
}

/* A new exchange begins: its deadline is timeout_s from now. Deadlines only
 * grow, so moving the connection to the tail keeps the list sorted. */
static void conn_start_exchange(gw_http_server_t *srv, conn_t *c)
{
	if (c->linked)
		conn_unlink(srv, c);
	c->prev = srv->conns_tail;
	if (srv->conns_tail != NULL)
		srv->conns_tail->next = c;
	else
		srv->conns = c;
	srv->conns_tail = c;
	c->linked = true;
	c->deadline = uv_now(srv->loop) + srv->exchange_ms;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	gw_http_server_t *srv = cls;
	conn_t *c = *socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		srv->closed_some = true;
		if (c != NULL) {
			if (c->linked)
				conn_unlink(srv, c);
			free(c);
		}
		*socket_context = NULL;
		return;
	}
	const union MHD_ConnectionInfo *fd =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	c = calloc(1, sizeof(*c));
	if (c == NULL || fd == NULL) {
		/* untracked means no deadline: refuse it instead */
		if (fd != NULL)
			shutdown(fd->connect_fd, SHUT_RDWR);
		free(c);
		return;
	}
	c->fd = fd->connect_fd;
	caller(conn, c->client, sizeof(c->client));
	*socket_context = c;
	conn_start_exchange(srv, c);
}

/* A request is answered (or abandoned): the next exchange's clock starts. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
	gw_http_server_t *srv = cls;
	upload_t *up = *con_cls;
	if (up != NULL) {
		if (up->pending != NULL) { /* gone while waiting: the owner still resumes */
			if (up->pending->srv != NULL)
				waiting_unlink(srv, up->pending);
			up->pending->srv = NULL;
		}
		reply_drop(&up->later);
		free(up->raw_path);
		free(up->buf);
		free(up);
	}
	*con_cls = NULL;
	const union MHD_ConnectionInfo *info =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && info->socket_context != NULL)
		conn_start_exchange(srv, info->socket_context);
}

/* Shuts down every connection past its deadline; MHD then reads the end of
 * the stream and closes it the usual way. */
static void cut_late(gw_http_server_t *srv)
{
	uint64_t now = uv_now(srv->loop);
	for (conn_t *c = srv->conns; c != NULL && c->deadline <= now; c = c->next) {
		if (c->cut)
			continue;
		c->cut = true;
		shutdown(c->fd, SHUT_RDWR);
		cg_log_limited(
		        &srv->cut_log, CG_LOG_WARN,
		        "%s: closed the connection of %s: no complete exchange within %llu s",
		        srv->name, c->client, (unsigned long long)(srv->exchange_ms / 1000));
	}
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
        __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	gw_http_server_t *srv = cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	/* the issuer hands MHD one end of a socketpair, where TCP options
	 * cannot apply: nothing is wrong, so nothing is said */
	if (strstr(msg, "TCP_NODELAY") != NULL || strstr(msg, "TCP_CORK") != NULL)
		return;
	/* one line per refused connection would let a flood flood the log */
	if (strncmp(msg, "Server reached connection limit", 31) == 0)
		cg_log_limited(&srv->mhd_log, CG_LOG_WARN,
		               "%s: refused a connection: %u open in all or %u from its address "
		               "already",
		               srv->name, srv->max_connections, srv->max_per_source);
	else
		cg_log_limited(&srv->mhd_log, CG_LOG_WARN, "%s: %s", srv->name, msg);
}

/* --- the loop ------------------------------------------------------------ */

/* MHD_run, again while a run closed connections: the run after one that
 * closed some is the one that puts the listening socket back. */
static void run(gw_http_server_t *srv)
{
	if (srv->stopping)
		return;
	uint64_t now = uv_now(srv->loop);
	if (srv->tick != NULL && now - srv->last_tick >= SAFETY_TICK_MS) {
		srv->last_tick = now;
		srv->tick(srv->ctx);
	}
	cut_late(srv);
	for (int i = 0; i < RERUNS; i++) {
		srv->closed_some = false;
		MHD_run(srv->mhd);
		if (!srv->closed_some)
			break;
	}
	schedule(srv);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
	run(poll->data);
}

static void on_timer(uv_timer_t *timer)
{
	run(timer->data);
}

/* The timer: when MHD asks (MHD_get_timeout; 0 when it has work pending),
 * at the earliest exchange deadline, at once after a run that still closed
 * connections, and never later than SAFETY_TICK_MS. */
static void schedule(gw_http_server_t *srv)
{
	uint64_t wait = SAFETY_TICK_MS;
	MHD_UNSIGNED_LONG_LONG timeout;
	if (MHD_get_timeout(srv->mhd, &timeout) == MHD_YES && timeout < wait)
		wait = timeout;
	for (conn_t *c = srv->conns; c != NULL; c = c->next) {
		if (c->cut)
			continue; /* shut down already: MHD closes it */
		uint64_t now = uv_now(srv->loop);
		uint64_t left = c->deadline > now ? c->deadline - now : 0;
		if (left < wait)
			wait = left;
		break; /* sorted: the first one not cut is the earliest */
	}
	if (srv->closed_some)
		wait = 0;
	uv_timer_start(&srv->timer, on_timer, wait, 0);
}

static int open_listener(const struct sockaddr_storage *ss, char *err, size_t errlen,
                         const char *where)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                          : sizeof(struct sockaddr_in);
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

gw_http_server_t *gw_http_start(uv_loop_t *loop, const char *listen, const gw_http_options_t *opts,
                                gw_http_handler_fn handler, void *ctx, char *err, size_t errlen)
{
	cg_hostport_t hp;
	struct sockaddr_storage ss = {.ss_family = AF_INET};
	int fd = -1;
	if (listen != NULL) {
		if (!cg_hostport_parse(listen, &hp) || !cg_hostport_to_sockaddr(&hp, &ss)) {
			snprintf(err, errlen, "%s: expected IP:PORT", listen);
			return NULL;
		}
		fd = open_listener(&ss, err, errlen, listen);
		if (fd < 0)
			return NULL;
	}
	gw_http_server_t *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->handler = handler;
	srv->ctx = ctx;
	srv->exchange_ms = (uint64_t)opts->timeout_s * 1000;
	srv->tick = opts->tick;
	srv->last_tick = uv_now(loop);
	srv->max_connections = opts->max_connections;
	srv->max_per_source = opts->max_per_source;
	srv->max_body = opts->max_body != 0 ? opts->max_body : GW_HTTP_MAX_BODY;
	snprintf(srv->name, sizeof(srv->name), "%s", opts->name);
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (fd < 0)
		flags |= MHD_USE_NO_LISTEN_SOCKET;
	struct MHD_OptionItem options[] = {
	        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, srv},
	        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_request_line, srv},
	        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv},
	        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, srv},
	        {MHD_OPTION_CONNECTION_LIMIT, opts->max_connections, NULL},
	        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, opts->max_per_source, NULL},
	        {MHD_OPTION_CONNECTION_TIMEOUT, opts->timeout_s, NULL},
	        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 128 * 1024, NULL},
	        /* last: left out (END) without a listening socket */
	        {fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_END, fd, NULL},
	        {MHD_OPTION_END, 0, NULL},
	};
	srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY,
	                            options, MHD_OPTION_END);
	if (srv->mhd == NULL) {
		if (fd >= 0)
			close(fd);
		free(srv);
		snprintf(err, errlen, "cannot start the %s server%s%s", opts->name,
		         listen != NULL ? " on " : "", listen != NULL ? listen : "");
		return NULL;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	uv_poll_init(loop, &srv->poll, info->epoll_fd);
	uv_timer_init(loop, &srv->timer);
	srv->poll.data = srv->timer.data = srv;
	srv->handles = 2;
	uv_poll_start(&srv->poll, UV_READABLE, on_poll);
	schedule(srv);
	return srv;
}

int gw_http_add_connection(gw_http_server_t *srv, int fd, const struct sockaddr *peer,
                           socklen_t peer_len)
{
	if (srv->stopping) {
		close(fd);
		return -1;
	}
	/* MHD closes fd itself when it refuses it */
	int rc = MHD_add_connection(srv->mhd, fd, peer, peer_len) == MHD_YES ? 0 : -1;
	run(srv);
	return rc;
}

static void on_closed(uv_handle_t *handle)
{
	gw_http_server_t *srv = handle->data;
	if (--srv->handles == 0) {
		MHD_stop_daemon(srv->mhd); /* closes the listening socket too */
		free(srv);
	}
}

void gw_http_stop(gw_http_server_t *srv)
{
	if (srv == NULL || srv->stopping)
		return;
	if (srv->waiting != NULL) {
		while (srv->waiting != NULL) {
			gw_http_reply_t reply = {0};
			gw_http_error(&reply, 503, "the server is stopping");
			wake(srv->waiting, &reply); /* its owner's resume then only frees it */
		}
		/* resuming only raises a flag: this run takes them off MHD's
		 * suspended list (and sends the 503s) */
		MHD_run(srv->mhd);
	}
	srv->stopping = true;
	uv_close((uv_handle_t *)&srv->poll, on_closed);
	uv_close((uv_handle_t *)&srv->timer, on_closed);
}
