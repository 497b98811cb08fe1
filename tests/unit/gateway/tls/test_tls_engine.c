/* gateway/tls_engine.c: a client engine wired to a server engine in memory,
 * no sockets. Covers the handshake with a client certificate, data both
 * ways, records arriving one byte at a time (a partial record must be kept
 * across offers), the output hand-over, close_notify and garbage input.
 *
 * Then the offloaded server (tls_records.c) against OpenSSL as the client,
 * for each TLS 1.3 suite: data both ways whole and byte by byte, reads into
 * small buffers, data sent right behind the client's Finished, KeyUpdate
 * asked by the client (answered with ours), close_notify both ways, a
 * forged record, and TLS 1.2, which stays with OpenSSL.
 *
 * Control traffic (issue 12): many KeyUpdate requests get one answer, more
 * than GW_TLS_MAX_CONTROL_RUN KeyUpdates or empty records in a row cut the
 * peer off with an alert, offloaded or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "tls/tls_engine.h"
#include "tls/tls_records.h"
#include "tls/x509_build.h"

typedef struct pair {
	SSL_CTX *server_ctx, *client_ctx;
	gw_tls_t server, client;
} pair_t;

static X509 *self_signed(EVP_PKEY *key, const char *cn)
{
	X509_NAME *name = X509_NAME_new();
	assert_true(gw_x509_name_add(name, NID_commonName, cn));
	X509V3_CTX ctx;
	X509 *x = gw_x509_cert_new(name, NULL, key, time(NULL), -60, 3600, &ctx);
	X509_NAME_free(name);
	assert_non_null(x);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	return x;
}

static SSL_CTX *make_ctx(bool server, X509 *cert, EVP_PKEY *key, X509 *trust)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	assert_non_null(ctx);
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), trust), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
}

static int setup(void **state)
{
	pair_t *p = calloc(1, sizeof(*p));
	EVP_PKEY *skey = gw_x509_key_new(0), *ckey = gw_x509_key_new(0);
	X509 *scert = self_signed(skey, "server"), *ccert = self_signed(ckey, "client");
	p->server_ctx = make_ctx(true, scert, skey, ccert);
	p->client_ctx = make_ctx(false, ccert, ckey, scert);
	X509_free(scert);
	X509_free(ccert);
	EVP_PKEY_free(skey);
	EVP_PKEY_free(ckey);
	assert_int_equal(gw_tls_init(&p->server, p->server_ctx, true), 0);
	assert_int_equal(gw_tls_init(&p->client, p->client_ctx, false), 0);
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	pair_t *p = *state;
	gw_tls_finish(&p->server);
	gw_tls_finish(&p->client);
	SSL_CTX_free(p->server_ctx);
	SSL_CTX_free(p->client_ctx);
	free(p);
	return 0;
}

/* Moves what `from` has to send into `to`: whole, or `step` bytes per
 * offer (each offer settled before the next, as the link does). */
static size_t transfer(gw_tls_t *from, gw_tls_t *to, size_t step)
{
	uint8_t *buf;
	size_t len;
	gw_tls_out_detach(from, &buf, &len);
	for (size_t at = 0; at < len;) {
		size_t n = step == 0 || len - at < step ? len - at : step;
		gw_tls_offer(to, buf + at, n);
		(void)gw_tls_handshake(to);
		assert_int_equal(gw_tls_settle(to), 0);
		at += n;
	}
	free(buf);
	return len;
}

static void handshake(pair_t *p, size_t step)
{
	for (int round = 0; round < 10; round++) {
		gw_tls_status_t c = gw_tls_handshake(&p->client);
		assert_int_not_equal(c, GW_TLS_FAILED);
		transfer(&p->client, &p->server, step);
		gw_tls_status_t s = gw_tls_handshake(&p->server);
		assert_int_not_equal(s, GW_TLS_FAILED);
		transfer(&p->server, &p->client, step);
		if (c == GW_TLS_DONE && s == GW_TLS_DONE)
			return;
	}
	fail_msg("handshake did not finish");
}

static void test_handshake_and_data(void **state)
{
	pair_t *p = *state;
	handshake(p, 0);
	assert_true(p->server.handshake_done);
	X509 *peer = SSL_get1_peer_certificate(p->server.ssl);
	assert_non_null(peer); /* the client certificate reached the server */
	X509_free(peer);

	static const char msg[] = "select 1";
	assert_int_equal(gw_tls_write(&p->client, msg, sizeof(msg)), 0);
	assert_true(gw_tls_pending_out(&p->client) > sizeof(msg)); /* a record, not plaintext */
	transfer(&p->client, &p->server, 0);
	char got[64];
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), (ssize_t)sizeof(msg));
	assert_memory_equal(got, msg, sizeof(msg));
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_WANT);
}

