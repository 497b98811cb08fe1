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

#include "core/gateway.h"
#include "core/link.h"
#include "pol_decide.h"
#include "core/proxy_proto.h"
#include "core/runtime.h"
#include "core/worker.h"

/* The state a protocol front keeps per session (postgres mode: pg/),
 * opaque to core. */
typedef struct gw_front gw_front_t;

typedef enum {
	GW_SESSION_PROXY_HEADER, /* reading a PROXY protocol header */
	GW_SESSION_PG_FIRST,     /* postgres mode: SSLRequest / GSSENCRequest / ... in clear */
	GW_SESSION_HANDSHAKE,    /* TLS handshake with the client */
	GW_SESSION_PG_STARTUP,   /* postgres mode: reading the StartupMessage inside TLS */
	GW_SESSION_INNER,        /* authorized; reading the first inner bytes */
	GW_SESSION_ACCESS,       /* `certgate request`: its line, then the control loop's answer */
	GW_SESSION_REFUSING,     /* refused (audited); reading the first inner bytes to say
	                          * why in the inner protocol (a PostgreSQL ErrorResponse) */
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
	gw_worker_t *worker;       /* whose thread runs it */
	gw_session_t *prev, *next; /* worker->sessions */
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
	char *counted_user;                       /* key in gw->user_sessions while counted */
	char handshake_source[GW_SOURCE_KEY_LEN]; /* key in gw->handshakes while counted, or "" */
	int64_t not_before_ms;
	int64_t not_after_ms;

	uint8_t proxy_buf[GW_PP_MAX_HEADER];
	size_t proxy_len;
	uint8_t inner[GW_INNER_PEEK];
	size_t inner_len;
	bool inner_gssenc_refused; /* answered one GSSENCRequest with 'N' */
	bool status_line;          /* ALPN certgate/1: the status line is owed */
	bool status_sent;
	char refusal[200];      /* GW_SESSION_REFUSING: why, for the inner protocol */
	const char *end_detail; /* the relay's word on how it ended (a TLS error), or NULL */
	/* GW_SESSION_ACCESS: the client's line so far (session_access.c) */
	char *access_line;
	size_t access_len;
	bool access_posted; /* handed to the control loop: nothing more is read */
	/* tunnel mode, while connecting upstream: what the client sent
	 * meanwhile (plaintext, bounded), and whether it has left */
	uint8_t *early;
	size_t early_len;
	bool client_gone;
	bool connect_deferred; /* the upstream connect waits one turn of the loop */

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
	gw_front_t *front;      /* postgres mode state, NULL in tunnel mode */
	int64_t started_ms;     /* wall clock at session.start */
	bool started;           /* session.start written */
	bool ended;             /* session.end written */
};

/* A connection the acceptor handed to w (fd, already counted as open on
 * w): fixed_service is the listener's own service name, NULL for a shared
 * (SNI) listener. On w's thread. */
void gw_session_accept(gw_worker_t *w, int fd, const char *fixed_service);

/* Ends a session now: session.end with reason (if it started), close_notify
 * and FIN to both ends. For handshaking connections just closes. */
void gw_session_end(gw_session_t *s, const char *reason);

/* w's live session with this id, or NULL. On w's thread. */
gw_session_t *gw_session_find(gw_worker_t *w, const char *id);

/* The session as GET /v1/sessions lists it (new reference). */
json_t *gw_session_json(const gw_session_t *s);

/* Re-authorizes s against rt (a newer generation, or the one in force when
 * a time window changes its decision): certificate re-verified (CA, CRL),
 * claims re-read, the same decision as for new connections, as of now.
 * Refused: ended with "revoked: certificate" or `revoked_reason`. Allowed:
 * s moves to rt; permissive rules newly matching are reported. */
void gw_session_reauthorize(gw_session_t *s, gw_runtime_t *rt, const char *revoked_reason);

/* Postgres mode, and the PostgreSQL check inside a tunnel
 * (require_inner_tls), plug into a session through these: pg/ provides
 * them, the serve command sets gw->postgres. Without them, postgres-mode
 * services and require_inner_tls tunnels are refused. */
