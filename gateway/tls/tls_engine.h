/* Sans-IO TLS: one SSL object and a BIO of the engine's own. Ciphertext from
 * the network is offered (read in place) or fed (copied), plaintext comes
 * out; ciphertext to send is taken from the engine's buffer by the caller.
 * Nothing here knows about sockets or libuv, so a client engine and a
 * server engine can be wired together in memory in the unit tests.
 *
 * After a TLS 1.3 handshake a server engine can let go of OpenSSL
 * (gw_tls_offload): the SSL object is freed and the records are protected
 * by tls_records.h; every call below works the same either way.
 *
 * Control traffic is bounded either way: a peer that sends more than
 * GW_TLS_MAX_CONTROL_RUN KeyUpdates (or, offloaded, empty records) in a row
 * without application data is cut off (gw_tls_read fails, tls->abuse says
 * why). Offloaded, many KeyUpdate requests get one answer. */
#ifndef GW_TLS_ENGINE_H
#define GW_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

typedef struct gw_records gw_records_t;

typedef struct gw_tls {
	SSL *ssl;          /* NULL when not initialised, or offloaded */
	gw_records_t *rec; /* the record layer once offloaded, else NULL */
	BIO *bio;          /* the engine's own BIO, both directions (owned by ssl) */
	/* ciphertext in: offered by the caller (borrowed until gw_tls_settle)
	 * and what is kept of it (a partial record, or fed with a copy) */
	const uint8_t *in;
	size_t in_len;
	uint8_t *kept;
	size_t kept_len, kept_cap;
	/* ciphertext out, waiting to be sent */
	uint8_t *out;
	size_t out_len, out_cap;
	/* plaintext opened but not yet taken (a read with a small buffer) */
	uint8_t *pend;
	size_t pend_off, pend_len;
	/* the application traffic secrets, from the key log callback, until
	 * gw_tls_offload takes them (client's, server's) */
	uint8_t secret[2][48];
	uint8_t secret_len;
	uint8_t secrets_seen; /* bit 0: client's, bit 1: server's */
	char alpn[16];        /* the protocol ALPN selected, "" if none */
	bool handshake_done;
	bool close_notify_sent;
	bool peer_closed; /* close_notify received (offloaded) */
	/* records with no application bytes since the last one with some:
	 * KeyUpdates (both ways of working), empty records (offloaded) */
	unsigned control_run;
	bool key_update_owed;     /* offloaded: a KeyUpdate asked for, not yet answered */
	bool key_update_answered; /* offloaded: this run of control records got its answer */
	const char *abuse;        /* why the peer was cut off ("key update flood"), or NULL */
	char error[160];          /* last failure, one line */
	int error_reason;         /* ERR_GET_REASON of that failure, 0 if none */
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
/* Records without application data a peer may send in a row. */
#define GW_TLS_MAX_CONTROL_RUN 32
/* A read with this much room takes any record whole, without a copy. */
#define GW_TLS_READ_ROOM (16384 + 256)

/* Creates the SSL object for ctx; server or client role. Returns 0 or -ENOMEM. */
int gw_tls_init(gw_tls_t *tls, SSL_CTX *ctx, bool server) __attribute__((warn_unused_result));
void gw_tls_finish(gw_tls_t *tls); /* frees the SSL (and both BIOs); idempotent */

/* Lets connections of this server ctx be offloaded (a key log callback
 * hands the engine its traffic secrets; nothing is written anywhere). */
void gw_tls_ctx_allow_offload(SSL_CTX *ctx);

/* After the handshake of a server engine: when the connection is TLS 1.3
 * with a supported suite and OpenSSL holds no unread data, takes the record
 * layer over and frees the SSL (read the peer certificate first). Returns
 * whether it did; if not, OpenSSL stays in charge, which works as well. */
bool gw_tls_offload(gw_tls_t *tls);

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

/* Decrypts up to cap bytes: > 0 bytes, or one of GW_TLS_READ_*. Output
 * the peer's messages call for (a KeyUpdate answered, the fatal alert of a
 * peer cut off for abuse) waits in the engine's buffer: send it. */
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