static void test_byte_by_byte(void **state)
{
	pair_t *p = *state;
	handshake(p, 1); /* every flight one byte per offer */
	char big[40000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	assert_int_equal(gw_tls_write(&p->server, big, sizeof(big)), 0);
	uint8_t *buf;
	size_t len, got = 0;
	gw_tls_out_detach(&p->server, &buf, &len);
	char out[sizeof(big)];
	for (size_t at = 0; at < len; at++) {
		gw_tls_offer(&p->client, buf + at, 1);
		ssize_t n;
		while ((n = gw_tls_read(&p->client, out + got, sizeof(out) - got)) > 0)
			got += (size_t)n;
		assert_int_equal(n, GW_TLS_READ_WANT);
		assert_int_equal(gw_tls_settle(&p->client), 0);
	}
	free(buf);
	assert_int_equal(got, sizeof(big));
	assert_memory_equal(out, big, sizeof(big));
	assert_int_equal(p->client.kept_len, 0); /* nothing left over */
}

static void test_output_sent_in_parts(void **state)
{
	pair_t *p = *state;
	handshake(p, 0);
	assert_int_equal(gw_tls_write(&p->client, "abcdef", 6), 0);
	size_t len;
	const uint8_t *out = gw_tls_out(&p->client, &len);
	assert_non_null(out);
	size_t first = len / 2;
	uint8_t copy[256];
	assert_true(len <= sizeof(copy));
	memcpy(copy, out, len);
	gw_tls_out_sent(&p->client, first);
	size_t rest;
	const uint8_t *tail = gw_tls_out(&p->client, &rest);
	assert_int_equal(rest, len - first);
	assert_memory_equal(tail, copy + first, rest); /* the unsent bytes, in order */
	gw_tls_out_sent(&p->client, rest);
	assert_null(gw_tls_out(&p->client, &rest));
	assert_int_equal(rest, 0);
}

static void test_close_notify(void **state)
{
	pair_t *p = *state;
	handshake(p, 0);
	gw_tls_close_notify(&p->client);
	transfer(&p->client, &p->server, 0);
	char got[16];
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_CLOSED);
}

static void test_garbage_fails(void **state)
{
	pair_t *p = *state;
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	gw_tls_offer(&p->server, junk, sizeof(junk) - 1);
	assert_int_equal(gw_tls_handshake(&p->server), GW_TLS_FAILED);
	assert_int_equal(gw_tls_settle(&p->server), 0);
	assert_true(p->server.error[0] != '\0');
}

/* --- offloaded ------------------------------------------------------------- */

static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                     "TLS_CHACHA20_POLY1305_SHA256"};

/* A fresh pair whose server may offload, the client offering one suite
 * (or TLS 1.2 only when suite is NULL). */
static pair_t *offload_pair(const char *suite)
{
	pair_t *p = NULL;
	assert_int_equal(setup((void **)&p), 0);
	gw_tls_finish(&p->server);
	gw_tls_finish(&p->client);
	gw_tls_ctx_allow_offload(p->server_ctx);
	SSL_CTX_set_min_proto_version(p->server_ctx, TLS1_2_VERSION);
	SSL_CTX_set_min_proto_version(p->client_ctx, TLS1_2_VERSION);
	if (suite != NULL)
		assert_int_equal(SSL_CTX_set_ciphersuites(p->client_ctx, suite), 1);
	else
		SSL_CTX_set_max_proto_version(p->client_ctx, TLS1_2_VERSION);
	assert_int_equal(gw_tls_init(&p->server, p->server_ctx, true), 0);
	assert_int_equal(gw_tls_init(&p->client, p->client_ctx, false), 0);
	return p;
}

static void pattern(char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(i * 31 + seed);
}

