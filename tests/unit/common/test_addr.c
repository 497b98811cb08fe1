/* Tests common/cg_addr.c: host:port parsing, sockaddr conversion and
 * formatting, CIDR parsing and matching (including IPv4-mapped IPv6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "cg_addr.h"

static const struct {
	const char *text;
	const char *host;
	uint16_t port;
} hp_valid[] = {
        {"db.internal:5432", "db.internal", 5432},
        {"10.0.0.5:5432", "10.0.0.5", 5432},
        {"0.0.0.0:8443", "0.0.0.0", 8443},
        {"[::1]:5432", "::1", 5432},
        {"[::]:8443", "::", 8443},
        {"[fd00::1:2]:1", "fd00::1:2", 1},
        {"[::ffff:10.0.0.1]:65535", "::ffff:10.0.0.1", 65535},
        {"localhost:80", "localhost", 80},
        {"a:1", "a", 1},
        {"under_score-host.example:9", "under_score-host.example", 9},
};

static const char *const hp_invalid[] = {
        "",
        "db.internal",
        "db.internal:",
        ":5432",
        "db.internal:0",
        "db.internal:65536",
        "db.internal:99999",
        "db.internal:123456",
        "db.internal:+80",
        "db.internal:-80",
        "db.internal: 80",
        "db.internal:80 ",
        "db.internal:8o",
        "db internal:80",
        " db.internal:80",
        "db\tinternal:80",
        "db\x01:80",
        "db\x7f:80",
        "user@db:80",
        "db/x:80",
        "::1:5432",
        "fd00::1:5432",
        "[::1]",
        "[::1]5432",
        "[::1]:",
        "[::1]:0",
        "[]:80",
        "[db.internal]:80",
        "[10.0.0.1]:80",
        "[::1]]:80",
        "[::1:80",
        "::1]:80",
        "[::1]:80:80",
};

static bool loopback(const char *text)
{
	cg_hostport_t hp;
	struct sockaddr_storage ss;
	assert_true(cg_hostport_parse(text, &hp));
	assert_true(cg_hostport_to_sockaddr(&hp, &ss));
	return cg_sockaddr_is_loopback((const struct sockaddr *)&ss);
}

static void test_loopback(void **state)
{
	(void)state;
	assert_true(loopback("127.0.0.1:5432"));
	assert_true(loopback("127.255.0.9:1"));
	assert_true(loopback("[::1]:5432"));
	assert_false(loopback("0.0.0.0:5432"));
	assert_false(loopback("10.0.0.1:5432"));
	assert_false(loopback("128.0.0.1:5432"));
	assert_false(loopback("[::]:5432"));
	assert_false(loopback("[::ffff:10.0.0.1]:5432"));
}

static void test_hostport_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hp_valid) / sizeof(hp_valid[0]); i++) {
		cg_hostport_t hp;
		if (!cg_hostport_parse(hp_valid[i].text, &hp))
			fail_msg("\"%s\" should parse", hp_valid[i].text);
		assert_string_equal(hp.host, hp_valid[i].host);
		assert_int_equal(hp.port, hp_valid[i].port);
	}
}

static void test_hostport_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hp_invalid) / sizeof(hp_invalid[0]); i++) {
		cg_hostport_t hp;
		if (cg_hostport_parse(hp_invalid[i], &hp))
			fail_msg("\"%s\" should be rejected", hp_invalid[i]);
	}
	cg_hostport_t hp;
	assert_false(cg_hostport_parse(NULL, &hp));
}

static void test_hostport_length(void **state)
{
	(void)state;
	char text[300];
	cg_hostport_t hp;

	memset(text, 'a', 255);
	strcpy(text + 255, ":1");
	assert_true(cg_hostport_parse(text, &hp));
	assert_int_equal(strlen(hp.host), 255);

	memset(text, 'a', 256);
	strcpy(text + 256, ":1");
	assert_false(cg_hostport_parse(text, &hp));
}

static void test_hostport_to_sockaddr(void **state)
{
	(void)state;
	cg_hostport_t hp;
	struct sockaddr_storage ss;
	char buf[64];

	assert_true(cg_hostport_parse("10.0.0.5:5432", &hp));
	assert_true(cg_hostport_to_sockaddr(&hp, &ss));
	assert_int_equal(ss.ss_family, AF_INET);
	cg_sockaddr_format((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "10.0.0.5:5432");
	cg_sockaddr_format_ip((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "10.0.0.5");

	assert_true(cg_hostport_parse("[fd00::1]:8443", &hp));
	assert_true(cg_hostport_to_sockaddr(&hp, &ss));
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 8443);
	cg_sockaddr_format((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "[fd00::1]:8443");
	cg_sockaddr_format_ip((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "fd00::1");

	/* Mapped addresses read as IPv4. */
	assert_true(cg_hostport_parse("[::ffff:192.0.2.7]:443", &hp));
	assert_true(cg_hostport_to_sockaddr(&hp, &ss));
	assert_int_equal(ss.ss_family, AF_INET6);
	cg_sockaddr_format((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.7:443");
	cg_sockaddr_format_ip((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_string_equal(buf, "192.0.2.7");

	assert_true(cg_hostport_parse("db.internal:5432", &hp));
	assert_false(cg_hostport_to_sockaddr(&hp, &ss));
}

static void test_sockaddr_format_longest(void **state)
{
	(void)state;
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(65535)};
	char buf[64];
	assert_int_equal(
	        inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:fffe:ffff:ffff", &sin6.sin6_addr), 1);
	cg_sockaddr_format((struct sockaddr *)&sin6, buf, sizeof(buf));
	assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:fffe:ffff:ffff]:65535");

	char tiny[8];
	cg_sockaddr_format((struct sockaddr *)&sin6, tiny, sizeof(tiny));
	assert_int_equal(strlen(tiny), 7);
}

static struct sockaddr_storage sa_of(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		fail_msg("bad test address %s", ip);
	return ss;
}

static void test_cidr_parse(void **state)
{
	(void)state;
	cg_cidr_t net;

	assert_true(cg_cidr_parse("10.0.0.0/8", &net));
	assert_int_equal(net.family, AF_INET);
	assert_int_equal(net.prefix, 8);
	assert_memory_equal(net.addr, "\x0a\x00\x00\x00", 4);

	assert_true(cg_cidr_parse("192.168.1.7", &net));
	assert_int_equal(net.prefix, 32);
	assert_memory_equal(net.addr, "\xc0\xa8\x01\x07", 4);

	/* host bits are cleared */
	assert_true(cg_cidr_parse("192.168.1.77/28", &net));
	assert_memory_equal(net.addr, "\xc0\xa8\x01\x40", 4);
	assert_true(cg_cidr_parse("10.255.255.255/0", &net));
	assert_memory_equal(net.addr, "\x00\x00\x00\x00", 4);

	assert_true(cg_cidr_parse("::1/128", &net));
	assert_int_equal(net.family, AF_INET6);
	assert_int_equal(net.prefix, 128);
	assert_true(cg_cidr_parse("::1", &net));
	assert_int_equal(net.prefix, 128);
	assert_true(cg_cidr_parse("fd12:3456::/8", &net));
	assert_int_equal(net.prefix, 8);
	assert_int_equal(net.addr[0], 0xfd);
	assert_int_equal(net.addr[1], 0);
	assert_true(cg_cidr_parse("fdff::/7", &net));
	assert_int_equal(net.addr[0], 0xfc);

	static const char *const bad[] = {
	        "",
	        "/8",
	        "10.0.0.0/",
	        "10.0.0.0/33",
	        "10.0.0.0/-1",
	        "10.0.0.0/+8",
	        "10.0.0.0/8 ",
	        " 10.0.0.0/8",
	        "10.0.0/8",
	        "10.0.0.0/8/8",
	        "::/129",
	        "::/1000",
	        "db.internal/8",
	        "10.0.0.0/a",
	        "[::1]/128",
	        "10.0.0.0/08x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cg_cidr_parse(bad[i], &net))
			fail_msg("\"%s\" should be rejected", bad[i]);
	}
}

static const struct {
	const char *net;
	const char *ip;
	bool inside;
} contains[] = {
        {"10.0.0.0/8", "10.1.2.3", true},
        {"10.0.0.0/8", "11.0.0.1", false},
        {"10.0.0.0/8", "::ffff:10.1.2.3", true}, /* mapped peer, v4 net */
        {"10.0.0.0/8", "::ffff:11.1.2.3", false},
        {"10.0.0.0/8", "::a01:203", false}, /* v4-compatible is not mapped */
        {"10.0.0.0/8", "fd00::1", false},
        {"192.168.1.64/28", "192.168.1.79", true},
        {"192.168.1.64/28", "192.168.1.80", false},
        {"192.168.1.64/28", "192.168.1.63", false},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"0.0.0.0/0", "::ffff:203.0.113.9", true},
        {"0.0.0.0/0", "2001:db8::1", false},
        {"192.0.2.1", "192.0.2.1", true},
        {"192.0.2.1", "192.0.2.2", false},
        {"fd00::/8", "fd12::1", true},
        {"fd00::/8", "fe80::1", false},
        {"fd00::/8", "10.0.0.1", false},
        {"2001:db8::/33", "2001:db8:7fff::1", true},
        {"2001:db8::/33", "2001:db8:8000::1", false},
        {"::1/128", "::1", true},
        {"::1/128", "::2", false},
        {"::/0", "2001:db8::1", true},
        {"::ffff:10.0.0.0/104", "10.9.9.9", true}, /* mapped net, v4 peer */
        {"::ffff:10.0.0.0/104", "::ffff:10.9.9.9", true},
        {"::ffff:10.0.0.0/104", "11.9.9.9", false},
        {"::ffff:0:0/96", "198.51.100.1", true},
};

static void test_cidr_contains(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(contains) / sizeof(contains[0]); i++) {
		cg_cidr_t net;
		if (!cg_cidr_parse(contains[i].net, &net))
			fail_msg("bad test net %s", contains[i].net);
		struct sockaddr_storage ss = sa_of(contains[i].ip);
		if (cg_cidr_contains(&net, (struct sockaddr *)&ss) != contains[i].inside)
			fail_msg("%s in %s: want %s", contains[i].ip, contains[i].net,
			         contains[i].inside ? "true" : "false");
	}

	cg_cidr_t net;
	assert_true(cg_cidr_parse("0.0.0.0/0", &net));
	struct sockaddr_storage unix_sa = {.ss_family = AF_UNIX};
	assert_false(cg_cidr_contains(&net, (struct sockaddr *)&unix_sa));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_loopback),
	        cmocka_unit_test(test_hostport_valid),
	        cmocka_unit_test(test_hostport_invalid),
	        cmocka_unit_test(test_hostport_length),
	        cmocka_unit_test(test_hostport_to_sockaddr),
	        cmocka_unit_test(test_sockaddr_format_longest),
	        cmocka_unit_test(test_cidr_parse),
	        cmocka_unit_test(test_cidr_contains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
