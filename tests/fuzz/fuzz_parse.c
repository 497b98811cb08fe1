/* Fuzzes the small text parsers of common/: durations (cg_duration.c),
 * "host:port" endpoints and CIDR networks (cg_addr.c), and JSON documents
 * with source positions (cg_json.c).
 *
 * The first byte picks the parser, the rest is its input:
 *   'd' duration text      parse; a value parsed must survive format+parse
 *   'f' 8-byte integer     format; the text must parse back to the value
 *   'h' host:port          parse; the canonical text must parse back alike
 *   'c' CIDR               parse; host bits clear, the network contains its
 *                          own address, IPv4 and IPv4-mapped IPv6 agree
 *   'j' JSON               parse; every value jansson sees has a position
 *   anything else          all of the text parsers and JSON on the whole input
 * Every property below is one the rest of certgate relies on. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cg_addr.h"
#include "cg_duration.h"
#include "cg_errors.h"
#include "cg_json.h"
#include "fuzz_util.h"

/* CG_DURATION_MAX_MS of cg_duration.c: 100 years of 365 days. */
#define DURATION_MAX_MS (UINT64_C(36500) * 24 * 3600 * 1000)

/* ---- durations ---- */

static void check_duration_value(uint64_t ms)
{
	char text[32], again[32];
	uint64_t back = 0;

	cg_duration_format(ms, text, sizeof(text));
	FUZZ_CHECK(strlen(text) > 0 && strlen(text) < sizeof(text));
	if (ms > DURATION_MAX_MS) {
		/* too long to configure: parse refuses what format wrote */
		FUZZ_CHECK(!cg_duration_parse(text, &back));
		return;
	}
	FUZZ_CHECK(cg_duration_parse(text, &back));
	FUZZ_CHECK(back == ms);
	cg_duration_format(back, again, sizeof(again));
	FUZZ_CHECK(strcmp(text, again) == 0);
}

static void fuzz_duration(const char *text)
{
	uint64_t ms = 0;
	char small[4];

	if (!cg_duration_parse(text, &ms))
		return;
	FUZZ_CHECK(ms <= DURATION_MAX_MS);
	check_duration_value(ms);
	/* a buffer too small still ends NUL-terminated, within its length */
	memset(small, 'x', sizeof(small));
	cg_duration_format(ms, small, sizeof(small));
	FUZZ_CHECK(memchr(small, '\0', sizeof(small)) != NULL);
}

static void fuzz_duration_value(const uint8_t *data, size_t size)
{
	uint64_t ms = 0;

	for (size_t i = 0; i < size && i < 8; i++)
		ms = ms << 8 | data[i];
	check_duration_value(ms);
	check_duration_value(ms % (DURATION_MAX_MS + 1));
}

/* ---- host:port ---- */

