/* Time zones of the system's tz database: the TZif files (RFC 8536) under
 * /usr/share/zoneinfo (or $TZDIR), read once into an immutable table of
 * UTC offsets, so any number of threads may ask a zone at once. Nothing
 * here sets the process's TZ or calls localtime: glibc keeps one zone per
 * process, switching it (setenv + tzset) is neither thread-safe nor cheap,
 * and a decision must not read files. */
#ifndef CG_TZ_H
#define CG_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cg_tz cg_tz_t;

/* Loads zone name ("Europe/Berlin", "UTC"): a relative path of letters,
 * digits and "/_+-." with no "." or ".." part, read from $TZDIR when that
 * is an absolute path, else /usr/share/zoneinfo. "UTC" works without the
 * database. NULL with a one-line reason in err on failure (no such zone,
 * not a TZif file, a malformed one, leap seconds). Free with cg_tz_free. */
cg_tz_t *cg_tz_load(const char *name, char *err, size_t err_len);
void cg_tz_free(cg_tz_t *tz); /* accepts NULL */
void cg_tz_free_cb(void *tz); /* the same, for cg_strmap_destroy */

const char *cg_tz_name(const cg_tz_t *tz);

/* The UTC offset (seconds east) in force at t (seconds since the epoch);
 * *abbr, when abbr is not NULL, gets its abbreviation ("CEST"). */
int32_t cg_tz_offset(const cg_tz_t *tz, int64_t t, const char **abbr);

/* The first instant after t at which the offset or abbreviation changes;
 * INT64_MAX when none does. */
int64_t cg_tz_next_change(const cg_tz_t *tz, int64_t t);

/* --- the POSIX TZ rule of a TZif footer (cg_tz_rule.c) -------------------- */

typedef struct cg_tz_rule_date {
	char kind;    /* 'J' Julian day 1-365 (no Feb 29), 'D' day 0-365, 'M' month.week.day */
	int16_t day;  /* J, D: the day; M: weekday 0 (Sunday) - 6 */
	int8_t month; /* M: 1-12 */
	int8_t week;  /* M: 1-5 (5 = the last) */
	int32_t time; /* local seconds after midnight, -167h .. 167h */
} cg_tz_rule_date_t;

typedef struct cg_tz_rule {
	char std_abbr[16], dst_abbr[16];
	int32_t std_off, dst_off; /* seconds east of UTC */
	bool has_dst;
	cg_tz_rule_date_t start, end; /* DST starts, ends (has_dst) */
} cg_tz_rule_t;

/* Parses a POSIX TZ string as RFC 8536 footers use it ("CET-1CEST,M3.5.0,
 * M10.5.0/3"): the DST rule is required when a DST name is given. */
bool cg_tz_rule_parse(const char *text, cg_tz_rule_t *out);

/* The rule's DST start and end in year (UTC seconds). */
void cg_tz_rule_year(const cg_tz_rule_t *rule, int64_t year, int64_t *start, int64_t *end);

/* Calendar arithmetic (proleptic Gregorian, UTC): days since the epoch of
 * a civil date, and back. */
int64_t cg_days_from_civil(int64_t y, int m, int d);
void cg_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

#endif
