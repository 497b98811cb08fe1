/* pol_window: table-driven. Each row is a window (days, hours, zone,
 * from, until), an instant, whether the instant is inside and the next
 * instant that changes it: across the DST changes of Europe/Berlin (spring
 * forward, fall back) and America/New_York, windows crossing midnight,
 * from/until bounds, exact boundaries. Then the words of explain and the
 * parsers of days and hours. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_time.h"
#include "cg_tz.h"
#include "pol_window.h"

typedef struct spec {
	const char *days; /* "mon,tue" or NULL */
	const char *hours;
	const char *tz;
	const char *from, *until;
} spec_t;

typedef struct row {
	spec_t w;
	const char *at;
	bool inside;
	const char *next; /* NULL: never */
} row_t;

#define BERLIN_WORK                                                                                \
	{                                                                                          \
		"mon,tue,wed,thu,fri", "08:00-18:00", "Europe/Berlin", NULL, NULL                  \
	}
#define BERLIN_DAILY(h)                                                                            \
	{                                                                                          \
		NULL, h, "Europe/Berlin", NULL, NULL                                               \
	}
#define NY_WORK                                                                                    \
	{                                                                                          \
		"mon,tue,wed,thu,fri", "09:00-17:00", "America/New_York", NULL, NULL               \
	}
#define FRI_NIGHT                                                                                  \
	{                                                                                          \
		"fri", "22:00-06:00", "Europe/Berlin", NULL, NULL                                  \
	}
