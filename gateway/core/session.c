/* A client connection through the gateway (see session.h for the flow).
 *
 * Setup input (PROXY header, TLS handshake, the first inner bytes) arrives
 * through the link's setup_input; once the upstream is connected and
 * session.start is written, the link relays on its own. The link timer
 * serves every deadline in turn: handshake, upstream connect, then idle and
 * certificate notAfter. */
#include "core/session.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "cg_addr.h"
#include "cg_time.h"
#include "cg_utf8.h"
#include "core/authz.h"
#include "tls/x509_info.h"

/* A TLS record's first byte: a handshake (RFC 8446 5.1). */
#define TLS_HANDSHAKE_BYTE 0x16

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static const gw_link_ops_t session_ops;
static void on_setup_input(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread);

/* The front's hooks when the session has a front (postgres mode). */
static const gw_front_ops_t *front(const gw_session_t *s)
{
	return s->front != NULL ? s->gw->postgres : NULL;
}

const char *gw_session_db_user(const gw_session_t *s)
{
	return front(s) != NULL ? front(s)->db_user(s) : NULL;
}

const char *gw_session_db_name(const gw_session_t *s)
{
	return front(s) != NULL ? front(s)->db_name(s) : NULL;
}

void gw_session_add_front_fields(const gw_session_t *s, json_t *f)
{
	if (front(s) != NULL)
		front(s)->add_fields(s, f);
}

static gw_end_t *client_end(gw_session_t *s)
{
	return &s->link.end[GW_CLIENT];
}

static gw_end_t *upstream_end(gw_session_t *s)
{
	return &s->link.end[GW_UPSTREAM];
}

/* --- audit fields -------------------------------------------------------- */

json_t *gw_session_base_fields(const gw_session_t *s)
{
	json_t *f = json_object();
	json_object_set_new(f, "session", json_string(s->id));
	json_object_set_new(f, "client", json_string(s->client));
	const pol_service_t *svc = s->service != NULL ? s->service : s->hs.service;
	if (svc != NULL)
		json_object_set_new(f, "service", json_string(svc->name));
	return f;
}

void gw_session_add_identity(gw_session_t *s, json_t *f)
{
	json_t *groups = json_array();
	for (size_t i = 0; i < s->claims.n_groups; i++)
		json_array_append_new(groups, json_string(s->claims.groups[i]));
	json_object_set_new(f, "user", s->claims.user ? json_string(s->claims.user) : json_null());
	json_object_set_new(f, "groups", groups);
	json_object_set_new(f, "device_id",
	                    s->claims.device_id ? json_string(s->claims.device_id) : json_null());
	json_object_set_new(f, "device_trust",
	                    json_string(pol_trust_name(s->decision.effective_trust)));
	json_object_set_new(f, "rule", json_string(s->decision.rule));
}

static void add_cert(json_t *f, X509 *cert, bool session_start)
{
	char buf[512];
	if (cert == NULL)
		return;
	if (!session_start) {
		gw_cert_subject(cert, buf, sizeof(buf));
		cg_json_set_lossy_str(f, "subject", buf);
	}
	gw_cert_serial_hex(cert, buf, sizeof(buf));
	json_object_set_new(f, session_start ? "cert_serial" : "serial", json_string(buf));
	if (session_start) {
		char sha[65];
		gw_cert_sha256_hex(cert, sha);
		json_object_set_new(f, "cert_sha256", json_string(sha));
	}
	char ts[CG_RFC3339_LEN];
	cg_rfc3339_ms(gw_cert_not_after_ms(cert), ts);
	json_object_set_new(f, session_start ? "cert_not_after" : "not_after", json_string(ts));
}

/* --- ending -------------------------------------------------------------- */

static void release_user(gw_session_t *s)
{
	if (s->counted_user == NULL)
		return;
	gw_user_sessions_give(s->gw, s->counted_user);
	free(s->counted_user);
	s->counted_user = NULL;
}

/* Counts s among the handshakes of its source (s->peer), or refuses it
 * when max_handshakes_per_source are in progress there already. */
static bool count_handshake(gw_session_t *s)
{
	char key[GW_SOURCE_KEY_LEN];
	uint32_t limit = s->rt->snap->gateway.max_handshakes_per_source;
	gw_source_key((struct sockaddr *)&s->peer, key, sizeof(key));
	if (!gw_handshakes_take(s->gw, key, limit)) {
		gw_session_reject(s, "too many handshakes from this source", NULL);
		return false;
	}
	memcpy(s->handshake_source, key, sizeof(key));
	return true;
}