/* Everything `to` can read now, appended at got. */
static size_t drain(gw_tls_t *to, char *buf, size_t cap, size_t got, size_t chunk)
{
	ssize_t n;
	while (got < cap) {
		size_t room = cap - got < chunk ? cap - got : chunk;
		if ((n = gw_tls_read(to, buf + got, room)) <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static void test_offload_data(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		pair_t *p = offload_pair(suites[i]);
		handshake(p, 0);
		assert_true(gw_tls_offload(&p->server));
		assert_null(p->server.ssl);
		assert_non_null(p->server.rec);
		assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(p->client.ssl)),
		                    suites[i]);
		static char up[70000], down[70000], got[70000];
		pattern(up, sizeof(up), 1);
		pattern(down, sizeof(down), 2);
		/* client to server, whole, read in 64 KiB and in 7-byte pieces */
		assert_int_equal(gw_tls_write(&p->client, up, sizeof(up)), 0);
		transfer(&p->client, &p->server, 0);
		size_t n = drain(&p->server, got, sizeof(got), 0, 65536);
		assert_int_equal(n, sizeof(up));
		assert_memory_equal(got, up, sizeof(up));
		assert_int_equal(gw_tls_write(&p->client, up, 1000), 0);
		transfer(&p->client, &p->server, 0);
		assert_int_equal(drain(&p->server, got, sizeof(got), 0, 7), 1000);
		assert_memory_equal(got, up, 1000);
		/* client to server, one byte per offer */
		assert_int_equal(gw_tls_write(&p->client, up, 20000), 0);
		uint8_t *buf;
		size_t len;
		gw_tls_out_detach(&p->client, &buf, &len);
		n = 0;
		for (size_t at = 0; at < len; at++) {
			gw_tls_offer(&p->server, buf + at, 1);
			n = drain(&p->server, got, sizeof(got), n, 65536);
			assert_int_equal(gw_tls_settle(&p->server), 0);
		}
		free(buf);
		assert_int_equal(n, 20000);
		assert_memory_equal(got, up, 20000);
		assert_int_equal(p->server.kept_len, 0);
		/* server to client */
		assert_int_equal(gw_tls_write(&p->server, down, sizeof(down)), 0);
		transfer(&p->server, &p->client, 0);
		assert_int_equal(drain(&p->client, got, sizeof(got), 0, 65536), sizeof(down));
		assert_memory_equal(got, down, sizeof(down));
		teardown((void **)&p);
	}
}

static void test_offload_data_behind_finished(void **state)
{
	(void)state;
	pair_t *p = offload_pair(suites[0]);
	/* the client finishes on the server's flight and speaks at once: its
	 * Finished and its first records reach the server in one offer */
	assert_int_equal(gw_tls_handshake(&p->client), GW_TLS_WANT);
	transfer(&p->client, &p->server, 0);
	assert_int_equal(gw_tls_handshake(&p->server), GW_TLS_WANT);
	transfer(&p->server, &p->client, 0);
	assert_int_equal(gw_tls_handshake(&p->client), GW_TLS_DONE);
	assert_int_equal(gw_tls_write(&p->client, "first", 5), 0);
	assert_int_equal(gw_tls_write(&p->client, "second", 6), 0);
	uint8_t *buf;
	size_t len;
	gw_tls_out_detach(&p->client, &buf, &len);
	gw_tls_offer(&p->server, buf, len);
	assert_int_equal(gw_tls_handshake(&p->server), GW_TLS_DONE);
	assert_true(gw_tls_offload(&p->server));
	char got[32];
	size_t n = drain(&p->server, got, sizeof(got), 0, sizeof(got));
	assert_int_equal(gw_tls_settle(&p->server), 0);
	free(buf);
	assert_int_equal(n, 11);
	assert_memory_equal(got, "firstsecond", 11);
	teardown((void **)&p);
}

static void test_offload_key_update(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
		pair_t *p = offload_pair(suites[i]);
		handshake(p, 0);
		assert_true(gw_tls_offload(&p->server));
		for (int round = 0; round < 3; round++) {
			/* the client updates its key and asks for ours */
			assert_int_equal(SSL_key_update(p->client.ssl, SSL_KEY_UPDATE_REQUESTED),
			                 1);
			assert_int_equal(gw_tls_write(&p->client, "after update", 12), 0);
			transfer(&p->client, &p->server, 0);
			char got[32];
			assert_int_equal(drain(&p->server, got, sizeof(got), 0, sizeof(got)), 12);
			assert_memory_equal(got, "after update", 12);
			/* our KeyUpdate went out first, then data under the new key */
			assert_true(gw_tls_pending_out(&p->server) > 0);
			assert_int_equal(gw_tls_write(&p->server, "new key", 7), 0);
			transfer(&p->server, &p->client, 0);
			assert_int_equal(drain(&p->client, got, sizeof(got), 0, sizeof(got)), 7);
			assert_memory_equal(got, "new key", 7);
		}
		teardown((void **)&p);
	}
}

