/* The syslog sender of audit.syslog (see syslog_out.h).
 *
 * Data flow: the audit writer, right after a line reached the file, calls
 * gw_syslog_tap (under its own lock, so in file order); the tap formats the
 * RFC 5424 message and appends it to the queue; on the loop's thread the
 * queue is flushed at once, from another thread the loop is woken
 * (uv_async) to do it.
 *
 * Transports, all non-blocking:
 *  - unix: an unconnected datagram socket, sendto(2) the path each time
 *    (a restarted daemon's new socket is found without reconnecting);
 *  - udp: a connected datagram socket, so the kernel reports a receiver's
 *    ICMP "port unreachable" on the next send: that earlier datagram is
 *    counted lost, and the send retried once;
 *  - tcp: a libuv stream with octet-counted frames; uv_try_write, then one
 *    uv_write for the rest of a frame; EOF or an error from the receiver
 *    closes the link, and it is opened again with backoff (100 ms doubling
 *    to 5 s); a host name's addresses (up to 4) are tried in turn first. The frame in flight when a
 * link breaks is counted lost. Datagrams are sent or counted lost at once; only TCP (or a host name
 * not yet resolved) keeps messages, at most GW_SYSLOG_QUEUE_BYTES, the oldest dropped (and counted)
 * first. What a receiver's kernel accepted and the receiver then lost cannot be seen from here. */
#include "core/syslog_out.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_log.h"
#include "core/syslog_msg.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 5000
#define LINGER_MS          1000 /* at stop: time for the queue to reach the receiver */
#define MAX_ADDRESSES      4    /* of a host name, tried in turn (TCP) */

typedef enum { LINK_OFF, LINK_RESOLVING, LINK_WAITING, LINK_CONNECTING, LINK_UP } link_state_t;

/* One TCP connection; freed in its close callback. */
typedef struct tcp_link {
	uv_tcp_t handle;
	uv_connect_t connect;
	uv_write_t write;
	gw_syslog_t *so;
	bool closing;
} tcp_link_t;

/* A name being resolved; ignored when the settings changed meanwhile. */
typedef struct resolving {
	uv_getaddrinfo_t req;
	gw_syslog_t *so;
	uint64_t generation;
} resolving_t;

struct gw_syslog {
	uv_loop_t *loop;
	pthread_t loop_thread;
	pthread_mutex_t lock; /* the queue, the counters, the settings the tap reads */
	uv_async_t wake;
	uv_timer_t timer; /* backoff, connect timeout, linger */
	bool stopped;     /* gw_syslog_stop: the tap drops (and counts) */
	bool closed;      /* the handles are closing */
	/* settings */
	pol_syslog_transport_t transport;
	char *address;
	char *unix_path;
	cg_hostport_t host;
	int facility;
	uint64_t generation;
	gw_syslog_origin_t origin;
	/* datagrams */
	int fd;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	bool peer_known;
	/* tcp */
	tcp_link_t *link;
	link_state_t state;
	uint64_t backoff_ms;
	struct sockaddr_storage addrs[MAX_ADDRESSES]; /* the host name's, in resolver order */
	int n_addrs, next_addr;
	/* what waits, and what happened */
	gw_syslog_queue_t queue;
	uint64_t sent, lost;
	cg_log_limit_t log;
};

static void flush(gw_syslog_t *so);
static void link_start(gw_syslog_t *so);
static void on_wake(uv_async_t *async);

gw_syslog_t *gw_syslog_create(uv_loop_t *loop)
{
	gw_syslog_t *so = calloc(1, sizeof(*so));
	if (so == NULL)
		return NULL;
	so->loop = loop;
	so->loop_thread = pthread_self();
	so->fd = -1;
	pthread_mutex_init(&so->lock, NULL);
	gw_syslog_queue_init(&so->queue, GW_SYSLOG_QUEUE_BYTES);
	gw_syslog_origin_init(&so->origin);
	uv_async_init(loop, &so->wake, on_wake);
	so->wake.data = so;
	uv_timer_init(loop, &so->timer);
	so->timer.data = so;
	/* neither keeps the loop alive: a TCP link does while it is open, the
	 * timer while it lingers at stop */
	uv_unref((uv_handle_t *)&so->wake);
	uv_unref((uv_handle_t *)&so->timer);
	return so;
}