#define BOUNDED                                                                                    \
	{                                                                                          \
		NULL, NULL, NULL, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"                   \
	}
#define BOUNDED_HOURS                                                                              \
	{                                                                                          \
		NULL, "08:00-18:00", "UTC", "2026-12-01T12:00:00Z", "2026-12-03T09:00:00Z"         \
	}

/* clang-format off */
static const row_t rows[] = {
	/* office hours in Berlin, the week before and after spring forward (2026-03-29) */
	{BERLIN_WORK, "2026-03-27T06:59:59.999Z", false, "2026-03-27T07:00:00Z"}, /* Fri 07:59:59 CET */
	{BERLIN_WORK, "2026-03-27T07:00:00Z",     true,  "2026-03-27T17:00:00Z"}, /* 08:00 CET: start included */
	{BERLIN_WORK, "2026-03-27T16:59:59.999Z", true,  "2026-03-27T17:00:00Z"},
	{BERLIN_WORK, "2026-03-27T17:00:00Z",     false, "2026-03-30T06:00:00Z"}, /* 18:00 excluded; Monday 08:00 is CEST */
	{BERLIN_WORK, "2026-03-28T10:00:00Z",     false, "2026-03-30T06:00:00Z"}, /* Saturday */
	{BERLIN_WORK, "2026-03-30T05:59:59Z",     false, "2026-03-30T06:00:00Z"},
	{BERLIN_WORK, "2026-03-30T06:00:00Z",     true,  "2026-03-30T16:00:00Z"},
	/* ... and around fall back (2026-10-25): Friday in CEST, Monday in CET */
	{BERLIN_WORK, "2026-10-23T15:59:59Z",     true,  "2026-10-23T16:00:00Z"},
	{BERLIN_WORK, "2026-10-23T16:00:00Z",     false, "2026-10-26T07:00:00Z"},
	{BERLIN_WORK, "2026-10-26T07:00:00Z",     true,  "2026-10-26T17:00:00Z"},
	/* every day 08:00-18:00 on the DST change days: ten hours of wall clock */
	{BERLIN_DAILY("08:00-18:00"), "2026-03-29T05:59:59Z", false, "2026-03-29T06:00:00Z"},
	{BERLIN_DAILY("08:00-18:00"), "2026-03-29T06:00:00Z", true,  "2026-03-29T16:00:00Z"},
	{BERLIN_DAILY("08:00-18:00"), "2026-10-25T07:00:00Z", true,  "2026-10-25T17:00:00Z"},
	{BERLIN_DAILY("08:00-18:00"), "2026-10-25T06:59:59Z", false, "2026-10-25T07:00:00Z"},
	/* a window over the skipped hour: 01:00 CET to 05:00 CEST is three hours */
	{BERLIN_DAILY("01:00-05:00"), "2026-03-29T00:00:00Z", true,  "2026-03-29T03:00:00Z"},
	{BERLIN_DAILY("01:00-05:00"), "2026-03-28T23:59:59Z", false, "2026-03-29T00:00:00Z"},
	/* a window ending inside the skipped hour closes when the clocks jump */
	{BERLIN_DAILY("00:00-02:30"), "2026-03-29T00:59:59Z", true,  "2026-03-29T01:00:00Z"},
	{BERLIN_DAILY("00:00-02:30"), "2026-03-29T01:00:00Z", false, "2026-03-29T22:00:00Z"},
	/* a window starting inside it opens at the jump */
	{BERLIN_DAILY("02:30-04:00"), "2026-03-29T00:30:00Z", false, "2026-03-29T01:00:00Z"},
	{BERLIN_DAILY("02:30-04:00"), "2026-03-29T01:00:00Z", true,  "2026-03-29T02:00:00Z"},
	/* the repeated hour is inside both times: 02:00-03:00 is two hours on fall back */
	{BERLIN_DAILY("02:00-03:00"), "2026-10-25T00:00:00Z", true,  "2026-10-25T02:00:00Z"},
	{BERLIN_DAILY("02:00-03:00"), "2026-10-25T01:30:00Z", true,  "2026-10-25T02:00:00Z"},
	{BERLIN_DAILY("02:00-03:00"), "2026-10-25T02:00:00Z", false, "2026-10-26T01:00:00Z"},
	/* New York: 09:00-17:00 is 14:00-22:00Z in EST, 13:00-21:00Z in EDT (2026-03-08) */
	{NY_WORK, "2026-03-06T13:59:59Z", false, "2026-03-06T14:00:00Z"},
	{NY_WORK, "2026-03-06T14:00:00Z", true,  "2026-03-06T22:00:00Z"},
	{NY_WORK, "2026-03-06T22:00:00Z", false, "2026-03-09T13:00:00Z"},
	{NY_WORK, "2026-03-09T12:59:59Z", false, "2026-03-09T13:00:00Z"},
	{NY_WORK, "2026-03-09T13:00:00Z", true,  "2026-03-09T21:00:00Z"},
	{NY_WORK, "2026-11-02T13:00:00Z", false, "2026-11-02T14:00:00Z"}, /* EST again */
	/* Friday night across midnight: it belongs to Friday */
	{FRI_NIGHT, "2026-03-27T20:59:59Z", false, "2026-03-27T21:00:00Z"}, /* Fri 21:59 CET */
	{FRI_NIGHT, "2026-03-27T21:00:00Z", true,  "2026-03-28T05:00:00Z"}, /* Fri 22:00 */
	{FRI_NIGHT, "2026-03-27T23:00:00Z", true,  "2026-03-28T05:00:00Z"}, /* Sat 00:00 */
	{FRI_NIGHT, "2026-03-28T04:59:59Z", true,  "2026-03-28T05:00:00Z"}, /* Sat 05:59 */
	{FRI_NIGHT, "2026-03-28T05:00:00Z", false, "2026-04-03T20:00:00Z"}, /* next Friday 22:00 CEST */
	{FRI_NIGHT, "2026-03-28T21:30:00Z", false, "2026-04-03T20:00:00Z"}, /* Sat 22:30: not Friday */
	{FRI_NIGHT, "2026-03-26T23:30:00Z", false, "2026-03-27T21:00:00Z"}, /* Fri 00:30: Thursday's */
	/* across midnight on the fall back night: 22:00 CEST to 06:00 CET is nine hours */
	{{NULL, "22:00-06:00", "Europe/Berlin", NULL, NULL}, "2026-10-24T20:00:00Z", true, "2026-10-25T05:00:00Z"},
	{{NULL, "22:00-06:00", "Europe/Berlin", NULL, NULL}, "2026-10-24T19:59:59Z", false, "2026-10-24T20:00:00Z"},
	/* from (included) and until (excluded) */
	{BOUNDED, "2026-11-30T23:59:59.999Z", false, "2026-12-01T00:00:00Z"},
	{BOUNDED, "2026-12-01T00:00:00Z",     true,  "2026-12-02T00:00:00Z"},
	{BOUNDED, "2026-12-01T23:59:59.999Z", true,  "2026-12-02T00:00:00Z"},
	{BOUNDED, "2026-12-02T00:00:00Z",     false, NULL},
	{{NULL, NULL, NULL, "2026-12-01T00:00:00Z", NULL}, "2030-01-01T00:00:00Z", true, NULL},
	{{NULL, NULL, NULL, NULL, "2026-12-01T00:00:00Z"}, "2020-01-01T00:00:00Z", true, "2026-12-01T00:00:00Z"},
	/* from/until with hours: both must hold */
	{BOUNDED_HOURS, "2026-12-01T10:00:00Z", false, "2026-12-01T12:00:00Z"},
	{BOUNDED_HOURS, "2026-12-01T12:00:00Z", true,  "2026-12-01T18:00:00Z"},
	{BOUNDED_HOURS, "2026-12-01T20:00:00Z", false, "2026-12-02T08:00:00Z"},
	{BOUNDED_HOURS, "2026-12-03T08:30:00Z", true,  "2026-12-03T09:00:00Z"},
	{BOUNDED_HOURS, "2026-12-03T09:00:00Z", false, NULL},
	{BOUNDED_HOURS, "2026-12-03T07:00:00Z", false, "2026-12-03T08:00:00Z"},
	{{NULL, "08:00-18:00", "UTC", "2026-12-01T06:00:00Z", NULL}, "2026-12-01T05:00:00Z", false, "2026-12-01T08:00:00Z"},
	{{NULL, "08:00-18:00", "UTC", NULL, "2026-12-01T04:00:00Z"}, "2026-12-01T03:00:00Z", false, NULL},
	/* days alone: whole local days */
	{{"sat,sun", NULL, "Europe/Berlin", NULL, NULL}, "2026-03-27T22:59:59Z", false, "2026-03-27T23:00:00Z"},
	{{"sat,sun", NULL, "Europe/Berlin", NULL, NULL}, "2026-03-27T23:00:00Z", true,  "2026-03-29T22:00:00Z"},
	/* always inside: only until can end it */
	{{"mon,tue,wed,thu,fri,sat,sun", NULL, "UTC", NULL, NULL}, "2026-03-27T12:00:00Z", true, NULL},
	{{NULL, "00:00-24:00", "Europe/Berlin", NULL, NULL}, "2026-03-29T01:30:00Z", true, NULL},
	{{NULL, "00:00-24:00", "UTC", NULL, "2027-01-01T00:00:00Z"}, "2026-03-29T01:30:00Z", true, "2027-01-01T00:00:00Z"},
	/* an end at 24:00 is midnight */
	{{NULL, "18:00-24:00", "UTC", NULL, NULL}, "2026-05-01T23:59:59.999Z", true,  "2026-05-02T00:00:00Z"},
	{{NULL, "18:00-24:00", "UTC", NULL, NULL}, "2026-05-02T00:00:00Z",     false, "2026-05-02T18:00:00Z"},
	/* far ahead: the zone's footer rule, worked out on the spot */
	{BERLIN_WORK, "2150-03-31T05:59:59Z", false, "2150-03-31T06:00:00Z"},
};
/* clang-format on */

static cg_tz_t *zones[8];
static size_t n_zones;

static const cg_tz_t *zone(const char *name)
{
	for (size_t i = 0; i < n_zones; i++)
		if (strcmp(cg_tz_name(zones[i]), name) == 0)
			return zones[i];
	char err[256];
	cg_tz_t *tz = cg_tz_load(name, err, sizeof(err));
	if (tz == NULL)
		print_error("%s\n", err);
	assert_non_null(tz);
	assert_true(n_zones < sizeof(zones) / sizeof(zones[0]));
	zones[n_zones++] = tz;
	return tz;
}

static int64_t ms(const char *text)
{
	int64_t v = 0;
	if (!cg_rfc3339_parse(text, &v))
		print_error("bad time %s\n", text);
	assert_true(cg_rfc3339_parse(text, &v));
	return v;
}

static void build(const spec_t *s, pol_window_t *w)
{
	memset(w, 0, sizeof(*w));
	if (s->days != NULL) {
		char buf[64];
		snprintf(buf, sizeof(buf), "%s", s->days);
		w->has_days = true;
		for (char *save = NULL, *d = strtok_r(buf, ",", &save); d;
		     d = strtok_r(NULL, ",", &save)) {
			int day = pol_window_parse_day(d);
			assert_true(day >= 0);
			w->days |= (uint8_t)(1u << day);
		}
	}
	if (s->hours != NULL) {
		w->has_hours = true;
		assert_true(pol_window_parse_hours(s->hours, &w->start_s, &w->end_s));
	}
	if (s->tz != NULL)
		w->tz = zone(s->tz);
	if (s->from != NULL) {
		w->has_from = true;
		w->from_ms = ms(s->from);
	}
	if (s->until != NULL) {
		w->has_until = true;
		w->until_ms = ms(s->until);
	}
}

static void test_rows(void **state)
{
	(void)state;
	size_t failed = 0;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const row_t *r = &rows[i];
		pol_window_t w;
		build(&r->w, &w);
		int64_t at = ms(r->at);
		bool inside = pol_window_contains(&w, at);
		int64_t next = pol_window_next_change(&w, at);
		int64_t want = r->next != NULL ? ms(r->next) : INT64_MAX;
		char explained[256];
		bool said = pol_window_explain(&w, at, explained, sizeof(explained));
		if (inside != r->inside || next != want || said != inside) {
			char got[CG_RFC3339_LEN] = "never";
			if (next != INT64_MAX)
				cg_rfc3339_ms(next, got);
			print_error(
			        "row %zu (%s %s at %s): inside %d next %s, expected %d %s (%s)\n",
			        i, r->w.days ? r->w.days : "-", r->w.hours ? r->w.hours : "-",
			        r->at, inside, got, r->inside, r->next ? r->next : "never",
			        explained);
			failed++;
		}
		/* the answer holds until the change, and the change is one */
		if (next != INT64_MAX && (pol_window_contains(&w, next - 1) != inside ||
		                          pol_window_contains(&w, next) == inside)) {
			print_error("row %zu: not constant up to %s\n", i, r->next);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

static void explained(const spec_t *s, const char *at, const char *want, bool inside)
{
	pol_window_t w;
	char buf[256];
	build(s, &w);
	bool got = pol_window_explain(&w, ms(at), buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		print_error("got  %s\nwant %s\n", buf, want);
	assert_string_equal(buf, want);
	assert_int_equal(got, inside);
}

static void test_explain(void **state)
{
	(void)state;
	spec_t work = BERLIN_WORK, night = FRI_NIGHT, bounded = BOUNDED;
	explained(&work, "2026-03-30T17:03:00Z",
	          "Mon 2026-03-30 19:03 CEST (Europe/Berlin) is outside hours 08:00-18:00", false);
	explained(&work, "2026-03-28T09:00:00Z",
	          "Sat 2026-03-28 10:00 CET (Europe/Berlin): sat is not in days [mon, tue, wed, "
	          "thu, fri]",
	          false);
	explained(&work, "2026-03-30T08:00:00Z",
	          "Mon 2026-03-30 10:00 CEST (Europe/Berlin) is in days [mon, tue, wed, thu, fri] "
	          "hours 08:00-18:00",
	          true);
	explained(&night, "2026-03-29T03:00:00Z",
	          "Sun 2026-03-29 05:00 CEST (Europe/Berlin): sat (the day its window started) is "
	          "not in days [fri]",
	          false);
	explained(&night, "2026-03-28T03:00:00Z",
	          "Sat 2026-03-28 04:00 CET (Europe/Berlin) is in days [fri] hours 22:00-06:00",
	          true);
	explained(&bounded, "2026-12-02T00:00:00Z",
	          "2026-12-02T00:00:00.000Z is not before until 2026-12-02T00:00:00.000Z", false);
	explained(&bounded, "2026-11-02T00:00:00Z",
	          "2026-11-02T00:00:00.000Z is before from 2026-12-01T00:00:00.000Z", false);
	explained(&bounded, "2026-12-01T10:00:00Z", "2026-12-01T10:00:00.000Z is within from/until",
	          true);
	/* a small buffer is cut, never overrun */
	pol_window_t w;
	char small[12];
	build(&work, &w);
	memset(small, 'x', sizeof(small));
	(void)pol_window_explain(&w, ms("2026-03-30T17:03:00Z"), small, sizeof(small));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void test_parsers(void **state)
{
	(void)state;
	int32_t s, e;
	assert_true(pol_window_parse_hours("08:00-18:00", &s, &e));
	assert_int_equal(s, 8 * 3600);
	assert_int_equal(e, 18 * 3600);
	assert_true(pol_window_parse_hours("22:30-06:15", &s, &e));
	assert_int_equal(s, 22 * 3600 + 1800);
	assert_int_equal(e, 6 * 3600 + 900);
	assert_true(pol_window_parse_hours("00:00-24:00", &s, &e));
	assert_int_equal(e, 86400);
	assert_true(pol_window_parse_hours("22:00-00:00", &s, &e));
	static const char *const bad[] = {"",
	                                  "8:00-18:00",
	                                  "08:00-18:00 ",
	                                  "08:00 - 18:00",
	                                  "08:00-08:00",
	                                  "00:00-00:00",
	                                  "00:00-24:00x",
	                                  "24:00-08:00",
	                                  "08:60-18:00",
	                                  "08:00-24:01",
	                                  "08:00-25:00",
	                                  "08.00-18.00",
	                                  "08:00"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(pol_window_parse_hours(bad[i], &s, &e));
	assert_int_equal(pol_window_parse_day("mon"), 1);
	assert_int_equal(pol_window_parse_day("Sun"), 0);
	assert_int_equal(pol_window_parse_day("SAT"), 6);
	assert_int_equal(pol_window_parse_day("monday"), -1);
	assert_int_equal(pol_window_parse_day("mo"), -1);
	assert_int_equal(pol_window_parse_day(""), -1);
	assert_int_equal(pol_window_parse_day("m\xc3\xb6n"), -1);
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < n_zones; i++)
		cg_tz_free(zones[i]);
	n_zones = 0;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rows),
	        cmocka_unit_test(test_explain),
	        cmocka_unit_test(test_parsers),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
