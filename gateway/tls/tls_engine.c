/* Sans-IO TLS engine: one SSL and one BIO of our own (see tls_engine.h).
 *
 * The BIO reads ciphertext in place from the buffer the caller offers (the
 * socket read buffer) and appends ciphertext out to a buffer the caller can
 * send from directly, or take over: no copy into or out of a memory BIO.
 * Only a partial record outlives a read, and both buffers are released
 * once drained (malloc is cheaper than the memory of 10,000 idle
 * sessions), so an idle session holds nothing here (OpenSSL's own record buffers go with
 * SSL_MODE_RELEASE_BUFFERS).
 *
 * OpenSSL's error queue is per thread and shared by every connection, so it
 * is cleared before each SSL call and read right after a failure; a stale
 * entry must never be blamed on another connection. */
#include "tls/tls_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include <openssl/err.h>

#include "tls/tls_records.h"

#define OUT_FIRST 4096

/* --- the BIO ------------------------------------------------------------- */

static int bio_read(BIO *bio, char *buf, size_t want, size_t *got)
{
	gw_tls_t *tls = BIO_get_data(bio);
	size_t n = 0;
	BIO_clear_retry_flags(bio);
	if (tls->abuse != NULL) {
		/* cut off (msg_cb): OpenSSL reads no further record */
	} else if (tls->kept_len > 0) {
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

static int method_type = -1;    /* our BIO's type, to recognise it */
static BIO_METHOD *engine_meth; /* created once, never freed: lives as long as the process */
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static void make_method(void)
{
	int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
	BIO_METHOD *m = BIO_meth_new(type, "certgate tls engine");
	if (m == NULL || !BIO_meth_set_read_ex(m, bio_read) ||
	    !BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
	    !BIO_meth_set_create(m, bio_create)) {
		BIO_meth_free(m);
		return;
	}
	engine_meth = m;
	method_type = type;
}

/* Every worker's engines share the method: made by whichever comes first. */
static BIO_METHOD *engine_method(void)
{
	pthread_once(&method_once, make_method);
	return engine_meth;
}

/* --- the engine ---------------------------------------------------------- */

/* OpenSSL answers some of what a peer sends after the handshake itself,
 * with no limit of its own (3.0): a KeyUpdate request with a KeyUpdate, a
 * TLS 1.2 renegotiation attempt with a no_renegotiation alert. Every
 * handshake, alert and ChangeCipherSpec message it reads once the
 * handshake is done is counted here, and past the limit the BIO gives it
 * nothing more to read, so SSL_read stops and gw_tls_read reports the
 * abuse. Application data resets the count (gw_tls_read). */
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
	gw_tls_t *tls = arg;
	const uint8_t *msg = buf;
	if (write_p || !tls->handshake_done ||
	    (content_type != SSL3_RT_HANDSHAKE && content_type != SSL3_RT_ALERT &&
	     content_type != SSL3_RT_CHANGE_CIPHER_SPEC))
		return;
	if (++tls->control_run > GW_TLS_MAX_CONTROL_RUN && tls->abuse == NULL)
		tls->abuse = content_type == SSL3_RT_HANDSHAKE && len >= 1 &&
		                             msg[0] == SSL3_MT_KEY_UPDATE
		                     ? "key update flood"
		                     : "control message flood";
}

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
	SSL_set_msg_callback(tls->ssl, msg_cb);
	SSL_set_msg_callback_arg(tls->ssl, tls);
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
	gw_records_free(tls->rec);
	free(tls->kept);
	free(tls->out);
	free(tls->pend);
	OPENSSL_cleanse(tls->secret, sizeof(tls->secret));
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
	if (tls->kept_len == 0 && tls->kept_cap > 0) {
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
		const unsigned char *alpn = NULL;
		unsigned int alpn_len = 0;
		SSL_get0_alpn_selected(tls->ssl, &alpn, &alpn_len);
		if (alpn != NULL && alpn_len < sizeof(tls->alpn)) {
			memcpy(tls->alpn, alpn, alpn_len);
			tls->alpn[alpn_len] = '\0';
		}
		return GW_TLS_DONE;
	}
	int err = SSL_get_error(tls->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return GW_TLS_WANT;
	note_failure(tls, err, "handshake failed");
	return GW_TLS_FAILED;
}

/* --- offloaded: the record layer without OpenSSL's SSL -------------------- */

/* The key log line of an application traffic secret goes to the engine of
 * that connection (found through its BIO); no other line is kept. */
static void keylog_cb(const SSL *ssl, const char *line)
{
	static const char *const labels[2] = {"CLIENT_TRAFFIC_SECRET_0 ",
	                                      "SERVER_TRAFFIC_SECRET_0 "};
	BIO *bio = SSL_get_rbio(ssl);
	if (bio == NULL || BIO_method_type(bio) != method_type)
		return;
	gw_tls_t *tls = BIO_get_data(bio);
	for (int i = 0; i < 2 && tls != NULL; i++) {
		size_t n = strlen(labels[i]);
		if (strncmp(line, labels[i], n) != 0)
			continue;
		/* the label, the client random (64 hex digits), the secret */
		const char *hex = line + n;
		const char *space = strchr(hex, ' ');
		if (space == NULL)
			return;
		hex = space + 1;
		size_t digits = strlen(hex);
		if (digits % 2 != 0 || digits / 2 > sizeof(tls->secret[i]))
			return;
		long len = 0;
		unsigned char *bytes = OPENSSL_hexstr2buf(hex, &len);
		if (bytes == NULL)
			return;
		memcpy(tls->secret[i], bytes, (size_t)len);
		OPENSSL_clear_free(bytes, (size_t)len);
		tls->secret_len = (uint8_t)len;
		tls->secrets_seen |= (uint8_t)(1u << i);
	}
}

void gw_tls_ctx_allow_offload(SSL_CTX *ctx)
{
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
}

bool gw_tls_offload(gw_tls_t *tls)
{
	if (tls->ssl == NULL || tls->rec != NULL || !tls->handshake_done ||
	    !SSL_is_server(tls->ssl))
		return false;
	const SSL_CIPHER *cipher = SSL_get_current_cipher(tls->ssl);
	uint16_t suite = cipher != NULL ? SSL_CIPHER_get_protocol_id(cipher) : 0;
	/* sequence numbers start at 0 only if OpenSSL has protected nothing
	 * with the application keys yet: no ticket sent, nothing read */
	bool ready = SSL_version(tls->ssl) == TLS1_3_VERSION && tls->secrets_seen == 3 &&
	             tls->secret_len == gw_records_secret_len(suite) &&
	             SSL_get_num_tickets(tls->ssl) == 0 && SSL_pending(tls->ssl) == 0 &&
	             !SSL_has_pending(tls->ssl) && SSL_get_shutdown(tls->ssl) == 0;
	gw_records_t *rec =
	        ready ? gw_records_new(suite, tls->secret[0], tls->secret[1], tls->secret_len)
	              : NULL;
	OPENSSL_cleanse(tls->secret, sizeof(tls->secret));
	tls->secrets_seen = 0;
	if (rec == NULL)
		return false;
	SSL_free(tls->ssl); /* and our BIO with it */
	tls->ssl = NULL;
	tls->bio = NULL;
	tls->rec = rec;
	return true;
}

static bool fail(gw_tls_t *tls, const char *why)
{
	snprintf(tls->error, sizeof(tls->error), "%s", why);
	tls->error_reason = 0;
	return false;
}

/* Seals one record (len ≤ GW_REC_MAX_PLAIN) of type into the output buffer. */
static bool seal(gw_tls_t *tls, uint8_t type, const uint8_t *data, size_t len)
{
	if (!out_reserve(tls, len + GW_REC_OVERHEAD))
		return fail(tls, "out of memory sealing a record");
	size_t w = gw_records_seal(tls->rec, type, data, len, tls->out + tls->out_len);
	if (w == 0)
		return fail(tls, "cannot seal a record");
	tls->out_len += w;
	return true;
}

/* KeyUpdate (RFC 8446 §4.6.3): ours is sealed under the old key. */
static bool send_key_update(gw_tls_t *tls, bool request)
{
	const uint8_t msg[5] = {24, 0, 0, 1, request ? 1 : 0};
	if (!seal(tls, GW_REC_HANDSHAKE, msg, sizeof(msg)))
		return false;
	tls->key_update_owed = false; /* any KeyUpdate of ours answers every request */
	return gw_records_update_write(tls->rec) || fail(tls, "key update failed");
}

/* The peer's requests get one answer per run of control records (none of
 * its data in between): once the input offered is read; later requests of
 * the same run wait for our next record of data. RFC 8446 4.6.3 lets an
 * implementation "which receives multiple KeyUpdates while it is silent"
 * respond with a single update; one answer per request would let a peer
 * that never reads make us queue without end. */
static bool answer_key_update(gw_tls_t *tls)
{
	if (!tls->key_update_owed || tls->key_update_answered)
		return true;
	tls->key_update_answered = true;
	return send_key_update(tls, false);
}

static int records_write(gw_tls_t *tls, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len > 0) {
		if ((tls->key_update_owed || gw_records_write_due(tls->rec)) &&
		    !send_key_update(tls, false))
			return -1;
		size_t n = len < GW_REC_MAX_PLAIN ? len : GW_REC_MAX_PLAIN;
		if (!seal(tls, GW_REC_APPLICATION, p, n))
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* The next whole record: in the kept bytes (a partial one completed from
 * the offer) or straight in the offer. 1 found, 0 not yet, -1 invalid. */
static int next_record(gw_tls_t *tls, const uint8_t **rec, size_t *len, bool *kept)
{
	if (tls->kept_len == 0) {
		ssize_t n = gw_records_length(tls->in, tls->in_len);
		if (n <= 0 || (size_t)n > tls->in_len)
			return n < 0 ? -1 : 0;
		*rec = tls->in, *len = (size_t)n, *kept = false;
		return 1;
	}
	size_t want = GW_REC_HEADER;
	for (;;) {
		if (tls->kept_len >= GW_REC_HEADER) {
			ssize_t n = gw_records_length(tls->kept, tls->kept_len);
			if (n < 0)
				return -1;
			want = (size_t)n;
		}
		if (tls->kept_len >= want)
			break;
		size_t take = want - tls->kept_len;
		if (take > tls->in_len)
			take = tls->in_len;
		if (take == 0)
			return 0;
		if (gw_tls_feed(tls, tls->in, take) < 0)
			return -1;
		tls->in += take;
		tls->in_len -= take;
	}
	*rec = tls->kept, *len = want, *kept = true;
	return 1;
}

static void consume(gw_tls_t *tls, size_t len, bool kept)
{
	if (!kept) {
		tls->in += len;
		tls->in_len -= len;
		return;
	}
	memmove(tls->kept, tls->kept + len, tls->kept_len - len);
	tls->kept_len -= len;
}

/* A record with no application bytes: past GW_TLS_MAX_CONTROL_RUN in a
 * row the peer is cut off, with a fatal unexpected_message alert (and no
 * close_notify after it). */
static bool control_record(gw_tls_t *tls, const char *abuse)
{
	if (++tls->control_run <= GW_TLS_MAX_CONTROL_RUN)
		return true;
	static const uint8_t alert[2] = {2, SSL_AD_UNEXPECTED_MESSAGE}; /* fatal */
	tls->key_update_owed = false;
	(void)seal(tls, GW_REC_ALERT, alert, sizeof(alert));
	tls->close_notify_sent = true;
	tls->abuse = abuse;
	return fail(tls, abuse);
}

/* Post-handshake messages a client may send: KeyUpdate only. */
static bool handshake_message(gw_tls_t *tls, const uint8_t *msg, size_t len)
{
	if (len != 5 || msg[0] != 24 || msg[1] != 0 || msg[2] != 0 || msg[3] != 1 || msg[4] > 1)
		return fail(tls, "unexpected handshake message after the handshake");
	if (!control_record(tls, "key update flood"))
		return false;
	if (!gw_records_update_read(tls->rec))
		return fail(tls, "key update failed");
	if (msg[4] == 1)
		tls->key_update_owed = true;
	return true;
}

static size_t take_pending(gw_tls_t *tls, uint8_t *buf, size_t cap)
{
	size_t n = tls->pend_len < cap ? tls->pend_len : cap;
	memcpy(buf, tls->pend + tls->pend_off, n);
	tls->pend_off += n;
	tls->pend_len -= n;
	if (tls->pend_len == 0) {
		free(tls->pend);
		tls->pend = NULL;
		tls->pend_off = 0;
	}
	return n;
}

static ssize_t records_read(gw_tls_t *tls, uint8_t *buf, size_t cap)
{
	static _Thread_local uint8_t scratch[GW_REC_MAX_CIPHER];
	if (tls->pend_len > 0)
		return (ssize_t)take_pending(tls, buf, cap);
	if (tls->abuse != NULL) {
		fail(tls, tls->abuse);
		return GW_TLS_READ_FAILED;
	}
	if (cap == 0)
		return GW_TLS_READ_WANT;
	while (!tls->peer_closed) {
		const uint8_t *rec = NULL;
		size_t len = 0;
		bool kept = false;
		int found = next_record(tls, &rec, &len, &kept);
		if (found == 0)
			return answer_key_update(tls) ? GW_TLS_READ_WANT : GW_TLS_READ_FAILED;
		if (found < 0) {
			fail(tls, "invalid record");
			return GW_TLS_READ_FAILED;
		}
		/* opened straight into the caller's buffer when a whole record fits */
		uint8_t *out = cap >= len - GW_REC_HEADER - GW_REC_TAG ? buf : scratch;
		uint8_t type = 0;
		size_t n = 0;
		const char *why = NULL;
		if (!gw_records_open(tls->rec, rec, len, out, &type, &n, &why)) {
			fail(tls, why);
			return GW_TLS_READ_FAILED;
		}
		consume(tls, len, kept);
		switch (type) {
		case GW_REC_APPLICATION:
			if (n == 0) {
				if (!control_record(tls, "empty record flood"))
					return GW_TLS_READ_FAILED;
				continue;
			}
			tls->control_run = 0;
			tls->key_update_answered = false;
			if (out == buf)
				return (ssize_t)n;
			tls->pend = malloc(n);
			if (tls->pend == NULL) {
				fail(tls, "out of memory reading a record");
				return GW_TLS_READ_FAILED;
			}
			memcpy(tls->pend, out, n);
			tls->pend_len = n;
			return (ssize_t)take_pending(tls, buf, cap);
		case GW_REC_ALERT:
			if (n != 2) {
				fail(tls, "malformed alert");
				return GW_TLS_READ_FAILED;
			}
			if (out[1] == SSL_AD_CLOSE_NOTIFY) {
				tls->peer_closed = true;
				break;
			}
			if (out[1] == SSL_AD_USER_CANCELLED) { /* a close_notify follows */
				if (!control_record(tls, "empty record flood"))
					return GW_TLS_READ_FAILED;
				continue;
			}
			snprintf(tls->error, sizeof(tls->error), "tls alert %s",
			         SSL_alert_desc_string_long(out[1]));
			tls->error_reason = 0;
			return GW_TLS_READ_FAILED;
		case GW_REC_HANDSHAKE:
			if (!handshake_message(tls, out, n))
				return GW_TLS_READ_FAILED;
			continue;
		default:
			fail(tls, "unexpected record type");
			return GW_TLS_READ_FAILED;
		}
	}
	return GW_TLS_READ_CLOSED;
}

ssize_t gw_tls_read(gw_tls_t *tls, void *buf, size_t cap)
{
	if (tls->rec != NULL)
		return records_read(tls, buf, cap);
	size_t got = 0;
	ERR_clear_error();
	int rc = tls->abuse == NULL ? SSL_read_ex(tls->ssl, buf, cap, &got) : 0;
	if (tls->abuse != NULL) {
		/* msg_cb counted too many: OpenSSL's answers so far are queued */
		ERR_clear_error();
		fail(tls, tls->abuse);
		return GW_TLS_READ_FAILED;
	}
	if (rc == 1) {
		tls->control_run = 0;
		return (ssize_t)got;
	}
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
	if (tls->abuse != NULL) { /* cut off: nothing more for that peer */
		fail(tls, tls->abuse);
		return -1;
	}
	if (tls->rec != NULL)
		return records_write(tls, data, len);
	ERR_clear_error();
	int rc = SSL_write_ex(tls->ssl, data, len, &done);
	if (rc == 1 && done == len)
		return 0;
	note_failure(tls, SSL_get_error(tls->ssl, rc), "TLS write failed");
	return -1;
}

void gw_tls_close_notify(gw_tls_t *tls)
{
	if (tls->close_notify_sent || !tls->handshake_done)
		return;
	if (tls->rec != NULL) {
		static const uint8_t close_notify[2] = {1, 0}; /* warning, close_notify */
		tls->close_notify_sent = seal(tls, GW_REC_ALERT, close_notify, 2);
		return;
	}
	if (tls->ssl == NULL)
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
		if (tls->out_cap > 0) {
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
