/* HTTPS connections to the issuer (see issuer_conn.h). */
#include "issuer/issuer_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_log.h"
#include "core/gateway.h"
#include "core/link.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define HANDSHAKE_TIMEOUT_MS            10000

typedef struct conn {
	gw_link_t link; /* client end: TLS from the user; upstream end: to MHD */
	gw_http_server_t *http;
	gw_conn_slots_t *slots;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	bool counted;                   /* holds one of the issuer's connection slots */
	char source[GW_SOURCE_KEY_LEN]; /* counted in slots->per_source when not "" */
} conn_t;

static cg_log_limit_t source_full_log;

/* One more connection from c's source, unless it has its share already. */
static bool take_source(conn_t *c)
{
	gw_conn_slots_t *slots = c->slots;
	char key[GW_SOURCE_KEY_LEN];
	gw_source_key((const struct sockaddr *)&c->peer, key, sizeof(key));
	uintptr_t n = (uintptr_t)cg_strmap_get(slots->per_source, key);
	if (n >= slots->max_per_source) {
		cg_log_limited(&source_full_log, CG_LOG_WARN,
		               "issuer: %s has %u connections open, the most one source may hold: "
		               "refused",
		               key, slots->max_per_source);
		return false;
	}
	cg_strmap_put(slots->per_source, key, (void *)(n + 1));
	memcpy(c->source, key, sizeof(key));
	return true;
}

static void give_source(conn_t *c)
{
	if (c->source[0] == '\0')
		return;
	uintptr_t n = (uintptr_t)cg_strmap_get(c->slots->per_source, c->source);
	if (n <= 1)
		cg_strmap_remove(c->slots->per_source, c->source);
	else
		cg_strmap_put(c->slots->per_source, c->source, (void *)(n - 1));
	c->source[0] = '\0';
}

static void conn_close(conn_t *c, bool graceful)
{
	gw_link_close(&c->link, graceful);
}

/* TLS is up: a socketpair, our end relayed, the other end MHD's. */
static void hand_to_http(conn_t *c)
{
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
		cg_log(CG_LOG_WARN, "issuer: socketpair: %s", strerror(errno));
		conn_close(c, false);
		return;
	}
	gw_end_t *up = &c->link.end[GW_UPSTREAM];
	int rc = gw_end_open(&c->link, GW_UPSTREAM);
	if (rc == 0)
		rc = uv_tcp_open(&up->tcp, fds[0]);
	if (rc < 0) {
		if (!up->open)
			close(fds[0]);
		close(fds[1]);
		conn_close(c, false);
		return;
	}
	up->connected = true;
	if (gw_http_add_connection(c->http, fds[1], (struct sockaddr *)&c->peer, c->peer_len) < 0) {
		conn_close(c, false);
		return;
	}
	uv_timer_stop(&c->link.timer); /* MHD times idle connections out */
	gw_link_relay(&c->link);
}

static void handshake_step(conn_t *c)
{
	gw_end_t *client = &c->link.end[GW_CLIENT];
	gw_tls_status_t st = gw_tls_handshake(&client->tls);
	int rc = gw_end_flush_tls(client);
	if (st == GW_TLS_FAILED || rc < 0) {
		conn_close(c, st == GW_TLS_FAILED); /* the alert still goes out */
		return;
	}
	if (st == GW_TLS_DONE)
		hand_to_http(c);
}

static void on_setup_input(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread)
{
	conn_t *c = container_of(link, conn_t, link);
	if (nread < 0 || end->id != GW_CLIENT || gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
		conn_close(c, false);
		return;
	}
	handshake_step(c);
}

static void on_relay_done(gw_link_t *link, const char *reason, const char *detail)
{
	conn_close(container_of(link, conn_t, link), true);
}

static void on_timer(gw_link_t *link)
{
	conn_close(container_of(link, conn_t, link), false); /* handshake timeout */
}

static void on_freed(gw_link_t *link)
{
	conn_t *c = container_of(link, conn_t, link);
	if (c->counted)
		c->slots->used--;
	give_source(c);
	free(c);
}

static const gw_link_ops_t conn_ops = {
        .setup_input = on_setup_input,
        .relay_done = on_relay_done,
        .timer = on_timer,
        .freed = on_freed,
};

void gw_issuer_conn_accept(uv_stream_t *server, SSL_CTX *ctx, gw_http_server_t *http,
                           gw_conn_slots_t *slots)
{
	conn_t *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		cg_log(CG_LOG_WARN, "issuer: accept: out of memory");
		return;
	}
	c->http = http;
	c->slots = slots;
	gw_link_init(&c->link, server->loop, &conn_ops);
	gw_end_t *client = &c->link.end[GW_CLIENT];
	int rc = gw_end_open(&c->link, GW_CLIENT);
	if (rc == 0)
		rc = uv_accept(server, (uv_stream_t *)&client->tcp);
	if (rc == 0 && (ctx == NULL || http == NULL || slots->used >= slots->max))
		rc = UV_EBUSY;
	else if (rc == 0) {
		c->counted = true;
		slots->used++;
	}
	int len = sizeof(c->peer);
	if (rc == 0)
		rc = uv_tcp_getpeername(&client->tcp, (struct sockaddr *)&c->peer, &len);
	if (rc == 0 && !take_source(c))
		rc = UV_EBUSY;
	if (rc == 0)
		rc = gw_tls_init(&client->tls, ctx, true);
	if (rc < 0) {
		conn_close(c, false);
		return;
	}
	c->peer_len = (socklen_t)len;
	client->tls_on = true;
	client->connected = true;
	uv_tcp_nodelay(&client->tcp, 1);
	gw_link_arm(&c->link, HANDSHAKE_TIMEOUT_MS);
	if (gw_end_read_start(client) < 0)
		conn_close(c, false);
}