static void test_offload_close_notify(void **state)
{
	(void)state;
	pair_t *p = offload_pair(suites[0]);
	handshake(p, 0);
	assert_true(gw_tls_offload(&p->server));
	gw_tls_close_notify(&p->server);
	transfer(&p->server, &p->client, 0);
	char got[16];
	assert_int_equal(gw_tls_read(&p->client, got, sizeof(got)), GW_TLS_READ_CLOSED);
	assert_int_equal(gw_tls_write(&p->client, "bye", 3), 0);
	gw_tls_close_notify(&p->client);
	transfer(&p->client, &p->server, 0);
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), 3);
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_CLOSED);
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_CLOSED);
	teardown((void **)&p);
}

static void test_offload_forged_record(void **state)
{
	(void)state;
	pair_t *p = offload_pair(suites[0]);
	handshake(p, 0);
	assert_true(gw_tls_offload(&p->server));
	assert_int_equal(gw_tls_write(&p->client, "select 1", 8), 0);
	uint8_t *buf;
	size_t len;
	gw_tls_out_detach(&p->client, &buf, &len);
	buf[len - 20] ^= 1; /* one ciphertext bit */
	gw_tls_offer(&p->server, buf, len);
	char got[16];
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_FAILED);
	assert_string_equal(p->server.error, "bad record mac");
	assert_int_equal(gw_tls_settle(&p->server), 0);
	free(buf);
	/* a record that is not a protected one at all */
	static const uint8_t plain_alert[] = {21, 3, 3, 0, 2, 2, 40};
	pair_t *q = offload_pair(suites[0]);
	handshake(q, 0);
	assert_true(gw_tls_offload(&q->server));
	gw_tls_offer(&q->server, plain_alert, sizeof(plain_alert));
	assert_int_equal(gw_tls_read(&q->server, got, sizeof(got)), GW_TLS_READ_FAILED);
	assert_string_equal(q->server.error, "invalid record");
	assert_int_equal(gw_tls_settle(&q->server), 0);
	teardown((void **)&p);
	teardown((void **)&q);
}

static void test_tls12_stays_with_openssl(void **state)
{
	(void)state;
	pair_t *p = offload_pair(NULL);
	handshake(p, 0);
	assert_int_equal(SSL_version(p->server.ssl), TLS1_2_VERSION);
	assert_false(gw_tls_offload(&p->server));
	assert_non_null(p->server.ssl);
	assert_int_equal(gw_tls_write(&p->client, "still fine", 10), 0);
	transfer(&p->client, &p->server, 0);
	char got[16];
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), 10);
	teardown((void **)&p);
}

/* --- control traffic --------------------------------------------------------- */

#define KEY_UPDATE_RECORD (GW_REC_HEADER + 5 + 1 + GW_REC_TAG) /* 27 bytes */

/* n KeyUpdates from the OpenSSL client, each in a record of its own. */
static void client_key_updates(pair_t *p, int n, int type)
{
	for (int i = 0; i < n; i++) {
		assert_int_equal(SSL_key_update(p->client.ssl, type), 1);
		assert_int_equal(SSL_do_handshake(p->client.ssl), 1);
	}
}

/* What the client has sent, to the server, step bytes per offer (0: whole),
 * reading after each offer as the link does. Returns the last read's
 * result; data read is appended to got. */
static ssize_t deliver(pair_t *p, size_t step, char *got, size_t cap, size_t *n)
{
	uint8_t *buf;
	size_t len;
	ssize_t last = GW_TLS_READ_WANT;
	gw_tls_out_detach(&p->client, &buf, &len);
	for (size_t at = 0; at < len && last != GW_TLS_READ_FAILED;) {
		size_t k = step == 0 || len - at < step ? len - at : step;
		gw_tls_offer(&p->server, buf + at, k);
		while ((last = gw_tls_read(&p->server, got + *n, cap - *n)) > 0)
			*n += (size_t)last;
		assert_int_equal(gw_tls_settle(&p->server), 0);
		at += k;
	}
	free(buf);
	return last;
}