/* s is authorized, or gone: no longer a handshake of its source. */
void gw_session_release_handshake(gw_session_t *s)
{
	if (s->handshake_source[0] == '\0')
		return;
	gw_handshakes_give(s->gw, s->handshake_source);
	s->handshake_source[0] = '\0';
}

/* Closes a connection that never became a session. */
void gw_session_drop(gw_session_t *s, bool graceful)
{
	if (s->state == GW_SESSION_CLOSING)
		return;
	s->state = GW_SESSION_CLOSING;
	release_user(s);
	gw_session_release_handshake(s);
	gw_link_close(&s->link, graceful);
}

/* tls.rejected: the handshake failed or the certificate was refused. */
void gw_session_reject(gw_session_t *s, const char *reason, const char *detail)
{
	json_t *f = gw_session_base_fields(s);
	cg_json_set_lossy_str(f, "reason", reason);
	if (detail != NULL && strcmp(detail, reason) != 0)
		cg_json_set_lossy_str(f, "detail", detail);
	if (s->hs.sni[0] != '\0')
		cg_json_set_lossy_str(f, "sni", s->hs.sni); /* any bytes but NUL */
	add_cert(f, s->cert != NULL ? s->cert : s->hs.cert, false);
	gw_count_refusal(s->gw, "tls.rejected", reason);
	(void)gw_audit(s->gw, "tls.rejected", f);
	gw_session_tell_status(s, reason); /* refused after the handshake */
	gw_session_drop(s, true);          /* graceful: the alert already queued still goes out */
}

void gw_session_tell_status(gw_session_t *s, const char *refusal)
{
	if (!s->status_line || s->status_sent)
		return;
	s->status_sent = true;
	char line[sizeof(s->refusal) + 16];
	int n = refusal == NULL ? snprintf(line, sizeof(line), "OK\n")
	                        : snprintf(line, sizeof(line), "REFUSED %s\n", refusal);
	if (n > 0 && (size_t)n < sizeof(line))
		(void)gw_end_send_tls(client_end(s), line, (size_t)n);
}

/* A tunnel refused right after its handshake: its client may speak
 * PostgreSQL inside (psql through the connector), and libpq shows an
 * ErrorResponse sent in place of the SSLRequest's answer. Keep reading the
 * first inner bytes for a moment so the front can say why in that
 * protocol; anything else, or nothing, is closed. */
#define REFUSING_WAIT_MS 2000

static bool say_why_inside(gw_session_t *s, const char *reason)
{
	if (s->front != NULL || s->gw->postgres == NULL || s->state != GW_SESSION_HANDSHAKE ||
	    !client_end(s)->tls_on || !client_end(s)->tls.handshake_done)
		return false;
	snprintf(s->refusal, sizeof(s->refusal), "%s", reason);
	s->state = GW_SESSION_REFUSING;
	gw_link_arm(&s->link, REFUSING_WAIT_MS);
	s->gw->postgres->inner_check(s);
	return true;
}

/* authz.denied: the policy (or a limit) refused an authenticated client.
 * rule: the deciding rule, or the name of the limit that refused (also the
 * bounded label metrics count it under). */
void gw_session_deny(gw_session_t *s, const char *reason, const char *rule)
{
	if (front(s) != NULL) {
		char msg[256];
		snprintf(msg, sizeof(msg), "certgate: access denied: %s", reason);
		front(s)->tell_client(s, "28000", msg);
	}
	json_t *f = gw_session_base_fields(s);
	gw_session_add_identity(s, f);
	gw_session_add_front_fields(s, f);
	json_object_set_new(f, "rule", json_string(rule));
	/* the reason may quote the db user and name the client sent */
	cg_json_set_lossy_str(f, "reason", reason);
	gw_count_refusal(s->gw, "authz.denied", rule);
	(void)gw_audit(s->gw, "authz.denied", f);
	/* its handshake is over: while the refusal is told (up to 2 s) it
	 * must not count against its source's max_handshakes_per_source */
	gw_session_release_handshake(s);
	gw_session_tell_status(s, reason);
	if (!say_why_inside(s, reason))
		gw_session_drop(s, true);
}

