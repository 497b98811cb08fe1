/* cg_addr: text and binary forms of network endpoints. "host:port" strings
 * from the configuration become cg_hostport_t; numeric hosts become
 * sockaddrs; peers' sockaddrs become "ip:port" for audit lines; CIDR strings
 * from rules and proxy_protocol_from become cg_cidr_t and are matched
 * against peers. IPv4-mapped IPv6 addresses (what a dual-stack listener
 * reports for an IPv4 client) are treated as the IPv4 address everywhere. */
#include "cg_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* The 12-byte prefix of an IPv4-mapped IPv6 address, ::ffff:0:0/96. */
static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* 1..65535, decimal digits only (no sign, no spaces). */
static bool parse_port(const char *p, uint16_t *port)
{
	size_t n = strlen(p);
	if (n == 0 || n > 5)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* A host name or IPv4 literal: 1..255 printable characters that cannot be
 * confused with other URL/endpoint syntax. */
static bool valid_host(const char *host, size_t len)
{
	if (len == 0 || len >= CG_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];
		if (c <= ' ' || c == 0x7f || c == '/' || c == '@' || c == ':' || c == '[' ||
		    c == ']')
			return false;
	}
	return true;
}

bool cg_hostport_parse(const char *text, cg_hostport_t *out)
{
	if (!text || !*text)
		return false;

	const char *host;
	size_t host_len;
	const char *port;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return false;
		host = text + 1;
		host_len = (size_t)(close - host);
		port = close + 2;
		if (host_len == 0 || host_len >= INET6_ADDRSTRLEN)
			return false;
		char tmp[INET6_ADDRSTRLEN];
		struct in6_addr a6;
		memcpy(tmp, host, host_len);
		tmp[host_len] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return false;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon)
			return false;
		host = text;
		host_len = (size_t)(colon - text);
		port = colon + 1;
		/* valid_host rejects ':' — so an unbracketed IPv6 fails here. */
		if (!valid_host(host, host_len))
			return false;
	}

	uint16_t port_num;
	if (!parse_port(port, &port_num))
		return false;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	out->port = port_num;
	return true;
}

bool cg_hostport_to_sockaddr(const cg_hostport_t *hp, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, hp->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(hp->port);
		return true;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET6, hp->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(hp->port);
		return true;
	}
	memset(ss, 0, sizeof(*ss));
	return false;
}

/* The address of sa as bytes, with IPv4-mapped IPv6 unwrapped to IPv4.
 * Returns the family (AF_INET / AF_INET6) or 0 for anything else. */
static int sockaddr_ip(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		memcpy(addr, &sin->sin_addr, 4);
		*port = ntohs(sin->sin_port);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = sin6->sin6_addr.s6_addr;
		*port = ntohs(sin6->sin6_port);
		if (memcmp(b, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
			memcpy(addr, b + 12, 4);
			return AF_INET;
		}
		memcpy(addr, b, 16);
		return AF_INET6;
	}
	return 0;
}

static void format(const struct sockaddr *sa, bool with_port, char *buf, size_t len)
{
	uint8_t addr[16];
	uint16_t port = 0;
	char ip[INET6_ADDRSTRLEN];

	if (len == 0)
		return;
	int family = sockaddr_ip(sa, addr, &port);
	if (family == 0 || !inet_ntop(family, addr, ip, sizeof(ip))) {
		snprintf(buf, len, "unknown");
		return;
	}
	if (!with_port)
		snprintf(buf, len, "%s", ip);
	else if (family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, (unsigned)port);
	else
		snprintf(buf, len, "%s:%u", ip, (unsigned)port);
}

void cg_sockaddr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	format(sa, true, buf, len);
}

void cg_sockaddr_format_ip(const struct sockaddr *sa, char *buf, size_t len)
{
	format(sa, false, buf, len);
}

/* Do the first prefix bits of a and b agree? */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;
	if (memcmp(a, b, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool cg_cidr_parse(const char *text, cg_cidr_t *out)
{
	char ip[INET6_ADDRSTRLEN];

	if (!text)
		return false;
	const char *slash = strchr(text, '/');
	size_t ip_len = slash ? (size_t)(slash - text) : strlen(text);
	if (ip_len == 0 || ip_len >= sizeof(ip))
		return false;
	memcpy(ip, text, ip_len);
	ip[ip_len] = '\0';

	cg_cidr_t net = {0};
	unsigned max_prefix;
	if (inet_pton(AF_INET, ip, net.addr) == 1) {
		net.family = AF_INET;
		max_prefix = 32;
	} else if (inet_pton(AF_INET6, ip, net.addr) == 1) {
		net.family = AF_INET6;
		max_prefix = 128;
	} else {
		return false;
	}

	net.prefix = max_prefix;
	if (slash) {
		const char *p = slash + 1;
		size_t n = strlen(p);
		if (n == 0 || n > 3)
			return false;
		unsigned v = 0;
		for (size_t i = 0; i < n; i++) {
			if (p[i] < '0' || p[i] > '9')
				return false;
			v = v * 10 + (unsigned)(p[i] - '0');
		}
		if (v > max_prefix)
			return false;
		net.prefix = v;
	}

	/* Clear host bits so equality on the first prefix bits is the test. */
	for (unsigned bit = net.prefix; bit < max_prefix; bit++)
		net.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	*out = net;
	return true;
}

bool cg_cidr_contains(const cg_cidr_t *net, const struct sockaddr *sa)
{
	uint8_t addr[16];
	uint16_t port;
	int family = sockaddr_ip(sa, addr, &port);

	if (family == 0)
		return false;
	if (family == net->family) {
		return prefix_equal(net->addr, addr, net->prefix);
	}
	if (net->family == AF_INET6 && family == AF_INET) {
		/* An IPv6 network written over the mapped range (::ffff:0:0/96,
		 * or ::/0) also covers IPv4 peers. */
		uint8_t mapped[16];
		memcpy(mapped, v4mapped_prefix, 12);
		memcpy(mapped + 12, addr, 4);
		return prefix_equal(net->addr, mapped, net->prefix);
	}
	/* An IPv4 network against a native IPv6 peer: never. (A mapped peer
	 * was already unwrapped to IPv4 above.) */
	return false;
}

bool cg_sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}
