/* The postgres front (see pg_front.h for the flow).
 *
 * Every packet before the relay is bounded: the first packet is judged on
 * its first 8 (CancelRequest: 16) bytes, the StartupMessage may not exceed
 * PGF_MAX_STARTUP, the backend's messages up to its first ReadyForQuery are
 * buffered to at most PGF_MAX_PRELUDE. Anything else closes the connection
 * with an audited reason. What the client sends while relaying is read by
 * pg_audit.c. */
#include "pg/pg_front.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "cg_time.h"
#include "cg_utf8.h"
#include "core/gateway.h"
#include "core/session.h"
#include "pg/pg_audit.h"
#include "pg/pg_inner.h"
#include "pg/pg_wire.h"
#include "tls/minter.h"

#define PGF_MAX_PRELUDE (64 * 1024) /* backend messages before ReadyForQuery */

typedef enum {
	PGF_FIRST,   /* client: first packet in clear */
	PGF_STARTUP, /* client: StartupMessage inside TLS */
	PGF_UP_SSL,  /* upstream: waiting for the answer to our SSLRequest */
	PGF_UP_TLS,  /* upstream: TLS handshake */
	PGF_RELAY,
} pgf_phase_t;

typedef struct gw_front pgf_t;

struct gw_front {
	pgf_phase_t phase;
	bool direct_tls;
	uint8_t *buf; /* bytes of the packet being assembled */
	size_t len;
	uint8_t *startup; /* the client's StartupMessage, forwarded as is */
	size_t startup_len;
	char *db_user, *db_name, *app_name;
	/* cancel keys: the upstream's, and the one the client was given */
	bool have_key;
	uint32_t up_pid, up_secret, gw_pid, gw_secret;
	bool prelude_done; /* the backend's ReadyForQuery has passed */
	/* where the backend's messages to the client begin and end after the
	 * prelude, so an ending session can say why at a message boundary */
	uint8_t srv_hdr[5];
	uint8_t srv_hdr_len;
	uint32_t srv_body; /* body bytes of the current message still to pass */
	struct sockaddr_storage upstream_addr;
	pga_t audit; /* the client's messages while relaying */
};

static gw_end_t *client_end(gw_session_t *s)
{
	return &s->link.end[GW_CLIENT];
}

static gw_end_t *upstream_end(gw_session_t *s)
{
	return &s->link.end[GW_UPSTREAM];
}

/* --- buffers ------------------------------------------------------------- */

static bool buf_append(pgf_t *pg, const void *data, size_t len, size_t max)
{
	if (pg->len + len > max)
		return false;
	uint8_t *grown = realloc(pg->buf, pg->len + len);
	if (grown == NULL && pg->len + len > 0)
		return false;
	memcpy(grown + pg->len, data, len);
	pg->buf = grown;
	pg->len += len;
	return true;
}

static void buf_consume(pgf_t *pg, size_t n)
{
	memmove(pg->buf, pg->buf + n, pg->len - n);
	pg->len -= n;
}

/* --- accessors ----------------------------------------------------------- */

static const char *pgf_db_user(const gw_session_t *s)
{
	return s->front != NULL ? s->front->db_user : NULL;
}

static const char *pgf_db_name(const gw_session_t *s)
{
	return s->front != NULL ? s->front->db_name : NULL;
}

static void pgf_add_fields(const gw_session_t *s, json_t *f)
{
	const pgf_t *pg = s->front;
	if (pg == NULL || pg->db_user == NULL)
		return;
	/* as the client sent them: any bytes but NUL */
	cg_json_set_lossy_str(f, "db_user", pg->db_user);
	cg_json_set_lossy_str(f, "db_name", pg->db_name);
	cg_json_set_lossy_str(f, "application_name", pg->app_name);
}

/* What a CancelRequest needs of a session, copied into gw->cancel_keys
 * (under gw->lock): the request may land on another worker than the
 * session, which it must not touch. */
typedef struct cancel_key {
	uint32_t gw_secret;         /* what the client must present */
	uint32_t up_pid, up_secret; /* what the upstream handed us */
	struct sockaddr_storage upstream;
	char session[GW_SESSION_ID_LEN];
} cancel_key_t;

