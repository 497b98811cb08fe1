/* Tests gateway/proxy_proto.c: PROXY protocol v1/v2 headers, complete,
 * fed byte by byte, followed by payload, and every way they can be wrong.
 * Every parse gets an exactly-sized heap copy of its input, so reading past
 * len shows up under the asan and valgrind setups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/proxy_proto.h"

static gw_pp_status_t parse_copy(const void *data, size_t len, gw_pp_result_t *out)
{
	uint8_t *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, data, len);
	gw_pp_status_t st = gw_pp_parse(copy, len, out);
	free(copy);
	return st;
}

/* "ADDR:PORT" or "[ADDR]:PORT" of an AF_INET/AF_INET6 sockaddr. */
static const char *addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN];
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, size, "family %d", ss->ss_family);
	}
	return buf;
}

static void assert_addrs(const gw_pp_result_t *r, const char *src, const char *dst)
{
	char buf[80];
	assert_int_equal(r->has_address, 1);
	assert_string_equal(addr_text(&r->src, buf, sizeof(buf)), src);
	assert_string_equal(addr_text(&r->dst, buf, sizeof(buf)), dst);
}

/* Every strict prefix is NEED_MORE, the whole is OK with header_len len. */
static void assert_byte_by_byte(const uint8_t *data, size_t len)
{
	gw_pp_result_t r;
	for (size_t i = 0; i < len; i++) {
		gw_pp_status_t st = parse_copy(data, i, &r);
		if (st != GW_PP_NEED_MORE)
			fail_msg("prefix of %zu/%zu bytes: status %d (%s)", i, len, st,
			         r.error ? r.error : "");
	}
	assert_int_equal(parse_copy(data, len, &r), GW_PP_OK);
	assert_int_equal(r.header_len, len);
}

/* ---- v1 ----------------------------------------------------------------- */

static const struct {
	const char *line;
	int has_address;
	const char *src, *dst;
} v1_valid[] = {
        {"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", 1, "192.168.0.1:56324",
         "192.168.0.11:443"},
        {"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 1, "0.0.0.0:0", "255.255.255.255:65535"},
        {"PROXY TCP6 2001:db8::1 ::1 5432 8443\r\n", 1, "[2001:db8::1]:5432", "[::1]:8443"},
        {"PROXY TCP6 ::ffff:10.0.0.1 FE80::2 1 2\r\n", 1, "[::ffff:10.0.0.1]:1", "[fe80::2]:2"},
        /* The longest line the spec describes: 104 bytes. */
        {"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         1, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
         "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
        {"PROXY UNKNOWN\r\n", 0, NULL, NULL},
        /* UNKNOWN: whatever precedes CRLF is ignored. */
        {"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", 0, NULL, NULL},
};

static void test_v1_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(v1_valid) / sizeof(v1_valid[0]); i++) {
		const char *line = v1_valid[i].line;
		gw_pp_result_t r;
		gw_pp_status_t st = parse_copy(line, strlen(line), &r);
		if (st != GW_PP_OK)
			fail_msg("%s: status %d (%s)", line, st, r.error ? r.error : "");
		assert_int_equal(r.header_len, strlen(line));
		assert_int_equal(r.has_address, v1_valid[i].has_address);
		if (v1_valid[i].has_address)
			assert_addrs(&r, v1_valid[i].src, v1_valid[i].dst);
		assert_byte_by_byte((const uint8_t *)line, strlen(line));
	}
}

static const char *const v1_invalid[] = {
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",    /* no CR */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\r",  /* CR CR */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n", /* trailing space */
        "PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n", /* double space */
        "PROXY  TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n", /* missing port */
        "PROXY TCP4 192.168.0.1 192.168.0.11 1 2 3\r\n", /* extra field */
        "PROXY TCP4\r\n",
        "PROXY TCP4 \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",     /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",     /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",  /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", /* 6 digits */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n",
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", /* bad IPs */
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", /* family mismatch */
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP6 ::1 :::1 1 2\r\n",
        "PROXY TCP6 ::1 ::g 1 2\r\n",
        "PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", /* no zone ids */
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",  /* protocol */
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN\n",
        "PROXY UNKNOWN\r\r\n",
        "PROXY UNKNOWN \x01\r\n",
        "PROXY\r\n",
        "PROXY \r\n",
        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "GET / HTTP/1.1\r\n",
        "GET ",
        "\x16\x03\x01\x02\x00", /* a TLS ClientHello */
        "ROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4X",               /* bad byte: no need to wait */
        "PROXY TCP4 1.2.3.4 5.6.7.8 123456", /* port too long already */
        "PROXY TCP4 1.2.3.4.5.6.7.8.9",      /* address too long already */
};

