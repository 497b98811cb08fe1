/* Sans-IO TLS engine: SSL + two memory BIOs (see tls_engine.h).
 *
 * OpenSSL's error queue is per thread and shared by every connection, so it
 * is cleared before each SSL call and read right after a failure; a stale
 * entry must never be blamed on another connection. */
#include "tls_engine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

int gw_tls_init(gw_tls_t *tls, SSL_CTX *ctx, bool server)
{
	memset(tls, 0, sizeof(*tls));
	tls->ssl = SSL_new(ctx);
	if (tls->ssl == NULL)
		goto fail_ssl;
	tls->rbio = BIO_new(BIO_s_mem());
	if (tls->rbio == NULL)
		goto fail_rbio;
	tls->wbio = BIO_new(BIO_s_mem());
	if (tls->wbio == NULL)
		goto fail_wbio;
	SSL_set_bio(tls->ssl, tls->rbio, tls->wbio); /* ssl owns both now */
	if (server)
		SSL_set_accept_state(tls->ssl);
	else
		SSL_set_connect_state(tls->ssl);
	return 0;

fail_wbio:
	BIO_free(tls->rbio);
fail_rbio:
	SSL_free(tls->ssl);
fail_ssl:
	tls->ssl = NULL;
	ERR_clear_error();
	return -ENOMEM;
}

void gw_tls_finish(gw_tls_t *tls)
{
	if (tls->ssl != NULL)
		SSL_free(tls->ssl);
	tls->ssl = NULL;
	tls->rbio = tls->wbio = NULL;
}

int gw_tls_feed(gw_tls_t *tls, const void *data, size_t len)
{
	while (len > 0) {
		int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
		int n = BIO_write(tls->rbio, data, chunk);
		if (n <= 0) {
			snprintf(tls->error, sizeof(tls->error),
			         "out of memory buffering TLS input");
			return -ENOMEM;
		}
		data = (const char *)data + n;
		len -= (size_t)n;
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
	switch (ssl_error) {
	case SSL_ERROR_SYSCALL:
		/* With memory BIOs there is no syscall: an empty queue here means
		 * the peer's stream ended mid-record. */
		tls->error_reason = gw_tls_describe_error(tls->error, sizeof(tls->error),
		                                          "unexpected end of stream");
		break;
	default:
		tls->error_reason = gw_tls_describe_error(tls->error, sizeof(tls->error), what);
		break;
	}
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
	return tls->wbio != NULL ? BIO_ctrl_pending(tls->wbio) : 0;
}

size_t gw_tls_take_out(gw_tls_t *tls, void *buf, size_t cap)
{
	size_t got = 0;
	if (tls->wbio == NULL || cap == 0)
		return 0;
	if (BIO_read_ex(tls->wbio, buf, cap, &got) != 1)
		return 0;
	return got;
}
