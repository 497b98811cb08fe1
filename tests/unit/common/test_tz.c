/* Tests common/cg_tz.c and cg_tz_rule.c: known offsets and changes of
 * Europe/Berlin and America/New_York around their DST changes, then every
 * zone of the system's database against glibc's localtime_r (which this
 * single-threaded test may switch with TZ) at every transition, a second
 * either side, and random instants from 1850 to 2250; the POSIX rules of
 * footers; names and files that must be refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cg_time.h"
#include "cg_tz.h"

#define ZONEINFO "/usr/share/zoneinfo"

static int64_t at(const char *rfc3339)
{
	int64_t ms = 0;
	assert_true(cg_rfc3339_parse(rfc3339, &ms));
	return ms / 1000;
}

static cg_tz_t *load(const char *name)
{
	char err[256] = "";
	cg_tz_t *tz = cg_tz_load(name, err, sizeof(err));
	if (tz == NULL)
		print_error("%s: %s\n", name, err);
	assert_non_null(tz);
	assert_string_equal(cg_tz_name(tz), name);
	return tz;
}

static void check(const cg_tz_t *tz, const char *when, int32_t off, const char *abbr)
{
	const char *got_abbr = NULL;
	int32_t got = cg_tz_offset(tz, at(when), &got_abbr);
	if (got != off || strcmp(got_abbr, abbr) != 0)
		print_error("%s at %s: %d %s, expected %d %s\n", cg_tz_name(tz), when, got,
		            got_abbr, off, abbr);
	assert_int_equal(got, off);
	assert_string_equal(got_abbr, abbr);
}

static void test_berlin(void **state)
{
	(void)state;
	cg_tz_t *tz = load("Europe/Berlin");
	/* spring forward: 02:00 CET -> 03:00 CEST on 2026-03-29 (01:00Z) */
	check(tz, "2026-03-29T00:59:59Z", 3600, "CET");
	check(tz, "2026-03-29T01:00:00Z", 7200, "CEST");
	/* fall back: 03:00 CEST -> 02:00 CET on 2026-10-25 (01:00Z) */
	check(tz, "2026-10-25T00:59:59Z", 7200, "CEST");
	check(tz, "2026-10-25T01:00:00Z", 3600, "CET");
	assert_true(cg_tz_next_change(tz, at("2026-01-10T12:00:00Z")) ==
	            at("2026-03-29T01:00:00Z"));
	assert_true(cg_tz_next_change(tz, at("2026-03-29T00:59:59Z")) ==
	            at("2026-03-29T01:00:00Z"));
	assert_true(cg_tz_next_change(tz, at("2026-03-29T01:00:00Z")) ==
	            at("2026-10-25T01:00:00Z"));
	/* far ahead (the footer rule worked out on the spot): 2150-03-29 is
	 * the last Sunday of March */
	check(tz, "2150-03-29T00:59:59Z", 3600, "CET");
	check(tz, "2150-03-29T01:00:00Z", 7200, "CEST");
	assert_true(cg_tz_next_change(tz, at("2150-01-01T00:00:00Z")) ==
	            at("2150-03-29T01:00:00Z"));
	/* history: no DST in 1960; double summer time in 1947 */
	check(tz, "1960-07-01T12:00:00Z", 3600, "CET");
	check(tz, "1947-06-01T12:00:00Z", 10800, "CEMT");
	cg_tz_free(tz);
}

static void test_new_york(void **state)
{
	(void)state;
	cg_tz_t *tz = load("America/New_York");
	/* 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z) */
	check(tz, "2026-03-08T06:59:59Z", -18000, "EST");
	check(tz, "2026-03-08T07:00:00Z", -14400, "EDT");
	check(tz, "2026-11-01T05:59:59Z", -14400, "EDT");
	check(tz, "2026-11-01T06:00:00Z", -18000, "EST");
	assert_true(cg_tz_next_change(tz, at("2026-07-04T00:00:00Z")) ==
	            at("2026-11-01T06:00:00Z"));
	cg_tz_free(tz);
}

static void test_utc_and_fixed(void **state)
{
	(void)state;
	cg_tz_t *tz = load("UTC");
	check(tz, "2026-06-01T00:00:00Z", 0, "UTC");
	assert_true(cg_tz_next_change(tz, at("2026-06-01T00:00:00Z")) == INT64_MAX);
	cg_tz_free(tz);
	tz = load("Asia/Kolkata");
	check(tz, "2026-06-01T00:00:00Z", 19800, "IST");
	assert_true(cg_tz_next_change(tz, at("2026-06-01T00:00:00Z")) == INT64_MAX);
	cg_tz_free(tz);
}

