/* Tests common/cg_time.c: RFC 3339 rendering and the wall clock. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc3339),
	        cmocka_unit_test(test_wall_ms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