static void count_lost(gw_syslog_t *so, uint64_t n)
{
	so->lost += n;
}

/* ---- TCP ---- */

static void on_link_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void link_close(gw_syslog_t *so)
{
	tcp_link_t *link = so->link;
	so->link = NULL;
	if (link != NULL && !link->closing) {
		link->closing = true;
		uv_close((uv_handle_t *)&link->handle, on_link_closed);
	}
}

static void on_timer(uv_timer_t *timer);

static void schedule_retry(gw_syslog_t *so)
{
	if (so->stopped)
		return;
	so->state = LINK_WAITING;
	uv_timer_start(&so->timer, on_timer, so->backoff_ms, 0);
	so->backoff_ms = so->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : so->backoff_ms * 2;
}

static void tcp_connect(gw_syslog_t *so, const struct sockaddr *addr);

/* A name may stand for several addresses ("localhost": ::1, then
 * 127.0.0.1, while the daemon listens on one of them): a connect that
 * fails tries the next one at once; after the last, backoff and a new
 * resolution. */
static bool connect_next_address(gw_syslog_t *so)
{
	if (so->next_addr >= so->n_addrs)
		return false;
	link_close(so);
	tcp_connect(so, (const struct sockaddr *)&so->addrs[so->next_addr++]);
	return true;
}

static void link_failed(gw_syslog_t *so, const char *what, int err)
{
	cg_log_limited(&so->log, CG_LOG_WARN, "audit: syslog %s: %s%s%s; retrying in %.1f s",
	               so->address, what, err ? ": " : "", err ? uv_strerror(err) : "",
	               (double)so->backoff_ms / 1000.0);
	link_close(so);
	so->state = LINK_OFF;
	schedule_retry(so);
}

static void shut_down(gw_syslog_t *so);

static void on_write(uv_write_t *req, int status)
{
	tcp_link_t *link = req->data;
	gw_syslog_t *so = link->so;
	pthread_mutex_lock(&so->lock);
	if (so->queue.head_in_flight) {
		gw_syslog_queue_pop(&so->queue);
		if (status == 0)
			so->sent++;
		else
			count_lost(so, 1); /* cut off with its link */
	}
	pthread_mutex_unlock(&so->lock);
	if (status < 0 && so->link == link)
		link_failed(so, "cannot send", status);
	else if (so->link == link)
		flush(so);
	if (so->stopped && !so->closed && (so->link == NULL || so->queue.count == 0))
		shut_down(so);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	static char sink[256]; /* a receiver has nothing to say: read to see EOF */
	(void)handle;
	(void)suggested;
	*buf = uv_buf_init(sink, sizeof(sink));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	tcp_link_t *link = stream->data;
	gw_syslog_t *so = link->so;
	if (nread >= 0 || so->link != link)
		return;
	if (so->stopped) {
		link_close(so);
		if (!so->closed)
			shut_down(so);
		return;
	}
	link_failed(so, nread == UV_EOF ? "closed by the receiver" : "connection lost",
	            nread == UV_EOF ? 0 : (int)nread);
}

static void on_connect(uv_connect_t *req, int status)
{
	tcp_link_t *link = req->data;
	gw_syslog_t *so = link->so;
	if (link->closing || so->link != link)
		return;
	uv_timer_stop(&so->timer);
	if (status < 0) {
		if (!connect_next_address(so))
			link_failed(so, "cannot connect", status);
		return;
	}
	so->state = LINK_UP;
	so->backoff_ms = BACKOFF_MIN_MS;
	uv_read_start((uv_stream_t *)&link->handle, on_alloc, on_read);
	cg_log(CG_LOG_INFO, "audit: syslog %s: connected", so->address);
	flush(so);
}

