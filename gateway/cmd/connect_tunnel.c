/* One tunnel of `certgate connect` (see connect.h): an accepted local
 * connection, a TCP connection to the gateway (every address in turn), a
 * TLS client handshake with the login certificate and SNI = the
 * listener's service, the gateway's certificate verified against the CA
 * and the gateway host name, then a link relaying both ways (client end
 * plain, upstream end TLS). The local client is not read until the tunnel
 * is up, so nothing it sends early is lost or reordered.
 *
 * The connector offers ALPN "certgate/1": a gateway that selects it sends
 * one status line before any byte of the service ("OK" or "REFUSED
 * <reason>"), so a refusal is logged here with its reason whatever the
 * protocol inside (docs/architecture.md, "The connector's status line").
 *
 * The service name is copied into the tunnel: a listener closed by a
 * catalog refresh leaves its tunnels running (the gateway ends them if
 * the policy no longer admits them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "cg_log.h"
#include "cmd/connect.h"
#include "core/link.h"
#include "core/runtime.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define CONNECT_TIMEOUT_MS              10000
#define HANDSHAKE_TIMEOUT_MS            15000

struct tunnel {
	gw_link_t link;
	connector_t *conn;
	struct tunnel *prev, *next;
	uint64_t id;
	char service[CONNECT_SERVICE_MAX + 1];
	uv_connect_t connect_req;
	uv_getaddrinfo_t resolve_req;
	bool resolving, zombie, connected;
	/* every address of the gateway, tried in turn (localhost may be ::1
	 * first while the gateway listens on 127.0.0.1 only) */
	struct addrinfo *addrs, *next_addr;
	struct sockaddr_storage numeric;
	bool numeric_left;
	const char *last_error;
	/* the gateway's status line (ALPN certgate/1) */
	bool status_expected; /* the gateway selected certgate/1 */
	bool status_read;
	bool refused;
	char status[256];
	size_t status_len;
	/* the local client's first bytes, to tell a PostgreSQL CancelRequest
	 * (which never gets an answer) from a session */
	uint8_t first[8];
	size_t first_len;
};

static void tunnel_close(tunnel_t *t, bool graceful)
{
	gw_link_close(&t->link, graceful);
}

static void on_freed(gw_link_t *link)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	connector_t *c = t->conn;
	c->n_conns--;
	uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		c->tunnels = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	if (t->resolving)
		t->zombie = true;
	else
		free(t);
	connect_tunnel_gone(c);
}

/* A PostgreSQL CancelRequest: 16 bytes, code 80877102. Its connection is
 * closed without an answer by design. */
static bool sent_cancel_request(const tunnel_t *t)
{
	static const uint8_t head[8] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e};
	return t->first_len == sizeof(head) && memcmp(t->first, head, sizeof(head)) == 0;
}

static void on_relay_done(gw_link_t *link, const char *reason, const char *detail)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	bool silent_close =
	        link->end[GW_UPSTREAM].bytes_in == 0 && strcmp(reason, "upstream closed") == 0;
	if (silent_close && !t->refused && !sent_cancel_request(t))
		cg_log(CG_LOG_WARN,
		       t->status_read
		               ? "tunnel %llu: the service closed the connection without a "
		                 "word"
		               : "tunnel %llu: the gateway closed the tunnel before the service "
		                 "said anything: refused? (the gateway's audit log says why)",
		       (unsigned long long)t->id);
	else if (detail != NULL)
		cg_log(CG_LOG_INFO, "tunnel %llu: %s (%s)", (unsigned long long)t->id,
		       strcmp(reason, "upstream closed") == 0 ? "gateway closed" : reason, detail);
	tunnel_close(t, true);
}

