/* cg_time: wall-clock milliseconds and their RFC 3339 rendering for audit
 * lines and certificate validity checks. Always UTC, always three fractional
 * digits, so audit timestamps sort as strings. */
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
