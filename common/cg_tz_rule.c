/* The POSIX TZ rule at the end of a TZif file (RFC 8536 section 3.3):
 * "CET-1CEST,M3.5.0,M10.5.0/3" says how the offset goes on after the last
 * transition the file lists. Parsed once; cg_tz.c turns it into the
 * transitions of each year. And the civil-date arithmetic both need. */
#include "cg_tz.h"

#include <string.h>

int64_t cg_days_from_civil(int64_t y, int m, int d)
{
	/* H. Hinnant's days_from_civil: exact for every proleptic Gregorian date */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void cg_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	int64_t doe = days - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* --- parsing --------------------------------------------------------------- */

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* "CET" or "<+0330>" into abbr */
static bool parse_name(const char **p, char abbr[16])
{
	const char *s = *p;
	size_t n = 0;
	if (*s == '<') {
		s++;
		while (is_alpha(s[n]) || is_digit(s[n]) || s[n] == '+' || s[n] == '-')
			n++;
		if (s[n] != '>' || n < 3 || n >= 16)
			return false;
		memcpy(abbr, s, n);
		abbr[n] = '\0';
		*p = s + n + 1;
		return true;
	}
	while (is_alpha(s[n]))
		n++;
	if (n < 3 || n >= 16)
		return false;
	memcpy(abbr, s, n);
	abbr[n] = '\0';
	*p = s + n;
	return true;
}

/* A number of at most max_digits digits, at most max. */
static bool parse_num(const char **p, int max_digits, int max, int *out)
{
	int v = 0, n = 0;
	while (is_digit(**p) && n < max_digits) {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	if (n == 0 || v > max || is_digit(**p))
		return false;
	*out = v;
	return true;
}

/* [+-]hh[:mm[:ss]] in seconds; hours at most max_hours. */
static bool parse_hms(const char **p, int max_hours, int32_t *out)
{
	int sign = 1, h, m = 0, s = 0;
	if (**p == '+' || **p == '-')
		sign = *(*p)++ == '-' ? -1 : 1;
	if (!parse_num(p, 3, max_hours, &h))
		return false;
	if (**p == ':') {
		(*p)++;
		if (!parse_num(p, 2, 59, &m))
			return false;
		if (**p == ':') {
			(*p)++;
			if (!parse_num(p, 2, 59, &s))
				return false;
		}
	}
	*out = sign * (h * 3600 + m * 60 + s);
	return true;
}

static bool parse_date(const char **p, cg_tz_rule_date_t *d)
{
	int a, b, c;
	memset(d, 0, sizeof(*d));
	if (**p == 'J') {
		(*p)++;
		if (!parse_num(p, 3, 365, &a) || a < 1)
			return false;
		d->kind = 'J';
		d->day = (int16_t)a;
	} else if (**p == 'M') {
		(*p)++;
		if (!parse_num(p, 2, 12, &a) || a < 1 || *(*p)++ != '.' ||
		    !parse_num(p, 1, 5, &b) || b < 1 || *(*p)++ != '.' || !parse_num(p, 1, 6, &c))
			return false;
		d->kind = 'M';
		d->month = (int8_t)a;
		d->week = (int8_t)b;
		d->day = (int16_t)c;
	} else {
		if (!parse_num(p, 3, 365, &a))
			return false;
		d->kind = 'D';
		d->day = (int16_t)a;
	}
	d->time = 2 * 3600;
	if (**p == '/') {
		(*p)++;
		/* RFC 8536 3.3.1: the hours may range from -167 to 167 */
		if (!parse_hms(p, 167, &d->time))
			return false;
	}
	return true;
}

bool cg_tz_rule_parse(const char *text, cg_tz_rule_t *out)
{
	const char *p = text;
	int32_t off;
	memset(out, 0, sizeof(*out));
	if (!parse_name(&p, out->std_abbr) || !parse_hms(&p, 24, &off))
		return false;
	out->std_off = -off; /* POSIX counts west of Greenwich */
	if (*p == '\0')
		return true;
	if (!parse_name(&p, out->dst_abbr))
		return false;
	out->has_dst = true;
	out->dst_off = out->std_off + 3600;
	if (*p != ',' && *p != '\0') {
		if (!parse_hms(&p, 24, &off))
			return false;
		out->dst_off = -off;
	}
	/* RFC 8536 footers always carry the rule; POSIX's default is not
	 * guessed here */
	if (*p++ != ',' || !parse_date(&p, &out->start) || *p++ != ',' ||
	    !parse_date(&p, &out->end))
		return false;
	return *p == '\0';
}

/* --- transitions ----------------------------------------------------------- */

/* Days since the epoch of the rule date d in year y. */
static int64_t rule_day(const cg_tz_rule_date_t *d, int64_t y)
{
	int64_t jan1 = cg_days_from_civil(y, 1, 1);
	switch (d->kind) {
	case 'J': /* 1-365, February 29 never counted */
		return jan1 + d->day - 1 + (is_leap(y) && d->day >= 60);
	case 'D': /* 0-365, February 29 counted */
		return jan1 + d->day;
	default: {
		int64_t first = cg_days_from_civil(y, d->month, 1);
		int wd = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
		int64_t day = first + (d->day - wd + 7) % 7 + (int64_t)(d->week - 1) * 7;
		while (day >= first + month_days(y, d->month))
			day -= 7; /* week 5: the last such weekday */
		return day;
	}
	}
}

void cg_tz_rule_year(const cg_tz_rule_t *rule, int64_t year, int64_t *start, int64_t *end)
{
	/* DST starts at a local time of standard time and ends at one of
	 * daylight time */
	*start = rule_day(&rule->start, year) * 86400 + rule->start.time - rule->std_off;
	*end = rule_day(&rule->end, year) * 86400 + rule->end.time - rule->dst_off;
}
