/* One HTTPS connection to the issuer: TLS terminated by certgate's own
 * engine (no client certificate), the plaintext relayed by core's link
 * over a socketpair whose other end libmicrohttpd serves. One TLS stack for
 * the whole gateway (libmicrohttpd's would be GnuTLS), and MHD still parses
 * the HTTP. */
#ifndef GW_ISSUER_CONN_H
#define GW_ISSUER_CONN_H

#include <openssl/ssl.h>
#include <uv.h>

#include "cg_strmap.h"
#include "http/http_server.h"

/* How many connections may be open at once, and how many are; the same
 * from one source (gw_source_key: an IPv4 address or an IPv6 /64), so
 * one host holding idle connections cannot take every slot. */
typedef struct gw_conn_slots {
	unsigned used, max;
	unsigned max_per_source;
	cg_strmap_t *per_source; /* source -> connections open (uintptr_t) */
} gw_conn_slots_t;

/* Accepts one connection from server: TLS with ctx, then served by http.
 * ctx NULL (no generation in force), every slot taken, or its source's
 * share taken: accepted and closed at once, so the backlog does not fill. */
void gw_issuer_conn_accept(uv_stream_t *server, SSL_CTX *ctx, gw_http_server_t *http,
                           gw_conn_slots_t *slots);

#endif
