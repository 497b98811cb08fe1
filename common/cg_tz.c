/* Time zones from TZif files (RFC 8536; see cg_tz.h for why not glibc's
 * localtime). A zone is its list of transitions (instant -> local time
 * type) from the file's 64-bit block, then the POSIX rule of its footer for
 * every instant after the last one. The rule's transitions up to
 * RULE_TABLE_END_YEAR are worked out at load, so a lookup is a binary
 * search; later instants work out the years around them on the spot. */
#include "cg_tz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_file.h"

#define TZ_DEFAULT_DIR      "/usr/share/zoneinfo"
#define TZ_NAME_MAX         255
#define TZ_FILE_MAX         (1024 * 1024)
#define TZ_MAX_TRANSITIONS  100000
#define TZ_MAX_TYPES        256
#define RULE_TABLE_END_YEAR 2100

typedef struct tz_type {
	int32_t off;
	bool isdst;
	uint16_t abbr; /* index into abbrs */
} tz_type_t;

/* Transitions of a footer rule, sorted, each one a change. */
typedef struct rule_list {
	int64_t *at;
	bool *dst; /* the state from at[i] on */
	size_t n;
	bool dst0; /* the state before at[0] */
} rule_list_t;

struct cg_tz {
	char name[TZ_NAME_MAX + 1];
	int64_t *at; /* the file's transitions, ascending */
	uint8_t *type;
	size_t n;
	tz_type_t *types;
	size_t n_types;
	char *abbrs;
	size_t abbrs_len;
	bool has_rule;
	cg_tz_rule_t rule;
	rule_list_t table; /* the rule's transitions after the file's, precomputed */
};

/* --- the footer rule's transitions ------------------------------------------ */

typedef struct edge {
	int64_t at;
	bool dst;
} edge_t;

static int edge_cmp(const void *a, const void *b)
{
	const edge_t *x = a, *y = b;
	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return (int)x->dst - (int)y->dst; /* at one instant the start comes last */
}

/* The transitions of years y0..y1 into out->at and out->dst (room for
 * 2 per year; e: as much scratch), each a change of state: DST all year
 * ("J1/0,J365/25") makes an end and the next start meet, which cancel. */
static void rule_build_into(const cg_tz_rule_t *rule, int64_t y0, int64_t y1, edge_t *e,
                            rule_list_t *out)
{
	size_t n = (size_t)(y1 - y0 + 1) * 2;
	for (int64_t y = y0; y <= y1; y++) {
		size_t i = (size_t)(y - y0) * 2;
		cg_tz_rule_year(rule, y, &e[i].at, &e[i + 1].at);
		e[i].dst = true;
		e[i + 1].dst = false;
	}
	qsort(e, n, sizeof(*e), edge_cmp);
	/* before the first edge: the state it leaves */
	bool state = !e[0].dst;
	out->n = 0;
	out->dst0 = state;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && e[i + 1].at == e[i].at)
			continue; /* the later edge at the same instant wins */
		if (e[i].dst == state)
			continue;
		state = e[i].dst;
		out->at[out->n] = e[i].at;
		out->dst[out->n++] = state;
	}
}

/* The same into malloc'd arrays; false on allocation failure. */
static bool rule_build(const cg_tz_rule_t *rule, int64_t y0, int64_t y1, rule_list_t *out)
{
	size_t n = (size_t)(y1 - y0 + 1) * 2;
	edge_t *e = malloc(n * sizeof(*e));
	out->at = malloc(n * sizeof(*out->at));
	out->dst = malloc(n * sizeof(*out->dst));
	bool ok = e != NULL && out->at != NULL && out->dst != NULL;
	if (ok)
		rule_build_into(rule, y0, y1, e, out);
	free(e);
	return ok;
}

static void rule_list_finish(rule_list_t *l)
{
	free(l->at);
	free(l->dst);
	memset(l, 0, sizeof(*l));
}