static void unregister_key(gw_session_t *s)
{
	pgf_t *pg = s->front;
	if (!pg->have_key)
		return;
	char key[16];
	snprintf(key, sizeof(key), "%" PRIu32, pg->gw_pid);
	cancel_key_t *ck = NULL;
	GW_LOCKED(s->gw, {
		ck = cg_strmap_get(s->gw->cancel_keys, key);
		if (ck != NULL && strcmp(ck->session, s->id) == 0)
			cg_strmap_remove(s->gw->cancel_keys, key);
		else
			ck = NULL;
	});
	free(ck);
	pg->have_key = false;
}

static void pgf_free(gw_session_t *s)
{
	pgf_t *pg = s->front;
	if (pg == NULL)
		return;
	unregister_key(s);
	free(pg->buf);
	free(pg->startup);
	free(pg->db_user);
	free(pg->db_name);
	free(pg->app_name);
	pga_finish(&pg->audit);
	free(pg);
	s->front = NULL;
}

static void pgf_client_error(gw_session_t *s, const char *sqlstate, const char *message)
{
	uint8_t msg[600];
	size_t n = pgw_error_response(msg, sizeof(msg), sqlstate, message);
	gw_end_t *c = client_end(s);
	if (n == 0)
		return;
	if (c->tls_on && c->tls.handshake_done)
		(void)gw_end_send_tls(c, msg, n);
	else if (!c->tls_on)
		(void)gw_end_send(c, msg, n);
	/* mid-handshake: no channel that psql would read; the close says it */
}

/* --- cancel requests ------------------------------------------------------ */

typedef struct cancel {
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	uv_write_t write_req;
	uint8_t msg[16];
} cancel_t;

static void cancel_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void cancel_written(uv_write_t *req, int status)
{
	cancel_t *c = req->data;
	uv_close((uv_handle_t *)&c->tcp, cancel_closed);
}

static void cancel_connected(uv_connect_t *req, int status)
{
	cancel_t *c = req->data;
	uv_buf_t b = uv_buf_init((char *)c->msg, sizeof(c->msg));
	if (status < 0 ||
	    uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, cancel_written) < 0)
		uv_close((uv_handle_t *)&c->tcp, cancel_closed);
}

/* A CancelRequest carrying (pid, secret) as the gateway handed them out:
 * forwarded, with the upstream's own key, to the upstream of the session
 * that owns it; anything else is ignored, like PostgreSQL does. */
static void handle_cancel(gw_session_t *s, const uint8_t *packet)
{
	uint32_t pid = pgw_get32(packet + 8);
	char key[16];
	snprintf(key, sizeof(key), "%" PRIu32, pid);
	cancel_key_t target;
	bool found = false;
	GW_LOCKED(s->gw, {
		const cancel_key_t *ck = cg_strmap_get(s->gw->cancel_keys, key);
		if (ck != NULL) {
			target = *ck;
			found = true;
		}
	});
	uint8_t want[4];
	if (found)
		pgw_put32(want, target.gw_secret);
	if (!found || CRYPTO_memcmp(want, packet + 12, 4) != 0) {
		/* anyone can send these, fast: rate-limited */
		cg_log_limited(&s->gw->cancel_log, CG_LOG_INFO,
		               "cancel request from %s for an unknown key: ignored", s->client);
		gw_session_drop(s, false);
		return;
	}
	cancel_t *c = calloc(1, sizeof(*c));
	if (c != NULL) {
		pgw_put32(c->msg, 16);
		pgw_put32(c->msg + 4, PGW_CANCEL_REQUEST_CODE);
		pgw_put32(c->msg + 8, target.up_pid);
		pgw_put32(c->msg + 12, target.up_secret);
		uv_tcp_init(s->worker->loop, &c->tcp);
		c->tcp.data = c->connect_req.data = c->write_req.data = c;
		if (uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&target.upstream,
		                   cancel_connected) < 0)
			uv_close((uv_handle_t *)&c->tcp, cancel_closed);
		cg_log(CG_LOG_INFO, "cancel request from %s forwarded to session %s", s->client,
		       target.session);
	}
	gw_session_drop(s, false);
}

