/* PROXY protocol header parser (v1 text, v2 binary), sans-IO.
 *
 * A load balancer in front of the gateway prepends one header to the stream
 * naming the original client. The caller accumulates the first bytes of a
 * connection and calls gw_pp_parse() after every read: NEED_MORE while what
 * arrived so far can still become a valid header, OK with the addresses and
 * the header length once it is complete, INVALID as soon as it cannot. The
 * parser is deliberately strict (exact spacing, canonical ports, addresses
 * checked with inet_pton, well-formed TLVs): the header decides which client
 * address is audited and matched against `sources`, so a sloppy parse is a
 * spoofing vector. https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt */
#include "core/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

#define V1_MAX_LINE 107 /* "PROXY TCP6 <45> <45> 65535 65535\r\n" plus slack, per the spec */
#define V2_SIG_LEN  12
#define V2_HDR_LEN  16

static const uint8_t v2_signature[V2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_prefix[] = "PROXY ";

/* ---- v1 ----------------------------------------------------------------- */

enum field_kind { FIELD_IPV4, FIELD_IPV6, FIELD_PORT };

static bool field_char_ok(enum field_kind kind, uint8_t c)
{
	if (c >= '0' && c <= '9')
		return true;
	switch (kind) {
	case FIELD_IPV4:
		return c == '.';
	case FIELD_IPV6:
		return c == ':' || c == '.' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
	case FIELD_PORT:
		return false;
	}
	return false;
}

static size_t field_max(enum field_kind kind)
{
	switch (kind) {
	case FIELD_IPV4:
		return INET_ADDRSTRLEN - 1;
	case FIELD_IPV6:
		return INET6_ADDRSTRLEN - 1;
	case FIELD_PORT:
		return 5;
	}
	return 0;
}

/* Checks the partial or complete field text[0..n). */
static bool field_prefix_ok(enum field_kind kind, const uint8_t *text, size_t n)
{
	if (n > field_max(kind))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!field_char_ok(kind, text[i]))
			return false;
	/* A port is "0" or has no leading zero. */
	if (kind == FIELD_PORT && n >= 2 && text[0] == '0')
		return false;
	return true;
}

static bool parse_port(const uint8_t *text, size_t n, uint16_t *port)
{
	if (n == 0 || !field_prefix_ok(FIELD_PORT, text, n))
		return false;
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (uint32_t)(text[i] - '0');
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* Fills sa (AF_INET or AF_INET6) from the address text and port. */
static bool set_address(int family, const uint8_t *text, size_t n, uint16_t port,
                        struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, text, n);
	buf[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1)
			return false;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
			return false;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	}
	return true;
}

static gw_pp_status_t invalid(gw_pp_result_t *out, const char *reason)
{
	out->error = reason;
	return GW_PP_INVALID;
}

/* The line is "PROXY UNKNOWN[ anything]\r\n" or
 * "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" with single spaces. */
