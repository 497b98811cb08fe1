/* `certgate connect` inside: the connector (connect.c: options, the local
 * listeners, the catalog's refreshes with --all, the login certificate's
 * renewal, signals) and its tunnels (connect_tunnel.c: one accepted local
 * connection relayed to the gateway over mutual TLS). */
#ifndef GW_CONNECT_H
#define GW_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cmd/client_tls.h"

#define CONNECT_SERVICE_MAX 253 /* a service name, as the policy allows it */

typedef struct connector connector_t;
typedef struct tunnel tunnel_t;

/* A local listener: its connections are tunnelled as service. */
typedef struct conn_listener {
	uv_tcp_t tcp;
	connector_t *conn;
	struct conn_listener *next;
	char service[CONNECT_SERVICE_MAX + 1];
	char address[64];     /* ip:port, for messages */
	uint16_t client_port; /* with --all: the catalog's client_port it serves */
} conn_listener_t;

struct connector {
	uv_loop_t *loop;
	uv_signal_t sig_term, sig_int;
	uv_timer_t watch; /* certificate files, expiry warnings, --all refreshes */
	client_tls_t tls; /* the files, the gateway, the context */
	conn_listener_t *listeners;
	tunnel_t *tunnels; /* open tunnels, for closing on a signal */
	size_t n_conns;
	bool stopping;
	uint64_t next_id;
	/* --all: the catalog, re-read on the thread pool */
	bool all;
	uint64_t refresh_ms;
	uint64_t last_refresh; /* uv_now() of the last refresh started */
	bool refreshing;       /* a read of the catalog in flight */
	bool refresh_failed;   /* the last read failed (said once) */
	struct conn_note *notes;
	/* the login certificate's expiry, warned about once each */
	int64_t warned_for; /* the notAfter the warnings below are about */
	bool warned_soon, warned_expired;
};

/* A connection accepted on l: its tunnel to the gateway. */
void connect_tunnel_accept(conn_listener_t *l);
/* Ends every tunnel gracefully (the connector stops). */
void connect_tunnels_close(connector_t *c);
/* A tunnel was freed (connect.c: the last one out of a stop closes the
 * connector's own handles). */
void connect_tunnel_gone(connector_t *c);

#endif