static void test_v1_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(v1_invalid) / sizeof(v1_invalid[0]); i++) {
		const char *line = v1_invalid[i];
		size_t len = strlen(line);
		gw_pp_result_t r;
		gw_pp_status_t st = parse_copy(line, len, &r);
		if (st != GW_PP_INVALID)
			fail_msg("entry %zu \"%s\": status %d, want INVALID", i, line, st);
		assert_non_null(r.error);
		assert_true(strlen(r.error) > 0);
	}
}

static void test_v1_binary_garbage(void **state)
{
	(void)state;
	/* NUL-led inputs the string table cannot hold. */
	static const uint8_t ssl_request[] = {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f};
	static const uint8_t startup[] = {0x00, 0x00, 0x00, 0x29, 0x00, 0x03, 0x00, 0x00};
	gw_pp_result_t r;
	assert_int_equal(parse_copy(ssl_request, sizeof(ssl_request), &r), GW_PP_INVALID);
	assert_int_equal(parse_copy(startup, sizeof(startup), &r), GW_PP_INVALID);
	assert_int_equal(parse_copy("\x16", 1, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy("G", 1, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy("", 0, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("P", 1, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PRO", 3, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PROXY TCP", 9, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PROXY UNK", 9, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 31, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PROXY TCP7", 10, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy("PROXX", 5, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy("PROXY TCP4 1.2.3.4 5.6.7.8 0", 28, &r), GW_PP_NEED_MORE);
	assert_int_equal(parse_copy("PROXY TCP4 1.2.3.4 5.6.7.8 00", 29, &r), GW_PP_INVALID);
}

static void test_v1_oversized(void **state)
{
	(void)state;
	char line[300];
	gw_pp_result_t r;

	/* UNKNOWN with 200 bytes of filler: refused, complete or not. */
	memcpy(line, "PROXY UNKNOWN ", 14);
	memset(line + 14, 'a', 200);
	memcpy(line + 214, "\r\n", 2);
	assert_int_equal(parse_copy(line, 216, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy(line, 107, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy(line, 106, &r), GW_PP_NEED_MORE);

	/* Exactly 107 bytes with CRLF is the limit; 108 is one too many. */
	memset(line + 14, 'a', 91);
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(parse_copy(line, 107, &r), GW_PP_OK);
	assert_int_equal(r.header_len, 107);
	assert_int_equal(r.has_address, 0);
	memset(line + 14, 'a', 92);
	memcpy(line + 106, "\r\n", 2);
	assert_int_equal(parse_copy(line, 108, &r), GW_PP_INVALID);
	assert_int_equal(parse_copy(line, 106, &r), GW_PP_NEED_MORE);
}

static void test_v1_payload_follows(void **state)
{
	(void)state;
	static const char header[] = "PROXY TCP4 10.1.2.3 10.0.0.1 40000 5432\r\n";
	uint8_t buf[128];
	static const uint8_t ssl_request[] = {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f};
	size_t hlen = strlen(header);
	memcpy(buf, header, hlen);
	memcpy(buf + hlen, ssl_request, sizeof(ssl_request));
	gw_pp_result_t r;
	assert_int_equal(parse_copy(buf, hlen + sizeof(ssl_request), &r), GW_PP_OK);
	assert_int_equal(r.header_len, hlen);
	assert_addrs(&r, "10.1.2.3:40000", "10.0.0.1:5432");

	/* A second PROXY line right after is payload, not our business. */
	memcpy(buf + hlen, header, hlen);
	assert_int_equal(parse_copy(buf, 2 * hlen, &r), GW_PP_OK);
	assert_int_equal(r.header_len, hlen);
}

/* ---- v2 ----------------------------------------------------------------- */

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a v2 header; returns its length. */
static size_t v2(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const void *body, size_t body_len)
{
	memcpy(buf, sig, 12);
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(body_len >> 8);
	buf[15] = (uint8_t)body_len;
	if (body_len)
		memcpy(buf + 16, body, body_len);
	return 16 + body_len;
}

static const uint8_t tcp4_body[] = {
        /* 192.0.2.10 -> 198.51.100.1, 51000 -> 8443 */
        192, 0, 2, 10, 198, 51, 100, 1, 0xC7, 0x38, 0x20, 0xFB,
        /* TLVs: ALPN "h2", AUTHORITY "db.example", NOOP empty */
        0x01, 0x00, 0x02, 'h', '2', 0x02, 0x00, 0x0A, 'd', 'b', '.', 'e', 'x', 'a', 'm', 'p', 'l',
        'e', 0x04, 0x00, 0x00};

static void test_v2_tcp4(void **state)
{
	(void)state;
	uint8_t buf[GW_PP_MAX_HEADER + 64];
	size_t n = v2(buf, 0x21, 0x11, tcp4_body, sizeof(tcp4_body));
	gw_pp_result_t r;
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, n);
	assert_addrs(&r, "192.0.2.10:51000", "198.51.100.1:8443");
	assert_byte_by_byte(buf, n);

	/* Without TLVs. */
	n = v2(buf, 0x21, 0x11, tcp4_body, 12);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_addrs(&r, "192.0.2.10:51000", "198.51.100.1:8443");
}

static void test_v2_tcp6(void **state)
{
	(void)state;
	uint8_t body[36 + 5];
	struct in6_addr a, b;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::10", &a), 1);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:ffff::1", &b), 1);
	memcpy(body, &a, 16);
	memcpy(body + 16, &b, 16);
	body[32] = 0xFF;
	body[33] = 0xFF; /* 65535 */
	body[34] = 0x00;
	body[35] = 0x00;                              /* 0 */
	memcpy(body + 36, "\x05\x00\x02\xAB\xCD", 5); /* UNIQUE_ID TLV */
	uint8_t buf[128];
	size_t n = v2(buf, 0x21, 0x21, body, sizeof(body));
	gw_pp_result_t r;
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, n);
	assert_addrs(&r, "[2001:db8::10]:65535", "[2001:db8:ffff::1]:0");
	assert_byte_by_byte(buf, n);
}

static void test_v2_local_and_unspec(void **state)
{
	(void)state;
	uint8_t buf[GW_PP_MAX_HEADER + 64];
	gw_pp_result_t r;

	/* LOCAL (health checks from the balancer): keep the peer address. */
	size_t n = v2(buf, 0x20, 0x00, NULL, 0);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, 16);
	assert_int_equal(r.has_address, 0);
	assert_byte_by_byte(buf, n);

	/* LOCAL with a TLV and with an address block: discarded whole. */
	n = v2(buf, 0x20, 0x00, "\x04\x00\x03xyz", 6);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, 22);
	assert_int_equal(r.has_address, 0);
	assert_byte_by_byte(buf, n);
	n = v2(buf, 0x20, 0x11, tcp4_body, sizeof(tcp4_body));
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, n);
	assert_int_equal(r.has_address, 0);

	/* PROXY with AF_UNSPEC: no usable address. */
	n = v2(buf, 0x21, 0x00, NULL, 0);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.has_address, 0);
	assert_int_equal(r.header_len, 16);
}