/* Index of the last entry <= t, or -1. */
static ptrdiff_t last_at_or_before(const int64_t *at, size_t n, int64_t t)
{
	size_t lo = 0, hi = n; /* answer in [lo - 1, hi - 1] */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (at[mid] <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ptrdiff_t)lo - 1;
}

static int64_t year_of(int64_t t)
{
	int64_t y;
	int m, d;
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	cg_civil_from_days(days, &y, &m, &d);
	return y;
}

/* The rule's state at t (DST or not) and, in *next, its next change. */
static bool rule_state(const cg_tz_t *tz, int64_t t, int64_t *next)
{
	const rule_list_t *l = &tz->table;
	if (!tz->rule.has_dst) {
		*next = INT64_MAX;
		return false;
	}
	if (l->n > 0 && t >= l->at[0] && t < l->at[l->n - 1]) {
		ptrdiff_t i = last_at_or_before(l->at, l->n, t);
		*next = l->at[i + 1];
		return l->dst[i];
	}
	/* outside the table: the years around t, worked out now */
	int64_t y = year_of(t), at[8];
	bool flags[8];
	edge_t scratch[8];
	rule_list_t local = {.at = at, .dst = flags};
	rule_build_into(&tz->rule, y - 1, y + 2, scratch, &local);
	ptrdiff_t i = last_at_or_before(local.at, local.n, t);
	*next = (size_t)(i + 1) < local.n ? local.at[i + 1] : INT64_MAX;
	return i < 0 ? local.dst0 : local.dst[i];
}

/* --- lookups ------------------------------------------------------------------ */

int32_t cg_tz_offset(const cg_tz_t *tz, int64_t t, const char **abbr)
{
	const tz_type_t *ty;
	if (tz->n > 0 && t < tz->at[tz->n - 1]) {
		ptrdiff_t i = last_at_or_before(tz->at, tz->n, t);
		/* before the first transition: time type 0 (RFC 8536 3.2) */
		ty = &tz->types[i < 0 ? 0 : tz->type[i]];
	} else if (tz->has_rule) {
		int64_t next;
		bool dst = rule_state(tz, t, &next);
		if (abbr != NULL)
			*abbr = dst ? tz->rule.dst_abbr : tz->rule.std_abbr;
		return dst ? tz->rule.dst_off : tz->rule.std_off;
	} else {
		ty = &tz->types[tz->n > 0 ? tz->type[tz->n - 1] : 0];
	}
	if (abbr != NULL)
		*abbr = tz->abbrs + ty->abbr;
	return ty->off;
}

int64_t cg_tz_next_change(const cg_tz_t *tz, int64_t t)
{
	if (tz->n > 0 && t < tz->at[tz->n - 1])
		return tz->at[last_at_or_before(tz->at, tz->n, t) + 1];
	if (!tz->has_rule)
		return INT64_MAX;
	int64_t next;
	(void)rule_state(tz, t, &next);
	return next;
}

const char *cg_tz_name(const cg_tz_t *tz)
{
	return tz->name;
}

void cg_tz_free(cg_tz_t *tz)
{
	if (tz == NULL)
		return;
	free(tz->at);
	free(tz->type);
	free(tz->types);
	free(tz->abbrs);
	rule_list_finish(&tz->table);
	free(tz);
}

void cg_tz_free_cb(void *tz)
{
	cg_tz_free(tz);
}

/* --- loading ------------------------------------------------------------------ */

typedef struct reader {
	const uint8_t *p, *end;
} reader_t;

