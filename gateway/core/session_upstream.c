/* A session's way to its upstream: the service's upstreams in turn from a
 * round-robin start, every address of a name, connect_timeout per entry;
 * when none answers, one upstream.failed line naming each one tried. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_addr.h"
#include "core/session.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void connect_next(gw_session_t *s);

static gw_end_t *upstream_end(gw_session_t *s)
{
	return &s->link.end[GW_UPSTREAM];
}

static void note_upstream_error(gw_session_t *s, const char *error)
{
	if (s->upstream_errors == NULL)
		s->upstream_errors = json_array();
	json_array_append_new(s->upstream_errors,
	                      json_pack("{s:s, s:s}", "upstream", s->upstream, "error", error));
}

static void upstream_failed(gw_session_t *s)
{
	json_t *f = gw_session_base_fields(s);
	json_object_set_new(f, "user", json_string(s->claims.user));
	json_t *tried = json_array();
	const char *last = "no upstream";
	size_t n = json_array_size(s->upstream_errors);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(s->upstream_errors, i);
		json_array_append(tried, json_object_get(e, "upstream"));
		last = json_string_value(json_object_get(e, "error"));
	}
	json_object_set_new(f, "upstream", tried);
	json_object_set_new(f, "reason", json_string(last));
	json_object_set(f, "errors", s->upstream_errors);
	gw_count_refusal(s->gw, "upstream.failed", "no upstream reachable");
	(void)gw_audit(s->gw, "upstream.failed", f);
	if (s->front != NULL)
		s->gw->postgres->tell_client(s, "08006", "certgate: the database is not reachable");
	gw_session_tell_status(s, "the service is not reachable");
	gw_session_drop(s, true);
}

void gw_session_upstream_error(gw_session_t *s, const char *error)
{
	note_upstream_error(s, error);
	gw_end_close(upstream_end(s)); /* on_end_closed tries the next */
}

static void on_connect(uv_connect_t *req, int status)
{
	gw_session_t *s = container_of(req, gw_session_t, connect_req);
	if (s->state != GW_SESSION_CONNECTING)
		return; /* closing: the handle is being torn down */
	if (status == 0) {
		upstream_end(s)->connected = true;
		if (!gw_session_still_admitted(s))
			return;
		if (s->front != NULL)
			s->gw->postgres->upstream_connected(s); /* its own handshake first */
		else
			gw_session_start(s);
		return;
	}
	note_upstream_error(s, s->connect_timed_out ? "connect timeout" : uv_strerror(status));
	gw_end_close(upstream_end(s)); /* on_end_closed tries the next */
}

static void connect_to(gw_session_t *s, const struct sockaddr *addr)
{
	gw_end_t *up = upstream_end(s);
	int rc = gw_end_open(&s->link, GW_UPSTREAM);
	if (rc < 0) {
		note_upstream_error(s, uv_strerror(rc));
		uv_freeaddrinfo(s->addrs);
		s->addrs = s->next_addr = NULL;
		s->attempt++;
		connect_next(s);
		return;
	}
	rc = uv_tcp_connect(&s->connect_req, &up->tcp, addr, on_connect);
	if (rc < 0) {
		note_upstream_error(s, uv_strerror(rc));
		gw_end_close(up);
	}
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	gw_session_t *s = container_of(req, gw_session_t, resolve_req);
	s->resolving = false;
	if (s->zombie) {
		uv_freeaddrinfo(res);
		free(s);
		return;
	}
	if (s->state != GW_SESSION_CONNECTING) {
		uv_freeaddrinfo(res);
		return;
	}
	if (status < 0 || res == NULL) {
		note_upstream_error(s, s->connect_timed_out ? "connect timeout"
		                       : status < 0         ? uv_strerror(status)
		                                            : "no address");
		uv_freeaddrinfo(res);
		s->attempt++;
		connect_next(s);
		return;
	}
	s->addrs = res;
	s->next_addr = res->ai_next;
	connect_to(s, res->ai_addr);
}

static void connect_next(gw_session_t *s)
{
	const pol_service_t *svc = s->service;
	if (s->attempt >= svc->n_upstream) {
		upstream_failed(s);
		return;
	}
	const cg_hostport_t *hp =
	        &svc->upstream[(s->first_upstream + s->attempt) % svc->n_upstream];
	snprintf(s->upstream, sizeof(s->upstream), strchr(hp->host, ':') ? "[%s]:%u" : "%s:%u",
	         hp->host, hp->port);
	s->connect_timed_out = false;
	gw_link_arm(&s->link, svc->connect_timeout_ms);
	struct sockaddr_storage ss;
	if (cg_hostport_to_sockaddr(hp, &ss)) {
		connect_to(s, (struct sockaddr *)&ss);
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", hp->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	int rc = uv_getaddrinfo(s->worker->loop, &s->resolve_req, on_resolved, hp->host, port,
	                        &hints);
	if (rc < 0) {
		note_upstream_error(s, uv_strerror(rc));
		s->attempt++;
		connect_next(s);
		return;
	}
	s->resolving = true;
}

