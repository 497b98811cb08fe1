/* Wall-clock time for audit timestamps and certificate validity. */
#ifndef CG_TIME_H
#define CG_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CG_RFC3339_LEN 32

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t cg_wall_ms(void);

/* "2026-11-26T23:10:04.123Z" (UTC, always milliseconds) into buf. */
void cg_rfc3339_ms(int64_t epoch_ms, char buf[CG_RFC3339_LEN]);

/* Reads an RFC 3339 date-time ("2026-12-04T23:29:08Z", with optional
 * fraction, "Z" or a "+01:00" offset; 'T' and 'Z' in either case) into
 * epoch ms (the fraction cut to milliseconds). False, *epoch_ms untouched,
 * on anything else: a missing part, a day the month lacks, trailing text. */
bool cg_rfc3339_parse(const char *text, int64_t *epoch_ms);

#endif