/* "UTC" needs no database: a TZDIR without it still has UTC, nothing else */
static void test_utc_without_database(void **state)
{
	(void)state;
	char dir[] = "/tmp/cg-tz-empty-XXXXXX";
	assert_non_null(mkdtemp(dir));
	setenv("TZDIR", dir, 1);
	char err[256];
	cg_tz_t *tz = cg_tz_load("UTC", err, sizeof(err));
	assert_non_null(tz);
	check(tz, "2026-06-01T00:00:00Z", 0, "UTC");
	cg_tz_free(tz);
	assert_null(cg_tz_load("Europe/Berlin", err, sizeof(err)));
	assert_non_null(strstr(err, "unknown time zone \"Europe/Berlin\""));
	assert_non_null(strstr(err, dir));
	unsetenv("TZDIR");
	rmdir(dir);
}

static void test_bad_names(void **state)
{
	(void)state;
	static const char *const bad[] = {"",
	                                  "/etc/localtime",
	                                  "../../etc/passwd",
	                                  "Europe/../../etc/passwd",
	                                  "Europe//Berlin",
	                                  "Europe/",
	                                  "./UTC",
	                                  "Europe/Berlin ",
	                                  "Europe\\Berlin",
	                                  "CET\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[256] = "";
		assert_null(cg_tz_load(bad[i], err, sizeof(err)));
		assert_non_null(strstr(err, "expected a time zone name"));
	}
	char err[256] = "";
	assert_null(cg_tz_load("Europe/Berln", err, sizeof(err)));
	assert_string_equal(err,
	                    "unknown time zone \"Europe/Berln\" (no such zone in " ZONEINFO ")");
	assert_null(cg_tz_load("Europe", err, sizeof(err))); /* a folder */
	assert_non_null(strstr(err, "unknown time zone"));
	assert_null(cg_tz_load("zone.tab", err, sizeof(err)));
	assert_non_null(strstr(err, "not a TZif file"));
}

