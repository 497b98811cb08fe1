/* A session's TLS handshake and its authorization: the handshake driven
 * byte by byte (SNI and the chain checked by the runtime's callbacks), the
 * identity read from the certificate, then the decision (locks, the
 * policy, per-user limits) and, in tunnel mode with require_inner_tls,
 * the check of the first bytes inside. A connection that asked for the
 * user's catalog is answered instead (session_catalog.c), or, with ALPN
 * certgate-jit/1, an access request (session_access.c). */
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "cg_time.h"
#include "core/authz.h"
#include "core/session.h"
#include "tls/x509_info.h"

/* A TLS record's first byte: a handshake (RFC 8446 5.1). */
#define TLS_HANDSHAKE_BYTE 0x16

static gw_end_t *client_end(gw_session_t *s)
{
	return &s->link.end[GW_CLIENT];
}

static void handshake_done(gw_session_t *s)
{
	gw_end_t *c = client_end(s);
	if (s->gw->observer.handshake != NULL)
		s->gw->observer.handshake(s->gw->observer.ctx,
		                          (double)(uv_hrtime() - s->first_byte_ns) / 1e9);
	SSL *ssl = c->tls.ssl;
	s->service = s->hs.service;
	s->cert = SSL_get1_peer_certificate(ssl);
	STACK_OF(X509) *sent = SSL_get_peer_cert_chain(ssl);
	s->status_line = strcmp(c->tls.alpn, GW_ALPN_CERTGATE) == 0;
	s->chain = sent != NULL ? X509_chain_up_ref(sent) : NULL;
	/* what is needed of the SSL is read: an idle TLS 1.3 session keeps
	 * about 2 KiB of record state instead of OpenSSL's 18 KiB */
	(void)gw_tls_offload(&c->tls);
	if (s->service == NULL && !s->hs.catalog) {
		gw_session_reject(s, "unknown service", NULL);
		return;
	}
	if (s->cert == NULL) {
		gw_session_reject(s, "no client certificate", NULL);
		return;
	}
	if (s->rt != s->worker->rt && !gw_session_adopt_current_runtime(s))
		return;
	s->not_before_ms = gw_cert_not_before_ms(s->cert);
	s->not_after_ms = gw_cert_not_after_ms(s->cert);
	if (!pol_claims_extract(&s->rt->snap->claims, s->cert, &s->claims)) {
		gw_session_reject(s, "cannot read certificate claims", NULL);
		return;
	}
	bool asks = strcmp(c->tls.alpn, GW_ALPN_REQUEST) == 0;
	if (asks && !s->hs.catalog) {
		gw_session_reject(
		        s, "ALPN " GW_ALPN_REQUEST " is for the server name " POL_CATALOG_SNI,
		        NULL);
		return;
	}
	if (s->hs.catalog) {
		if (asks)
			gw_session_access_start(s);
		else
			gw_session_answer_catalog(s);
		return;
	}
	if (s->service->mode == POL_MODE_POSTGRES) {
		/* the StartupMessage first (the front exists already when the
		 * service has its own listener; reached by SNI, it starts here) */
		if (s->gw->postgres == NULL)
			gw_session_reject(s, "postgres mode unavailable", NULL);
		else
			s->gw->postgres->client_ready(s);
		return;
	}
	gw_session_authorize(s);
}

