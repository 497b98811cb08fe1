/* Relay between two ends, with backpressure and half-close (see link.h).
 *
 * Reads land in one per-thread buffer (consumed before the callback
 * returns, so no per-read allocation); writes go straight to the kernel with
 * uv_try_write and only what it does not take is copied into a queued
 * request. Every callback re-checks link->closing: forwarding can fail and
 * close the link in the middle of a loop. */
#include "core/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static _Thread_local char read_buf[GW_LINK_READ_SIZE];  /* socket reads */
static _Thread_local char plain_buf[GW_LINK_READ_SIZE]; /* decrypted plaintext */

/* A write the kernel did not take at once: its bytes follow the header, or
 * (TLS output) sit in a buffer taken over from the engine. */
typedef struct write_req {
	uv_write_t req;
	gw_end_t *end;
	size_t len;
	size_t control; /* bytes of it that count as end's control output */
	uint8_t *owned;
	char data[];
} write_req_t;

static void relay_failed(gw_link_t *link, gw_end_t *end, const char *detail);
static void force_close(gw_link_t *link);

static void on_handle_closed(uv_handle_t *handle)
{
	gw_link_t *link = handle->data;
	if (handle != (uv_handle_t *)&link->timer) {
		gw_end_t *end = container_of(handle, gw_end_t, tcp);
		gw_tls_finish(&end->tls);
		end->tls_on = false;
		if (link->ops->end_closed != NULL && !link->handles_closing)
			link->ops->end_closed(link, end);
	}
	if (--link->handles == 0)
		link->ops->freed(link);
}

static void on_timer(uv_timer_t *timer)
{
	gw_link_t *link = timer->data;
	if (link->closing)
		force_close(link); /* the graceful close's linger ran out */
	else
		link->ops->timer(link);
}

void gw_link_init(gw_link_t *link, uv_loop_t *loop, const gw_link_ops_t *ops)
{
	memset(link, 0, sizeof(*link));
	link->ops = ops;
	link->first_eof = -1;
	for (int i = 0; i < 2; i++) {
		link->end[i].link = link;
		link->end[i].id = (gw_end_id_t)i;
	}
	uv_timer_init(loop, &link->timer); /* cannot fail */
	link->timer.data = link;
	link->handles = 1;
	link->last_active = uv_now(loop);
}

int gw_end_open(gw_link_t *link, gw_end_id_t id)
{
	gw_end_t *end = &link->end[id];
	memset(end, 0, sizeof(*end));
	end->link = link;
	end->id = id;
	int rc = uv_tcp_init(link->timer.loop, &end->tcp);
	if (rc < 0)
		return rc;
	end->tcp.data = link;
	end->open = true;
	link->handles++;
	return 0;
}

