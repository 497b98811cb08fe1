/* Tests common/cg_log.c: line format, level filter and the rate limiter.
 * stderr is redirected to a temporary file and read back. The limiter is
 * driven by rewinding the caller's slot, not by sleeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cg_log.h"

static char capture_path[] = "/tmp/cg-log-XXXXXX";
static int capture_fd = -1;
static int saved_stderr = -1;

static int setup(void **state)
{
	(void)state;
	capture_fd = mkstemp(capture_path);
	if (capture_fd < 0)
		return -1;
	saved_stderr = dup(STDERR_FILENO);
	return saved_stderr < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	close(capture_fd);
	close(saved_stderr);
	unlink(capture_path);
	return 0;
}

/* Points stderr at the capture file, until release(). */
static void capture(void)
{
	fflush(stderr);
	dup2(capture_fd, STDERR_FILENO);
}

/* Gives the real stderr back (so cmocka's failure messages are seen) and
 * returns everything captured since the last call. */
static char *release(void)
{
	static long offset;
	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	FILE *f = fopen(capture_path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long end = ftell(f);
	fseek(f, offset, SEEK_SET);
	size_t n = (size_t)(end - offset);
	char *out = calloc(1, n + 1);
	assert_non_null(out);
	assert_int_equal(fread(out, 1, n, f), n);
	fclose(f);
	offset = end;
	return out;
}

/* Checks the captured output, then captures again. */
static void expect_output(const char *want)
{
	char *got = release();
	assert_string_equal(got, want);
	free(got);
	capture();
}

static void test_format_and_levels(void **state)
{
	(void)state;
	assert_int_equal(cg_log_get_level(), CG_LOG_INFO); /* the default */
	capture();

	cg_log(CG_LOG_INFO, "listening on %s", "0.0.0.0:8443");
	cg_log(CG_LOG_DEBUG, "hidden");
	cg_log(CG_LOG_WARN, "warned %d", 2);
	cg_log(CG_LOG_ERROR, "failed");
	expect_output("certgate: info: listening on 0.0.0.0:8443\n"
	              "certgate: warn: warned 2\n"
	              "certgate: error: failed\n");

	cg_log_set_level(CG_LOG_DEBUG);
	assert_int_equal(cg_log_get_level(), CG_LOG_DEBUG);
	cg_log(CG_LOG_DEBUG, "shown");
	expect_output("certgate: debug: shown\n");

	cg_log_set_level(CG_LOG_ERROR);
	cg_log(CG_LOG_WARN, "hidden");
	cg_log(CG_LOG_ERROR, "shown");
	expect_output("certgate: error: shown\n");
	cg_log_set_level(CG_LOG_INFO);
	free(release());
}

static void test_long_line(void **state)
{
	(void)state;
	enum { LEN = 10000 };
	char *msg = malloc(LEN + 1);
	assert_non_null(msg);
	memset(msg, 'a', LEN);
	msg[LEN] = '\0';
	capture();
	cg_log(CG_LOG_INFO, "%s", msg);
	char *got = release();
	assert_int_equal(strlen(got), strlen("certgate: info: \n") + LEN);
	assert_int_equal(got[strlen(got) - 1], '\n');
	free(got);
	free(msg);
}

static void test_limited(void **state)
{
	(void)state;
	cg_log_limit_t slot = {0};

	capture();
	for (int i = 0; i < 5; i++)
		cg_log_limited(&slot, CG_LOG_WARN, "accept failed: %d", i);
	expect_output("certgate: warn: accept failed: 0\n");
	assert_int_equal(slot.suppressed, 4);

	/* A second later the next line gets through and reports the rest. */
	slot.last_ms -= 1000;
	cg_log_limited(&slot, CG_LOG_WARN, "accept failed: %d", 5);
	expect_output("certgate: warn: accept failed: 5 (4 similar messages suppressed)\n");
	assert_int_equal(slot.suppressed, 0);

	cg_log_limited(&slot, CG_LOG_WARN, "accept failed: %d", 6);
	expect_output("");
	slot.last_ms -= 1000;
	cg_log_limited(&slot, CG_LOG_WARN, "accept failed: %d", 7);
	expect_output("certgate: warn: accept failed: 7 (1 similar messages suppressed)\n");

	slot.last_ms -= 1000;
	cg_log_limited(&slot, CG_LOG_WARN, "quiet since");
	expect_output("certgate: warn: quiet since\n");

	/* Filtered-out levels neither print nor count. */
	cg_log_limit_t debug_slot = {0};
	cg_log_limited(&debug_slot, CG_LOG_DEBUG, "x");
	cg_log_limited(&debug_slot, CG_LOG_DEBUG, "x");
	expect_output("");
	assert_int_equal(debug_slot.suppressed, 0);
	free(release());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_format_and_levels),
	        cmocka_unit_test(test_long_line),
	        cmocka_unit_test(test_limited),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