void gw_session_authorize(gw_session_t *s)
{
	/* postgres mode reads its StartupMessage after the handshake: a reload
	 * may have landed since, and the decision is taken under what is in
	 * force now */
	if (s->rt != s->worker->rt && !gw_session_adopt_current_runtime(s))
		return;
	gw_authz_request_t req = {
	        .service = s->service,
	        .claims = &s->claims,
	        .source = (struct sockaddr *)&s->peer,
	        .db_user = gw_session_db_user(s),
	        .db_name = gw_session_db_name(s),
	        .cert_not_before_ms = s->not_before_ms,
	};
	if (!gw_authorize(s->gw->state, s->rt, &req, &s->decision)) {
		gw_session_deny(s, s->decision.reason, s->decision.rule);
		return;
	}
	s->counted_user = strdup(s->claims.user);
	if (s->counted_user == NULL) {
		gw_session_drop(s, false);
		return;
	}
	/* counted over every worker: taken here, given back when it ends */
	if (!gw_user_sessions_take(s->gw, s->counted_user,
	                           s->rt->snap->gateway.max_sessions_per_user)) {
		free(s->counted_user);
		s->counted_user = NULL;
		gw_session_deny(s, "too many sessions", "max_sessions_per_user");
		return;
	}
	gw_session_release_handshake(s); /* authorized: max_sessions_per_user counts it now */
	gw_session_report_would_deny(s, NULL);

	if (s->service->require_inner_tls) {
		s->state = GW_SESSION_INNER; /* the handshake deadline still runs */
		if (s->gw->postgres == NULL)
			gw_session_deny(s, "postgres support unavailable", "require_inner_tls");
		else
			s->gw->postgres->inner_check(s);
		return;
	}
	gw_session_connect_upstream(s);
}

static const char *handshake_failure_reason(gw_session_t *s)
{
	if (s->hs.refusal.reason != NULL)
		return s->hs.refusal.reason;
	switch (client_end(s)->tls.error_reason) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		return "no client certificate";
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_WRONG_VERSION_NUMBER:
		return "protocol version refused";
	case SSL_R_NO_SHARED_CIPHER:
		return "no shared cipher";
	case SSL_R_EXCESSIVE_MESSAGE_SIZE:
		/* a Certificate message over the limit (MAX_CLIENT_CHAIN_BYTES) */
		if (client_end(s)->tls.ssl != NULL &&
		    SSL_get_state(client_end(s)->tls.ssl) == TLS_ST_SR_CERT)
			return "certificate chain too large";
		return "handshake failed";
	default:
		return "handshake failed";
	}
}

static void advance_handshake(gw_session_t *s)
{
	gw_end_t *c = client_end(s);
	gw_tls_status_t st = gw_tls_handshake(&c->tls);
	int rc = gw_end_flush_tls(c); /* our flight, or the alert that ends it */
	if (st == GW_TLS_FAILED) {
		/* a reason from our own callbacks comes with the certificate it is
		 * about (if any); else OpenSSL's detail */
		gw_session_reject(s, handshake_failure_reason(s),
		                  s->hs.refusal.reason ? s->hs.refusal.detail : c->tls.error);
		return;
	}
	if (rc < 0) {
		gw_session_drop(s, false);
		return;
	}
	if (st == GW_TLS_DONE)
		handshake_done(s);
}

static bool looks_like_proxy_header(const char *data, size_t len)
{
	static const char v2[] = "\r\n\r\n\0\r\nQUIT\n";
	return (len >= 6 && memcmp(data, "PROXY ", 6) == 0) ||
	       (len >= 12 && memcmp(data, v2, 12) == 0);
}

void gw_session_handshake_input(gw_session_t *s, const char *data, size_t len)
{
	gw_end_t *c = client_end(s);
	if (!c->tls_on) {
		if ((uint8_t)data[0] != TLS_HANDSHAKE_BYTE) {
			gw_session_reject(s,
			                  looks_like_proxy_header(data, len)
			                          ? "proxy protocol header from an address not in "
			                            "proxy_protocol_from"
			                          : "not tls",
			                  NULL);
			return;
		}
		if (gw_tls_init(&c->tls, s->rt->server_ctx, true) < 0) {
			gw_session_drop(s, false);
			return;
		}
		c->tls_on = true;
		gw_handshake_attach(c->tls.ssl, &s->hs);
	}
	if (gw_tls_feed(&c->tls, data, len) < 0) {
		gw_session_drop(s, false);
		return;
	}
	advance_handshake(s);
}
