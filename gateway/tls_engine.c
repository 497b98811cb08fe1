/* Sans-IO TLS engine: one SSL and one BIO of our own (see tls_engine.h).
 *
 * The BIO reads ciphertext in place from the buffer the caller offers (the
 * socket read buffer) and appends ciphertext out to a buffer the caller can
 * send from directly, or take over: no copy into or out of a memory BIO.
 * Only a partial record outlives a read, and buffers that grew for bulk
 * traffic are released once drained, so an idle session holds almost
 * nothing here (OpenSSL's own record buffers go with
 * SSL_MODE_RELEASE_BUFFERS).
 *
 * OpenSSL's error queue is per thread and shared by every connection, so it
 * is cleared before each SSL call and read right after a failure; a stale
 * entry must never be blamed on another connection. */
#include "tls_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#define KEEP_MAX_IDLE 4096  /* a drained input buffer larger than this is freed */
#define OUT_MAX_IDLE  16384 /* likewise for the output buffer */
#define OUT_FIRST     4096

/* --- the BIO ------------------------------------------------------------- */

static int bio_read(BIO *bio, char *buf, size_t want, size_t *got)
{
	gw_tls_t *tls = BIO_get_data(bio);
	size_t n = 0;
	BIO_clear_retry_flags(bio);
	if (tls->kept_len > 0) {
		n = want < tls->kept_len ? want : tls->kept_len;
		memcpy(buf, tls->kept, n);
		memmove(tls->kept, tls->kept + n, tls->kept_len - n);
		tls->kept_len -= n;
	} else if (tls->in_len > 0) {
		n = want < tls->in_len ? want : tls->in_len;
		memcpy(buf, tls->in, n);
		tls->in += n;
		tls->in_len -= n;
	}
	if (n == 0) {
		BIO_set_retry_read(bio); /* more will come from the socket */
		*got = 0;
		return 0;
	}
	*got = n;
	return 1;
}

static bool out_reserve(gw_tls_t *tls, size_t more)
{
	if (tls->out_len + more <= tls->out_cap)
		return true;
	size_t cap = tls->out_cap ? tls->out_cap : OUT_FIRST;
	while (cap < tls->out_len + more)
		cap *= 2;
	uint8_t *grown = realloc(tls->out, cap);
	if (grown == NULL)
		return false;
	tls->out = grown;
	tls->out_cap = cap;
	return true;
}

static int bio_write(BIO *bio, const char *buf, size_t len, size_t *written)
{
	gw_tls_t *tls = BIO_get_data(bio);
	BIO_clear_retry_flags(bio);
	if (!out_reserve(tls, len))
		return 0;
	memcpy(tls->out + tls->out_len, buf, len);
	tls->out_len += len;
	*written = len;
	return 1;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	gw_tls_t *tls = BIO_get_data(bio);
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return tls != NULL ? (long)(tls->kept_len + tls->in_len) : 0;
	case BIO_CTRL_WPENDING:
		return tls != NULL ? (long)tls->out_len : 0;
	default:
		return 0;
	}
}

static int bio_create(BIO *bio)
{
	BIO_set_init(bio, 1);
	return 1;
}

static BIO_METHOD *engine_method(void)
{
	static BIO_METHOD *method;
	if (method == NULL) {
		/* created once, never freed: it lives as long as the process */
		BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
		                             "certgate tls engine");
		if (m == NULL || !BIO_meth_set_read_ex(m, bio_read) ||
		    !BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
		    !BIO_meth_set_create(m, bio_create)) {
			BIO_meth_free(m);
			return NULL;
		}
		method = m;
	}
	return method;
}

/* --- the engine ---------------------------------------------------------- */

int gw_tls_init(gw_tls_t *tls, SSL_CTX *ctx, bool server)
{
	memset(tls, 0, sizeof(*tls));
	BIO_METHOD *method = engine_method();
	if (method == NULL)
		goto fail;
	tls->ssl = SSL_new(ctx);
	if (tls->ssl == NULL)
		goto fail;
	tls->bio = BIO_new(method);
	if (tls->bio == NULL)
		goto fail_ssl;
	BIO_set_data(tls->bio, tls);
	/* the same BIO both ways: SSL_set_bio takes our one reference */
	SSL_set_bio(tls->ssl, tls->bio, tls->bio);
	if (server)
		SSL_set_accept_state(tls->ssl);
	else
		SSL_set_connect_state(tls->ssl);
	return 0;

fail_ssl:
	SSL_free(tls->ssl);
	tls->ssl = NULL;
fail:
	ERR_clear_error();
	return -ENOMEM;
}

void gw_tls_finish(gw_tls_t *tls)
{
	if (tls->ssl != NULL)
		SSL_free(tls->ssl);
	free(tls->kept);
	free(tls->out);
	memset(tls, 0, sizeof(*tls));
}