static void tcp_connect(gw_syslog_t *so, const struct sockaddr *addr)
{
	tcp_link_t *link = calloc(1, sizeof(*link));
	if (link == NULL) {
		link_failed(so, "out of memory", 0);
		return;
	}
	link->so = so;
	link->handle.data = link;
	link->connect.data = link;
	link->write.data = link;
	uv_tcp_init(so->loop, &link->handle);
	so->link = link;
	int rc = uv_tcp_connect(&link->connect, &link->handle, addr, on_connect);
	if (rc < 0) {
		link_failed(so, "cannot connect", rc);
		return;
	}
	uv_tcp_nodelay(&link->handle, 1);
	so->state = LINK_CONNECTING;
	uv_timer_start(&so->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
}

/* ---- datagrams ---- */

static void udp_open(gw_syslog_t *so, const struct sockaddr *addr, socklen_t len)
{
	int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, addr, len) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		link_failed(so, "cannot open a UDP socket", uv_translate_sys_error(err));
		return;
	}
	so->fd = fd;
	so->peer_known = true;
	so->state = LINK_UP;
	flush(so);
}

static void unix_open(gw_syslog_t *so)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&so->peer;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", so->unix_path);
	so->peer_len = sizeof(*sun);
	so->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (so->fd < 0) {
		cg_log(CG_LOG_ERROR, "audit: syslog %s: cannot open a socket: %s", so->address,
		       strerror(errno));
		return;
	}
	so->peer_known = true;
	so->state = LINK_UP;
}

/* One datagram; under the lock. */
static void send_datagram(gw_syslog_t *so, const gw_syslog_frame_t *f)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		ssize_t n = so->transport == POL_SYSLOG_UNIX
		                    ? sendto(so->fd, f->data, f->len, MSG_DONTWAIT | MSG_NOSIGNAL,
		                             (struct sockaddr *)&so->peer, so->peer_len)
		                    : send(so->fd, f->data, f->len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n >= 0) {
			so->sent++;
			return;
		}
		int err = errno;
		if (err == ECONNREFUSED && so->transport == POL_SYSLOG_UDP && attempt == 0) {
			count_lost(so, 1); /* an earlier datagram was refused: try this one again */
			continue;
		}
		count_lost(so, 1);
		cg_log_limited(&so->log, CG_LOG_WARN, "audit: syslog %s: message lost: %s",
		               so->address, strerror(err));
		return;
	}
}

/* ---- sending what waits ---- */

static void flush(gw_syslog_t *so)
{
	pthread_mutex_lock(&so->lock);
	if (so->transport == POL_SYSLOG_UNIX || so->transport == POL_SYSLOG_UDP) {
		while (so->peer_known && so->fd >= 0 && so->queue.head != NULL) {
			send_datagram(so, so->queue.head);
			gw_syslog_queue_pop(&so->queue);
		}
		pthread_mutex_unlock(&so->lock);
		return;
	}
	int failed = 0;
	while (so->state == LINK_UP && so->link != NULL && !so->queue.head_in_flight &&
	       so->queue.head != NULL) {
		gw_syslog_frame_t *f = so->queue.head;
		uv_buf_t buf = uv_buf_init(f->data, (unsigned)f->len);
		int n = uv_try_write((uv_stream_t *)&so->link->handle, &buf, 1);
		if (n == (int)f->len) {
			gw_syslog_queue_pop(&so->queue);
			so->sent++;
			continue;
		}
		if (n == UV_EAGAIN)
			n = 0;
		if (n < 0) {
			failed = n;
			break;
		}
		/* the kernel took part of it: the rest goes with uv_write */
		buf = uv_buf_init(f->data + n, (unsigned)(f->len - (size_t)n));
		int rc = uv_write(&so->link->write, (uv_stream_t *)&so->link->handle, &buf, 1,
		                  on_write);
		if (rc < 0) {
			failed = rc;
			break;
		}
		so->queue.head_in_flight = true;
	}
	pthread_mutex_unlock(&so->lock);
	if (failed < 0)
		link_failed(so, "cannot send", failed);
}