/* Files made here: truncated, leap seconds, a bad footer, bad indexes. */
static void write_zone(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static size_t header(uint8_t *p, char version, uint32_t leap, uint32_t times, uint32_t types,
                     uint32_t chars)
{
	memset(p, 0, 44);
	memcpy(p, "TZif", 4);
	p[4] = (uint8_t)version;
	uint32_t counts[6] = {0, 0, leap, times, types, chars};
	for (int i = 0; i < 6; i++)
		for (int b = 0; b < 4; b++)
			p[20 + 4 * i + b] = (uint8_t)(counts[i] >> (24 - 8 * b));
	return 44;
}

static void test_malformed_files(void **state)
{
	(void)state;
	char dir[] = "/tmp/cg-tz-bad-XXXXXX";
	assert_non_null(mkdtemp(dir));
	setenv("TZDIR", dir, 1);
	uint8_t buf[256];
	char err[256];

	/* a good v1 file: no transitions, one type "XYZ" at +01:00 */
	size_t n = header(buf, '\0', 0, 0, 1, 4);
	memcpy(buf + n, "\x00\x00\x0e\x10\x00\x00XYZ", 10);
	write_zone(dir, "Good", buf, n + 10);
	cg_tz_t *tz = cg_tz_load("Good", err, sizeof(err));
	assert_non_null(tz);
	check(tz, "2026-06-01T00:00:00Z", 3600, "XYZ");
	cg_tz_free(tz);

	write_zone(dir, "Short", buf, n + 5);
	assert_null(cg_tz_load("Short", err, sizeof(err)));
	assert_non_null(strstr(err, "truncated TZif file"));

	n = header(buf, '\0', 1, 0, 1, 4);
	memcpy(buf + n, "\x00\x00\x0e\x10\x00\x00XYZ\0\0\0\0\0\0\0\0\0", 18);
	write_zone(dir, "Leap", buf, n + 18);
	assert_null(cg_tz_load("Leap", err, sizeof(err)));
	assert_non_null(strstr(err, "leap seconds"));

	n = header(buf, '\0', 0, 0, 1, 4);
	memcpy(buf + n, "\x00\x00\x0e\x10\x00\x07XYZ", 10); /* abbreviation index 7 of 4 */
	write_zone(dir, "BadIndex", buf, n + 10);
	assert_null(cg_tz_load("BadIndex", err, sizeof(err)));
	assert_non_null(strstr(err, "malformed TZif time type"));

	n = header(buf, '\0', 0, 0, 0, 4);
	write_zone(dir, "NoTypes", buf, n);
	assert_null(cg_tz_load("NoTypes", err, sizeof(err)));
	assert_non_null(strstr(err, "malformed TZif header"));

	/* version 2 with an unreadable footer rule */
	n = header(buf, '2', 0, 0, 1, 4);
	memcpy(buf + n, "\x00\x00\x0e\x10\x00\x00XYZ", 10);
	n += 10;
	n += header(buf + n, '2', 0, 0, 1, 4);
	memcpy(buf + n, "\x00\x00\x0e\x10\x00\x00XYZ\0\nXYZ-1ABC\n", 21);
	write_zone(dir, "BadFooter", buf, n + 21);
	assert_null(cg_tz_load("BadFooter", err, sizeof(err)));
	assert_non_null(strstr(err, "unsupported TZ rule"));
	/* the same with a rule that reads: loads, and the rule applies */
	static const char good[] = "\x00\x00\x0e\x10\x00\x00XYZ\0\nXYZ-1ABC,M3.5.0,M10.5.0/3\n";
	memcpy(buf + n, good, sizeof(good) - 1);
	write_zone(dir, "GoodFooter", buf, n + sizeof(good) - 1);
	tz = cg_tz_load("GoodFooter", err, sizeof(err));
	assert_non_null(tz);
	check(tz, "2026-03-29T00:59:59Z", 3600, "XYZ");
	check(tz, "2026-03-29T01:00:00Z", 7200, "ABC");
	cg_tz_free(tz);
	write_zone(dir, "BadFooter", buf, n + sizeof(good) - 2); /* no closing newline */
	assert_null(cg_tz_load("BadFooter", err, sizeof(err)));
	assert_non_null(strstr(err, "malformed TZif footer"));

	unsetenv("TZDIR");
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_rules(void **state)
{
	(void)state;
	cg_tz_rule_t r;
	assert_true(cg_tz_rule_parse("CET-1CEST,M3.5.0,M10.5.0/3", &r));
	assert_int_equal(r.std_off, 3600);
	assert_int_equal(r.dst_off, 7200);
	assert_string_equal(r.dst_abbr, "CEST");
	int64_t start, end;
	cg_tz_rule_year(&r, 2026, &start, &end);
	assert_true(start == at("2026-03-29T01:00:00Z"));
	assert_true(end == at("2026-10-25T01:00:00Z"));
	assert_true(cg_tz_rule_parse("<+0330>-3:30", &r));
	assert_false(r.has_dst);
	assert_int_equal(r.std_off, 12600);
	assert_string_equal(r.std_abbr, "+0330");
	/* Greenland: negative transition times; week 5 = the last */
	assert_true(cg_tz_rule_parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", &r));
	cg_tz_rule_year(&r, 2026, &start, &end);
	/* Saturday 2026-03-28 23:00 at -02 */
	assert_true(start == at("2026-03-29T01:00:00Z"));
	assert_true(end == at("2026-10-25T01:00:00Z"));
	/* Julian days: J60 is March 1st, leap year or not; day 59 (from 0) is Feb 29 in one */
	assert_true(cg_tz_rule_parse("AAA3BBB,J60/0,59/0", &r));
	cg_tz_rule_year(&r, 2028, &start, &end);
	assert_true(start == at("2028-03-01T03:00:00Z"));
	assert_true(end == at("2028-02-29T02:00:00Z"));
	assert_true(cg_tz_rule_parse("EST5EDT,M3.2.0,M11.1.0", &r));
	assert_int_equal(r.std_off, -18000);
	assert_int_equal(r.dst_off, -14400);
	assert_true(cg_tz_rule_parse("AAA3BBB2:30,M3.2.0/167,M11.1.0/-167", &r));
	assert_int_equal(r.dst_off, -9000);
	static const char *const bad[] = {"",
	                                  "CE-1",
	                                  "CET",
	                                  "CET-1CEST",
	                                  "CET-1CEST,M3.5.0",
	                                  "CET-1CEST,M13.5.0,M10.5.0",
	                                  "CET-1CEST,M3.6.0,M10.5.0",
	                                  "CET-1CEST,M3.5.7,M10.5.0",
	                                  "CET-1CEST,J0,J365",
	                                  "CET-1CEST,366,1",
	                                  "CET-1CEST,M3.5.0/168,M10.5.0",
	                                  "CET25",
	                                  "CET-1CEST,M3.5.0,M10.5.0x",
	                                  "<AB>1",
	                                  "CET-1:60"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cg_tz_rule_parse(bad[i], &r))
			print_error("accepted %s\n", bad[i]);
		assert_false(cg_tz_rule_parse(bad[i], &r));
	}
}

static void test_civil(void **state)
{
	(void)state;
	for (int64_t days = -800000; days <= 800000; days += 37) {
		int64_t y;
		int m, d;
		cg_civil_from_days(days, &y, &m, &d);
		assert_true(cg_days_from_civil(y, m, d) == days);
		time_t t = (time_t)(days * 86400);
		struct tm tm;
		gmtime_r(&t, &tm);
		assert_true(y == tm.tm_year + 1900 && m == tm.tm_mon + 1 && d == tm.tm_mday);
	}
}

/* --- every zone against glibc --------------------------------------------- */

typedef struct diff {
	size_t zones, instants, failures;
} diff_t;

static diff_t g_diff;
static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void compare(const cg_tz_t *tz, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	const char *abbr;
	g_diff.instants++;
	if (localtime_r(&tt, &tm) == NULL)
		return;
	int32_t off = cg_tz_offset(tz, t, &abbr);
	if (off != tm.tm_gmtoff || strcmp(abbr, tm.tm_zone) != 0) {
		if (g_diff.failures++ < 20)
			print_error("%s at %lld: %d %s, glibc %ld %s\n", cg_tz_name(tz),
			            (long long)t, off, abbr, tm.tm_gmtoff, tm.tm_zone);
	}
}

static int visit(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	const char *name = path + strlen(ZONEINFO) + 1;
	if (flag == FTW_D && (strcmp(name, "right") == 0 || strcmp(name, "posix") == 0))
		return FTW_SKIP_SUBTREE; /* leap seconds; copies */
	if (flag != FTW_F || !S_ISREG(st->st_mode))
		return FTW_CONTINUE;
	FILE *f = fopen(path, "rb");
	char magic[4] = {0};
	size_t got = f ? fread(magic, 1, 4, f) : 0;
	if (f)
		fclose(f);
	if (got != 4 || memcmp(magic, "TZif", 4) != 0)
		return FTW_CONTINUE;
	char err[256], tzenv[300];
	cg_tz_t *tz = cg_tz_load(name, err, sizeof(err));
	if (tz == NULL) {
		print_error("%s: %s\n", name, err);
		g_diff.failures++;
		return FTW_CONTINUE;
	}
	snprintf(tzenv, sizeof(tzenv), ":%s", name);
	setenv("TZ", tzenv, 1);
	tzset();
	g_diff.zones++;
	const int64_t lo = at("1850-01-01T00:00:00Z"), hi = at("2250-01-01T00:00:00Z");
	/* every change, and a second either side */
	for (int64_t t = lo; t < hi;) {
		int64_t next = cg_tz_next_change(tz, t);
		if (next <= t) {
			print_error("%s: next change %lld not after %lld\n", name, (long long)next,
			            (long long)t);
			g_diff.failures++;
			break;
		}
		if (next >= hi)
			break;
		/* constant until then */
		const char *a1, *a2;
		if (cg_tz_offset(tz, t, &a1) != cg_tz_offset(tz, next - 1, &a2) ||
		    strcmp(a1, a2) != 0)
			g_diff.failures++;
		compare(tz, next - 1);
		compare(tz, next);
		compare(tz, next + 1);
		t = next;
	}
	for (int i = 0; i < 300; i++)
		compare(tz, lo + (int64_t)(rnd() % (uint64_t)(hi - lo)));
	cg_tz_free(tz);
	return FTW_CONTINUE;
}

static void test_every_zone_against_glibc(void **state)
{
	(void)state;
	memset(&g_diff, 0, sizeof(g_diff));
	assert_int_equal(nftw(ZONEINFO, visit, 16, FTW_PHYS | FTW_ACTIONRETVAL), 0);
	unsetenv("TZ");
	tzset();
	print_message("# %zu zones, %zu instants compared with glibc, %zu differ\n", g_diff.zones,
	              g_diff.instants, g_diff.failures);
	assert_true(g_diff.zones > 300);
	assert_int_equal(g_diff.failures, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_berlin),
	        cmocka_unit_test(test_new_york),
	        cmocka_unit_test(test_utc_and_fixed),
	        cmocka_unit_test(test_utc_without_database),
	        cmocka_unit_test(test_bad_names),
	        cmocka_unit_test(test_malformed_files),
	        cmocka_unit_test(test_rules),
	        cmocka_unit_test(test_civil),
	        cmocka_unit_test(test_every_zone_against_glibc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
