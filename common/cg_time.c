/* cg_time: wall-clock milliseconds and their RFC 3339 rendering for audit
 * lines and certificate validity checks. Always UTC, always three fractional
 * digits, so audit timestamps sort as strings. And the way back, for times
 * a user gives (certgate explain --at). */
#include "cg_time.h"

#include <stdio.h>
#include <time.h>

int64_t cg_wall_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cg_rfc3339_ms(int64_t epoch_ms, char buf[CG_RFC3339_LEN])
{
	/* Floor division so that times before 1970 still get a 0..999 fraction. */
	int64_t secs = epoch_ms / 1000;
	int64_t frac = epoch_ms % 1000;
	if (frac < 0) {
		frac += 1000;
		secs -= 1;
	}

	time_t t = (time_t)secs;
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, CG_RFC3339_LEN, "1970-01-01T00:00:00.000Z");
		return;
	}
	int n = snprintf(buf, CG_RFC3339_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                 tm.tm_sec, (int)frac);
	/* Unreachable for any year gmtime_r can produce; keeps the buffer sane. */
	if (n < 0 || n >= CG_RFC3339_LEN)
		snprintf(buf, CG_RFC3339_LEN, "9999-12-31T23:59:59.999Z");
}

/* n decimal digits at *p, advancing it; -1 when they are not there */
static int digits(const char **p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (**p - '0');
	}
	return v;
}

static bool expect(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

static int days_in_month(int year, int month)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	return month == 2 && leap ? 29 : days[month - 1];
}

bool cg_rfc3339_parse(const char *text, int64_t *epoch_ms)
{
	const char *p = text;
	int year = digits(&p, 4);
	if (year < 0 || !expect(&p, '-'))
		return false;
	int month = digits(&p, 2);
	if (month < 1 || month > 12 || !expect(&p, '-'))
		return false;
	int day = digits(&p, 2);
	if (day < 1 || day > days_in_month(year, month) || (*p != 'T' && *p != 't'))
		return false;
	p++;
	int hour = digits(&p, 2);
	if (hour < 0 || hour > 23 || !expect(&p, ':'))
		return false;
	int min = digits(&p, 2);
	if (min < 0 || min > 59 || !expect(&p, ':'))
		return false;
	int sec = digits(&p, 2);
	if (sec < 0 || sec > 60) /* 60: a leap second, counted as the next one */
		return false;
	int64_t ms = 0;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		for (int scale = 100; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ms += scale * (*p - '0');
	}
	int64_t offset_s = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;
		int oh = digits(&p, 2);
		if (oh < 0 || oh > 23 || !expect(&p, ':'))
			return false;
		int om = digits(&p, 2);
		if (om < 0 || om > 59)
			return false;
		offset_s = sign * (oh * 3600 + om * 60);
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	/* days from the civil date (proleptic Gregorian), no time zone */
	int y = month <= 2 ? year - 1 : year;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	int64_t days = era * 146097 + doe - 719468;
	int64_t secs = days * 86400 + hour * 3600 + min * 60 + sec - offset_s;
	*epoch_ms = secs * 1000 + ms;
	return true;
}
