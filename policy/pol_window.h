/* A rule's time window (`when`): days of the week and hours of the day as
 * wall-clock time in a zone of the system's tz database, and absolute
 * from/until bounds. Pure functions of (window, instant): whether the
 * instant is inside, when that next changes, and why, in words. */
#ifndef POL_WINDOW_H
#define POL_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cg_tz.h"

typedef struct pol_window {
	bool has_days;     /* days named */
	uint8_t days;      /* bit d set: weekday d (0 = Sunday) is in */
	bool has_hours;    /* hours named */
	int32_t start_s;   /* local seconds after midnight, 0 .. 86340 */
	int32_t end_s;     /* 60 .. 86400; below start_s: the window crosses midnight */
	const cg_tz_t *tz; /* with days or hours (the snapshot owns it) */
	bool has_from, has_until;
	int64_t from_ms, until_ms; /* from inclusive, until exclusive */
} pol_window_t;

/* Whether at_ms (epoch ms) is inside the window: from <= at < until, and
 * at's local wall-clock time in tz is within hours (start inclusive, end
 * exclusive) on one of days. A window crossing midnight (22:00-06:00)
 * belongs to the day it starts on: Friday's runs into Saturday morning. A
 * wall-clock time skipped by a DST change is never reached; one repeated
 * by it is inside (or not) both times. */
bool pol_window_contains(const pol_window_t *w, int64_t at_ms);

/* The first instant after at_ms at which pol_window_contains changes, or
 * INT64_MAX when it never does. */
int64_t pol_window_next_change(const pol_window_t *w, int64_t at_ms);

/* Why at_ms is inside the window or not, for explain, e.g.
 *   "Mon 2026-03-30 19:03 CEST (Europe/Berlin) is outside hours 08:00-18:00"
 *   "Sat 2026-03-28 10:00 CET (Europe/Berlin): sat is not in days [mon, tue]"
 *   "2026-12-24T10:00:00.000Z is not before until 2026-12-24T00:00:00.000Z"
 *   "Mon 2026-03-30 10:00 CEST (Europe/Berlin) is in days [mon, tue] hours 08:00-18:00"
 * Returns whether it is inside. */
bool pol_window_explain(const pol_window_t *w, int64_t at_ms, char *buf, size_t len);

/* The window as written: days as "mon".."sun" into names (7 entries) and
 * their count; hours as "08:00-18:00" into hours (12 bytes). */
size_t pol_window_day_names(const pol_window_t *w, const char *names[7]);
void pol_window_hours(const pol_window_t *w, char hours[12]);

/* "mon" .. "sun" (any ASCII case) -> 0 (Sunday) .. 6; -1 for anything else. */
int pol_window_parse_day(const char *name);
/* "HH:MM-HH:MM" (start 00:00-23:59, end 00:01-24:00, not equal) -> seconds. */
bool pol_window_parse_hours(const char *text, int32_t *start_s, int32_t *end_s);

#endif
