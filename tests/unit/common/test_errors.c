/* Tests common/cg_errors.c: the error list grows, formats and frees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cg_errors.h"

static void test_add_and_finish(void **state)
{
	(void)state;
	cg_errors_t errs;
	cg_errors_init(&errs);
	assert_int_equal(errs.count, 0);

	for (int i = 0; i < 1000; i++)
		cg_errors_add(&errs, "cfg.json:%d:%d: %s", i + 1, 3, "bad value");
	assert_int_equal(errs.count, 1000);
	assert_true(errs.cap >= errs.count);
	assert_string_equal(errs.items[0], "cfg.json:1:3: bad value");
	assert_string_equal(errs.items[999], "cfg.json:1000:3: bad value");

	cg_errors_finish(&errs);
	assert_int_equal(errs.count, 0);
	assert_null(errs.items);

	/* usable again after finish, and a long line is not truncated */
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cg_errors_add(&errs, "%s", big);
	assert_int_equal(strlen(errs.items[0]), sizeof(big) - 1);
	cg_errors_finish(&errs);
	cg_errors_finish(&errs); /* finishing twice is harmless */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_add_and_finish),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