/* --- the client's first packet, in clear ---------------------------------- */

static void pgf_accept(gw_session_t *s)
{
	s->front = calloc(1, sizeof(*s->front));
	if (s->front == NULL) {
		gw_session_drop(s, false);
		return;
	}
	s->front->phase = PGF_FIRST;
	pga_init(&s->front->audit);
	s->state = GW_SESSION_PG_FIRST;
}

static void first_packet(gw_session_t *s)
{
	pgf_t *pg = s->front;
	gw_end_t *c = client_end(s);
	while (s->state == GW_SESSION_PG_FIRST) {
		size_t len = 0;
		const char *error;
		switch (pgw_first_packet(pg->buf, pg->len, PGF_MAX_STARTUP, &len, &error)) {
		case PGW_NEED_MORE:
			return;
		case PGW_DIRECT_TLS: {
			/* PostgreSQL 17 direct TLS: what we hold is the ClientHello */
			pg->direct_tls = true;
			s->state = GW_SESSION_HANDSHAKE;
			size_t n = pg->len;
			pg->len = 0;
			gw_session_handshake_input(s, (const char *)pg->buf, n);
			return;
		}
		case PGW_SSL_REQUEST:
			/* bytes after the SSLRequest would be read as if they had come
			 * through TLS (CVE-2021-23214): refuse them */
			if (pg->len > 8) {
				gw_session_reject(s, "data after SSLRequest", NULL);
				return;
			}
			pg->len = 0;
			s->state = GW_SESSION_HANDSHAKE;
			if (gw_end_send(c, "S", 1) < 0)
				gw_session_drop(s, false);
			return;
		case PGW_GSSENC_REQUEST:
			if (pg->len > 8) {
				gw_session_reject(s, "data after GSSENCRequest", NULL);
				return;
			}
			buf_consume(pg, 8);
			if (gw_end_send(c, "N", 1) < 0) /* the client goes on with SSLRequest */
				gw_session_drop(s, false);
			return;
		case PGW_CANCEL_REQUEST:
			handle_cancel(s, pg->buf);
			return;
		case PGW_STARTUP:
			/* a StartupMessage in clear: PostgreSQL's own answer */
			pgf_client_error(s, "28000",
			                 "certgate: SSL required (connect with sslmode=require or "
			                 "stricter)");
			gw_session_reject(s, "ssl required", "plaintext StartupMessage");
			return;
		case PGW_INVALID:
			gw_session_reject(s, "invalid startup packet", error);
			return;
		}
	}
}

/* --- the StartupMessage, inside TLS -------------------------------------- */

