/* One client connection through the gateway, from accept to close:
 *
 *   PROXY header? -> TLS handshake (client certificate verified, SNI picks
 *   the service) -> claims + decision -> [first inner bytes checked when
 *   require_inner_tls] -> upstream connect with failover -> session.start ->
 *   relay -> session.end
 *
 * Every refusal on the way is audited with its reason. A started session
 * ends exactly once (session.end), whoever ends it. */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/x509.h>
#include <uv.h>

#include "gateway.h"
#include "link.h"
#include "pol_decide.h"
#include "proxy_proto.h"
#include "runtime.h"

typedef struct pgf pgf_t;

typedef enum {
	GW_SESSION_PROXY_HEADER, /* reading a PROXY protocol header */
	GW_SESSION_PG_FIRST,     /* postgres mode: SSLRequest / GSSENCRequest / ... in clear */
	GW_SESSION_HANDSHAKE,    /* TLS handshake with the client */
	GW_SESSION_PG_STARTUP,   /* postgres mode: reading the StartupMessage inside TLS */
	GW_SESSION_INNER,        /* authorized; reading the first inner bytes */
	GW_SESSION_CONNECTING,   /* authorized; connecting to an upstream (postgres mode:
	                          * and its SSLRequest, TLS and StartupMessage) */
	GW_SESSION_LIVE,         /* session.start written; relaying */
	GW_SESSION_CLOSING,
} gw_session_state_t;

#define GW_SESSION_ID_LEN 32
#define GW_INNER_PEEK     8 /* an SSLRequest / CancelRequest header */

struct gw_session {
	gw_link_t link;
	gw_gateway_t *gw;
	gw_session_t *prev, *next; /* gw->sessions */
	gw_session_state_t state;
	char id[GW_SESSION_ID_LEN];
	char client[64]; /* ip:port, after PROXY protocol */
	struct sockaddr_storage peer;
	gw_runtime_t *rt;             /* the generation that admitted it (ref) */
	const pol_service_t *service; /* in rt->snap */
	gw_handshake_t hs;
	bool got_bytes;

	/* identity, once the handshake is done. The parsed certificate (some
	 * 6 KiB in OpenSSL 3) is kept until session.start; a live session keeps
	 * its DER instead, parsed again for the rare re-checks after a reload */
	X509 *cert;
	STACK_OF(X509) * chain; /* intermediates the client sent */
	uint8_t *cert_der;      /* leaf then intermediates, DER, once stowed */
	size_t cert_der_len;
	char *cert_serial; /* hex, once stowed */
	pol_claims_t claims;
	pol_decision_t decision;
	char *counted_user; /* key in gw->user_sessions while counted */
	int64_t not_after_ms;

	uint8_t proxy_buf[GW_PP_MAX_HEADER];
	size_t proxy_len;
	uint8_t inner[GW_INNER_PEEK];
	size_t inner_len;

	/* upstream */
	uv_connect_t connect_req;
	uv_getaddrinfo_t resolve_req;
	bool resolving;
	struct addrinfo *addrs, *next_addr; /* the upstream name's addresses, in turn */
	bool zombie; /* freed while a resolve was pending: on_resolved frees */
	unsigned attempt;
	unsigned first_upstream;
	bool connect_timed_out;
	char upstream[CG_HOST_MAX + 8];
	json_t *upstream_errors; /* [{"upstream":..., "error":...}] */

	uint64_t first_byte_ns; /* uv_hrtime() of the first byte: handshake latency */
	pgf_t *pg;              /* postgres mode state, NULL in tunnel mode */
	int64_t started_ms;     /* wall clock at session.start */
	bool started;           /* session.start written */
	bool ended;             /* session.end written */
};

/* Accepts one connection from server. fixed_service: the listener's own
 * service name, NULL for a shared (SNI) listener. */
void gw_session_accept(gw_gateway_t *gw, uv_stream_t *server, const char *fixed_service);

/* Ends a session now: session.end with reason (if it started), close_notify
 * and FIN to both ends. For handshaking connections just closes. */
void gw_session_end(gw_session_t *s, const char *reason);

/* The live session with this id, or NULL. */
gw_session_t *gw_session_find(gw_gateway_t *gw, const char *id);

/* The session as GET /v1/sessions lists it (new reference). */
json_t *gw_session_json(const gw_session_t *s);

/* Re-authorizes s against rt (a newer generation): certificate re-verified
 * (CA, CRL), claims re-read, the same decision as for new connections.
 * Refused: ended with "revoked: certificate" or `revoked_reason`. Allowed:
 * s moves to rt. */
void gw_session_reauthorize(gw_session_t *s, gw_runtime_t *rt, const char *revoked_reason);

/* --- for the postgres front (pg_front.c) ------------------------------------ */

/* tls.rejected with reason, then close. */
void gw_session_reject(gw_session_t *s, const char *reason, const char *detail);
/* authz.denied with reason and the rule (or limit) that refused, then close. */
void gw_session_deny(gw_session_t *s, const char *reason, const char *rule);
/* Close without an audit event (the peer left, or nothing started). */
void gw_session_drop(gw_session_t *s, bool graceful);
/* Client bytes while handshaking (the TLS record layer). */
void gw_session_handshake_input(gw_session_t *s, const char *data, size_t len);
/* Decide (with the db user and name in postgres mode) and connect upstream. */
void gw_session_authorize(gw_session_t *s);
/* The current upstream attempt failed: note why, try the next. */
void gw_session_upstream_error(gw_session_t *s, const char *error);
/* session.start, then relay. */
void gw_session_start(gw_session_t *s);

#endif
