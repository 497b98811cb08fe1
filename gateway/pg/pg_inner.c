/* The first bytes inside a require_inner_tls tunnel (see pg_inner.h). */
#include "pg/pg_inner.h"

#include <stdint.h>

#include "pg/pg_wire.h"

static void refuse_plaintext(gw_session_t *s)
{
	uint8_t msg[600];
	size_t n = pgw_error_response(msg, sizeof(msg), "28000",
	                              "certgate: this service requires TLS inside the tunnel "
	                              "(connect with sslmode=require or stricter)");
	(void)gw_end_send_tls(&s->link.end[GW_CLIENT], msg, n);
	gw_session_deny(s, "plaintext startup refused: require_inner_tls", "require_inner_tls");
}

/* Reads plaintext up to the first GW_INNER_PEEK bytes and judges them. */
void pgf_inner_check(gw_session_t *s)
{
	gw_end_t *c = &s->link.end[GW_CLIENT];
	while (s->inner_len < GW_INNER_PEEK) {
		if (s->inner_len >= 1 && s->inner[0] == PGW_TLS_HANDSHAKE_BYTE)
			break; /* direct TLS to PostgreSQL */
		ssize_t n =
		        gw_tls_read(&c->tls, s->inner + s->inner_len, GW_INNER_PEEK - s->inner_len);
		if (n > 0) {
			s->inner_len += (size_t)n;
			continue;
		}
		if (n == GW_TLS_READ_WANT)
			return;
		gw_session_drop(s, false); /* the client left or broke TLS before a first message */
		return;
	}
	c->bytes_in = s->inner_len;
	if (s->inner[0] == PGW_TLS_HANDSHAKE_BYTE) {
		gw_session_connect_upstream(s);
		return;
	}
	uint32_t len = pgw_get32(s->inner), code = pgw_get32(s->inner + 4);
	if ((len == 8 && code == PGW_SSL_REQUEST_CODE) ||
	    (len == 16 && code == PGW_CANCEL_REQUEST_CODE)) {
		gw_session_connect_upstream(s);
		return;
	}
	refuse_plaintext(s);
}