static void startup_packet(gw_session_t *s)
{
	pgf_t *pg = s->front;
	size_t len = 0;
	const char *error;
	pgw_startup_t params;
	switch (pgw_first_packet(pg->buf, pg->len, PGF_MAX_STARTUP, &len, &error)) {
	case PGW_NEED_MORE:
		return;
	case PGW_CANCEL_REQUEST:
		handle_cancel(s, pg->buf); /* libpq 17 cancels over TLS */
		return;
	case PGW_STARTUP:
		break;
	case PGW_INVALID:
		gw_session_reject(s, "invalid startup packet", error);
		return;
	default:
		gw_session_reject(s, "invalid startup packet", "not a StartupMessage");
		return;
	}
	if (pg->len < len)
		return;
	if (pg->len > len) {
		gw_session_reject(s, "invalid startup packet", "data after the StartupMessage");
		return;
	}
	if (!pgw_parse_startup(pg->buf, len, &params)) {
		gw_session_reject(s, "invalid startup packet", "malformed parameters");
		return;
	}
	pg->db_user = strdup(params.user);
	pg->db_name = strdup(params.database);
	pg->app_name = params.application_name ? strdup(params.application_name) : NULL;
	if (pg->db_user == NULL || pg->db_name == NULL) {
		gw_session_drop(s, false);
		return;
	}
	/* PostgreSQL would cut a longer name to 63 bytes and log in to what
	 * that names: a rule on one name must not be passed by adding bytes */
	const char *too_long = strlen(pg->db_user) > PGW_NAME_MAX   ? "db user"
	                       : strlen(pg->db_name) > PGW_NAME_MAX ? "database name"
	                                                            : NULL;
	if (!pgw_replication_off(params.replication)) {
		/* a walsender is not a session on one database: the rules could
		 * not judge what it streams (a base backup is every database) */
		s->decision.rule = "replication";
		s->decision.effective_trust = s->claims.device_trust;
		gw_session_deny(s, "replication connections are not forwarded in postgres mode",
		                "replication");
		return;
	}
	if (too_long != NULL) {
		char reason[128];
		snprintf(reason, sizeof(reason),
		         "%s longer than %d bytes (PostgreSQL would cut it to another name)",
		         too_long, PGW_NAME_MAX);
		s->decision.rule = "name_too_long";
		s->decision.effective_trust = s->claims.device_trust;
		gw_session_deny(s, reason, "name_too_long");
		return;
	}
	/* nothing may follow it before the server answers: not in its TLS
	 * record, nor in the records already received after it */
	gw_end_t *c = client_end(s);
	uint8_t more;
	ssize_t n = gw_tls_read(&c->tls, &more, 1);
	if (n > 0) {
		gw_session_reject(s, "invalid startup packet", "data after the StartupMessage");
		return;
	}
	if (n != GW_TLS_READ_WANT) {
		if (c->tls.abuse != NULL) {
			(void)gw_end_flush_control(c); /* its alert */
			gw_session_reject(s, c->tls.abuse, NULL);
		} else {
			gw_session_drop(s, false); /* the client left after its startup */
		}
		return;
	}
	pg->startup = pg->buf;
	pg->startup_len = len;
	pg->buf = NULL;
	pg->len = 0;
	gw_session_authorize(s);
}

/* Reads plaintext out of the client's TLS into the packet buffer. */
static void read_startup(gw_session_t *s)
{
	pgf_t *pg = s->front;
	gw_end_t *c = client_end(s);
	uint8_t chunk[1024];
	while (s->state == GW_SESSION_PG_STARTUP) {
		ssize_t n = gw_tls_read(&c->tls, chunk, sizeof(chunk));
		if (n == GW_TLS_READ_WANT)
			break;
		if (n <= 0 && c->tls.abuse != NULL) {
			(void)gw_end_flush_control(c); /* its alert */
			gw_session_reject(s, c->tls.abuse, NULL);
			return;
		}
		if (n <= 0) {
			gw_session_drop(s, false); /* the client left before its startup */
			return;
		}
		if (!buf_append(pg, chunk, (size_t)n, PGF_MAX_STARTUP + 16)) {
			gw_session_reject(s, "invalid startup packet", "too long");
			return;
		}
		startup_packet(s);
	}
	if (s->state == GW_SESSION_PG_STARTUP)
		(void)gw_end_flush_control(c);
}

static void pgf_client_ready(gw_session_t *s)
{
	pgf_t *pg = s->front;
	if (pg == NULL) {
		/* a postgres-mode service reached by SNI on a shared listener:
		 * TLS came first, like PostgreSQL 17's direct TLS */
		s->front = pg = calloc(1, sizeof(*pg));
		if (pg == NULL) {
			gw_session_drop(s, false);
			return;
		}
		pg->direct_tls = true;
		pga_init(&pg->audit);
	}
	if (pg->direct_tls) {
		if (strcmp(client_end(s)->tls.alpn, GW_ALPN_POSTGRESQL) != 0) {
			gw_session_reject(s, "direct TLS without ALPN postgresql", NULL);
			return;
		}
	}
	pg->phase = PGF_STARTUP;
	s->state = GW_SESSION_PG_STARTUP; /* the handshake deadline still runs */
	read_startup(s);
}

/* --- the upstream: SSLRequest, TLS, StartupMessage ------------------------ */