static bool take(reader_t *r, size_t n, const uint8_t **out)
{
	if ((size_t)(r->end - r->p) < n)
		return false;
	*out = r->p;
	r->p += n;
	return true;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct header {
	char version;
	uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
} header_t;

static const char *read_header(reader_t *r, header_t *h)
{
	const uint8_t *p;
	if (!take(r, 44, &p) || memcmp(p, "TZif", 4) != 0)
		return "not a TZif file";
	h->version = (char)p[4];
	h->isutcnt = be32(p + 20);
	h->isstdcnt = be32(p + 24);
	h->leapcnt = be32(p + 28);
	h->timecnt = be32(p + 32);
	h->typecnt = be32(p + 36);
	h->charcnt = be32(p + 40);
	if (h->typecnt == 0 || h->typecnt > TZ_MAX_TYPES || h->timecnt > TZ_MAX_TRANSITIONS ||
	    h->charcnt == 0 || h->charcnt > 65535 || h->leapcnt > TZ_MAX_TRANSITIONS ||
	    (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
	    (h->isstdcnt != 0 && h->isstdcnt != h->typecnt))
		return "malformed TZif header";
	return NULL;
}

static size_t block_len(const header_t *h, size_t time_size)
{
	return h->timecnt * time_size + h->timecnt + h->typecnt * 6 + h->charcnt +
	       h->leapcnt * (time_size + 4) + h->isstdcnt + h->isutcnt;
}

/* The data block after header h, its times time_size bytes wide. */
static const char *read_block(cg_tz_t *tz, reader_t *r, const header_t *h, size_t time_size)
{
	const uint8_t *times, *idx, *types, *chars, *skip;
	if (h->leapcnt > 0)
		return "leap seconds (a right/ zone) are not supported";
	if (!take(r, h->timecnt * time_size, &times) || !take(r, h->timecnt, &idx) ||
	    !take(r, h->typecnt * 6, &types) || !take(r, h->charcnt, &chars) ||
	    !take(r, h->isstdcnt + h->isutcnt, &skip))
		return "truncated TZif file";
	tz->n = h->timecnt;
	tz->n_types = h->typecnt;
	tz->abbrs_len = h->charcnt;
	tz->at = malloc((tz->n ? tz->n : 1) * sizeof(*tz->at));
	tz->type = malloc(tz->n ? tz->n : 1);
	tz->types = malloc(tz->n_types * sizeof(*tz->types));
	tz->abbrs = malloc(tz->abbrs_len + 1);
	if (!tz->at || !tz->type || !tz->types || !tz->abbrs)
		return "out of memory";
	for (size_t i = 0; i < tz->n; i++) {
		tz->at[i] = time_size == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
		tz->type[i] = idx[i];
		if (idx[i] >= h->typecnt || (i > 0 && tz->at[i] <= tz->at[i - 1]))
			return "malformed TZif transitions";
	}
	memcpy(tz->abbrs, chars, h->charcnt);
	tz->abbrs[h->charcnt] = '\0';
	for (size_t i = 0; i < tz->n_types; i++) {
		const uint8_t *t = types + 6 * i;
		int32_t off = (int32_t)be32(t);
		/* RFC 8536: never -2^31; real zones stay within a day */
		if (off <= -26 * 3600 || off >= 26 * 3600 || t[4] > 1 || t[5] >= h->charcnt)
			return "malformed TZif time type";
		tz->types[i] = (tz_type_t){.off = off, .isdst = t[4] == 1, .abbr = t[5]};
	}
	return NULL;
}

/* The footer "\nTZ\n" of a version 2+ file; empty = no rule. */
static const char *read_footer(cg_tz_t *tz, reader_t *r)
{
	const uint8_t *nl;
	char text[128];
	if (!take(r, 1, &nl) || *nl != '\n')
		return "malformed TZif footer";
	const uint8_t *start = r->p;
	while (r->p < r->end && *r->p != '\n')
		r->p++;
	size_t len = (size_t)(r->p - start);
	if (r->p == r->end || len >= sizeof(text))
		return "malformed TZif footer";
	if (len == 0)
		return NULL;
	memcpy(text, start, len);
	text[len] = '\0';
	if (!cg_tz_rule_parse(text, &tz->rule))
		return "unsupported TZ rule in the TZif footer";
	tz->has_rule = true;
	return NULL;
}

static const char *parse(cg_tz_t *tz, const uint8_t *data, size_t len)
{
	reader_t r = {.p = data, .end = data + len};
	header_t h;
	const char *why = read_header(&r, &h);
	if (why != NULL)
		return why;
	if (h.version == '\0')
		return read_block(tz, &r, &h, 4);
	/* version 2+: skip the 32-bit block, read the 64-bit one and the footer */
	const uint8_t *skip;
	if (!take(&r, block_len(&h, 4), &skip))
		return "truncated TZif file";
	if ((why = read_header(&r, &h)) != NULL || (why = read_block(tz, &r, &h, 8)) != NULL)
		return why;
	if ((why = read_footer(tz, &r)) != NULL)
		return why;
	if (tz->has_rule) {
		int64_t from = tz->n > 0 ? year_of(tz->at[tz->n - 1]) : 1970;
		if (from < RULE_TABLE_END_YEAR && tz->rule.has_dst &&
		    !rule_build(&tz->rule, from, RULE_TABLE_END_YEAR, &tz->table))
			return "out of memory";
	}
	return NULL;
}

static bool name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > TZ_NAME_MAX || name[0] == '/')
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("/_+-.", c) != NULL))
			return false;
	}
	/* no "." or ".." part, no empty one */
	for (const char *part = name; part != NULL;) {
		const char *slash = strchr(part, '/');
		size_t len = slash ? (size_t)(slash - part) : strlen(part);
		if (len == 0 || (len == 1 && part[0] == '.') ||
		    (len == 2 && part[0] == '.' && part[1] == '.'))
			return false;
		part = slash ? slash + 1 : NULL;
	}
	return true;
}