void gw_session_abandon(gw_session_t *s)
{
	json_t *f = gw_session_base_fields(s);
	gw_session_add_identity(s, f);
	json_object_set_new(f, "reason", json_string("client closed before the session began"));
	s->gw->counters.abandoned++;
	(void)gw_audit(s->gw, "session.abandoned", f);
	gw_session_drop(s, true);
}

void gw_session_end(gw_session_t *s, const char *reason)
{
	if (s->state == GW_SESSION_CLOSING)
		return;
	if (s->started && !s->ended) {
		s->ended = true;
		json_t *f = gw_session_base_fields(s);
		json_object_set_new(f, "user", json_string(s->claims.user));
		json_object_set_new(f, "bytes_up",
		                    json_integer((json_int_t)client_end(s)->bytes_in));
		json_object_set_new(f, "bytes_down",
		                    json_integer((json_int_t)upstream_end(s)->bytes_in));
		json_object_set_new(f, "duration_ms",
		                    json_integer((json_int_t)(cg_wall_ms() - s->started_ms)));
		json_object_set_new(f, "reason", json_string(reason));
		if (s->end_detail != NULL && s->end_detail[0] != '\0')
			cg_json_set_lossy_str(f, "detail", s->end_detail);
		(void)gw_audit(s->gw, "session.end", f);
		s->gw->n_live--;
		/* the peers' own closes need no word from us */
		if (front(s) != NULL && strcmp(reason, "client closed") != 0 &&
		    strcmp(reason, "upstream closed") != 0)
			front(s)->ending(s, reason);
		if (s->gw->observer.bytes != NULL)
			s->gw->observer.bytes(s->gw->observer.ctx, s->service->name,
			                      client_end(s)->bytes_in, upstream_end(s)->bytes_in);
	}
	gw_session_drop(s, true);
}

static void on_freed(gw_link_t *link)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	gw_worker_t *w = s->worker;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	release_user(s);
	gw_session_release_handshake(s);
	gw_handshake_finish(&s->hs);
	X509_free(s->cert);
	sk_X509_pop_free(s->chain, X509_free);
	free(s->cert_der);
	free(s->cert_serial);
	pol_claims_finish(&s->claims);
	free(s->early);
	free(s->access_line);
	json_decref(s->upstream_errors);
	uv_freeaddrinfo(s->addrs);
	if (front(s) != NULL)
		front(s)->free(s);
	gw_runtime_unref(s->rt);
	s->rt = NULL;
	if (s->resolving)
		s->zombie = true; /* the resolver thread still holds resolve_req */
	else
		free(s);
	gw_worker_connection_closed(w); /* the last one out of a drain finishes it */
}

/* --- timers -------------------------------------------------------------- */

/* Live sessions: the nearest of the idle deadline, the end of the
 * certificate's validity, which includes its notAfter second as the
 * handshake's check does (gw_valid_until_ms), and the instant a time window
 * could change the decision (then it is taken again). */
void gw_session_arm_live_timer(gw_session_t *s)
{
	int64_t now = cg_wall_ms();
	int64_t due = gw_valid_until_ms(s->not_after_ms) - now;
	if (s->decision.valid_until_ms - now < due)
		due = s->decision.valid_until_ms - now;
	uint64_t idle = s->rt->snap->gateway.idle_timeout_ms;
	if (idle > 0) {
		uint64_t quiet = uv_now(s->worker->loop) - s->link.last_active;
		int64_t idle_due = quiet >= idle ? 0 : (int64_t)(idle - quiet);
		if (idle_due < due)
			due = idle_due;
	}
	gw_link_arm(&s->link, due > 0 ? (uint64_t)due : 0);
}

static void on_timer(gw_link_t *link)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	switch (s->state) {
	case GW_SESSION_PROXY_HEADER:
	case GW_SESSION_PG_FIRST:
	case GW_SESSION_HANDSHAKE:
	case GW_SESSION_PG_STARTUP:
	case GW_SESSION_INNER:
	case GW_SESSION_ACCESS:
		gw_session_reject(s, "handshake timeout", NULL);
		return;
	case GW_SESSION_REFUSING:
		gw_session_drop(s, true); /* refused and audited already */
		return;
	case GW_SESSION_CONNECTING:
		gw_session_upstream_timeout(s);
		return;
	case GW_SESSION_LIVE: {
		if (cg_wall_ms() >= gw_valid_until_ms(s->not_after_ms)) {
			gw_session_end(s, "certificate expired");
			return;
		}
		uint64_t idle = s->rt->snap->gateway.idle_timeout_ms;
		if (idle > 0 && uv_now(s->worker->loop) - s->link.last_active >= idle) {
			gw_session_end(s, "idle timeout");
			return;
		}
		if (cg_wall_ms() >= s->decision.valid_until_ms) {
			/* a time window closed (or a deny rule's opened): decide again;
			 * still admitted, the timer is armed anew */
			gw_session_reauthorize(s, s->worker->rt, "revoked: policy");
			return;
		}
		gw_session_arm_live_timer(s);
		return;
	}
	case GW_SESSION_CLOSING:
		return;
	}
}

