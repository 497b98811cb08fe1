/* cg_duration: the one duration syntax used by the configuration and the
 * command line. Text is a sequence of <digits><unit> with units in strictly
 * decreasing order (d, h, m, s, ms), each at most once, or a lone "0".
 * Values are milliseconds; anything beyond CG_DURATION_MAX_MS (100 years) is
 * refused, which also keeps every intermediate product far from overflow. */
#include "cg_duration.h"

#include <stdio.h>
#include <string.h>

#define MS_PER_S UINT64_C(1000)
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)
#define MS_PER_D (24 * MS_PER_H)
#define MAX_MS   (36500 * MS_PER_D)

/* Ordered from largest to smallest: a parse may only move down this table. */
static const struct {
	const char *name;
	uint64_t ms;
} units[] = {
        {"d", MS_PER_D}, {"h", MS_PER_H}, {"m", MS_PER_M}, {"s", MS_PER_S}, {"ms", 1},
};
#define N_UNITS (sizeof(units) / sizeof(units[0]))

/* Index into units[] of the unit at p, its length in *len; -1 if none. */
static int unit_at(const char *p, size_t *len)
{
	switch (p[0]) {
	case 'd':
		*len = 1;
		return 0;
	case 'h':
		*len = 1;
		return 1;
	case 'm':
		if (p[1] == 's') {
			*len = 2;
			return 4;
		}
		*len = 1;
		return 2;
	case 's':
		*len = 1;
		return 3;
	default:
		return -1;
	}
}

bool cg_duration_parse(const char *text, uint64_t *out_ms)
{
	if (!text || !*text)
		return false;
	if (strcmp(text, "0") == 0) {
		*out_ms = 0;
		return true;
	}

	uint64_t total = 0;
	int next_unit = 0; /* smallest index still allowed */
	const char *p = text;
	while (*p) {
		if (*p < '0' || *p > '9')
			return false;
		uint64_t n = 0;
		while (*p >= '0' && *p <= '9') {
			n = n * 10 + (uint64_t)(*p - '0');
			if (n > MAX_MS)
				return false;
			p++;
		}
		size_t ulen = 0;
		int u = unit_at(p, &ulen);
		if (u < 0 || u < next_unit)
			return false;
		/* n <= MAX_MS and MAX_MS * MS_PER_D fits easily in 64 bits,
		 * but check against the cap before adding anyway. */
		if (n > MAX_MS / units[u].ms)
			return false;
		total += n * units[u].ms;
		if (total > MAX_MS)
			return false;
		next_unit = u + 1;
		p += ulen;
	}
	*out_ms = total;
	return true;
}

void cg_duration_format(uint64_t ms, char *buf, size_t len)
{
	if (len == 0)
		return;
	buf[0] = '\0';
	if (ms == 0) {
		snprintf(buf, len, "0s");
		return;
	}

	size_t used = 0;
	for (size_t i = 0; i < N_UNITS && ms > 0; i++) {
		uint64_t n = ms / units[i].ms;
		if (n == 0)
			continue;
		ms -= n * units[i].ms;
		int w = snprintf(buf + used, len - used, "%llu%s", (unsigned long long)n,
		                 units[i].name);
		if (w < 0 || (size_t)w >= len - used)
			return; /* truncated, still NUL-terminated */
		used += (size_t)w;
	}
}