static void fuzz_hostport(const char *text)
{
	cg_hostport_t hp, again;
	struct sockaddr_storage ss;
	char canon[CG_HOST_MAX + 16];

	if (!cg_hostport_parse(text, &hp))
		return;
	FUZZ_CHECK(hp.port >= 1);
	FUZZ_CHECK(hp.host[0] != '\0' && strnlen(hp.host, CG_HOST_MAX) < CG_HOST_MAX);
	/* an IPv6 host is the only kind with a colon, and is written bracketed */
	snprintf(canon, sizeof(canon), strchr(hp.host, ':') ? "[%s]:%u" : "%s:%u", hp.host,
	         (unsigned)hp.port);
	FUZZ_CHECK(cg_hostport_parse(canon, &again));
	FUZZ_CHECK(strcmp(again.host, hp.host) == 0 && again.port == hp.port);

	if (cg_hostport_to_sockaddr(&hp, &ss)) {
		char shown[64];
		FUZZ_CHECK(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
		cg_sockaddr_format((const struct sockaddr *)&ss, shown, sizeof(shown));
		FUZZ_CHECK(cg_hostport_parse(shown, &again));
		FUZZ_CHECK(again.port == hp.port);
		cg_sockaddr_format_ip((const struct sockaddr *)&ss, shown, sizeof(shown));
		FUZZ_CHECK(strcmp(shown, "unknown") != 0);
	}
}

/* ---- CIDR ---- */

static const char *const probes_v4[] = {"10.1.2.3", "192.168.1.7", "127.0.0.1", "0.0.0.0",
                                        "255.255.255.255"};
static const char *const probes_v6[] = {"::1", "fd00::1", "::", "2001:db8::8:800:200c:417a",
                                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"};

static void sockaddr_v4(struct sockaddr_in *sin, const void *addr)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(5432);
	memcpy(&sin->sin_addr, addr, 4);
}

static void sockaddr_v6(struct sockaddr_in6 *sin6, const void *addr)
{
	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(5432);
	memcpy(&sin6->sin6_addr, addr, 16);
}

static void fuzz_cidr(const char *text)
{
	cg_cidr_t net, again;
	unsigned max;
	char ip[INET6_ADDRSTRLEN], canon[INET6_ADDRSTRLEN + 8];
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	if (!cg_cidr_parse(text, &net))
		return;
	FUZZ_CHECK(net.family == AF_INET || net.family == AF_INET6);
	max = net.family == AF_INET ? 32 : 128;
	FUZZ_CHECK(net.prefix <= max);
	for (unsigned bit = net.prefix; bit < max; bit++)
		FUZZ_CHECK((net.addr[bit / 8] & (0x80u >> (bit % 8))) == 0);

	/* canonical text parses back to the same network */
	FUZZ_CHECK(inet_ntop(net.family, net.addr, ip, sizeof(ip)) != NULL);
	snprintf(canon, sizeof(canon), "%s/%u", ip, net.prefix);
	FUZZ_CHECK(cg_cidr_parse(canon, &again));
	FUZZ_CHECK(again.family == net.family && again.prefix == net.prefix &&
	           memcmp(again.addr, net.addr, sizeof(net.addr)) == 0);

	/* a network contains its own address */
	if (net.family == AF_INET) {
		sockaddr_v4(&sin, net.addr);
		FUZZ_CHECK(cg_cidr_contains(&net, (const struct sockaddr *)&sin));
	} else {
		sockaddr_v6(&sin6, net.addr);
		FUZZ_CHECK(cg_cidr_contains(&net, (const struct sockaddr *)&sin6));
	}

	/* an IPv4 peer and the same peer on a dual-stack socket (IPv4-mapped
	 * IPv6) are matched alike; an IPv4 network never holds a native IPv6 */
	for (size_t i = 0; i < sizeof(probes_v4) / sizeof(probes_v4[0]); i++) {
		uint8_t a4[4], mapped[16] = {0};
		FUZZ_CHECK(inet_pton(AF_INET, probes_v4[i], a4) == 1);
		mapped[10] = mapped[11] = 0xff;
		memcpy(mapped + 12, a4, 4);
		sockaddr_v4(&sin, a4);
		sockaddr_v6(&sin6, mapped);
		FUZZ_CHECK(cg_cidr_contains(&net, (const struct sockaddr *)&sin) ==
		           cg_cidr_contains(&net, (const struct sockaddr *)&sin6));
	}
	for (size_t i = 0; i < sizeof(probes_v6) / sizeof(probes_v6[0]); i++) {
		uint8_t a6[16];
		FUZZ_CHECK(inet_pton(AF_INET6, probes_v6[i], a6) == 1);
		sockaddr_v6(&sin6, a6);
		bool in = cg_cidr_contains(&net, (const struct sockaddr *)&sin6);
		if (net.family == AF_INET)
			FUZZ_CHECK(!in);
		if (net.prefix == 0 && net.family == AF_INET6)
			FUZZ_CHECK(in);
	}
}

/* ---- JSON with positions ---- */

struct path {
	char *text;
	size_t len, cap;
};

static void path_push(struct path *p, const char *s, size_t n)
{
	if (p->len + n + 1 > p->cap) {
		size_t cap = p->cap ? p->cap : 64;
		while (cap < p->len + n + 1)
			cap *= 2;
		p->text = realloc(p->text, cap);
		FUZZ_CHECK(p->text != NULL);
		p->cap = cap;
	}
	memcpy(p->text + p->len, s, n);
	p->len += n;
	p->text[p->len] = '\0';
}

/* Every value jansson parsed was seen by the position scanner: its path
 * resolves to "name:line:col", never to the bare name. */
static void check_positions(const cg_jdoc_t *doc, const json_t *value, struct path *p,
                            cg_errors_t *errs)
{
	char where[512];
	size_t base = p->len;

	cg_jdoc_where(doc, p->text, where, sizeof(where));
	FUZZ_CHECK(strcmp(where, cg_jdoc_name(doc)) != 0);
	if (errs->count < 64)
		cg_jdoc_error(doc, errs, p->text, "value of type %d", json_typeof(value));

	if (json_is_object(value)) {
		const char *key;
		json_t *member;
		json_object_foreach((json_t *)value, key, member)
		{
			if (base > 0)
				path_push(p, ".", 1);
			path_push(p, key, strlen(key));
			check_positions(doc, member, p, errs);
			p->len = base;
			p->text[base] = '\0';
		}
	} else if (json_is_array(value)) {
		for (size_t i = 0; i < json_array_size(value); i++) {
			char seg[32];
			int n = snprintf(seg, sizeof(seg), "[%zu]", i);
			path_push(p, seg, (size_t)n);
			check_positions(doc, json_array_get(value, i), p, errs);
			p->len = base;
			p->text[base] = '\0';
		}
	}
}

static void fuzz_json(const uint8_t *data, size_t size, const char *as_path)
{
	cg_errors_t errs;
	cg_jdoc_t *doc;
	size_t len = 0;
	char where[64];

	cg_errors_init(&errs);
	doc = cg_jdoc_parse("fuzz.json", (const char *)data, size, &errs);
	if (!doc) {
		FUZZ_CHECK(errs.count == 1);
		cg_errors_finish(&errs);
		return;
	}
	FUZZ_CHECK(errs.count == 0);
	FUZZ_CHECK(cg_jdoc_text(doc, &len) != NULL && len == size);

	struct path p = {0};
	path_push(&p, "", 0);
	check_positions(doc, cg_jdoc_root(doc), &p, &errs);
	free(p.text);

	/* arbitrary paths (the input itself) and tiny buffers never overflow */
	cg_jdoc_where(doc, as_path, where, sizeof(where));
	cg_jdoc_where(doc, "", where, 1);
	FUZZ_CHECK(where[0] == '\0');
	cg_jdoc_error(doc, &errs, as_path, "%s", "fuzz");
	cg_errors_finish(&errs);
	cg_jdoc_destroy(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest = size ? data + 1 : data;
	size_t rest_size = size ? size - 1 : 0;
	uint8_t *exact;
	char *text;

	if (size > 64 * 1024)
		return 0;
	exact = fuzz_copy(rest, rest_size);
	text = fuzz_string(rest, rest_size);
	switch (size ? data[0] : 0) {
	case 'd':
		fuzz_duration(text);
		break;
	case 'f':
		fuzz_duration_value(exact, rest_size);
		break;
	case 'h':
		fuzz_hostport(text);
		break;
	case 'c':
		fuzz_cidr(text);
		break;
	case 'j':
		fuzz_json(exact, rest_size, text);
		break;
	default:
		free(exact);
		free(text);
		exact = fuzz_copy(data, size);
		text = fuzz_string(data, size);
		fuzz_duration(text);
		fuzz_hostport(text);
		fuzz_cidr(text);
		fuzz_json(exact, size, text);
		break;
	}
	free(exact);
	free(text);
	return 0;
}
