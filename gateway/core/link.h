/* A link joins two TCP ends (client, upstream), each plain or TLS, and
 * relays bytes between them once its owner has set it up.
 *
 * Setup (owned by the owner: TLS handshakes, policy, upstream connect) gets
 * raw input through ops->setup_input. Relaying (gw_link_relay) is handled
 * here: input from one end is decrypted if that end is TLS, encrypted if the
 * other end is TLS, and written there. Backpressure: while an end has more
 * than GW_LINK_HIGH_WATER bytes queued for writing, the other end is not
 * read; below GW_LINK_LOW_WATER it is read again. What an end's own TLS
 * answers it (KeyUpdate, alerts: gw_end_flush_control) counts against that
 * end itself: while more than GW_LINK_HIGH_WATER of it waits, the end is
 * not read, so a peer that never reads cannot make the gateway queue
 * without end. Only application bytes are activity (last_active), not TLS
 * control traffic. Half-close: when one end
 * finishes sending (FIN or close_notify), the other is shut down for writing
 * (close_notify first if TLS) and the opposite direction keeps flowing; the
 * relay is done when both directions are finished and flushed.
 *
 * Ownership: the link is embedded in its owner. Handles are freed only in
 * libuv close callbacks; when the last one has closed, ops->freed runs and
 * the owner may free itself. */
#ifndef GW_LINK_H
#define GW_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tls/tls_engine.h"

#define GW_LINK_READ_SIZE  (64 * 1024)
#define GW_LINK_HIGH_WATER (64 * 1024)
#define GW_LINK_LOW_WATER  (16 * 1024)
#define GW_LINK_LINGER_MS  1000 /* graceful close: longest wait for a flush */

typedef enum { GW_CLIENT = 0, GW_UPSTREAM = 1 } gw_end_id_t;

typedef struct gw_link gw_link_t;

typedef struct gw_end {
	uv_tcp_t tcp;
	uv_shutdown_t shutdown_req;
	gw_link_t *link;
	gw_end_id_t id;
	gw_tls_t tls;
	bool tls_on;           /* tls initialised: this end speaks TLS */
	bool open;             /* tcp initialised and not yet closed */
	bool connected;        /* accepted or connected: writable */
	bool want_read;        /* the owner wants it read (gw_end_read_start/stop) */
	bool reading;          /* it is read: wanted and no backpressure */
	bool paused;           /* backpressure: the other end's queue is full */
	bool paused_self;      /* backpressure: its own control output is not taken */
	bool eof;              /* the peer finished sending */
	bool shut;             /* a shutdown (FIN) was requested */
	bool shut_done;        /* ... and completed (or failed) */
	size_t queued;         /* bytes in uv_write requests not yet completed */
	size_t control_queued; /* ... of which its TLS answers to its own input */
	bool control_held;     /* more such answers wait in its engine, behind the queue */
	uint64_t bytes_in;     /* plaintext received from this end while relaying */
} gw_end_t;

typedef struct gw_link_ops {
	/* Before relaying: bytes read from end (nread > 0; valid only during
	 * the call) or its end of stream / error (nread < 0, a UV_E* code). */
	void (*setup_input)(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread);
	/* Relaying finished (both directions done) or failed. reason is one
	 * of "client closed", "upstream closed", or "tls abuse: ..." when the
	 * client's TLS was cut off (tls.abuse); detail (may be NULL) says more
	 * on a failure. Both are valid only during the call. The owner
	 * normally audits and calls gw_link_close. */
	void (*relay_done)(gw_link_t *link, const char *reason, const char *detail);
	/* Optional: plaintext read from `from` while relaying. Return true when
	 * the owner forwarded (or dropped) it itself, false to let the link
	 * forward it unchanged. May end the relay. */
	bool (*filter)(gw_link_t *link, gw_end_t *from, const char *data, size_t len);
	/* The link timer fired (see gw_link_arm); not called once closing. */
	void (*timer)(gw_link_t *link);
	/* Optional: an end closed by gw_end_close finished closing. */
	void (*end_closed)(gw_link_t *link, gw_end_t *end);
	/* Every handle is closed: the owner may free the memory. */
	void (*freed)(gw_link_t *link);
} gw_link_ops_t;

struct gw_link {
	gw_end_t end[2];
	uv_timer_t timer;
	const gw_link_ops_t *ops;
	unsigned handles; /* open libuv handles */
	bool relaying;
	bool closing;
	bool handles_closing;
	int first_eof;        /* end that finished first, -1 while none */
	uint64_t last_active; /* uv_now() of the last application bytes (or setup input) */
};

/* Initialises the link and its timer on loop. */
void gw_link_init(gw_link_t *link, uv_loop_t *loop, const gw_link_ops_t *ops);

/* Initialises end's TCP handle (fresh state). 0 or a UV_E* code. */
int gw_end_open(gw_link_t *link, gw_end_id_t id) __attribute__((warn_unused_result));
/* Closes just this end (e.g. a failed upstream attempt); ops->end_closed
 * follows. */
void gw_end_close(gw_end_t *end);

/* The owner's wish to read end or not; backpressure may hold a wanted end
 * back for a while. */
int gw_end_read_start(gw_end_t *end) __attribute__((warn_unused_result));
void gw_end_read_stop(gw_end_t *end);

/* Writes bytes to end's socket as they are (no TLS): tries a direct write,
 * queues what the kernel did not take. 0 or a UV_E* code. */
int gw_end_send(gw_end_t *end, const void *data, size_t len);
/* Encrypts data with end's TLS and sends it. 0 or a negative code. */
int gw_end_send_tls(gw_end_t *end, const void *data, size_t len);
/* Plaintext to end: encrypted when end speaks TLS. */
int gw_end_write(gw_end_t *end, const void *data, size_t len);
/* Sends whatever ciphertext end's TLS engine has produced. */
int gw_end_flush_tls(gw_end_t *end);
/* The same for what the engine produced while reading end's input (its
 * answers to the peer's KeyUpdates, alerts): counted as end's control
 * output, and end is not read while more than GW_LINK_HIGH_WATER of it
 * waits to be written (again below GW_LINK_LOW_WATER). */
int gw_end_flush_control(gw_end_t *end);

/* Starts relaying: reads both ends and forwards; plaintext already buffered
 * in a TLS engine is forwarded at once. */
void gw_link_relay(gw_link_t *link);

/* (Re)arms the link timer to fire in ms. */
void gw_link_arm(gw_link_t *link, uint64_t ms);

/* Ends the link. graceful: stop reading, send close_notify on TLS ends,
 * flush and FIN both ends, then close (at most GW_LINK_LINGER_MS later).
 * Otherwise close at once. Idempotent; a later non-graceful call hurries a
 * graceful one. */
void gw_link_close(gw_link_t *link, bool graceful);

static inline gw_end_t *gw_end_other(gw_end_t *end)
{
	return &end->link->end[end->id == GW_CLIENT ? GW_UPSTREAM : GW_CLIENT];
}

#endif
