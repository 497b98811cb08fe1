/* Tests common/cg_duration.c: the duration grammar, both directions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "cg_duration.h"

#define S UINT64_C(1000)
#define M (60 * S)
#define H (60 * M)
#define D (24 * H)

static const struct {
	const char *text;
	uint64_t ms;
} valid[] = {
        {"0", 0},
        {"0s", 0},
        {"0ms", 0},
        {"250ms", 250},
        {"1s", S},
        {"90s", 90 * S},
        {"15m", 15 * M},
        {"24h", 24 * H},
        {"7d", 7 * D},
        {"1h30m", H + 30 * M},
        {"1s500ms", 1500},
        {"1d2h3m4s5ms", D + 2 * H + 3 * M + 4 * S + 5},
        {"2h5s", 2 * H + 5 * S},
        {"1m1ms", M + 1},
        {"36500d", 36500 * D},
        {"36499d23h59m59s999ms", 36500 * D - 1},
};

static const char *const invalid[] = {
        "",
        "5",
        "00",
        "1h1h",
        "5s1h",
        "1ms1s",
        "1m1h",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1 s",
        "1h 30m",
        "s",
        "ms",
        "1",
        "1x",
        "1S",
        "1H",
        "1.5s",
        "1sms",
        "1mm",
        "1hh",
        "0x10s",
        "36500d1ms",
        "36501d",
        "3153600000001ms",
        "99999999999999999999s",
        "18446744073709551616ms",
        "184467440737095516160ms",
        "1000000000000000000000000000000d",
        "1h30",
};

static void test_parse_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		uint64_t ms = 12345;
		if (!cg_duration_parse(valid[i].text, &ms))
			fail_msg("\"%s\" should parse", valid[i].text);
		if (ms != valid[i].ms)
			fail_msg("\"%s\": got %llu, want %llu", valid[i].text,
			         (unsigned long long)ms, (unsigned long long)valid[i].ms);
	}
}

static void test_parse_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		uint64_t ms = 777;
		if (cg_duration_parse(invalid[i], &ms))
			fail_msg("\"%s\" should be rejected (got %llu)", invalid[i],
			         (unsigned long long)ms);
		assert_int_equal(ms, 777); /* untouched on failure */
	}
	uint64_t ms;
	assert_false(cg_duration_parse(NULL, &ms));
}

static const struct {
	uint64_t ms;
	const char *text;
} formats[] = {
        {0, "0s"},
        {1, "1ms"},
        {250, "250ms"},
        {1000, "1s"},
        {1500, "1s500ms"},
        {90 * S, "1m30s"},
        {15 * M, "15m"},
        {5400000, "1h30m"},
        {24 * H, "1d"},
        {7 * D, "7d"},
        {D + H + M + S + 1, "1d1h1m1s1ms"},
        {2 * H + 5 * S, "2h5s"},
};

static void test_format(void **state)
{
	(void)state;
	char buf[32];
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		cg_duration_format(formats[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, formats[i].text);
	}
}

static void test_format_extremes(void **state)
{
	(void)state;
	char buf[32];
	cg_duration_format(UINT64_MAX, buf, sizeof(buf));
	assert_string_equal(buf, "213503982334d14h25m51s615ms");

	/* A short buffer still ends in NUL. */
	char small[4];
	cg_duration_format(5400000, small, sizeof(small));
	assert_true(small[3] == '\0' || small[2] == '\0' || small[1] == '\0' || small[0] == '\0');
	cg_duration_format(5400000, small, 0); /* must not write */
}

/* format and parse are inverses over the accepted range. */
static void test_roundtrip(void **state)
{
	(void)state;
	char buf[32];
	uint64_t x = 1;
	for (int i = 0; i < 100000; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t ms = (x >> 20) % (36500 * D + 1);
		if (i % 3 == 0)
			ms -= ms % S;
		if (i % 5 == 0)
			ms -= ms % M;
		cg_duration_format(ms, buf, sizeof(buf));
		uint64_t back = 0;
		if (!cg_duration_parse(buf, &back) || back != ms)
			fail_msg("roundtrip %llu -> \"%s\" failed", (unsigned long long)ms, buf);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_invalid),
	        cmocka_unit_test(test_format),      cmocka_unit_test(test_format_extremes),
	        cmocka_unit_test(test_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