static gw_pp_status_t parse_v1(const uint8_t *data, size_t len, gw_pp_result_t *out)
{
	static const char *const bad = "bad PROXY v1 line";
	size_t avail = len < V1_MAX_LINE ? len : V1_MAX_LINE;
	size_t prefix_len = sizeof(v1_prefix) - 1;

	if (memcmp(data, v1_prefix, avail < prefix_len ? avail : prefix_len) != 0)
		return invalid(out, "not a PROXY protocol header");
	if (avail < prefix_len)
		return GW_PP_NEED_MORE;

	/* The protocol token. */
	size_t pos = prefix_len;
	size_t start = pos;
	while (pos < avail && data[pos] != ' ' && data[pos] != '\r')
		pos++;
	size_t tok_len = pos - start;
	static const char *const protos[] = {"TCP4", "TCP6", "UNKNOWN"};
	int proto = -1;
	bool could_grow = false;
	for (int i = 0; i < 3; i++) {
		size_t plen = strlen(protos[i]);
		if (tok_len <= plen && memcmp(data + start, protos[i], tok_len) == 0) {
			if (tok_len == plen)
				proto = i;
			else
				could_grow = true;
		}
	}
	if (pos == avail) {
		if ((proto >= 0 || could_grow) && avail < V1_MAX_LINE)
			return GW_PP_NEED_MORE;
		return invalid(out, proto >= 0 || could_grow ? "PROXY v1 line too long"
		                                             : "unsupported PROXY v1 protocol");
	}
	if (proto < 0)
		return invalid(out, "unsupported PROXY v1 protocol");

	if (proto == 2) {
		/* UNKNOWN: the receiver ignores everything up to CRLF. */
		while (pos < avail && data[pos] != '\r') {
			if (data[pos] < 0x20 || data[pos] > 0x7e)
				return invalid(out, bad);
			pos++;
		}
		if (pos == avail)
			return avail < V1_MAX_LINE ? GW_PP_NEED_MORE
			                           : invalid(out, "PROXY v1 line too long");
		if (pos + 1 == avail)
			return avail < V1_MAX_LINE ? GW_PP_NEED_MORE
			                           : invalid(out, "PROXY v1 line too long");
		if (data[pos + 1] != '\n')
			return invalid(out, bad);
		out->header_len = pos + 2;
		out->has_address = 0;
		return GW_PP_OK;
	}

	int family = proto == 0 ? AF_INET : AF_INET6;
	enum field_kind addr_kind = proto == 0 ? FIELD_IPV4 : FIELD_IPV6;
	const enum field_kind kinds[4] = {addr_kind, addr_kind, FIELD_PORT, FIELD_PORT};
	const uint8_t *field[4];
	size_t field_len[4];

	if (data[pos] != ' ')
		return invalid(out, bad);
	pos++;
	for (int f = 0; f < 4; f++) {
		uint8_t delim = f < 3 ? ' ' : '\r';
		start = pos;
		while (pos < avail && data[pos] != delim) {
			if (!field_char_ok(kinds[f], data[pos]))
				return invalid(out, bad);
			pos++;
		}
		if (!field_prefix_ok(kinds[f], data + start, pos - start))
			return invalid(out, bad);
		if (pos == avail)
			return avail < V1_MAX_LINE ? GW_PP_NEED_MORE
			                           : invalid(out, "PROXY v1 line too long");
		if (pos == start)
			return invalid(out, bad); /* empty field: double space */
		field[f] = data + start;
		field_len[f] = pos - start;
		pos++; /* the delimiter */
	}
	/* pos is just past '\r'. */
	if (pos == avail)
		return avail < V1_MAX_LINE ? GW_PP_NEED_MORE
		                           : invalid(out, "PROXY v1 line too long");
	if (data[pos] != '\n')
		return invalid(out, bad);
	pos++;

	uint16_t sport, dport;
	if (!parse_port(field[2], field_len[2], &sport) ||
	    !parse_port(field[3], field_len[3], &dport))
		return invalid(out, "bad port in PROXY v1 line");
	if (!set_address(family, field[0], field_len[0], sport, &out->src) ||
	    !set_address(family, field[1], field_len[1], dport, &out->dst))
		return invalid(out, "bad address in PROXY v1 line");
	out->header_len = pos;
	out->has_address = 1;
	return GW_PP_OK;
}

/* ---- v2 ----------------------------------------------------------------- */

#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1

#define V2_AF_UNSPEC 0x0
#define V2_AF_INET   0x1
#define V2_AF_INET6  0x2
#define V2_AF_UNIX   0x3

#define V2_PROTO_UNSPEC 0x0
#define V2_PROTO_STREAM 0x1
#define V2_PROTO_DGRAM  0x2

#define V2_INET_LEN  12 /* 4 + 4 + 2 + 2 */
#define V2_INET6_LEN 36 /* 16 + 16 + 2 + 2 */

static bool tlvs_ok(const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (n < 3)
			return false;
		size_t tlv_len = ((size_t)p[1] << 8) | p[2];
		if (tlv_len > n - 3)
			return false;
		p += 3 + tlv_len;
		n -= 3 + tlv_len;
	}
	return true;
}