void gw_end_close(gw_end_t *end)
{
	if (!end->open || uv_is_closing((uv_handle_t *)&end->tcp))
		return;
	end->want_read = end->reading = false;
	uv_close((uv_handle_t *)&end->tcp, on_handle_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	buf->base = read_buf;
	buf->len = sizeof(read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Reads end when its owner wants it and no backpressure holds it back. */
static int sync_reading(gw_end_t *end)
{
	bool want = end->open && end->want_read && !end->paused && !end->paused_self;
	if (want && !end->reading) {
		int rc = uv_read_start((uv_stream_t *)&end->tcp, on_alloc, on_read);
		if (rc < 0)
			return rc;
		end->reading = true;
	} else if (!want && end->reading) {
		uv_read_stop((uv_stream_t *)&end->tcp);
		end->reading = false;
	}
	return 0;
}

int gw_end_read_start(gw_end_t *end)
{
	if (!end->open)
		return 0;
	end->want_read = true;
	return sync_reading(end);
}

void gw_end_read_stop(gw_end_t *end)
{
	end->want_read = false;
	(void)sync_reading(end);
}

static int flush_tls(gw_end_t *end, bool control);

/* end's control output not yet written: in write requests, or held in its
 * engine behind them. */
static size_t control_waiting(gw_end_t *end)
{
	return end->control_queued + (end->control_held ? gw_tls_pending_out(&end->tls) : 0);
}

static void on_write(uv_write_t *req, int status)
{
	write_req_t *w = container_of(req, write_req_t, req);
	gw_end_t *end = w->end;
	gw_link_t *link = end->link;
	end->queued -= w->len;
	end->control_queued -= w->control;
	free(w->owned);
	free(w);
	if (link->closing)
		return;
	if (status < 0) {
		relay_failed(link, end, uv_strerror(status));
		return;
	}
	int rc = end->control_held && end->queued == 0 ? flush_tls(end, true) : 0;
	if (rc < 0) {
		relay_failed(link, end, uv_strerror(rc));
		return;
	}
	gw_end_t *other = gw_end_other(end);
	if (other->paused && end->queued <= GW_LINK_LOW_WATER) {
		other->paused = false;
		if (sync_reading(other) < 0)
			relay_failed(link, other, "cannot resume reading");
	}
	if (end->paused_self && control_waiting(end) <= GW_LINK_LOW_WATER) {
		end->paused_self = false;
		if (sync_reading(end) < 0)
			relay_failed(link, end, "cannot resume reading");
	}
}

int gw_end_send(gw_end_t *end, const void *data, size_t len)
{
	if (!end->open || !end->connected || end->shut)
		return UV_EPIPE;
	if (len == 0)
		return 0;
	if (end->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&end->tcp, &b, 1);
		if (n == (int)len)
			return 0;
		if (n >= 0) {
			data = (const char *)data + n;
			len -= (size_t)n;
		} else if (n != UV_EAGAIN) {
			return n;
		}
	}
	write_req_t *w = malloc(sizeof(*w) + len);
	if (w == NULL)
		return UV_ENOMEM;
	memcpy(w->data, data, len);
	w->end = end;
	w->len = len;
	w->control = 0;
	w->owned = NULL;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
	int rc = uv_write(&w->req, (uv_stream_t *)&end->tcp, &b, 1, on_write);
	if (rc < 0) {
		free(w);
		return rc;
	}
	end->queued += len;
	return 0;
}

/* Sends end's ciphertext: what the kernel does not take waits in a write
 * request, which takes over the engine's buffer, or a copy when that
 * buffer is mostly empty (a 27-byte KeyUpdate must not hold 4 KiB).
 * Control output (answers to end's own input) waiting behind earlier
 * writes is held in the engine, where answers add up in one buffer, and
 * goes out with the next write or when the queue drains (on_write). */
static int flush_tls(gw_end_t *end, bool control)
{
	size_t len;
	const uint8_t *out = gw_tls_out(&end->tls, &len);
	if (len == 0) {
		end->control_held = false;
		return 0;
	}
	if (!end->open || !end->connected || end->shut)
		return UV_EPIPE;
	if (control && end->queued > 0) {
		end->control_held = true;
		return 0;
	}
	end->control_held = false;
	if (end->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&end->tcp, &b, 1);
		if (n == (int)len) {
			gw_tls_out_sent(&end->tls, len);
			return 0;
		}
		if (n > 0)
			gw_tls_out_sent(&end->tls, (size_t)n);
		else if (n != UV_EAGAIN)
			return n;
		out = gw_tls_out(&end->tls, &len);
	}
	bool copy = len <= end->tls.out_cap / 4;
	write_req_t *w = malloc(sizeof(*w) + (copy ? len : 0));
	if (w == NULL)
		return UV_ENOMEM;
	if (copy) {
		memcpy(w->data, out, len);
		w->owned = NULL;
		w->len = len;
		gw_tls_out_sent(&end->tls, len);
	} else {
		gw_tls_out_detach(&end->tls, &w->owned, &w->len);
	}
	w->end = end;
	w->control = control ? w->len : 0;
	uv_buf_t b = uv_buf_init(copy ? w->data : (char *)w->owned, (unsigned)w->len);
	int rc = uv_write(&w->req, (uv_stream_t *)&end->tcp, &b, 1, on_write);
	if (rc < 0) {
		free(w->owned);
		free(w);
		return rc;
	}
	end->queued += w->len;
	end->control_queued += w->control;
	return 0;
}

int gw_end_flush_tls(gw_end_t *end)
{
	return flush_tls(end, false);
}

int gw_end_flush_control(gw_end_t *end)
{
	int rc = flush_tls(end, true);
	if (rc == 0 && !end->paused_self && control_waiting(end) > GW_LINK_HIGH_WATER) {
		end->paused_self = true;
		(void)sync_reading(end);
	}
	return rc;
}

int gw_end_send_tls(gw_end_t *end, const void *data, size_t len)
{
	if (gw_tls_write(&end->tls, data, len) < 0)
		return UV_EPROTO;
	return gw_end_flush_tls(end);
}

int gw_end_write(gw_end_t *end, const void *data, size_t len)
{
	return end->tls_on ? gw_end_send_tls(end, data, len) : gw_end_send(end, data, len);
}

void gw_link_arm(gw_link_t *link, uint64_t ms)
{
	uv_timer_start(&link->timer, on_timer, ms, 0);
}

/* --- relaying ------------------------------------------------------------ */

static void check_done(gw_link_t *link)
{
	gw_end_t *c = &link->end[GW_CLIENT], *u = &link->end[GW_UPSTREAM];
	if (!link->relaying || !c->eof || !u->eof || !c->shut_done || !u->shut_done)
		return;
	link->relaying = false;
	link->ops->relay_done(
	        link, link->first_eof == GW_CLIENT ? "client closed" : "upstream closed", NULL);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	gw_end_t *end = container_of(req, gw_end_t, shutdown_req);
	gw_link_t *link = end->link;
	end->shut_done = true;
	if (link->closing) {
		gw_end_t *other = gw_end_other(end);
		if (!other->shut || other->shut_done)
			force_close(link);
		return;
	}
	check_done(link);
}

/* Sends FIN (after close_notify on TLS) once everything queued is written. */
static void shut_end(gw_end_t *end)
{
	if (end->shut || !end->open)
		return;
	end->shut = true;
	if (!end->connected) {
		end->shut_done = true;
		return;
	}
	if (end->tls_on && end->tls.handshake_done) {
		gw_tls_close_notify(&end->tls);
		end->shut = false; /* gw_end_send refuses a shut end */
		int rc = gw_end_flush_tls(end);
		end->shut = true;
		if (rc < 0) {
			end->shut_done = true;
			return;
		}
	}
	if (uv_shutdown(&end->shutdown_req, (uv_stream_t *)&end->tcp, on_shutdown) < 0)
		end->shut_done = true;
}

/* end finished sending: pass the half-close on to the other end. */
static void peer_finished(gw_link_t *link, gw_end_t *end)
{
	if (end->eof)
		return;
	end->eof = true;
	gw_end_read_stop(end);
	if (link->first_eof < 0)
		link->first_eof = end->id;
	shut_end(gw_end_other(end));
	check_done(link);
}

static void relay_failed(gw_link_t *link, gw_end_t *end, const char *detail)
{
	if (!link->relaying)
		return;
	link->relaying = false;
	link->ops->relay_done(link, end->id == GW_CLIENT ? "client closed" : "upstream closed",
	                      detail);
}

/* end's TLS peer was cut off for abuse: its alert goes out (as the link
 * closes, gracefully), the owner hears why. */
static void tls_abuse(gw_link_t *link, gw_end_t *end)
{
	char reason[64];
	(void)gw_end_flush_control(end);
	if (!link->relaying)
		return;
	link->relaying = false;
	if (end->id == GW_CLIENT) {
		snprintf(reason, sizeof(reason), "tls abuse: %s", end->tls.abuse);
		link->ops->relay_done(link, reason, end->tls.error);
	} else {
		link->ops->relay_done(link, "upstream closed", end->tls.error);
	}
}

/* Plaintext read from `from` goes to the other end. */
static int forward(gw_link_t *link, gw_end_t *from, const char *data, size_t len)
{
	gw_end_t *to = gw_end_other(from);
	from->bytes_in += len;
	link->last_active = uv_now(link->timer.loop);
	bool handled = false;
	if (link->ops->filter != NULL) {
		handled = link->ops->filter(link, from, data, len);
		if (!link->relaying)
			return -1;
	}
	int rc = handled ? 0 : gw_end_write(to, data, len);
	if (rc < 0) {
		relay_failed(link, to,
		             to->tls_on && rc == UV_EPROTO ? to->tls.error : uv_strerror(rc));
		return -1;
	}
	if (to->queued > GW_LINK_HIGH_WATER && !from->paused) {
		from->paused = true;
		(void)sync_reading(from);
	}
	return 0;
}

/* Forwards every plaintext byte end's TLS engine can produce now. Records
 * are gathered into one buffer first: one write per socket read, not one
 * per 16 KiB record (a quarter of the write calls on bulk transfers). */
static void pump_tls(gw_link_t *link, gw_end_t *end)
{
	size_t have = 0;
	for (;;) {
		ssize_t n = gw_tls_read(&end->tls, plain_buf + have, sizeof(plain_buf) - have);
		if (n > 0) {
			have += (size_t)n;
			if (sizeof(plain_buf) - have >= GW_TLS_READ_ROOM)
				continue;
		}
		if (have > 0 && forward(link, end, plain_buf, have) < 0)
			return;
		have = 0;
		if (n > 0)
			continue;
		if (n == GW_TLS_READ_WANT)
			break;
		if (n == GW_TLS_READ_CLOSED) {
			(void)gw_end_flush_control(end);
			peer_finished(link, end);
			return;
		}
		if (end->tls.abuse != NULL)
			tls_abuse(link, end);
		else
			relay_failed(link, end, end->tls.error);
		return;
	}
	/* TLS may want to answer (key update, alerts) */
	int rc = gw_end_flush_control(end);
	if (rc < 0)
		relay_failed(link, end, uv_strerror(rc));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	gw_link_t *link = stream->data;
	gw_end_t *end = container_of((uv_tcp_t *)stream, gw_end_t, tcp);
	if (nread == 0 || link->closing)
		return;
	if (!link->relaying) {
		link->last_active = uv_now(stream->loop);
		link->ops->setup_input(link, end, buf->base, nread);
		return;
	}
	if (nread == UV_EOF) {
		/* A TLS peer that vanishes without close_notify: the stream is
		 * cut short; the protocol inside will notice. Pass the FIN on. */
		peer_finished(link, end);
		return;
	}
	if (nread < 0) {
		relay_failed(link, end, uv_strerror((int)nread));
		return;
	}
	if (!end->tls_on) {
		(void)forward(link, end, buf->base, (size_t)nread);
		return;
	}
	/* OpenSSL reads the records in place; only a partial one is kept */
	gw_tls_offer(&end->tls, buf->base, (size_t)nread);
	pump_tls(link, end);
	if (gw_tls_settle(&end->tls) < 0)
		relay_failed(link, end, end->tls.error);
}

void gw_link_relay(gw_link_t *link)
{
	if (link->closing || link->relaying)
		return;
	link->relaying = true;
	link->last_active = uv_now(link->timer.loop); /* idle from here on */
	for (int i = 0; i < 2 && link->relaying; i++) {
		gw_end_t *end = &link->end[i];
		if (end->eof)
			continue;
		if (gw_end_read_start(end) < 0) {
			relay_failed(link, end, "cannot start reading");
			return;
		}
		if (end->tls_on)
			pump_tls(link, end);
	}
}

/* --- closing ------------------------------------------------------------- */

static void force_close(gw_link_t *link)
{
	if (link->handles_closing)
		return;
	link->handles_closing = true;
	link->closing = true;
	link->relaying = false;
	for (int i = 0; i < 2; i++) {
		gw_end_t *end = &link->end[i];
		if (end->open && !uv_is_closing((uv_handle_t *)&end->tcp))
			uv_close((uv_handle_t *)&end->tcp, on_handle_closed);
	}
	uv_timer_stop(&link->timer);
	uv_close((uv_handle_t *)&link->timer, on_handle_closed);
}

void gw_link_close(gw_link_t *link, bool graceful)
{
	if (link->closing) {
		if (!graceful)
			force_close(link);
		return;
	}
	link->closing = true;
	link->relaying = false;
	bool waiting = false;
	for (int i = 0; i < 2; i++) {
		gw_end_t *end = &link->end[i];
		gw_end_read_stop(end);
		if (!graceful || !end->open || !end->connected)
			continue;
		shut_end(end);
		if (!end->shut_done)
			waiting = true;
	}
	if (!waiting) {
		force_close(link);
		return;
	}
	uv_timer_start(&link->timer, on_timer, GW_LINK_LINGER_MS, 0);
}
