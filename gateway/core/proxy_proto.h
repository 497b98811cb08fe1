/* PROXY protocol v1 (text) and v2 (binary) header parsing, sans-IO: the
 * caller feeds the bytes received so far; the parser says whether it needs
 * more, refuses, or found the original client address and how many bytes the
 * header took. https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt */
#ifndef GW_PROXY_PROTO_H
#define GW_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GW_PP_MAX_HEADER 536 /* v2: 16 + up to 520 bytes of addresses/TLVs we accept */

typedef enum {
	GW_PP_NEED_MORE = 0, /* a valid prefix so far */
	GW_PP_OK,            /* header complete */
	GW_PP_INVALID,       /* not a PROXY header, or malformed */
} gw_pp_status_t;

typedef struct gw_pp_result {
	size_t header_len;           /* bytes to drop before the real stream */
	int has_address;             /* 0 for "PROXY UNKNOWN" / v2 LOCAL: keep the peer address */
	struct sockaddr_storage src; /* original client */
	struct sockaddr_storage dst;
	const char *error; /* static one-line reason when GW_PP_INVALID */
} gw_pp_result_t;

/* Parses data[0..len). v1 lines are at most 107 bytes; v2 headers longer
 * than GW_PP_MAX_HEADER are refused. Never reads past len. */
gw_pp_status_t gw_pp_parse(const uint8_t *data, size_t len, gw_pp_result_t *out);

#endif
