/* Worker threads and the messages the gateway's loop sends them (see
 * worker.h). A message is a function to run on the worker's thread; the
 * sender may wait for it (a condition variable per call). */
#include "core/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/gateway.h"

struct gw_worker_msg {
	gw_worker_msg_t *next;
	gw_worker_fn fn;
	void *arg;
	/* set when the sender waits */
	uv_mutex_t *done_lock;
	uv_cond_t *done_cond;
	bool *done;
};

static void run_queue(uv_async_t *async)
{
	gw_worker_t *w = async->data;
	for (;;) {
		uv_mutex_lock(&w->lock);
		gw_worker_msg_t *m = w->queue;
		if (m != NULL) {
			w->queue = m->next;
			if (w->queue == NULL)
				w->queue_tail = NULL;
		}
		uv_mutex_unlock(&w->lock);
		if (m == NULL)
			return;
		m->fn(w, m->arg);
		if (m->done != NULL) {
			uv_mutex_lock(m->done_lock);
			*m->done = true;
			uv_cond_signal(m->done_cond);
			uv_mutex_unlock(m->done_lock);
		}
		free(m);
	}
}

static void thread_main(void *arg)
{
	gw_worker_t *w = arg;
	uv_run(w->loop, UV_RUN_DEFAULT);
}

/* Queues m for w and wakes it. */
static void deliver(gw_worker_t *w, gw_worker_msg_t *m)
{
	uv_mutex_lock(&w->lock);
	if (w->queue_tail != NULL)
		w->queue_tail->next = m;
	else
		w->queue = m;
	w->queue_tail = m;
	uv_mutex_unlock(&w->lock);
	uv_async_send(&w->wake);
}

void gw_workers_run(gw_gateway_t *gw, gw_worker_fn fn, void *arg)
{
	for (unsigned i = 0; i < gw->n_workers; i++) {
		gw_worker_t *w = &gw->workers[i];
		if (!w->threaded) {
			fn(w, arg);
			continue;
		}
		gw_worker_msg_t *m = calloc(1, sizeof(*m));
		if (m == NULL)
			abort(); /* a control message lost would leave a worker behind */
		uv_mutex_t done_lock;
		uv_cond_t done_cond;
		bool done = false;
		uv_mutex_init(&done_lock);
		uv_cond_init(&done_cond);
		*m = (gw_worker_msg_t){.fn = fn,
		                       .arg = arg,
		                       .done_lock = &done_lock,
		                       .done_cond = &done_cond,
		                       .done = &done};
		deliver(w, m);
		uv_mutex_lock(&done_lock);
		while (!done)
			uv_cond_wait(&done_cond, &done_lock);
		uv_mutex_unlock(&done_lock);
		uv_cond_destroy(&done_cond);
		uv_mutex_destroy(&done_lock);
	}
}

int gw_worker_post(gw_worker_t *w, gw_worker_fn fn, void *arg)
{
	if (!w->threaded) {
		fn(w, arg);
		return 0;
	}
	gw_worker_msg_t *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->fn = fn;
	m->arg = arg;
	deliver(w, m);
	return 0;
}

void gw_worker_connection_closed(gw_worker_t *w)
{
	gw_gateway_t *gw = w->gw;
	atomic_fetch_sub(&w->connections, 1);
	size_t left = atomic_fetch_sub(&gw->n_connections, 1) - 1;
	if (left > 0 || !atomic_load(&gw->draining))
		return;
	if (!w->threaded) {
		gw_drain_finish(gw);
		return;
	}
	/* the control loop finishes the drain; once it has, nobody is left */
	GW_LOCKED(gw, {
		if (!gw->drained)
			uv_async_send(&gw->emptied);
	});
}

/* --- the threads ------------------------------------------------------------ */

/* libuv opens a descriptor of its own (a reserve for EMFILE) with a
 * loop's first stream: at start, so the gateway's descriptor count is
 * settled before the first client, not with it. */
static void open_first_stream(gw_worker_t *w)
{
	uv_tcp_init(w->loop, &w->first_stream);
	uv_close((uv_handle_t *)&w->first_stream, NULL);
}

static void on_emptied(uv_async_t *async)
{
	gw_gateway_t *gw = async->data;
	if (atomic_load(&gw->n_connections) == 0)
		gw_drain_finish(gw);
}

int gw_workers_start(gw_gateway_t *gw, unsigned n, gw_runtime_t *rt)
{
	gw->workers = calloc(n, sizeof(*gw->workers));
	if (gw->workers == NULL)
		return -ENOMEM;
	int rc = uv_async_init(gw->loop, &gw->emptied, on_emptied); /* gw_drain_finish closes it */
	if (rc < 0)
		return rc;
	gw->emptied.data = gw;
	rc = gw_control_start(gw); /* gw_drain_finish stops it */
	if (rc < 0)
		return rc;
	gw->n_workers = n;
	for (unsigned i = 0; i < n; i++) {
		gw_worker_t *w = &gw->workers[i];
		w->gw = gw;
		w->index = i;
		w->rt = gw_runtime_ref(rt);
		atomic_init(&w->connections, 0);
		if (n == 1) {
			w->loop = gw->loop; /* one loop for everything, as before */
			open_first_stream(w);
			continue;
		}
		w->threaded = true;
		w->loop = malloc(sizeof(*w->loop));
		rc = w->loop != NULL ? uv_loop_init(w->loop) : UV_ENOMEM;
		if (rc == 0)
			rc = uv_mutex_init(&w->lock);
		if (rc == 0)
			open_first_stream(w); /* before the thread: the loop is still ours */
		if (rc == 0)
			rc = uv_async_init(w->loop, &w->wake, run_queue);
		if (rc < 0)
			return rc; /* the process exits: nothing to unwind */
		w->wake.data = w;
		rc = uv_thread_create(&w->thread, thread_main, w);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void close_wake(gw_worker_t *w, void *arg)
{
	(void)arg;
	uv_close((uv_handle_t *)&w->wake, NULL); /* the loop ends with its last handle */
}

void gw_workers_stop(gw_gateway_t *gw)
{
	for (unsigned i = 0; i < gw->n_workers; i++) {
		gw_worker_t *w = &gw->workers[i];
		if (w->threaded) {
			gw_worker_msg_t *m = calloc(1, sizeof(*m));
			if (m == NULL)
				abort(); /* the thread would never end */
			m->fn = close_wake;
			deliver(w, m);
			uv_thread_join(&w->thread);
			uv_loop_close(w->loop);
			free(w->loop);
			uv_mutex_destroy(&w->lock);
		}
		gw_runtime_unref(w->rt);
	}
	free(gw->workers);
	gw->workers = NULL;
	gw->n_workers = 0;
}
