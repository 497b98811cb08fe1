/* Time windows (pol_window.h). An instant is turned into the local
 * wall-clock time of the window's zone (cg_tz: the offset in force then),
 * and the days and hours are judged on that: so 08:00-18:00 means what the
 * clocks on the wall say, on a DST change day too. The next change walks
 * from boundary to boundary (a start, an end, a local midnight, a change of
 * the zone's offset, from, until) until the answer differs. */
#include "pol_window.h"

#include <stdio.h>
#include <string.h>

#include "cg_time.h"

#define DAY_MS  86400000LL
#define WEEK_MS (7 * DAY_MS)

static const char *const day_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
static const char *const day_titles[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

static int64_t floor_div(int64_t a, int64_t b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* The local wall clock at at_ms: days since the epoch, ms into the day,
 * weekday (0 = Sunday), and the zone's offset. */
typedef struct local {
	int64_t day;
	int64_t ms; /* 0 .. DAY_MS - 1 */
	int weekday;
	int32_t offset_s;
	const char *abbr;
} local_t;

static void to_local(const pol_window_t *w, int64_t at_ms, local_t *l)
{
	l->abbr = "UTC";
	l->offset_s = w->tz != NULL ? cg_tz_offset(w->tz, floor_div(at_ms, 1000), &l->abbr) : 0;
	int64_t local_ms = at_ms + (int64_t)l->offset_s * 1000;
	l->day = floor_div(local_ms, DAY_MS);
	l->ms = local_ms - l->day * DAY_MS;
	l->weekday = (int)((l->day % 7 + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
}

static bool day_in(const pol_window_t *w, int weekday)
{
	return !w->has_days || (w->days >> weekday & 1);
}

/* Days and hours only (the recurring part). */
static bool recurring_contains(const pol_window_t *w, const local_t *l)
{
	if (!w->has_hours)
		return day_in(w, l->weekday);
	int64_t start = (int64_t)w->start_s * 1000, end = (int64_t)w->end_s * 1000;
	if (start < end)
		return l->ms >= start && l->ms < end && day_in(w, l->weekday);
	/* crossing midnight: the evening belongs to today, the morning to
	 * yesterday's window */
	if (l->ms >= start)
		return day_in(w, l->weekday);
	return l->ms < end && day_in(w, (l->weekday + 6) % 7);
}

bool pol_window_contains(const pol_window_t *w, int64_t at_ms)
{
	if ((w->has_from && at_ms < w->from_ms) || (w->has_until && at_ms >= w->until_ms))
		return false;
	if (!w->has_days && !w->has_hours)
		return true;
	local_t l;
	to_local(w, at_ms, &l);
	return recurring_contains(w, &l);
}

/* The next instant after t where the recurring part may change: the next
 * wall-clock start, end or (with days) midnight at the offset in force, or
 * the zone's next change of offset if that comes first. */
static int64_t next_boundary(const pol_window_t *w, int64_t t)
{
	local_t l;
	to_local(w, t, &l);
	int64_t marks[3];
	size_t n = 0;
	if (w->has_hours) {
		marks[n++] = (int64_t)w->start_s * 1000;
		marks[n++] = (int64_t)w->end_s * 1000 % DAY_MS;
	}
	if (w->has_days)
		marks[n++] = 0;
	/* the least mark after l.ms today, else the least one tomorrow */
	int64_t best = INT64_MAX, least = INT64_MAX;
	for (size_t i = 0; i < n; i++) {
		if (marks[i] > l.ms && marks[i] < best)
			best = marks[i];
		if (marks[i] < least)
			least = marks[i];
	}
	int64_t local_next =
	        best != INT64_MAX ? l.day * DAY_MS + best : (l.day + 1) * DAY_MS + least;
	int64_t next = local_next - (int64_t)l.offset_s * 1000;
	if (w->tz != NULL) {
		int64_t change = cg_tz_next_change(w->tz, floor_div(t, 1000));
		if (change != INT64_MAX && change * 1000 < next)
			next = change * 1000;
	}
	return next;
}

int64_t pol_window_next_change(const pol_window_t *w, int64_t at_ms)
{
	bool inside = pol_window_contains(w, at_ms);
	int64_t t = at_ms;
	if (w->has_from && t < w->from_ms) {
		/* outside until from; from there on as the days and hours say */
		if (pol_window_contains(w, w->from_ms))
			return w->from_ms;
		t = w->from_ms;
	}
	if (w->has_until && t >= w->until_ms)
		return INT64_MAX; /* outside for good */
	if (w->has_days || w->has_hours) {
		/* Days and hours repeat every local week; a DST change moves them
		 * by hours at most. Nine days without a change: they never will */
		for (int64_t limit = t + WEEK_MS + 2 * DAY_MS; t < limit;) {
			int64_t next = next_boundary(w, t);
			if (w->has_until && next >= w->until_ms)
				break;
			if (pol_window_contains(w, next) != inside)
				return next;
			t = next;
		}
	}
	/* the recurring part stays as it is: only until can end it */
	return inside && w->has_until ? w->until_ms : INT64_MAX;
}

/* --- words ---------------------------------------------------------------- */

int pol_window_parse_day(const char *name)
{
	for (int i = 0; i < 7; i++) {
		const char *d = day_names[i];
		size_t k = 0;
		for (; k < 3 && name[k] != '\0'; k++)
			if ((name[k] | 0x20) != d[k])
				break;
		if (k == 3 && name[3] == '\0')
			return i;
	}
	return -1;
}

static bool parse_hhmm(const char *p, int max_hour, int32_t *out)
{
	if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] != ':' || p[3] < '0' ||
	    p[3] > '5' || p[4] < '0' || p[4] > '9')
		return false;
	int h = (p[0] - '0') * 10 + (p[1] - '0'), m = (p[3] - '0') * 10 + (p[4] - '0');
	if (h > max_hour || (h == 24 && m != 0))
		return false;
	*out = h * 3600 + m * 60;
	return true;
}

bool pol_window_parse_hours(const char *text, int32_t *start_s, int32_t *end_s)
{
	int32_t start, end;
	if (strlen(text) != 11 || text[5] != '-' || !parse_hhmm(text, 23, &start) ||
	    !parse_hhmm(text + 6, 24, &end) || start == end)
		return false;
	*start_s = start;
	*end_s = end;
	return true;
}

size_t pol_window_day_names(const pol_window_t *w, const char *names[7])
{
	size_t n = 0;
	/* Monday first, as people write weeks */
	for (int i = 1; i <= 7; i++)
		if (w->days >> (i % 7) & 1)
			names[n++] = day_names[i % 7];
	return n;
}

void pol_window_hours(const pol_window_t *w, char hours[12])
{
	/* each field two digits: the loader keeps them in range */
	unsigned f[4] = {(unsigned)w->start_s / 3600 % 100, (unsigned)w->start_s / 60 % 60,
	                 (unsigned)w->end_s / 3600 % 100, (unsigned)w->end_s / 60 % 60};
	for (int i = 0; i < 4; i++) {
		hours[3 * i] = (char)('0' + f[i] / 10);
		hours[3 * i + 1] = (char)('0' + f[i] % 10);
		hours[3 * i + 2] = i == 1 ? '-' : ':';
	}
	hours[11] = '\0';
}

typedef struct text {
	char *buf;
	size_t len, cap;
} text_t;

static void add(text_t *t, const char *s)
{
	size_t n = strlen(s);
	if (t->len + 1 >= t->cap)
		return;
	if (n > t->cap - 1 - t->len)
		n = t->cap - 1 - t->len;
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
}

static void add_days(text_t *t, const pol_window_t *w)
{
	const char *names[7];
	size_t n = pol_window_day_names(w, names);
	add(t, "days [");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			add(t, ", ");
		add(t, names[i]);
	}
	add(t, "]");
}

bool pol_window_explain(const pol_window_t *w, int64_t at_ms, char *buf, size_t len)
{
	text_t t = {.buf = buf, .cap = len};
	char when[CG_RFC3339_LEN], bound[CG_RFC3339_LEN], piece[160], hours[12];
	if (len == 0)
		return pol_window_contains(w, at_ms);
	buf[0] = '\0';
	cg_rfc3339_ms(at_ms, when);
	if (w->has_from && at_ms < w->from_ms) {
		cg_rfc3339_ms(w->from_ms, bound);
		snprintf(piece, sizeof(piece), "%s is before from %s", when, bound);
		add(&t, piece);
		return false;
	}
	if (w->has_until && at_ms >= w->until_ms) {
		cg_rfc3339_ms(w->until_ms, bound);
		snprintf(piece, sizeof(piece), "%s is not before until %s", when, bound);
		add(&t, piece);
		return false;
	}
	if (!w->has_days && !w->has_hours) {
		snprintf(piece, sizeof(piece), "%s is within from/until", when);
		add(&t, piece);
		return true;
	}
	local_t l;
	to_local(w, at_ms, &l);
	int64_t y;
	int m, d;
	cg_civil_from_days(l.day, &y, &m, &d);
	snprintf(piece, sizeof(piece), "%s %04lld-%02d-%02d %02d:%02d %s (%s)",
	         day_titles[l.weekday], (long long)y, m, d, (int)(l.ms / 3600000),
	         (int)(l.ms / 60000 % 60), l.abbr, w->tz != NULL ? cg_tz_name(w->tz) : "UTC");
	add(&t, piece);
	bool inside = recurring_contains(w, &l);
	if (w->has_hours)
		pol_window_hours(w, hours);
	if (inside) {
		add(&t, " is in ");
		if (w->has_days)
			add_days(&t, w);
		if (w->has_hours) {
			add(&t, w->has_days ? " hours " : "hours ");
			add(&t, hours);
		}
		return true;
	}
	int64_t start = (int64_t)w->start_s * 1000, end = (int64_t)w->end_s * 1000;
	bool in_hours = !w->has_hours ||
	                (start < end ? l.ms >= start && l.ms < end : l.ms >= start || l.ms < end);
	if (!in_hours) {
		add(&t, " is outside hours ");
		add(&t, hours);
		return false;
	}
	/* in the hours, on the wrong day: the window's day is the one it
	 * started on */
	int day = w->has_hours && start > end && l.ms < end ? (l.weekday + 6) % 7 : l.weekday;
	snprintf(piece, sizeof(piece), ": %s%s is not in ", day_names[day],
	         day != l.weekday ? " (the day its window started)" : "");
	add(&t, piece);
	add_days(&t, w);
	return false;
}