int gw_tls_feed(gw_tls_t *tls, const void *data, size_t len)
{
	if (tls->kept_len + len > tls->kept_cap) {
		size_t cap = tls->kept_len + len;
		uint8_t *grown = realloc(tls->kept, cap);
		if (grown == NULL) {
			snprintf(tls->error, sizeof(tls->error),
			         "out of memory buffering TLS input");
			return -ENOMEM;
		}
		tls->kept = grown;
		tls->kept_cap = cap;
	}
	memcpy(tls->kept + tls->kept_len, data, len);
	tls->kept_len += len;
	return 0;
}

void gw_tls_offer(gw_tls_t *tls, const void *data, size_t len)
{
	tls->in = data;
	tls->in_len = len;
}

int gw_tls_settle(gw_tls_t *tls)
{
	const uint8_t *rest = tls->in;
	size_t n = tls->in_len;
	tls->in = NULL;
	tls->in_len = 0;
	if (n > 0)
		return gw_tls_feed(tls, rest, n);
	if (tls->kept_len == 0 && tls->kept_cap > KEEP_MAX_IDLE) {
		free(tls->kept);
		tls->kept = NULL;
		tls->kept_cap = 0;
	}
	return 0;
}

int gw_tls_describe_error(char *buf, size_t len, const char *fallback)
{
	unsigned long e = ERR_get_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
	snprintf(buf, len, "%s", reason != NULL ? reason : fallback);
	ERR_clear_error();
	return e != 0 ? ERR_GET_REASON(e) : 0;
}

/* Records why an SSL call failed, from SSL_get_error and the error queue. */
static void note_failure(gw_tls_t *tls, int ssl_error, const char *what)
{
	/* our BIO has no syscall: SSL_ERROR_SYSCALL with an empty queue means
	 * the peer's stream ended mid-record */
	tls->error_reason = gw_tls_describe_error(
	        tls->error, sizeof(tls->error),
	        ssl_error == SSL_ERROR_SYSCALL ? "unexpected end of stream" : what);
}

gw_tls_status_t gw_tls_handshake(gw_tls_t *tls)
{
	if (tls->handshake_done)
		return GW_TLS_DONE;
	ERR_clear_error();
	int rc = SSL_do_handshake(tls->ssl);
	if (rc == 1) {
		tls->handshake_done = true;
		return GW_TLS_DONE;
	}
	int err = SSL_get_error(tls->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return GW_TLS_WANT;
	note_failure(tls, err, "handshake failed");
	return GW_TLS_FAILED;
}

ssize_t gw_tls_read(gw_tls_t *tls, void *buf, size_t cap)
{
	size_t got = 0;
	ERR_clear_error();
	int rc = SSL_read_ex(tls->ssl, buf, cap, &got);
	if (rc == 1)
		return (ssize_t)got;
	int err = SSL_get_error(tls->ssl, rc);
	switch (err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return GW_TLS_READ_WANT;
	case SSL_ERROR_ZERO_RETURN:
		return GW_TLS_READ_CLOSED;
	default:
		note_failure(tls, err, "TLS read failed");
		return GW_TLS_READ_FAILED;
	}
}

int gw_tls_write(gw_tls_t *tls, const void *data, size_t len)
{
	size_t done = 0;
	if (len == 0)
		return 0;
	ERR_clear_error();
	int rc = SSL_write_ex(tls->ssl, data, len, &done);
	if (rc == 1 && done == len)
		return 0;
	note_failure(tls, SSL_get_error(tls->ssl, rc), "TLS write failed");
	return -1;
}

void gw_tls_close_notify(gw_tls_t *tls)
{
	if (tls->ssl == NULL || tls->close_notify_sent || !tls->handshake_done)
		return;
	tls->close_notify_sent = true;
	ERR_clear_error();
	(void)SSL_shutdown(tls->ssl); /* 0 = sent, waiting for the peer's: fine */
	ERR_clear_error();
}

size_t gw_tls_pending_out(const gw_tls_t *tls)
{
	return tls->out_len;
}

const uint8_t *gw_tls_out(const gw_tls_t *tls, size_t *len)
{
	*len = tls->out_len;
	return tls->out_len > 0 ? tls->out : NULL;
}

void gw_tls_out_sent(gw_tls_t *tls, size_t n)
{
	if (n >= tls->out_len) {
		tls->out_len = 0;
		if (tls->out_cap > OUT_MAX_IDLE) {
			free(tls->out);
			tls->out = NULL;
			tls->out_cap = 0;
		}
		return;
	}
	memmove(tls->out, tls->out + n, tls->out_len - n);
	tls->out_len -= n;
}

void gw_tls_out_detach(gw_tls_t *tls, uint8_t **buf, size_t *len)
{
	*buf = tls->out;
	*len = tls->out_len;
	tls->out = NULL;
	tls->out_len = tls->out_cap = 0;
}
