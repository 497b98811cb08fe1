/* audit.syslog: every audit line, once written to the file, also goes to a
 * syslog receiver as an RFC 5424 message (core/syslog_msg.h) over a unix
 * datagram socket, UDP, or TCP with octet-counted framing (RFC 6587).
 *
 * It never blocks the loop and never holds up the file log: a message that
 * cannot be sent is counted as lost (gw_syslog_lost), TCP reconnects by
 * itself with backoff and keeps a bounded queue meanwhile (the oldest
 * message goes first when it is full), and readiness does not depend on
 * it. The sender is the audit writer's tap (cg_audit_set_tap), so the JSON
 * line is built once, and messages leave in the file's order. */
#ifndef GW_SYSLOG_OUT_H
#define GW_SYSLOG_OUT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "pol_types.h"

/* Messages kept for TCP while the receiver is away (or a name resolves). */
#define GW_SYSLOG_QUEUE_BYTES (8u << 20)

typedef struct gw_syslog gw_syslog_t;

/* On the loop's thread. NULL when out of memory. Off until configured. */
gw_syslog_t *gw_syslog_create(uv_loop_t *loop);

/* Sends to cfg from now on (copied); a cfg with transport NONE, or NULL,
 * turns it off. Unchanged settings keep the connection. Loop thread.
 * so may be NULL (nothing happens). */
void gw_syslog_configure(gw_syslog_t *so, const pol_syslog_cfg_t *cfg);

/* The audit writer's tap (cg_audit_tap_fn): any thread. */
void gw_syslog_tap(void *so, const json_t *line_obj, const char *line, size_t len);

/* The gateway drains: what can be sent at once is sent (TCP gets up to a
 * second for its queue), the rest counted lost, the handles closed (the
 * loop can end). Loop thread. Accepts NULL. */
void gw_syslog_stop(gw_syslog_t *so);

/* After the loop ended. Accepts NULL. */
void gw_syslog_destroy(gw_syslog_t *so);

typedef struct gw_syslog_stats {
	bool enabled;
	bool connected; /* TCP: connected; datagrams: the address is known */
	uint64_t sent;  /* handed to the kernel */
	uint64_t lost;  /* known not delivered: refused, dropped, cut off */
	uint64_t queued;
} gw_syslog_stats_t;

/* Accepts NULL (all zero). */
gw_syslog_stats_t gw_syslog_stats(gw_syslog_t *so);
/* The configured address ("tcp:HOST:PORT"), or NULL when off. */
const char *gw_syslog_address(const gw_syslog_t *so);

#endif
