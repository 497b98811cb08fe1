/* Sans-IO TLS: one SSL object and a BIO of the engine's own. Ciphertext from
 * the network is offered (read in place) or fed (copied), plaintext comes
 * out; ciphertext to send is taken from the engine's buffer by the caller. Nothing here knows about sockets or
 * libuv, so a client engine and a server engine can be wired together in
 * memory in the unit tests. */
#ifndef GW_TLS_ENGINE_H
#define GW_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

typedef struct gw_tls {
	SSL *ssl; /* NULL when not initialised */
	BIO *bio; /* the engine's own BIO, both directions (owned by ssl) */
	/* ciphertext in: offered by the caller (borrowed until gw_tls_settle)
	 * and what is kept of it (a partial record, or fed with a copy) */
	const uint8_t *in;
	size_t in_len;
	uint8_t *kept;
	size_t kept_len, kept_cap;
	/* ciphertext out, waiting to be sent */
	uint8_t *out;
	size_t out_len, out_cap;
	bool handshake_done;
	bool close_notify_sent;
	char error[160];  /* last failure, one line */
	int error_reason; /* ERR_GET_REASON of that failure, 0 if none */
} gw_tls_t;

typedef enum {
	GW_TLS_DONE = 0,    /* handshake finished */
	GW_TLS_WANT = 1,    /* needs more ciphertext */
	GW_TLS_FAILED = -1, /* fatal; tls->error says why */
} gw_tls_status_t;

/* Returned by gw_tls_read besides a byte count. */
#define GW_TLS_READ_WANT   0  /* no plaintext until more ciphertext arrives */
#define GW_TLS_READ_CLOSED -1 /* peer sent close_notify */
#define GW_TLS_READ_FAILED -2 /* fatal; tls->error says why */

/* Creates the SSL object for ctx; server or client role. Returns 0 or -ENOMEM. */
int gw_tls_init(gw_tls_t *tls, SSL_CTX *ctx, bool server) __attribute__((warn_unused_result));
void gw_tls_finish(gw_tls_t *tls); /* frees the SSL (and both BIOs); idempotent */

/* Hands ciphertext received from the peer to OpenSSL (copied). */
int gw_tls_feed(gw_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));

/* The hot path without the copy: OpenSSL reads data in place during the
 * calls that follow; gw_tls_settle must run before data goes away (it keeps
 * whatever was not read yet, normally a partial record). Only one offer at a
 * time; a fed or kept remainder is read first. */
void gw_tls_offer(gw_tls_t *tls, const void *data, size_t len);
int gw_tls_settle(gw_tls_t *tls) __attribute__((warn_unused_result));

/* Drives the handshake as far as the ciphertext fed so far allows. */
gw_tls_status_t gw_tls_handshake(gw_tls_t *tls);

/* Decrypts up to cap bytes: > 0 bytes, or one of GW_TLS_READ_*. */
ssize_t gw_tls_read(gw_tls_t *tls, void *buf, size_t cap);

/* Encrypts all of data (the memory BIO never blocks). 0 or -1 (tls->error). */
int gw_tls_write(gw_tls_t *tls, const void *data, size_t len) __attribute__((warn_unused_result));

/* Queues a close_notify alert (once). */
void gw_tls_close_notify(gw_tls_t *tls);

/* Ciphertext waiting to be sent. */
size_t gw_tls_pending_out(const gw_tls_t *tls);
/* The ciphertext waiting, in place (NULL when none). */
const uint8_t *gw_tls_out(const gw_tls_t *tls, size_t *len);
/* n bytes of it were sent. */
void gw_tls_out_sent(gw_tls_t *tls, size_t n);
/* Hands the waiting ciphertext over: *buf (malloc'd, the caller frees it)
 * holds *len bytes. The engine starts a new buffer. */
void gw_tls_out_detach(gw_tls_t *tls, uint8_t **buf, size_t *len);

/* The first error in OpenSSL's queue as one short line ("tlsv13 alert
 * certificate required"), written to buf; clears the queue. Returns the
 * error's ERR_GET_REASON code (0 when the queue was empty). */
int gw_tls_describe_error(char *buf, size_t len, const char *fallback);

#endif
