/* The first bytes inside a tunnel (see pg_inner.h). */
#include "pg/pg_inner.h"

#include <stdio.h>
#include <stdint.h>

#include "pg/pg_wire.h"

static gw_end_t *client_end(gw_session_t *s)
{
	return &s->link.end[GW_CLIENT];
}

static void send_error(gw_session_t *s, const char *sqlstate, const char *message)
{
	uint8_t msg[600];
	size_t n = pgw_error_response(msg, sizeof(msg), sqlstate, message);
	if (n > 0)
		(void)gw_end_send_tls(client_end(s), msg, n);
}

static void refuse_plaintext(gw_session_t *s)
{
	static const char reason[] = "plaintext startup refused: require_inner_tls";
	gw_session_tell_status(s, reason); /* the connector's line comes first */
	send_error(s, "28000",
	           "certgate: this service requires TLS inside the tunnel "
	           "(connect with sslmode=require or stricter)");
	gw_session_deny(s, reason, "require_inner_tls");
}

/* Reads up to GW_INNER_PEEK bytes; true once they are in (or a direct TLS
 * record starts), false while more must come (or the session was closed:
 * the client left or broke TLS). */
static bool peek(gw_session_t *s)
{
	while (s->inner_len < GW_INNER_PEEK) {
		if (s->inner_len >= 1 && s->inner[0] == PGW_TLS_HANDSHAKE_BYTE)
			return true; /* direct TLS to PostgreSQL */
		ssize_t n = gw_tls_read(&client_end(s)->tls, s->inner + s->inner_len,
		                        GW_INNER_PEEK - s->inner_len);
		if (n > 0) {
			s->inner_len += (size_t)n;
			continue;
		}
		if (n == GW_TLS_READ_WANT)
			return false;
		gw_end_t *c = client_end(s);
		if (c->tls.abuse != NULL && s->state != GW_SESSION_REFUSING) {
			(void)gw_end_flush_control(c); /* its alert */
			gw_session_reject(s, c->tls.abuse, NULL);
		} else if (s->state == GW_SESSION_INNER) {
			gw_session_abandon(s); /* authorized, it left before a first message */
		} else {
			gw_session_drop(s, false); /* refused: audited already */
		}
		return false;
	}
	return true;
}

void pgf_inner_check(gw_session_t *s)
{
	bool refusing = s->state == GW_SESSION_REFUSING;
	while (peek(s)) {
		uint32_t len = pgw_get32(s->inner), code = pgw_get32(s->inner + 4);
		bool direct_tls = s->inner[0] == PGW_TLS_HANDSHAKE_BYTE;
		if (!direct_tls && len == 8 && code == PGW_GSSENC_REQUEST_CODE &&
		    !s->inner_gssenc_refused) {
			/* no GSSAPI encryption here: 'N', and the client sends
			 * its SSLRequest on the same connection */
			s->inner_gssenc_refused = true;
			s->inner_len = 0;
			gw_session_tell_status(s, NULL); /* before any byte of ours */
			if (gw_end_send_tls(client_end(s), "N", 1) < 0) {
				gw_session_drop(s, false);
				return;
			}
			continue;
		}
		bool ssl_request = !direct_tls && len == 8 && code == PGW_SSL_REQUEST_CODE;
		bool cancel = !direct_tls && len == 16 && code == PGW_CANCEL_REQUEST_CODE;
		if (refusing) {
			if (ssl_request) {
				char msg[sizeof(s->refusal) + 32];
				snprintf(msg, sizeof(msg), "certgate: access denied: %s",
				         s->refusal);
				send_error(s, "28000", msg);
			}
			gw_session_drop(s, true); /* audited when it was refused */
			return;
		}
		if (direct_tls || ssl_request || cancel) {
			client_end(s)->bytes_in = s->inner_len;
			gw_session_connect_upstream(s);
			return;
		}
		refuse_plaintext(s);
		return;
	}
}