struct gw_front_ops {
	/* A connection on a postgres-mode service's listener, before TLS:
	 * sets s->front. */
	void (*accept)(gw_session_t *s);
	/* Input in a front setup state, from either end (nread < 0: EOF or
	 * error). */
	void (*input)(gw_session_t *s, gw_end_t *end, const char *data, ssize_t nread);
	/* The client's certificate passed: read what the decision needs. */
	void (*client_ready)(gw_session_t *s);
	/* TCP to the upstream is up: the front's own setup, then
	 * gw_session_start. */
	void (*upstream_connected)(gw_session_t *s);
	/* Plaintext while relaying; true when the front forwarded it. */
	bool (*filter)(gw_session_t *s, gw_end_t *from, const char *data, size_t len);
	/* Tells the client why it is refused (an ErrorResponse). */
	void (*tell_client)(gw_session_t *s, const char *sqlstate, const char *message);
	/* A live session is ended by the gateway (not by a peer). */
	void (*ending)(gw_session_t *s, const char *reason);
	/* What the decision and the audit add: db user and name. */
	const char *(*db_user)(const gw_session_t *s);
	const char *(*db_name)(const gw_session_t *s);
	void (*add_fields)(const gw_session_t *s, json_t *fields);
	void (*free)(gw_session_t *s);
	/* A tunnel with require_inner_tls, authorized: judge the first
	 * bytes inside it (s->inner), called on every input meanwhile; ends
	 * in gw_session_connect_upstream or a refusal. */
	void (*inner_check)(gw_session_t *s);
};

/* --- for the fronts and core's own session files ---------------------------- */

/* tls.rejected with reason, then close. */
void gw_session_reject(gw_session_t *s, const char *reason, const char *detail);
/* authz.denied with reason and the rule (or limit) that refused, then close. */
void gw_session_deny(gw_session_t *s, const char *reason, const char *rule);
/* Before a session touches its upstream (connected, first bytes sent,
 * session.start): its certificate or its decision's time window may have
 * lapsed while it waited for the upstream, when the live timer does not
 * run yet. False: refused (authz.denied), or ended, already. */
bool gw_session_still_admitted(gw_session_t *s);
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
/* `certgate connect`'s status line (ALPN certgate/1), once per tunnel:
 * refusal NULL says "OK", else "REFUSED <refusal>". A no-op for other
 * clients. */
void gw_session_tell_status(gw_session_t *s, const char *refusal);
/* Authorized (and the inner check passed): connect to an upstream. */
void gw_session_connect_upstream(gw_session_t *s);

/* The client left after it was authorized and before its session began:
 * one session.abandoned line, no upstream connection, close. */
void gw_session_abandon(gw_session_t *s);
/* The handshake is over (authorized): no longer counted against its source
 * address's max_handshakes_per_source. */
void gw_session_release_handshake(gw_session_t *s);
/* The deferred upstream connect (see session_upstream.c). */
void gw_session_connect_now(gw_session_t *s);
/* Client input while connecting upstream (tunnel mode). */
void gw_session_connecting_input(gw_session_t *s, const char *data, ssize_t nread);

/* core's session files (session.c, session_handshake.c, session_upstream.c,
 * session_identity.c, session_catalog.c, session_access.c) */
void gw_session_arm_live_timer(gw_session_t *s);
void gw_session_upstream_timeout(gw_session_t *s);
void gw_session_upstream_closed(gw_session_t *s);
void gw_session_stow_identity(gw_session_t *s);
bool gw_session_adopt_current_runtime(gw_session_t *s);
/* The user's catalog instead of a session (session_catalog.c): audited,
 * sent, closed. */
void gw_session_answer_catalog(gw_session_t *s);
/* An access request instead (ALPN certgate-jit/1, session_access.c):
 * start reading its line; then each input (the TLS engine fed). */
void gw_session_access_start(gw_session_t *s);
void gw_session_access_input(gw_session_t *s);
json_t *gw_session_base_fields(const gw_session_t *s);
/* user, groups, device_id, device_trust and rule (s->decision's) into f. */
void gw_session_add_identity(gw_session_t *s, json_t *f);
/* The front's fields (postgres mode: db_user, db_name) into f. */
void gw_session_add_front_fields(const gw_session_t *s, json_t *f);
/* authz.would_deny (and the observer's count) for each permissive rule of
 * s->decision that is not in before's (every one when before is NULL): at
 * admission, and at re-authorization for the rules newly matching. */
void gw_session_report_would_deny(gw_session_t *s, const pol_decision_t *before);
/* The db user and name of a postgres-mode session (NULL otherwise). */
const char *gw_session_db_user(const gw_session_t *s);
const char *gw_session_db_name(const gw_session_t *s);

#endif