/* --- session start and relay -------------------------------------------- */

bool gw_session_still_admitted(gw_session_t *s)
{
	int64_t now = cg_wall_ms();
	if (now >= gw_valid_until_ms(s->not_after_ms)) {
		gw_session_deny(s, "certificate expired", "certificate expired");
		return false;
	}
	if (now >= s->decision.valid_until_ms) {
		gw_session_state_t before = s->state;
		gw_session_reauthorize(s, s->worker->rt, "revoked: policy");
		return s->state == before;
	}
	return true;
}

void gw_session_start(gw_session_t *s)
{
	if (!gw_session_still_admitted(s))
		return;
	gw_end_t *up = upstream_end(s);
	up->connected = true;
	uv_tcp_nodelay(&up->tcp, 1);
	uv_tcp_keepalive(&up->tcp, 1, 60);

	json_t *f = gw_session_base_fields(s);
	gw_session_add_identity(s, f);
	gw_session_add_front_fields(s, f);
	json_object_set_new(f, "upstream", json_string(s->upstream));
	add_cert(f, s->cert, true);
	if (!gw_audit_or_refuse(s->gw, "session.start", f)) {
		/* fail closed: no audited start, no session (the refusal cannot be
		 * audited either: it is logged and counted) */
		gw_count_refusal(s->gw, "session.start", "audit unavailable");
		cg_log_limited(&s->gw->audit_refusal_log, CG_LOG_ERROR,
		               "refusing session %s of %s: audit unavailable", s->id,
		               s->claims.user);
		if (front(s) != NULL)
			front(s)->tell_client(s, "57P03",
			                      "certgate: audit unavailable, try again later");
		gw_session_tell_status(s, "audit unavailable");
		gw_session_drop(s, true);
		return;
	}
	s->started = true;
	s->started_ms = cg_wall_ms();
	gw_session_tell_status(s, NULL);
	gw_session_stow_identity(s);
	s->state = GW_SESSION_LIVE;
	s->gw->n_live++;
	s->gw->counters.sessions++;
	if ((s->inner_len > 0 && gw_end_send(up, s->inner, s->inner_len) < 0) ||
	    (s->early_len > 0 && gw_end_send(up, s->early, s->early_len) < 0)) {
		gw_session_end(s, "upstream closed");
		return;
	}
	client_end(s)->bytes_in += s->early_len;
	free(s->early);
	s->early = NULL;
	s->early_len = 0;
	gw_session_arm_live_timer(s);
	gw_link_relay(&s->link);
}

static void on_relay_done(gw_link_t *link, const char *reason, const char *detail)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	s->end_detail = detail; /* the link's, alive while the line is written */
	gw_session_end(s, reason);
	s->end_detail = NULL;
}