static void test_v2_invalid(void **state)
{
	(void)state;
	uint8_t buf[GW_PP_MAX_HEADER + 64];
	uint8_t big[GW_PP_MAX_HEADER];
	gw_pp_result_t r;
	size_t n;
	memset(big, 0, sizeof(big));

	static const struct {
		uint8_t ver_cmd, fam;
		size_t body_len;
	} bad[] = {
	        {0x11, 0x11, 12},                    /* version 1 */
	        {0x31, 0x11, 12},                    /* version 3 */
	        {0x22, 0x11, 12},                    /* command 2 */
	        {0x2F, 0x11, 12},  {0x21, 0x12, 12}, /* UDP */
	        {0x21, 0x31, 216},                   /* AF_UNIX */
	        {0x21, 0x41, 12},                    /* family 4 */
	        {0x21, 0x13, 12},                    /* transport 3 */
	        {0x21, 0x11, 11},                    /* short address block */
	        {0x21, 0x21, 12},                    /* IPv6 needs 36 */
	        {0x21, 0x11, 13},                    /* one byte of TLV */
	        {0x21, 0x11, 14},                    /* two bytes of TLV */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = v2(buf, bad[i].ver_cmd, bad[i].fam, big, bad[i].body_len);
		if (parse_copy(buf, n, &r) != GW_PP_INVALID)
			fail_msg("bad[%zu] accepted", i);
		assert_non_null(r.error);
	}
	n = v2(buf, 0x11, 0x11, big, 12);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_INVALID);
	assert_string_equal(r.error, "unsupported PROXY v2 version");

	/* A TLV longer than the rest of the header. */
	uint8_t body[20];
	memcpy(body, tcp4_body, 12);
	memcpy(body + 12, "\x01\x00\x06h2h2h", 8); /* says 6, has 5 */
	n = v2(buf, 0x21, 0x11, body, sizeof(body));
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_INVALID);
	assert_string_equal(r.error, "bad PROXY v2 TLV");

	/* Signature broken at each position. */
	for (size_t i = 0; i < 12; i++) {
		n = v2(buf, 0x21, 0x11, tcp4_body, sizeof(tcp4_body));
		buf[i] ^= 0x40;
		if (parse_copy(buf, n, &r) != GW_PP_INVALID)
			fail_msg("signature byte %zu altered: accepted", i);
		/* Already refused with just the prefix up to the bad byte. */
		if (parse_copy(buf, i + 1, &r) != GW_PP_INVALID)
			fail_msg("signature byte %zu altered: prefix not refused", i);
	}

	/* A bad version is refused before the rest arrives. */
	n = v2(buf, 0x31, 0x11, tcp4_body, 12);
	assert_int_equal(parse_copy(buf, 13, &r), GW_PP_INVALID);
}