static gw_pp_status_t parse_v2(const uint8_t *data, size_t len, gw_pp_result_t *out)
{
	if (memcmp(data, v2_signature, len < V2_SIG_LEN ? len : V2_SIG_LEN) != 0)
		return invalid(out, "not a PROXY protocol header");
	if (len < V2_SIG_LEN + 1)
		return GW_PP_NEED_MORE;

	uint8_t ver_cmd = data[12];
	if ((ver_cmd >> 4) != 0x2)
		return invalid(out, "unsupported PROXY v2 version");
	uint8_t cmd = ver_cmd & 0x0f;
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return invalid(out, "unsupported PROXY v2 command");
	if (len < V2_SIG_LEN + 2)
		return GW_PP_NEED_MORE;

	uint8_t fam = data[13] >> 4, proto = data[13] & 0x0f;
	if (fam > V2_AF_UNIX || proto > V2_PROTO_DGRAM)
		return invalid(out, "bad PROXY v2 address family");
	/* Under PROXY, only TCP over IPv4/IPv6 carries an address we can use;
	 * UNSPEC means "keep the connection's own peer address". */
	size_t need = 0;
	if (cmd == V2_CMD_PROXY && fam != V2_AF_UNSPEC) {
		if (proto != V2_PROTO_STREAM || fam == V2_AF_UNIX)
			return invalid(out, "unsupported PROXY v2 address family");
		need = fam == V2_AF_INET ? V2_INET_LEN : V2_INET6_LEN;
	}
	if (len < V2_HDR_LEN)
		return GW_PP_NEED_MORE;

	size_t body_len = ((size_t)data[14] << 8) | data[15];
	if (V2_HDR_LEN + body_len > GW_PP_MAX_HEADER)
		return invalid(out, "PROXY v2 header too long");
	if (body_len < need)
		return invalid(out, "PROXY v2 address block too short");
	if (len < V2_HDR_LEN + body_len)
		return GW_PP_NEED_MORE;

	/* LOCAL and UNSPEC blocks are discarded whole (the spec says the
	 * family is then ignored, so their layout is unknown); otherwise the
	 * TLVs after the addresses must tile the rest exactly. */
	const uint8_t *body = data + V2_HDR_LEN;
	if (need > 0 && !tlvs_ok(body + need, body_len - need))
		return invalid(out, "bad PROXY v2 TLV");

	out->header_len = V2_HDR_LEN + body_len;
	out->has_address = 0;
	memset(&out->src, 0, sizeof(out->src));
	memset(&out->dst, 0, sizeof(out->dst));
	if (need == V2_INET_LEN) {
		struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;
		src->sin_family = AF_INET;
		dst->sin_family = AF_INET;
		memcpy(&src->sin_addr, body, 4);
		memcpy(&dst->sin_addr, body + 4, 4);
		memcpy(&src->sin_port, body + 8, 2); /* already network order */
		memcpy(&dst->sin_port, body + 10, 2);
		out->has_address = 1;
	} else if (need == V2_INET6_LEN) {
		struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;
		src->sin6_family = AF_INET6;
		dst->sin6_family = AF_INET6;
		memcpy(&src->sin6_addr, body, 16);
		memcpy(&dst->sin6_addr, body + 16, 16);
		memcpy(&src->sin6_port, body + 32, 2);
		memcpy(&dst->sin6_port, body + 34, 2);
		out->has_address = 1;
	}
	return GW_PP_OK;
}

gw_pp_status_t gw_pp_parse(const uint8_t *data, size_t len, gw_pp_result_t *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return GW_PP_NEED_MORE;
	if (data[0] == (uint8_t)v1_prefix[0])
		return parse_v1(data, len, out);
	if (data[0] == v2_signature[0])
		return parse_v2(data, len, out);
	return invalid(out, "not a PROXY protocol header");
}
