/* Addresses: "host:port" endpoints, numeric socket addresses, CIDR networks. */
#ifndef CG_ADDR_H
#define CG_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CG_HOST_MAX 256

typedef struct cg_hostport {
	char host[CG_HOST_MAX]; /* without brackets for IPv6 */
	uint16_t port;          /* 1..65535 */
} cg_hostport_t;

/* "db.internal:5432", "10.0.0.5:5432", "[::1]:5432", "[::]:8443".
 * Rejects a missing/zero/out-of-range port, empty host, unbracketed IPv6,
 * spaces and control characters. */
bool cg_hostport_parse(const char *text, cg_hostport_t *out) __attribute__((warn_unused_result));

/* Fills ss when hp->host is a numeric IPv4/IPv6 address; false otherwise
 * (a host name: the caller resolves it). */
bool cg_hostport_to_sockaddr(const cg_hostport_t *hp, struct sockaddr_storage *ss);

/* "ip:port" or "[ip6]:port" into buf (64 bytes is always enough).
 * IPv4-mapped IPv6 addresses are shown as IPv4. */
void cg_sockaddr_format(const struct sockaddr *sa, char *buf, size_t len);

/* Same, without the port. */
void cg_sockaddr_format_ip(const struct sockaddr *sa, char *buf, size_t len);
/* 127.0.0.0/8 or ::1. */
bool cg_sockaddr_is_loopback(const struct sockaddr *sa);

typedef struct cg_cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, host bits zeroed */
	unsigned prefix;  /* 0..32 or 0..128 */
} cg_cidr_t;

/* "10.0.0.0/8", "192.168.1.7" (= /32), "::1/128", "fd00::/8". Rejects a
 * prefix out of range. Host bits set in the address are cleared. */
bool cg_cidr_parse(const char *text, cg_cidr_t *out) __attribute__((warn_unused_result));

/* Does sa (AF_INET or AF_INET6, IPv4-mapped IPv6 treated as IPv4) lie in net? */
bool cg_cidr_contains(const cg_cidr_t *net, const struct sockaddr *sa);

#endif
