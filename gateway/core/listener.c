/* Listening sockets (see listener.h). The acceptor is ours rather than
 * uv_listen's: a connection goes to another loop as a bare descriptor, and
 * running out of descriptors is said and waited out instead of libuv's
 * silent accept-and-close of whatever waits in the backlog. */
#include "core/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/gateway.h"
#include "core/session.h"
#include "core/worker.h"

#define BACKLOG 1024
/* connections accepted per readiness event: the control loop also serves
 * the admin API and signals */
#define ACCEPT_BATCH 64
/* out of descriptors: how long to leave the backlog alone */
#define REST_MS 100

static void on_readable(uv_poll_t *poll, int status, int events);

typedef struct handoff {
	int fd;
	char service[]; /* "" for a shared (SNI) listener */
} handoff_t;

static void accept_handoff(gw_worker_t *w, void *arg)
{
	handoff_t *h = arg;
	gw_session_accept(w, h->fd, h->service[0] != '\0' ? h->service : NULL);
	free(h);
}

/* The fewest open connections wins; ties go round, so a burst of new
 * connections spreads even before any is counted as open. */
static gw_worker_t *least_loaded(gw_gateway_t *gw)
{
	unsigned n = gw->n_workers, start = gw->next_worker++ % n;
	gw_worker_t *best = &gw->workers[start];
	size_t best_load = atomic_load(&best->connections);
	for (unsigned i = 1; i < n && best_load > 0; i++) {
		gw_worker_t *w = &gw->workers[(start + i) % n];
		size_t load = atomic_load(&w->connections);
		if (load < best_load) {
			best = w;
			best_load = load;
		}
	}
	return best;
}

/* A connection accepted here goes to the worker with the fewest open
 * connections, as a session of fixed_service (NULL: chosen by SNI). */
static void dispatch(gw_gateway_t *gw, int fd, const char *fixed_service)
{
	gw_worker_t *w = least_loaded(gw);
	atomic_fetch_add(&w->connections, 1);
	atomic_fetch_add(&gw->n_connections, 1);
	if (!w->threaded) {
		gw_session_accept(w, fd, fixed_service);
		return;
	}
	size_t slen = fixed_service != NULL ? strlen(fixed_service) : 0;
	handoff_t *h = malloc(sizeof(*h) + slen + 1);
	if (h != NULL) {
		h->fd = fd;
		memcpy(h->service, fixed_service != NULL ? fixed_service : "", slen + 1);
		if (gw_worker_post(w, accept_handoff, h) == 0)
			return;
		free(h);
	}
	close(fd);
	cg_log_limited(&gw->accept_log, CG_LOG_ERROR, "accept: out of memory");
	gw_worker_connection_closed(w);
}

static void on_rested(uv_timer_t *timer)
{
	gw_listener_t *l = timer->data;
	uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

static void on_readable(uv_poll_t *poll, int status, int events)
{
	(void)events;
	gw_listener_t *l = poll->data;
	gw_gateway_t *gw = l->gw;
	if (status < 0) {
		cg_log_limited(&gw->accept_log, CG_LOG_WARN, "listener %s: %s", l->addr,
		               uv_strerror(status));
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			dispatch(gw, fd, l->service);
			continue;
		}
		switch (errno) {
		case EAGAIN:
#if EAGAIN != EWOULDBLOCK
		case EWOULDBLOCK:
#endif
			return;
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			continue;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			/* clients wait in the backlog (they are not dropped) until
			 * connections close */
			cg_log_limited(&gw->accept_log, CG_LOG_ERROR,
			               "listener %s: %s (%s): new connections wait in the backlog "
			               "until some close",
			               l->addr,
			               errno == EMFILE || errno == ENFILE
			                       ? "out of file descriptors (raise LimitNOFILE?)"
			                       : "out of memory",
			               strerror(errno));
			uv_poll_stop(&l->poll);
			uv_timer_start(&l->rest, on_rested, REST_MS, 0);
			return;
		default:
			cg_log_limited(&gw->accept_log, CG_LOG_WARN, "listener %s: accept: %s",
			               l->addr, strerror(errno));
			return;
		}
	}
}

static void on_closed(uv_handle_t *handle)
{
	gw_listener_t *l = handle->data;
	if (--l->open_handles > 0)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l->service);
	free(l->next_service);
	free(l);
}