static cg_tz_t *builtin_utc(void)
{
	cg_tz_t *tz = calloc(1, sizeof(*tz));
	if (tz == NULL)
		return NULL;
	tz->types = calloc(1, sizeof(*tz->types));
	tz->abbrs = strdup("UTC");
	if (tz->types == NULL || tz->abbrs == NULL) {
		cg_tz_free(tz);
		return NULL;
	}
	tz->n_types = 1;
	tz->abbrs_len = 3;
	snprintf(tz->name, sizeof(tz->name), "UTC");
	return tz;
}

cg_tz_t *cg_tz_load(const char *name, char *err, size_t err_len)
{
	if (!name_ok(name)) {
		snprintf(err, err_len,
		         "expected a time zone name like \"Europe/Berlin\" or \"UTC\"");
		return NULL;
	}
	const char *dir = getenv("TZDIR");
	if (dir == NULL || dir[0] != '/' || strlen(dir) > 1024)
		dir = TZ_DEFAULT_DIR;
	char path[1024 + TZ_NAME_MAX + 2];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *data;
	size_t len;
	int rc = cg_file_read(path, TZ_FILE_MAX, &data, &len);
	if (rc != 0) {
		if (strcmp(name, "UTC") == 0)
			return builtin_utc(); /* no tz database installed */
		if (rc == -ENOENT || rc == -EIO || rc == -EISDIR || rc == -ENOTDIR)
			snprintf(err, err_len, "unknown time zone \"%s\" (no such zone in %s)",
			         name, dir);
		else
			snprintf(err, err_len, "time zone \"%s\": %s: %s", name, path,
			         strerror(-rc));
		return NULL;
	}
	cg_tz_t *tz = calloc(1, sizeof(*tz));
	const char *why = tz != NULL ? parse(tz, (const uint8_t *)data, len) : "out of memory";
	free(data);
	if (why != NULL) {
		snprintf(err, err_len, "time zone \"%s\": %s: %s", name, path, why);
		cg_tz_free(tz);
		return NULL;
	}
	snprintf(tz->name, sizeof(tz->name), "%s", name);
	return tz;
}