void gw_session_upstream_closed(gw_session_t *s)
{
	if (s->state != GW_SESSION_CONNECTING)
		return;
	if (s->next_addr != NULL && !s->connect_timed_out) {
		struct addrinfo *ai = s->next_addr; /* another address of the same name */
		s->next_addr = ai->ai_next;
		connect_to(s, ai->ai_addr);
		return;
	}
	uv_freeaddrinfo(s->addrs);
	s->addrs = s->next_addr = NULL;
	s->attempt++;
	connect_next(s);
}

/* --- a client that leaves before its session begins ---------------------------
 *
 * A TLS health check, a port scanner or a client that gives up closes right
 * after its handshake. Connecting upstream for it would cost the database a
 * backend for nothing, so in tunnel mode the client is read while the
 * upstream is connected: what it sends is kept (at most EARLY_MAX bytes,
 * then its reading pauses) and goes upstream first once the session
 * starts; a client that closes (TCP FIN or close_notify) without having
 * sent a byte is not connected at all. One that sent a request and then
 * half-closed still gets its session: it is waiting for the answer. */
#define EARLY_MAX (64 * 1024)
/* how long the upstream connect waits for a client that has not spoken: a
 * close_notify behind the client's Finished often waits out the client's
 * Nagle and the gateway's delayed ACK (40 ms on Linux); a protocol where
 * the server speaks first pays this once per connection */
#define CONNECT_DEFER_MS 50

/* Moves the plaintext the client's TLS holds into s->early. */
static void read_early(gw_session_t *s)
{
	gw_end_t *c = &s->link.end[GW_CLIENT];
	while (s->early_len < EARLY_MAX) {
		if (s->early == NULL && (s->early = malloc(EARLY_MAX)) == NULL)
			return; /* it stays in TLS, as before */
		ssize_t n = gw_tls_read(&c->tls, s->early + s->early_len, EARLY_MAX - s->early_len);
		if (n > 0) {
			s->early_len += (size_t)n;
			continue;
		}
		if (n != GW_TLS_READ_WANT)
			s->client_gone = true; /* close_notify, or a broken record */
		return;
	}
	gw_end_read_stop(c); /* full: the rest waits in the socket */
}

/* After reading what the client sent: false when the session is over (a
 * flood refused, or the client gone without a word). */
static bool client_still_there(gw_session_t *s)
{
	gw_end_t *c = &s->link.end[GW_CLIENT];
	if (c->tls.abuse != NULL) {
		(void)gw_end_flush_control(c); /* its alert */
		gw_session_reject(s, c->tls.abuse, NULL);
		return false;
	}
	if (s->client_gone && s->early_len == 0) {
		gw_session_abandon(s);
		return false;
	}
	if (s->client_gone)
		gw_end_read_stop(c); /* a request then a FIN: the session goes on */
	return true;
}

void gw_session_connecting_input(gw_session_t *s, const char *data, ssize_t nread)
{
	gw_end_t *c = &s->link.end[GW_CLIENT];
	if (nread < 0)
		s->client_gone = true;
	else if (gw_tls_feed(&c->tls, data, (size_t)nread) < 0)
		s->client_gone = true;
	else
		read_early(s);
	if (client_still_there(s) && s->connect_deferred && s->early_len > 0)
		gw_session_connect_now(s); /* it spoke: no reason to wait */
}

void gw_session_connect_upstream(gw_session_t *s)
{
	s->state = GW_SESSION_CONNECTING;
	gw_end_t *c = &s->link.end[GW_CLIENT];
	if (s->front != NULL) {
		gw_end_read_stop(c); /* the front's TLS keeps what arrives meanwhile */
	} else {
		read_early(s); /* what came with the handshake */
		if (!client_still_there(s))
			return;
		if (!s->client_gone && s->early_len < EARLY_MAX && gw_end_read_start(c) < 0) {
			gw_session_abandon(s);
			return;
		}
		if (s->early_len == 0) {
			/* a moment first: a close right behind the handshake is
			 * read before any SYN goes out; the client's first bytes
			 * end the wait at once */
			s->connect_deferred = true;
			gw_link_arm(&s->link, CONNECT_DEFER_MS);
			return;
		}
	}
	gw_session_connect_now(s);
}

void gw_session_connect_now(gw_session_t *s)
{
	s->connect_deferred = false;
	s->attempt = 0;
	s->first_upstream =
	        gw_round_robin_next(s->gw, s->service->name) % (unsigned)s->service->n_upstream;
	connect_next(s);
}

/* The link timer fired while connecting. */
void gw_session_upstream_timeout(gw_session_t *s)
{
	if (s->connect_deferred) {
		gw_session_connect_now(s);
		return;
	}
	s->connect_timed_out = true;
	if (upstream_end(s)->connected) /* postgres mode: stuck in its TLS setup */
		note_upstream_error(s, "timeout in the upstream's TLS setup");
	if (s->resolving)
		uv_cancel((uv_req_t *)&s->resolve_req);
	else
		gw_end_close(upstream_end(s)); /* gw_session_upstream_closed tries the next */
}