static void listener_close(gw_listener_t *l)
{
	if (l->open_handles == 2) /* the poll exists once the socket did */
		uv_close((uv_handle_t *)&l->poll, on_closed);
	uv_close((uv_handle_t *)&l->rest, on_closed);
}

/* A listening socket on sa: 0 or a negative errno. */
static int listen_on(const struct sockaddr *sa, int *out)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                          : sizeof(struct sockaddr_in);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, sa, len) < 0 || listen(fd, BACKLOG) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* Listeners are matched by the address they bind, in canonical form, so
 * "[::]:8443" and "[0::0]:8443" are the same socket across a reload. */
static gw_listener_t *find(gw_gateway_t *gw, const char *canonical)
{
	for (gw_listener_t *l = gw->listeners; l != NULL; l = l->next)
		if (strcmp(l->canonical, canonical) == 0)
			return l;
	return NULL;
}

static void want(gw_gateway_t *gw, const char *addr, const cg_hostport_t *hp, const char *service,
                 cg_errors_t *errs)
{
	struct sockaddr_storage ss;
	char canonical[CG_HOST_MAX + 8];
	if (!cg_hostport_to_sockaddr(hp, &ss)) {
		cg_errors_add(errs, "cannot listen on %s: not a numeric address", addr);
		return;
	}
	cg_sockaddr_format((struct sockaddr *)&ss, canonical, sizeof(canonical));
	gw_listener_t *l = find(gw, canonical);
	if (l != NULL) {
		/* the service a kept socket serves may change with the reload:
		 * applied at commit, so a failed reload changes nothing */
		l->keep = true;
		free(l->next_service);
		l->next_service = service != NULL ? strdup(service) : NULL;
		return;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		cg_errors_add(errs, "cannot listen on %s: out of memory", addr);
		return;
	}
	l->gw = gw;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	snprintf(l->canonical, sizeof(l->canonical), "%s", canonical);
	l->service = service != NULL ? strdup(service) : NULL;
	l->fresh = l->keep = true;
	l->fd = -1;
	l->next = gw->listeners;
	gw->listeners = l;
	uv_timer_init(gw->loop, &l->rest);
	l->rest.data = l;
	l->open_handles = 1;
	int rc = listen_on((struct sockaddr *)&ss, &l->fd);
	if (rc == 0)
		rc = uv_poll_init_socket(gw->loop, &l->poll, l->fd);
	if (rc == 0) {
		l->open_handles = 2;
		l->poll.data = l;
		rc = uv_poll_start(&l->poll, UV_READABLE, on_readable);
	}
	if (rc < 0)
		cg_errors_add(errs, "cannot listen on %s: %s", addr, uv_strerror(rc));
}

void gw_listeners_prepare(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	for (gw_listener_t *l = gw->listeners; l != NULL; l = l->next)
		l->keep = l->fresh = false;
	for (size_t i = 0; i < snap->gateway.n_listen; i++)
		want(gw, snap->gateway.listen[i], &snap->gateway.listen_addr[i], NULL, errs);
	for (size_t i = 0; i < snap->n_services; i++)
		if (snap->services[i].listen != NULL)
			want(gw, snap->services[i].listen, &snap->services[i].listen_addr,
			     snap->services[i].name, errs);
}

static void close_where(gw_gateway_t *gw, bool fresh_ones)
{
	gw_listener_t **at = &gw->listeners;
	while (*at != NULL) {
		gw_listener_t *l = *at;
		bool close = fresh_ones ? l->fresh : !l->keep;
		if (close) {
			*at = l->next;
			listener_close(l);
			continue;
		}
		if (!fresh_ones && !l->fresh) {
			free(l->service);
			l->service = l->next_service;
		} else {
			free(l->next_service);
		}
		l->next_service = NULL;
		l->fresh = false;
		at = &l->next;
	}
}

void gw_listeners_commit(gw_gateway_t *gw)
{
	close_where(gw, false);
}

void gw_listeners_rollback(gw_gateway_t *gw)
{
	close_where(gw, true);
}

void gw_listeners_close_all(gw_gateway_t *gw)
{
	while (gw->listeners != NULL) {
		gw_listener_t *l = gw->listeners;
		gw->listeners = l->next;
		listener_close(l);
	}
}
