/* Workers: the event loops that run sessions (gateway.workers).
 *
 * With one worker there is one loop, the gateway's own, as certgate always
 * had: listeners, sessions, the admin API and signals together. With N > 1,
 * N threads each run a loop of their own with their own sessions; the
 * gateway's loop (the main thread) keeps the listeners, signals, the admin
 * API, the issuer, reloads and the drain. It accepts every connection and
 * hands it to the worker with the fewest open connections (an acceptor, not
 * SO_REUSEPORT: see docs/architecture.md, "Workers").
 *
 * What a worker owns is touched only on its thread. The control side
 * reaches it with gw_workers_run (run a function on every worker's thread,
 * one worker after the other, and wait: reloads, re-authorization, the
 * drain, listings, kills) and gw_worker_post (one worker, no waiting: a
 * new connection); a worker reaches the control loop with gw_control_post
 * (gateway.h). What workers share is immutable (a generation: snapshot,
 * SSL_CTX), atomic (counters) or behind a lock (the gateway's maps, the
 * audit writer, the run-time state, the metrics). */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct gw_gateway gw_gateway_t;
typedef struct gw_session gw_session_t;
typedef struct gw_runtime gw_runtime_t;
typedef struct gw_worker gw_worker_t;

typedef void (*gw_worker_fn)(gw_worker_t *w, void *arg);

typedef struct gw_worker_msg gw_worker_msg_t;

struct gw_worker {
	gw_gateway_t *gw;
	unsigned index;
	uv_loop_t *loop; /* the gateway's loop for a single worker */
	bool threaded;   /* runs a thread and a loop of its own */
	uv_thread_t thread;
	uv_async_t wake;       /* messages are waiting (threaded only) */
	uv_mutex_t lock;       /* the queue */
	uv_tcp_t first_stream; /* see gw_workers_start */
	gw_worker_msg_t *queue, *queue_tail;
	/* owned by the worker's thread */
	gw_runtime_t *rt;       /* the generation in force here (ref) */
	gw_session_t *sessions; /* every open connection, newest first */
	/* read by the acceptor to balance */
	atomic_size_t connections;
};

/* Starts n workers (n >= 1), each with a reference to rt. 0 or a negative
 * errno. */
int gw_workers_start(gw_gateway_t *gw, unsigned n, gw_runtime_t *rt)
        __attribute__((warn_unused_result));
/* After the control loop ended: each worker's loop runs dry, its thread is
 * joined, its reference to the generation dropped. */
void gw_workers_stop(gw_gateway_t *gw);

/* Runs fn(w, arg) on every worker's thread, one worker after the other,
 * and returns when all have run. Control loop only. */
void gw_workers_run(gw_gateway_t *gw, gw_worker_fn fn, void *arg);
/* Runs fn(w, arg) on w's thread without waiting (at once when w runs on
 * the caller's loop). 0, or -ENOMEM and fn will not run. */
int gw_worker_post(gw_worker_t *w, gw_worker_fn fn, void *arg) __attribute__((warn_unused_result));

/* A connection of w is closed: the balancing count and the gateway's. */
void gw_worker_connection_closed(gw_worker_t *w);

#endif