static void test_v2_size_limit(void **state)
{
	(void)state;
	uint8_t buf[GW_PP_MAX_HEADER + 64];
	uint8_t body[GW_PP_MAX_HEADER];
	gw_pp_result_t r;

	/* 12 bytes of addresses + one NOOP TLV filling the rest up to 520. */
	size_t body_len = GW_PP_MAX_HEADER - 16;
	memcpy(body, tcp4_body, 12);
	size_t tlv_len = body_len - 12 - 3;
	body[12] = 0x04;
	body[13] = (uint8_t)(tlv_len >> 8);
	body[14] = (uint8_t)tlv_len;
	memset(body + 15, 0, tlv_len);
	size_t n = v2(buf, 0x21, 0x11, body, body_len);
	assert_int_equal(n, GW_PP_MAX_HEADER);
	assert_int_equal(parse_copy(buf, n, &r), GW_PP_OK);
	assert_int_equal(r.header_len, GW_PP_MAX_HEADER);

	/* One byte more: refused as soon as the length field is in. */
	tlv_len++;
	body[13] = (uint8_t)(tlv_len >> 8);
	body[14] = (uint8_t)tlv_len;
	buf[14] = (uint8_t)((body_len + 1) >> 8);
	buf[15] = (uint8_t)(body_len + 1);
	assert_int_equal(parse_copy(buf, 16, &r), GW_PP_INVALID);
	assert_string_equal(r.error, "PROXY v2 header too long");
	buf[14] = 0xFF;
	buf[15] = 0xFF;
	assert_int_equal(parse_copy(buf, 16, &r), GW_PP_INVALID);
}

static void test_v2_payload_follows(void **state)
{
	(void)state;
	uint8_t buf[256];
	size_t n = v2(buf, 0x21, 0x11, tcp4_body, sizeof(tcp4_body));
	/* A TLS ClientHello right behind the header. */
	memcpy(buf + n, "\x16\x03\x01\x00\xc8\x01", 6);
	gw_pp_result_t r;
	assert_int_equal(parse_copy(buf, n + 6, &r), GW_PP_OK);
	assert_int_equal(r.header_len, n);
	assert_addrs(&r, "192.0.2.10:51000", "198.51.100.1:8443");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_v1_valid),
	        cmocka_unit_test(test_v1_invalid),
	        cmocka_unit_test(test_v1_binary_garbage),
	        cmocka_unit_test(test_v1_oversized),
	        cmocka_unit_test(test_v1_payload_follows),
	        cmocka_unit_test(test_v2_tcp4),
	        cmocka_unit_test(test_v2_tcp6),
	        cmocka_unit_test(test_v2_local_and_unspec),
	        cmocka_unit_test(test_v2_invalid),
	        cmocka_unit_test(test_v2_size_limit),
	        cmocka_unit_test(test_v2_payload_follows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