static void proxy_input(gw_session_t *s, const char *data, size_t len)
{
	size_t room = sizeof(s->proxy_buf) - s->proxy_len;
	size_t take = len < room ? len : room;
	memcpy(s->proxy_buf + s->proxy_len, data, take);
	s->proxy_len += take;
	gw_pp_result_t pp;
	switch (gw_pp_parse(s->proxy_buf, s->proxy_len, &pp)) {
	case GW_PP_NEED_MORE:
		if (s->proxy_len == sizeof(s->proxy_buf))
			gw_session_reject(s, "invalid proxy protocol header", "header too long");
		return;
	case GW_PP_INVALID:
		gw_session_reject(s, "invalid proxy protocol header", pp.error);
		return;
	case GW_PP_OK:
		break;
	}
	if (pp.has_address) {
		memcpy(&s->peer, &pp.src, sizeof(s->peer));
		cg_sockaddr_format((struct sockaddr *)&s->peer, s->client, sizeof(s->client));
	}
	/* counted from here, under the header's address (LOCAL, UNKNOWN: the
	 * balancer's); counting the balancer's own address from accept would
	 * refuse a reconnect storm before any header is read */
	if (!count_handshake(s))
		return;
	s->state = s->front != NULL ? GW_SESSION_PG_FIRST : GW_SESSION_HANDSHAKE;
	/* what followed the header: the buffered rest, then the rest of this
	 * read, as one input (a front judges its first packet whole: a TLS
	 * ClientHello, or an SSLRequest with nothing after it) */
	size_t rest_buffered = s->proxy_len - pp.header_len;
	size_t rest_read = take < len ? len - take : 0;
	if (rest_buffered == 0 && rest_read == 0)
		return;
	if (rest_buffered == 0 || rest_read == 0) {
		const char *rest =
		        rest_read == 0 ? (const char *)s->proxy_buf + pp.header_len : data + take;
		on_setup_input(&s->link, client_end(s), rest, (ssize_t)(rest_buffered + rest_read));
		return;
	}
	char *joined = malloc(rest_buffered + rest_read);
	if (joined == NULL) {
		gw_session_drop(s, false);
		return;
	}
	memcpy(joined, s->proxy_buf + pp.header_len, rest_buffered);
	memcpy(joined + rest_buffered, data + take, rest_read);
	on_setup_input(&s->link, client_end(s), joined, (ssize_t)(rest_buffered + rest_read));
	free(joined);
}

static void on_setup_input(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	if (front(s) != NULL && (s->state == GW_SESSION_CONNECTING || end->id == GW_UPSTREAM)) {
		front(s)->input(s, end, data, nread); /* the upstream's side of the setup */
		return;
	}
	if (s->state == GW_SESSION_CONNECTING) {
		if (end->id == GW_CLIENT)
			gw_session_connecting_input(s, data, nread);
		return;
	}
	if (nread < 0) {
		/* the client left before its session started */
		if (s->state == GW_SESSION_INNER)
			gw_session_abandon(s); /* authorized already */
		else if (s->state == GW_SESSION_ACCESS && s->access_posted)
			gw_session_drop(s, false); /* asked: the control loop audits it */
		else if (s->got_bytes && s->state != GW_SESSION_REFUSING)
			gw_session_reject(s, "client closed during handshake",
			                  uv_strerror((int)nread));
		else
			gw_session_drop(s, false);
		return;
	}
	if (!s->got_bytes)
		s->first_byte_ns = uv_hrtime();
	s->got_bytes = true;
	switch (s->state) {
	case GW_SESSION_PROXY_HEADER:
		proxy_input(s, data, (size_t)nread);
		return;
	case GW_SESSION_HANDSHAKE:
		gw_session_handshake_input(s, data, (size_t)nread);
		return;
	case GW_SESSION_PG_FIRST:
	case GW_SESSION_PG_STARTUP:
		front(s)->input(s, end, data, nread);
		return;
	case GW_SESSION_INNER:
	case GW_SESSION_REFUSING:
		if (gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
			gw_session_drop(s, false);
			return;
		}
		s->gw->postgres->inner_check(s);
		return;
	case GW_SESSION_ACCESS:
		if (s->access_posted)
			return; /* one line is read, and it is being answered */
		if (gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
			gw_session_drop(s, false);
			return;
		}
		gw_session_access_input(s);
		return;
	default:
		return;
	}
}

/* --- accept --------------------------------------------------------------- */

static void make_id(gw_gateway_t *gw, char *buf)
{
	snprintf(buf, GW_SESSION_ID_LEN, "%08" PRIx32 "-%" PRIu64, gw->instance,
	         (uint64_t)atomic_fetch_add(&gw->next_session, 1) + 1);
}

static bool from_proxy(const pol_gateway_t *g, const struct sockaddr *sa)
{
	for (size_t i = 0; i < g->n_proxy_protocol_from; i++)
		if (cg_cidr_contains(&g->proxy_protocol_from[i], sa))
			return true;
	return false;
}