static void pgf_upstream_connected(gw_session_t *s)
{
	pgf_t *pg = s->front;
	gw_end_t *up = upstream_end(s);
	int len = sizeof(pg->upstream_addr);
	uv_tcp_getpeername(&up->tcp, (struct sockaddr *)&pg->upstream_addr, &len);
	uv_tcp_nodelay(&up->tcp, 1);
	uint8_t req[8];
	pgw_put32(req, 8);
	pgw_put32(req + 4, PGW_SSL_REQUEST_CODE);
	pg->phase = PGF_UP_SSL;
	pg->len = 0;
	if (gw_end_send(up, req, sizeof(req)) < 0 || gw_end_read_start(up) < 0)
		gw_session_upstream_error(s, "cannot write to the upstream");
}

static void upstream_tls_start(gw_session_t *s)
{
	pgf_t *pg = s->front;
	gw_end_t *up = upstream_end(s);
	gw_pg_upstream_t *pu = gw_runtime_pg(s->rt, s->service);
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	if (pu == NULL || pu->minter == NULL) {
		gw_session_upstream_error(s, "no upstream_tls for this service");
		return;
	}
	if (gw_minter_get(pu->minter, pg->db_user, cg_wall_ms(), &cert, &key) < 0) {
		gw_session_upstream_error(s, "cannot mint a client certificate");
		return;
	}
	if (gw_tls_init(&up->tls, pu->ctx, false) < 0) {
		X509_free(cert);
		EVP_PKEY_free(key);
		gw_session_upstream_error(s, "out of memory");
		return;
	}
	up->tls_on = true;
	SSL *ssl = up->tls.ssl;
	const char *name = s->service->upstream_tls.server_name;
	int ok = SSL_use_certificate(ssl, cert) == 1 && SSL_use_PrivateKey(ssl, key) == 1 &&
	         SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
	X509_free(cert);
	EVP_PKEY_free(key);
	if (!ok) {
		gw_session_upstream_error(s, "cannot set up TLS to the upstream");
		return;
	}
	pg->phase = PGF_UP_TLS;
}

static void upstream_tls_step(gw_session_t *s)
{
	pgf_t *pg = s->front;
	gw_end_t *up = upstream_end(s);
	gw_tls_status_t st = gw_tls_handshake(&up->tls);
	int rc = gw_end_flush_tls(up);
	if (st == GW_TLS_FAILED) {
		char why[256];
		long verify = SSL_get_verify_result(up->tls.ssl);
		if (verify != X509_V_OK)
			snprintf(why, sizeof(why), "upstream certificate refused: %s",
			         X509_verify_cert_error_string(verify));
		else
			snprintf(why, sizeof(why), "upstream TLS failed: %s", up->tls.error);
		gw_session_upstream_error(s, why);
		return;
	}
	if (rc < 0) {
		gw_session_upstream_error(s, "cannot write to the upstream");
		return;
	}
	if (st != GW_TLS_DONE)
		return;
	gw_end_read_stop(up); /* the relay reads it from here on */
	if (!gw_session_still_admitted(s))
		return; /* no login upstream for a certificate or window that lapsed */
	int sent = gw_end_send_tls(up, pg->startup, pg->startup_len);
	free(pg->startup); /* up to 10 KB a session need not keep */
	pg->startup = NULL;
	pg->startup_len = 0;
	if (sent < 0) {
		gw_session_upstream_error(s, "cannot write to the upstream");
		return;
	}
	pg->phase = PGF_RELAY;
	gw_session_start(s);
}

static void upstream_input(gw_session_t *s, const char *data, ssize_t nread)
{
	pgf_t *pg = s->front;
	gw_end_t *up = upstream_end(s);
	if (nread < 0) {
		gw_session_upstream_error(s, "the upstream closed the connection during TLS setup");
		return;
	}
	if (pg->phase == PGF_UP_SSL) {
		if (data[0] != 'S') {
			gw_session_upstream_error(s, data[0] == 'N'
			                                     ? "the upstream does not accept TLS"
			                                     : "the upstream is not PostgreSQL");
			return;
		}
		if (nread > 1) {
			/* the server answered with more than 'S' (CVE-2021-23222) */
			gw_session_upstream_error(s, "data after the upstream's SSL answer");
			return;
		}
		upstream_tls_start(s);
		if (pg->phase == PGF_UP_TLS)
			upstream_tls_step(s); /* our ClientHello */
		return;
	}
	if (pg->phase == PGF_UP_TLS) {
		if (gw_tls_feed(&up->tls, data, (size_t)nread) < 0) {
			gw_session_upstream_error(s, "out of memory");
			return;
		}
		upstream_tls_step(s);
	}
}