static void on_wake(uv_async_t *async)
{
	flush(async->data);
}

/* ---- addresses ---- */

static void got_address(gw_syslog_t *so, const struct sockaddr *addr, socklen_t len)
{
	if (so->transport == POL_SYSLOG_UDP)
		udp_open(so, addr, len);
	else
		tcp_connect(so, addr);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	resolving_t *r = req->data;
	gw_syslog_t *so = r->so;
	bool current = r->generation == so->generation && !so->stopped;
	free(r);
	if (current && status < 0) {
		link_failed(so, "cannot resolve the host", status);
	} else if (current && so->transport == POL_SYSLOG_TCP) {
		so->n_addrs = 0;
		for (const struct addrinfo *a = res; a != NULL && so->n_addrs < MAX_ADDRESSES;
		     a = a->ai_next) {
			if (a->ai_addrlen <= sizeof(so->addrs[0]))
				memcpy(&so->addrs[so->n_addrs++], a->ai_addr, a->ai_addrlen);
		}
		so->next_addr = 0;
		if (!connect_next_address(so))
			link_failed(so, "cannot resolve the host", UV_EAI_NONAME);
	} else if (current) {
		got_address(so, res->ai_addr, (socklen_t)res->ai_addrlen);
	}
	uv_freeaddrinfo(res);
}

static void link_start(gw_syslog_t *so)
{
	struct sockaddr_storage ss;
	so->n_addrs = so->next_addr = 0; /* a literal address is the only one */
	if (cg_hostport_to_sockaddr(&so->host, &ss)) {
		got_address(so, (struct sockaddr *)&ss,
		            ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
		                                     : sizeof(struct sockaddr_in));
		return;
	}
	resolving_t *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		link_failed(so, "out of memory", 0);
		return;
	}
	r->so = so;
	r->generation = so->generation;
	r->req.data = r;
	char port[8];
	snprintf(port, sizeof(port), "%u", (unsigned)so->host.port);
	struct addrinfo hints = {.ai_socktype = so->transport == POL_SYSLOG_UDP ? SOCK_DGRAM
	                                                                        : SOCK_STREAM};
	so->state = LINK_RESOLVING;
	int rc = uv_getaddrinfo(so->loop, &r->req, on_resolved, so->host.host, port, &hints);
	if (rc < 0) {
		free(r);
		link_failed(so, "cannot resolve the host", rc);
	}
}

static void on_timer(uv_timer_t *timer)
{
	gw_syslog_t *so = timer->data;
	if (so->stopped) {
		shut_down(so); /* the linger is over */
		return;
	}
	if (so->state == LINK_CONNECTING) {
		if (!connect_next_address(so))
			link_failed(so, "cannot connect", UV_ETIMEDOUT);
	} else if (so->state == LINK_WAITING)
		link_start(so);
}

/* ---- settings ---- */

static bool same_settings(const gw_syslog_t *so, const pol_syslog_cfg_t *cfg)
{
	pol_syslog_transport_t t = cfg != NULL ? cfg->transport : POL_SYSLOG_NONE;
	if (t != so->transport)
		return false;
	return t == POL_SYSLOG_NONE ||
	       (strcmp(cfg->address, so->address) == 0 && cfg->facility == so->facility);
}

static void teardown(gw_syslog_t *so)
{
	so->generation++;
	link_close(so);
	uv_timer_stop(&so->timer);
	if (so->fd >= 0)
		close(so->fd);
	so->fd = -1;
	so->peer_known = false;
	so->state = LINK_OFF;
}