void gw_session_accept(gw_worker_t *w, int fd, const char *fixed_service)
{
	gw_gateway_t *gw = w->gw;
	gw_session_t *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		cg_log_limited(&gw->accept_log, CG_LOG_ERROR, "accept: out of memory");
		close(fd);
		gw_worker_connection_closed(w);
		return;
	}
	s->gw = gw;
	s->worker = w;
	gw_link_init(&s->link, w->loop, &session_ops);
	/* linked in before anything can fail: on_freed unlinks */
	s->rt = gw_runtime_ref(w->rt);
	s->hs.rt = s->rt;
	make_id(gw, s->id);
	s->next = w->sessions;
	if (w->sessions != NULL)
		w->sessions->prev = s;
	w->sessions = s;
	s->state = GW_SESSION_HANDSHAKE;
	gw_end_t *c = client_end(s);
	int rc = gw_end_open(&s->link, GW_CLIENT);
	if (rc == 0) {
		rc = uv_tcp_open(&c->tcp, fd);
		if (rc < 0)
			close(fd);
	} else {
		close(fd);
	}
	if (rc < 0) {
		cg_log_limited(&gw->accept_log, CG_LOG_WARN, "accept: %s", uv_strerror(rc));
		gw_session_drop(s, false);
		return;
	}
	gw->counters.accepted++;
	c->connected = true;
	int len = sizeof(s->peer);
	uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&s->peer, &len);
	cg_sockaddr_format((struct sockaddr *)&s->peer, s->client, sizeof(s->client));
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_keepalive(&c->tcp, 1, 60);

	const pol_gateway_t *g = &s->rt->snap->gateway;
	if (fixed_service != NULL) {
		s->hs.service = pol_snapshot_service(s->rt->snap, fixed_service);
		s->hs.service_fixed = true;
		s->service = s->hs.service;
	}
	if (gw->draining) {
		gw_session_drop(s, false);
		return;
	}
	if (gw->n_connections > g->max_connections) {
		gw_session_reject(s, "too many connections", NULL);
		return;
	}
	bool proxied = from_proxy(g, (struct sockaddr *)&s->peer);
	if (!proxied && !count_handshake(s)) /* proxied: once the header is read */
		return;
	if (s->service != NULL && s->service->mode == POL_MODE_POSTGRES) {
		if (gw->postgres == NULL) {
			gw_session_reject(s, "postgres mode unavailable", NULL);
			return;
		}
		gw->postgres->accept(s); /* before TLS: the wire protocol's first packet */
	}
	if (proxied)
		s->state = GW_SESSION_PROXY_HEADER;
	gw_link_arm(&s->link, g->handshake_timeout_ms);
	if (gw_end_read_start(c) < 0)
		gw_session_drop(s, false);
}

/* --- admin views ---------------------------------------------------------- */

gw_session_t *gw_session_find(gw_worker_t *w, const char *id)
{
	for (gw_session_t *s = w->sessions; s != NULL; s = s->next)
		if (s->started && !s->ended && strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

json_t *gw_session_json(const gw_session_t *s)
{
	char started[CG_RFC3339_LEN], not_after[CG_RFC3339_LEN], serial[128];
	cg_rfc3339_ms(s->started_ms, started);
	cg_rfc3339_ms(s->not_after_ms, not_after);
	if (s->cert_serial != NULL)
		snprintf(serial, sizeof(serial), "%s", s->cert_serial);
	else
		gw_cert_serial_hex(s->cert, serial, sizeof(serial));
	json_t *groups = json_array();
	for (size_t i = 0; i < s->claims.n_groups; i++)
		json_array_append_new(groups, json_string(s->claims.groups[i]));
	json_t *j = json_pack(
	        "{s:s, s:s, s:o, s:s?, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "id",
	        s->id, "user", s->claims.user, "groups", groups, "device_id", s->claims.device_id,
	        "device_trust", pol_trust_name(s->decision.effective_trust), "service",
	        s->service->name, "upstream", s->upstream, "client", s->client, "started", started,
	        "cert_not_after", not_after, "cert_serial", serial, "bytes_up",
	        (json_int_t)s->link.end[GW_CLIENT].bytes_in, "bytes_down",
	        (json_int_t)s->link.end[GW_UPSTREAM].bytes_in, "rule", s->decision.rule);
	gw_session_add_front_fields(s, j);
	return j;
}

static void on_end_closed(gw_link_t *link, gw_end_t *end)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	if (end->id == GW_UPSTREAM)
		gw_session_upstream_closed(s);
}

static bool on_filter(gw_link_t *link, gw_end_t *from, const char *data, size_t len)
{
	gw_session_t *s = container_of(link, gw_session_t, link);
	return front(s) != NULL && front(s)->filter(s, from, data, len);
}

static const gw_link_ops_t session_ops = {
        .setup_input = on_setup_input,
        .filter = on_filter,
        .relay_done = on_relay_done,
        .timer = on_timer,
        .end_closed = on_end_closed,
        .freed = on_freed,
};
