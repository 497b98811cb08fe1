/* gateway/tls_engine.c: a client engine wired to a server engine in memory,
 * no sockets. Covers the handshake with a client certificate, data both
 * ways, records arriving one byte at a time (a partial record must be kept
 * across offers), the output hand-over, close_notify and garbage input. */
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

#include "tls_engine.h"
#include "x509_build.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_handshake_and_data, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_byte_by_byte, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_output_sent_in_parts, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_close_notify, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_garbage_fails, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