static void pgf_input(gw_session_t *s, gw_end_t *end, const char *data, ssize_t nread)
{
	pgf_t *pg = s->front;
	if (end->id == GW_UPSTREAM) {
		upstream_input(s, data, nread);
		return;
	}
	if (nread < 0) {
		gw_session_drop(s, false); /* the client left before its session */
		return;
	}
	switch (s->state) {
	case GW_SESSION_PG_FIRST:
		if (!buf_append(pg, data, (size_t)nread, PGF_MAX_STARTUP + 16)) {
			gw_session_reject(s, "invalid startup packet", "too long");
			return;
		}
		first_packet(s);
		return;
	case GW_SESSION_PG_STARTUP:
		if (gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
			gw_session_drop(s, false);
			return;
		}
		read_startup(s);
		return;
	default:
		return; /* connecting: the client waits */
	}
}

/* --- relaying: backend key data, query audit ------------------------------ */

static void register_key(gw_session_t *s)
{
	pgf_t *pg = s->front;
	cancel_key_t *ck = calloc(1, sizeof(*ck));
	if (ck == NULL)
		return; /* the session works; its cancel requests are ignored */
	ck->up_pid = pg->up_pid;
	ck->up_secret = pg->up_secret;
	ck->upstream = pg->upstream_addr;
	snprintf(ck->session, sizeof(ck->session), "%s", s->id);
	char key[16];
	for (int tries = 0; tries < 8 && !pg->have_key; tries++) {
		uint32_t r[2];
		if (RAND_bytes((unsigned char *)r, sizeof(r)) != 1)
			break;
		pg->gw_pid = (r[0] & 0x3fffffffu) | 1u; /* positive, like a pid */
		pg->gw_secret = ck->gw_secret = r[1];
		snprintf(key, sizeof(key), "%" PRIu32, pg->gw_pid);
		GW_LOCKED(s->gw, {
			if (cg_strmap_get(s->gw->cancel_keys, key) == NULL) {
				cg_strmap_put(s->gw->cancel_keys, key, ck);
				pg->have_key = true;
			}
		});
	}
	if (!pg->have_key)
		free(ck);
}

/* Follows the backend's message framing over the bytes passed on. */
static void track_server(pgf_t *pg, const uint8_t *p, size_t len)
{
	while (len > 0) {
		if (pg->srv_body > 0) {
			size_t n = len < pg->srv_body ? len : pg->srv_body;
			pg->srv_body -= (uint32_t)n;
			p += n;
			len -= n;
			continue;
		}
		pg->srv_hdr[pg->srv_hdr_len++] = *p++;
		len--;
		if (pg->srv_hdr_len == sizeof(pg->srv_hdr)) {
			uint32_t mlen = pgw_get32(pg->srv_hdr + 1);
			pg->srv_body = mlen >= 4 ? mlen - 4 : 0;
			pg->srv_hdr_len = 0;
		}
	}
}

static void pgf_session_ending(gw_session_t *s, const char *reason)
{
	pgf_t *pg = s->front;
	/* only between two backend messages: inside one, an ErrorResponse
	 * would be read as the rest of it (before ReadyForQuery the gateway
	 * passes whole messages only) */
	if (pg == NULL || (pg->prelude_done && (pg->srv_hdr_len != 0 || pg->srv_body != 0)))
		return;
	if (pg->audit.end_sqlstate != NULL) {
		pgf_client_error(s, pg->audit.end_sqlstate, pg->audit.end_message);
		return;
	}
	char msg[256];
	snprintf(msg, sizeof(msg), "terminating connection: certgate: %s", reason);
	pgf_client_error(s, "57P01", msg);
}

