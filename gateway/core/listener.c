/* Listening sockets (see listener.h). */
#include "core/listener.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gateway.h"
#include "core/session.h"

#define BACKLOG 1024

static void on_connection(uv_stream_t *server, int status)
{
	gw_listener_t *l = server->data;
	if (status < 0) {
		cg_log_limited(&l->gw->accept_log, CG_LOG_WARN, "listener %s: %s", l->addr,
		               uv_strerror(status));
		return;
	}
	gw_session_accept(l->gw, server, l->service);
}

static void on_closed(uv_handle_t *handle)
{
	gw_listener_t *l = handle->data;
	free(l->service);
	free(l->next_service);
	free(l);
}

static void listener_close(gw_listener_t *l)
{
	uv_close((uv_handle_t *)&l->tcp, on_closed);
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
	uv_tcp_init(gw->loop, &l->tcp);
	l->tcp.data = l;
	l->next = gw->listeners;
	gw->listeners = l;
	int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, BACKLOG, on_connection);
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
