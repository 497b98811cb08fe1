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
	int rc = uv_getaddrinfo(s->gw->loop, &s->resolve_req, on_resolved, hp->host, port, &hints);
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

void gw_session_connect_upstream(gw_session_t *s)
{
	s->state = GW_SESSION_CONNECTING;
	gw_end_read_stop(&s->link.end[GW_CLIENT]); /* TLS keeps what arrives meanwhile */
	s->attempt = 0;
	uintptr_t next = (uintptr_t)cg_strmap_get(s->gw->round_robin, s->service->name);
	s->first_upstream = (unsigned)(next % s->service->n_upstream);
	cg_strmap_put(s->gw->round_robin, s->service->name, (void *)(next + 1));
	connect_next(s);
}

/* The link timer fired while connecting. */
void gw_session_upstream_timeout(gw_session_t *s)
{
	s->connect_timed_out = true;
	if (upstream_end(s)->connected) /* postgres mode: stuck in its TLS setup */
		note_upstream_error(s, "timeout in the upstream's TLS setup");
	if (s->resolving)
		uv_cancel((uv_req_t *)&s->resolve_req);
	else
		gw_end_close(upstream_end(s)); /* gw_session_upstream_closed tries the next */
}