/* AuthenticationSASL: PostgreSQL binds SCRAM-SHA-256-PLUS to its own TLS
 * certificate, which the client never sees across the gateway, so the
 * client must not be offered it (libpq's channel_binding=require then
 * fails on its own clear message). The client's choice is checked too
 * (pg_audit.c). Returns false when the session was ended. */
static bool sasl_offer(gw_session_t *s, uint8_t *m, size_t *n)
{
	pgf_t *pg = s->front;
	int left = pgw_sasl_drop_channel_binding(m, n);
	if (left < 0) {
		pga_end(s, &pg->audit, "upstream protocol violation", "08P01",
		        "certgate: the database sent a malformed authentication request");
		return false;
	}
	if (left == 0) {
		pga_end(s, &pg->audit, "refused: upstream offers only channel binding", "28000",
		        "certgate: the database offers only SASL mechanisms with channel binding "
		        "(SCRAM-SHA-256-PLUS), which cannot pass through the gateway");
		return false;
	}
	pg->audit.sasl_expected = true;
	return true;
}

/* Backend messages until the first ReadyForQuery: BackendKeyData gets the
 * gateway's key in place of the upstream's, AuthenticationSASL loses its
 * channel-bound mechanisms. Returns false on a protocol error (the relay
 * is ended). */
static bool prelude(gw_session_t *s, const char *data, size_t len)
{
	pgf_t *pg = s->front;
	gw_end_t *c = client_end(s);
	if (!buf_append(pg, data, len, PGF_MAX_PRELUDE)) {
		gw_session_end(s, "upstream closed");
		return false;
	}
	while (!pg->prelude_done && pg->len >= 5) {
		uint32_t mlen = pgw_get32(pg->buf + 1);
		if (mlen < 4) {
			gw_session_end(s, "upstream closed");
			return false;
		}
		size_t total = 1 + (size_t)mlen;
		if (pg->len < total)
			break;
		uint8_t *m = pg->buf;
		if (m[0] == 'K' && mlen == 12) {
			pg->up_pid = pgw_get32(m + 5);
			pg->up_secret = pgw_get32(m + 9);
			unregister_key(s);
			register_key(s);
			if (pg->have_key) {
				pgw_put32(m + 5, pg->gw_pid);
				pgw_put32(m + 9, pg->gw_secret);
			}
		}
		size_t out = total;
		if (m[0] == 'R' && mlen >= 8 && pgw_get32(m + 5) == PGW_AUTH_SASL &&
		    !sasl_offer(s, m, &out))
			return false;
		if (m[0] == 'Z')
			pg->prelude_done = true;
		if (gw_end_write(c, m, out) < 0) {
			gw_session_end(s, "client closed");
			return false;
		}
		buf_consume(pg, total);
	}
	if (pg->prelude_done && pg->len > 0) {
		/* what came after ReadyForQuery in the same read */
		track_server(pg, pg->buf, pg->len);
		if (gw_end_write(c, pg->buf, pg->len) < 0) {
			gw_session_end(s, "client closed");
			return false;
		}
		pg->len = 0;
	}
	if (pg->prelude_done) { /* the buffer served the prelude only */
		free(pg->buf);
		pg->buf = NULL;
		pg->len = 0;
	}
	return true;
}

static bool pgf_filter(gw_session_t *s, gw_end_t *from, const char *data, size_t len)
{
	pgf_t *pg = s->front;
	if (from->id == GW_UPSTREAM) {
		if (pg->prelude_done) {
			track_server(pg, (const uint8_t *)data, len);
			return false;
		}
		(void)prelude(s, data, len);
		return true;
	}
	(void)pga_client_bytes(s, &pg->audit, (const uint8_t *)data, len);
	return false; /* forwarded by the link, unless the session was ended */
}

const gw_front_ops_t pgf_ops = {
        .accept = pgf_accept,
        .input = pgf_input,
        .client_ready = pgf_client_ready,
        .upstream_connected = pgf_upstream_connected,
        .filter = pgf_filter,
        .tell_client = pgf_client_error,
        .ending = pgf_session_ending,
        .db_user = pgf_db_user,
        .db_name = pgf_db_name,
        .add_fields = pgf_add_fields,
        .free = pgf_free,
        .inner_check = pgf_inner_check,
};