/* The gateway's status line, then the service's bytes as they come. */
static bool read_status(tunnel_t *t, const char *data, size_t len)
{
	const char *nl = memchr(data, '\n', len);
	size_t take = nl != NULL ? (size_t)(nl - data) + 1 : len;
	if (t->status_len + take > sizeof(t->status) - 1) {
		cg_log(CG_LOG_WARN, "tunnel %llu: the gateway sent no status line",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return true;
	}
	memcpy(t->status + t->status_len, data, take);
	t->status_len += take;
	if (nl == NULL)
		return true; /* the rest of the line is still to come */
	t->status[t->status_len - 1] = '\0';
	t->status_read = true;
	if (strncmp(t->status, "REFUSED ", 8) == 0) {
		t->refused = true;
		cg_log(CG_LOG_WARN, "tunnel %llu (%s): the gateway refused it: %s",
		       (unsigned long long)t->id, t->service, t->status + 8);
	} else if (strcmp(t->status, "OK") != 0) {
		cg_log(CG_LOG_WARN, "tunnel %llu: unexpected status from the gateway",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return true;
	}
	/* what followed the line in this read goes on to the local client */
	if (take < len && gw_end_write(&t->link.end[GW_CLIENT], data + take, len - take) < 0)
		tunnel_close(t, false);
	return true;
}

static bool on_filter(gw_link_t *link, gw_end_t *from, const char *data, size_t len)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (from->id == GW_CLIENT) {
		size_t take = sizeof(t->first) - t->first_len;
		take = take < len ? take : len;
		memcpy(t->first + t->first_len, data, take);
		t->first_len += take;
		return false;
	}
	if (!t->status_expected || t->status_read)
		return false;
	return read_status(t, data, len);
}

static void on_timer(gw_link_t *link)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	const cg_hostport_t *gw = &t->conn->tls.gateway;
	cg_log(CG_LOG_WARN, "tunnel %llu: gateway %s:%u: %s", (unsigned long long)t->id, gw->host,
	       gw->port, t->connected ? "TLS handshake timed out" : "connect timed out");
	tunnel_close(t, false);
}

static void handshake_step(tunnel_t *t)
{
	gw_end_t *gw_end = &t->link.end[GW_UPSTREAM];
	gw_tls_status_t st = gw_tls_handshake(&gw_end->tls);
	int rc = gw_end_flush_tls(gw_end);
	if (st == GW_TLS_FAILED) {
		long verify = SSL_get_verify_result(gw_end->tls.ssl);
		cg_log(CG_LOG_WARN, "tunnel %llu: TLS with the gateway failed: %s",
		       (unsigned long long)t->id,
		       verify != X509_V_OK ? X509_verify_cert_error_string(verify)
		                           : gw_end->tls.error);
		tunnel_close(t, false);
		return;
	}
	if (rc < 0) {
		tunnel_close(t, false);
		return;
	}
	if (st == GW_TLS_DONE) {
		uv_timer_stop(&t->link.timer);
		t->status_expected = strcmp(gw_end->tls.alpn, GW_ALPN_CERTGATE) == 0;
		gw_link_relay(&t->link);
	}
}

