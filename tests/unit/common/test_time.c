/* Tests common/cg_time.c: RFC 3339 rendering and reading, the wall
 * clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "cg_time.h"

static const struct {
	int64_t ms;
	const char *text;
} cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {1000, "1970-01-01T00:00:01.000Z"},
        {1795734604123, "2026-11-26T23:10:04.123Z"},
        {951782400000, "2000-02-29T00:00:00.000Z"},
        {4102444799999, "2099-12-31T23:59:59.999Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-1000, "1969-12-31T23:59:59.000Z"},
        {-1001, "1969-12-31T23:59:58.999Z"},
};

static void test_rfc3339(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[CG_RFC3339_LEN];
		cg_rfc3339_ms(cases[i].ms, buf);
		assert_string_equal(buf, cases[i].text);
	}
}

static void test_wall_ms(void **state)
{
	(void)state;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	int64_t now = cg_wall_ms();
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t after = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	assert_true(before <= now);
	assert_true(now <= after);

	char buf[CG_RFC3339_LEN];
	cg_rfc3339_ms(now, buf);
	assert_int_equal(strlen(buf), 24);
	assert_int_equal(buf[23], 'Z');
	assert_int_equal(buf[19], '.');
}

/* every rendering reads back */
static void test_rfc3339_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t ms = 42;
		assert_true(cg_rfc3339_parse(cases[i].text, &ms));
		assert_int_equal(ms, cases[i].ms);
	}
}

static void test_rfc3339_parse(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int64_t ms;
	} good[] = {
	        {"2026-12-04T23:29:08Z", 1796426948000},
	        {"2026-12-04t23:29:08z", 1796426948000},
	        {"2026-12-05T00:29:08+01:00", 1796426948000},
	        {"2026-12-04T20:59:08-02:30", 1796426948000},
	        {"2026-12-04T23:29:08.5Z", 1796426948500},
	        {"2026-12-04T23:29:08.123456Z", 1796426948123},
	        {"2024-02-29T00:00:00Z", 1709164800000},
	        {"2000-02-29T12:00:00Z", 951825600000},
	        {"2016-12-31T23:59:60Z", 1483228800000}, /* a leap second */
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int64_t ms = 0;
		assert_true(cg_rfc3339_parse(good[i].text, &ms));
		assert_int_equal(ms, good[i].ms);
	}
	static const char *const bad[] = {
	        "",
	        "2026-12-04",
	        "2026-12-04T23:29:08",      /* no zone */
	        "2026-12-04 23:29:08Z",     /* a space for the T */
	        "2026-12-04T23:29Z",        /* no seconds */
	        "2026-13-04T23:29:08Z",     /* month */
	        "2026-02-29T00:00:00Z",     /* not a leap year */
	        "1900-02-29T00:00:00Z",     /* nor this */
	        "2026-04-31T00:00:00Z",     /* April has 30 */
	        "2026-12-04T24:00:00Z",     /* hour */
	        "2026-12-04T23:60:00Z",     /* minute */
	        "2026-12-04T23:29:61Z",     /* second */
	        "2026-12-04T23:29:08.Z",    /* an empty fraction */
	        "2026-12-04T23:29:08+0100", /* offset without its colon */
	        "2026-12-04T23:29:08Z ",    /* trailing text */
	        "1796426948",               /* epoch seconds */
	        "+2026-12-04T23:29:08Z",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t ms = 7;
		assert_false(cg_rfc3339_parse(bad[i], &ms));
		assert_int_equal(ms, 7);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc3339),
	        cmocka_unit_test(test_rfc3339_round_trip),
	        cmocka_unit_test(test_rfc3339_parse),
	        cmocka_unit_test(test_wall_ms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
