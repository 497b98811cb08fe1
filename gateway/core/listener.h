/* Listening sockets: the shared mTLS listeners (gateway.listen, service by
 * SNI) and per-service ones (services[].listen), on the control loop. Each
 * accepts what is waiting and hands it to a worker (gw_workers_dispatch).
 * A reload keeps the sockets whose address stays, binds the new ones before
 * the swap (so a reload that cannot bind fails whole) and closes the ones no
 * longer named after it. */
#ifndef GW_LISTENER_H
#define GW_LISTENER_H

#include <stdbool.h>

#include <uv.h>

#include "cg_errors.h"
#include "pol_config.h"

typedef struct gw_gateway gw_gateway_t;

struct gw_listener {
	int fd;
	uv_poll_t poll;  /* readable: connections are waiting */
	uv_timer_t rest; /* out of descriptors: wait before accepting again */
	unsigned open_handles;
	gw_gateway_t *gw;
	struct gw_listener *next;
	char addr[CG_HOST_MAX + 8];      /* "host:port" as configured */
	char canonical[CG_HOST_MAX + 8]; /* the bound address, for matching on reload */
	char *service;                   /* own service name, NULL = shared (SNI) */
	char *next_service;              /* what the reload in progress names */
	bool fresh;                      /* bound by the reload in progress */
	bool keep;                       /* named by the reload in progress */
};

/* Binds what snap names and is not bound yet; marks the others to keep or
 * drop. On error adds "cannot listen on ADDR: reason" to errs. */
void gw_listeners_prepare(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs);
/* After a successful prepare: close the listeners no longer named. */
void gw_listeners_commit(gw_gateway_t *gw);
/* After a failed prepare: close the ones it bound, keep the rest. */
void gw_listeners_rollback(gw_gateway_t *gw);
/* Closes all (drain). */
void gw_listeners_close_all(gw_gateway_t *gw);

#endif