static void test_offload_key_updates_coalesced(void **state)
{
	(void)state;
	for (size_t step = 0; step <= 1; step++) {
		pair_t *p = offload_pair(suites[0]);
		handshake(p, 0);
		assert_true(gw_tls_offload(&p->server));
		char got[64];
		size_t n = 0;
		/* 20 requests, whole or one byte per read: one answer */
		client_key_updates(p, 20, SSL_KEY_UPDATE_REQUESTED);
		assert_int_equal(deliver(p, step, got, sizeof(got), &n), GW_TLS_READ_WANT);
		assert_int_equal(gw_tls_pending_out(&p->server), KEY_UPDATE_RECORD);
		/* 10 more in the same run (no data between): still one */
		client_key_updates(p, 10, SSL_KEY_UPDATE_REQUESTED);
		assert_int_equal(deliver(p, step, got, sizeof(got), &n), GW_TLS_READ_WANT);
		assert_int_equal(gw_tls_pending_out(&p->server), KEY_UPDATE_RECORD);
		/* ... they are answered before our next data, which the client reads */
		assert_int_equal(gw_tls_write(&p->server, "new key", 7), 0);
		assert_int_equal(gw_tls_pending_out(&p->server),
		                 2 * KEY_UPDATE_RECORD + GW_REC_OVERHEAD + 7);
		transfer(&p->server, &p->client, 0);
		assert_int_equal(drain(&p->client, got, sizeof(got), 0, sizeof(got)), 7);
		assert_memory_equal(got, "new key", 7);
		/* data from the client ends the run: its next request is answered */
		assert_int_equal(gw_tls_write(&p->client, "data", 4), 0);
		client_key_updates(p, 3, SSL_KEY_UPDATE_REQUESTED);
		assert_int_equal(deliver(p, step, got, sizeof(got), &n), GW_TLS_READ_WANT);
		assert_int_equal(n, 4);
		assert_memory_equal(got, "data", 4);
		assert_int_equal(gw_tls_pending_out(&p->server), KEY_UPDATE_RECORD);
		assert_int_equal(gw_tls_write(&p->server, "again", 5), 0);
		transfer(&p->server, &p->client, 0);
		assert_int_equal(drain(&p->client, got, sizeof(got), 0, sizeof(got)), 5);
		assert_memory_equal(got, "again", 5);
		teardown((void **)&p);
	}
}

/* The client reads what the server sent and must find a fatal alert. */
static void client_sees_alert(pair_t *p)
{
	char got[16];
	transfer(&p->server, &p->client, 0);
	assert_int_equal(gw_tls_read(&p->client, got, sizeof(got)), GW_TLS_READ_FAILED);
	assert_non_null(strstr(p->client.error, "unexpected message"));
}

static void test_offload_key_update_flood_cut(void **state)
{
	(void)state;
	pair_t *p = offload_pair(suites[1]);
	handshake(p, 0);
	assert_true(gw_tls_offload(&p->server));
	char got[64];
	size_t n = 0;
	/* the limit itself is fine, with data between runs */
	for (int round = 0; round < 3; round++) {
		client_key_updates(p, GW_TLS_MAX_CONTROL_RUN, SSL_KEY_UPDATE_NOT_REQUESTED);
		assert_int_equal(gw_tls_write(&p->client, "x", 1), 0);
		assert_int_equal(deliver(p, 0, got, sizeof(got), &n), GW_TLS_READ_WANT);
	}
	assert_int_equal(n, 3);
	assert_null(p->server.abuse);
	/* one more in a row is a flood: cut, with an alert and nothing after */
	client_key_updates(p, GW_TLS_MAX_CONTROL_RUN + 1, SSL_KEY_UPDATE_REQUESTED);
	assert_int_equal(deliver(p, 0, got, sizeof(got), &n), GW_TLS_READ_FAILED);
	assert_string_equal(p->server.abuse, "key update flood");
	assert_string_equal(p->server.error, "key update flood");
	assert_int_equal(gw_tls_pending_out(&p->server), GW_REC_OVERHEAD + 2); /* the alert alone */
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_FAILED);
	assert_int_equal(gw_tls_write(&p->server, "late", 4), -1);
	gw_tls_close_notify(&p->server);
	assert_int_equal(gw_tls_pending_out(&p->server), GW_REC_OVERHEAD + 2);
	client_sees_alert(p);
	teardown((void **)&p);
}

/* The client's traffic secrets, from its key log. */
static uint8_t client_secret[2][48];
static size_t client_secret_len;

static void client_keylog(const SSL *ssl, const char *line)
{
	static const char *const labels[2] = {"CLIENT_TRAFFIC_SECRET_0 ",
	                                      "SERVER_TRAFFIC_SECRET_0 "};
	(void)ssl;
	for (int i = 0; i < 2; i++) {
		if (strncmp(line, labels[i], strlen(labels[i])) != 0)
			continue;
		const char *hex = strchr(line + strlen(labels[i]), ' ') + 1;
		long len = 0;
		unsigned char *bytes = OPENSSL_hexstr2buf(hex, &len);
		assert_non_null(bytes);
		memcpy(client_secret[i], bytes, (size_t)len);
		client_secret_len = (size_t)len;
		OPENSSL_free(bytes);
	}
}