void gw_syslog_configure(gw_syslog_t *so, const pol_syslog_cfg_t *cfg)
{
	if (so == NULL || so->stopped || same_settings(so, cfg))
		return;
	teardown(so);
	pthread_mutex_lock(&so->lock);
	pol_syslog_transport_t was = so->transport;
	free(so->address);
	free(so->unix_path);
	so->address = so->unix_path = NULL;
	so->transport = POL_SYSLOG_NONE;
	if (cfg != NULL && cfg->transport != POL_SYSLOG_NONE) {
		so->address = strdup(cfg->address);
		so->unix_path = cfg->unix_path != NULL ? strdup(cfg->unix_path) : NULL;
		if (so->address != NULL && (cfg->unix_path == NULL || so->unix_path != NULL)) {
			so->transport = cfg->transport;
			so->host = cfg->host;
			so->facility = cfg->facility;
		}
	}
	/* frames are formatted for their transport (TCP's have a length) */
	if (so->transport != was)
		count_lost(so, gw_syslog_queue_drop_waiting(&so->queue));
	pthread_mutex_unlock(&so->lock);
	so->backoff_ms = BACKOFF_MIN_MS;
	if (so->transport == POL_SYSLOG_NONE)
		return;
	if (so->transport == POL_SYSLOG_UNIX) {
		unix_open(so);
		flush(so);
	} else {
		link_start(so);
	}
}

void gw_syslog_tap(void *arg, const json_t *line_obj, const char *line, size_t len)
{
	gw_syslog_t *so = arg;
	bool on_loop = pthread_equal(pthread_self(), so->loop_thread);
	pthread_mutex_lock(&so->lock);
	if (so->transport == POL_SYSLOG_NONE) {
		pthread_mutex_unlock(&so->lock);
		return;
	}
	gw_syslog_frame_t *f = so->stopped
	                               ? NULL
	                               : gw_syslog_format(&so->origin, so->facility, line_obj, line,
	                                                  len, so->transport == POL_SYSLOG_TCP);
	if (f == NULL)
		count_lost(so, 1);
	else
		count_lost(so, gw_syslog_queue_push(&so->queue, f));
	if (!on_loop && !so->closed)
		uv_async_send(&so->wake); /* under the lock: stop cannot close it meanwhile */
	pthread_mutex_unlock(&so->lock);
	if (on_loop && f != NULL)
		flush(so);
}

/* The end: whatever still waits is lost; the handles close. */
static void shut_down(gw_syslog_t *so)
{
	if (so->closed)
		return;
	teardown(so);
	pthread_mutex_lock(&so->lock);
	so->closed = true;
	count_lost(so, gw_syslog_queue_drop_waiting(&so->queue));
	pthread_mutex_unlock(&so->lock);
	uv_close((uv_handle_t *)&so->wake, NULL);
	uv_close((uv_handle_t *)&so->timer, NULL);
}

void gw_syslog_stop(gw_syslog_t *so)
{
	if (so == NULL || so->stopped)
		return;
	pthread_mutex_lock(&so->lock);
	so->stopped = true;
	pthread_mutex_unlock(&so->lock);
	flush(so);
	/* a TCP receiver gets a moment for what is still queued (gateway.stop) */
	if (so->transport == POL_SYSLOG_TCP && so->state == LINK_UP && so->queue.count > 0) {
		uv_ref((uv_handle_t *)&so->timer);
		uv_timer_start(&so->timer, on_timer, LINGER_MS, 0);
		return;
	}
	shut_down(so);
}

void gw_syslog_destroy(gw_syslog_t *so)
{
	if (so == NULL)
		return;
	if (so->fd >= 0)
		close(so->fd);
	gw_syslog_queue_clear(&so->queue);
	pthread_mutex_destroy(&so->lock);
	free(so->address);
	free(so->unix_path);
	free(so);
}

gw_syslog_stats_t gw_syslog_stats(gw_syslog_t *so)
{
	gw_syslog_stats_t st = {0};
	if (so == NULL)
		return st;
	pthread_mutex_lock(&so->lock);
	st.enabled = so->transport != POL_SYSLOG_NONE;
	st.connected = so->state == LINK_UP;
	st.sent = so->sent;
	st.lost = so->lost;
	st.queued = so->queue.count;
	pthread_mutex_unlock(&so->lock);
	return st;
}

const char *gw_syslog_address(const gw_syslog_t *so)
{
	return so != NULL && so->transport != POL_SYSLOG_NONE ? so->address : NULL;
}