static void on_setup_input(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (nread < 0) {
		cg_log(CG_LOG_WARN,
		       "tunnel %llu: the gateway closed the connection during the "
		       "handshake",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return;
	}
	if (end->id != GW_UPSTREAM || gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
		tunnel_close(t, false);
		return;
	}
	handshake_step(t);
}

static void try_next_address(tunnel_t *t);

static void on_connect(uv_connect_t *req, int status)
{
	tunnel_t *t = container_of(req, tunnel_t, connect_req);
	if (t->link.closing)
		return;
	connector_t *c = t->conn;
	if (status < 0) {
		t->last_error = uv_strerror(status);
		gw_end_close(&t->link.end[GW_UPSTREAM]); /* on_end_closed tries the next */
		return;
	}
	t->connected = true;
	gw_end_t *g = &t->link.end[GW_UPSTREAM];
	g->connected = true;
	uv_tcp_nodelay(&g->tcp, 1);
	uv_tcp_keepalive(&g->tcp, 1, 60);
	(void)client_tls_refresh(&c->tls); /* a renewed certificate, for this connection */
	if (c->tls.ctx == NULL || gw_tls_init(&g->tls, c->tls.ctx, false) < 0) {
		tunnel_close(t, false);
		return;
	}
	g->tls_on = true;
	SSL *ssl = g->tls.ssl;
	SSL_set_tlsext_host_name(ssl, t->service);
	client_tls_expect_gateway(ssl, &c->tls.gateway);
	gw_link_arm(&t->link, HANDSHAKE_TIMEOUT_MS);
	if (gw_end_read_start(g) < 0) {
		tunnel_close(t, false);
		return;
	}
	handshake_step(t);
}

static void connect_to(tunnel_t *t, const struct sockaddr *addr)
{
	gw_end_t *g = &t->link.end[GW_UPSTREAM];
	int rc = gw_end_open(&t->link, GW_UPSTREAM);
	if (rc < 0) {
		t->last_error = uv_strerror(rc);
		try_next_address(t);
		return;
	}
	rc = uv_tcp_connect(&t->connect_req, &g->tcp, addr, on_connect);
	if (rc < 0) {
		t->last_error = uv_strerror(rc);
		gw_end_close(g); /* on_end_closed tries the next */
	}
}

static void try_next_address(tunnel_t *t)
{
	const cg_hostport_t *gw = &t->conn->tls.gateway;
	if (t->numeric_left) {
		t->numeric_left = false;
		connect_to(t, (struct sockaddr *)&t->numeric);
		return;
	}
	if (t->next_addr != NULL) {
		struct addrinfo *ai = t->next_addr;
		t->next_addr = ai->ai_next;
		connect_to(t, ai->ai_addr);
		return;
	}
	cg_log(CG_LOG_WARN, "tunnel %llu: cannot connect to the gateway %s:%u: %s",
	       (unsigned long long)t->id, gw->host, gw->port,
	       t->last_error != NULL ? t->last_error : "no address");
	tunnel_close(t, false);
}

static void on_end_closed(gw_link_t *link, gw_end_t *end)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (end->id == GW_UPSTREAM && !t->connected && !link->closing)
		try_next_address(t);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	tunnel_t *t = container_of(req, tunnel_t, resolve_req);
	t->resolving = false;
	if (t->zombie) {
		uv_freeaddrinfo(res);
		free(t);
		return;
	}
	if (t->link.closing) {
		uv_freeaddrinfo(res);
		return;
	}
	if (status < 0 || res == NULL) {
		cg_log(CG_LOG_WARN, "tunnel %llu: cannot resolve %s: %s", (unsigned long long)t->id,
		       t->conn->tls.gateway.host, status < 0 ? uv_strerror(status) : "no address");
		uv_freeaddrinfo(res);
		tunnel_close(t, false);
		return;
	}
	t->addrs = t->next_addr = res;
	try_next_address(t);
}

static const gw_link_ops_t tunnel_ops = {
        .setup_input = on_setup_input,
        .filter = on_filter,
        .relay_done = on_relay_done,
        .timer = on_timer,
        .end_closed = on_end_closed,
        .freed = on_freed,
};

void connect_tunnel_accept(conn_listener_t *l)
{
	connector_t *c = l->conn;
	tunnel_t *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return;
	t->conn = c;
	t->id = ++c->next_id;
	snprintf(t->service, sizeof(t->service), "%s", l->service);
	gw_link_init(&t->link, c->loop, &tunnel_ops);
	c->n_conns++;
	t->next = c->tunnels;
	if (c->tunnels != NULL)
		c->tunnels->prev = t;
	c->tunnels = t;
	gw_end_t *local = &t->link.end[GW_CLIENT];
	int rc = gw_end_open(&t->link, GW_CLIENT);
	if (rc == 0)
		rc = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&local->tcp);
	if (rc < 0 || c->stopping) {
		tunnel_close(t, false);
		return;
	}
	local->connected = true;
	uv_tcp_nodelay(&local->tcp, 1);
	gw_link_arm(&t->link, CONNECT_TIMEOUT_MS);
	const cg_hostport_t *gw = &c->tls.gateway;
	if (cg_hostport_to_sockaddr(gw, &t->numeric)) {
		t->numeric_left = true;
		try_next_address(t);
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", gw->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	rc = uv_getaddrinfo(c->loop, &t->resolve_req, on_resolved, gw->host, port, &hints);
	if (rc < 0) {
		cg_log(CG_LOG_WARN, "cannot resolve %s: %s", gw->host, uv_strerror(rc));
		tunnel_close(t, false);
		return;
	}
	t->resolving = true;
}

void connect_tunnels_close(connector_t *c)
{
	for (tunnel_t *t = c->tunnels; t != NULL; t = t->next)
		tunnel_close(t, true);
}