static void test_offload_empty_record_flood_cut(void **state)
{
	(void)state;
	pair_t *p = offload_pair(NULL);
	gw_tls_finish(&p->client);
	SSL_CTX_set_max_proto_version(p->client_ctx, 0);
	assert_int_equal(SSL_CTX_set_ciphersuites(p->client_ctx, suites[0]), 1);
	SSL_CTX_set_keylog_callback(p->client_ctx, client_keylog);
	assert_int_equal(gw_tls_init(&p->client, p->client_ctx, false), 0);
	handshake(p, 0);
	assert_true(gw_tls_offload(&p->server));
	/* OpenSSL sends no empty record: the client's records, sealed here */
	gw_records_t *tx =
	        gw_records_new(0x1301, client_secret[1], client_secret[0], client_secret_len);
	assert_non_null(tx);
	static uint8_t wire[64 * (GW_REC_OVERHEAD + 1)];
	size_t len = 0;
	for (int i = 0; i < GW_TLS_MAX_CONTROL_RUN; i++)
		len += gw_records_seal(tx, GW_REC_APPLICATION, NULL, 0, wire + len);
	len += gw_records_seal(tx, GW_REC_APPLICATION, (const uint8_t *)"y", 1, wire + len);
	char got[16];
	gw_tls_offer(&p->server, wire, len);
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), 1);
	assert_int_equal(gw_tls_settle(&p->server), 0);
	len = 0;
	for (int i = 0; i <= GW_TLS_MAX_CONTROL_RUN; i++)
		len += gw_records_seal(tx, GW_REC_APPLICATION, NULL, 0, wire + len);
	gw_tls_offer(&p->server, wire, len);
	assert_int_equal(gw_tls_read(&p->server, got, sizeof(got)), GW_TLS_READ_FAILED);
	assert_int_equal(gw_tls_settle(&p->server), 0);
	assert_string_equal(p->server.abuse, "empty record flood");
	client_sees_alert(p);
	gw_records_free(tx);
	teardown((void **)&p);
}

static void test_openssl_key_update_flood_cut(void **state)
{
	pair_t *p = *state; /* TLS 1.3, not offloaded: OpenSSL answers */
	handshake(p, 0);
	char got[64];
	size_t n = 0;
	client_key_updates(p, GW_TLS_MAX_CONTROL_RUN, SSL_KEY_UPDATE_REQUESTED);
	assert_int_equal(gw_tls_write(&p->client, "x", 1), 0);
	assert_int_equal(deliver(p, 0, got, sizeof(got), &n), GW_TLS_READ_WANT);
	assert_int_equal(n, 1);
	transfer(&p->server, &p->client, 0); /* OpenSSL's own answers */
	client_key_updates(p, 1000, SSL_KEY_UPDATE_REQUESTED);
	assert_int_equal(deliver(p, 0, got, sizeof(got), &n), GW_TLS_READ_FAILED);
	assert_string_equal(p->server.abuse, "key update flood");
	assert_string_equal(p->server.error, "key update flood");
	/* OpenSSL answered what it read before the limit, nothing after */
	assert_true(gw_tls_pending_out(&p->server) <= (GW_TLS_MAX_CONTROL_RUN + 1) * 27);
	assert_true(p->server.kept_len > 900 * 27); /* the rest was never read */
	assert_int_equal(gw_tls_write(&p->server, "late", 4), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_handshake_and_data, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_byte_by_byte, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_output_sent_in_parts, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_notify, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_garbage_fails, setup, teardown),
	        cmocka_unit_test(test_offload_data),
	        cmocka_unit_test(test_offload_data_behind_finished),
	        cmocka_unit_test(test_offload_key_update),
	        cmocka_unit_test(test_offload_close_notify),
	        cmocka_unit_test(test_offload_forged_record),
	        cmocka_unit_test(test_tls12_stays_with_openssl),
	        cmocka_unit_test(test_offload_key_updates_coalesced),
	        cmocka_unit_test(test_offload_key_update_flood_cut),
	        cmocka_unit_test(test_offload_empty_record_flood_cut),
	        cmocka_unit_test_setup_teardown(test_openssl_key_update_flood_cut, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
