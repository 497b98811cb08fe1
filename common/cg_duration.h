/* Durations as they appear in the configuration and on the command line:
 * "250ms", "90s", "15m", "24h", "7d", combined "1h30m", and plain "0". */
#ifndef CG_DURATION_H
#define CG_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses text into milliseconds. Units: ms, s, m, h, d; every number needs a
 * unit except a lone "0". Rejects empty input, signs, spaces, overflow and
 * repeated or out-of-order units ("5s1h"). */
bool cg_duration_parse(const char *text, uint64_t *out_ms) __attribute__((warn_unused_result));

/* Shortest form of ms ("1h30m", "15m", "250ms", "0s") into buf (always
 * NUL-terminated; 32 bytes is always enough). */
void cg_duration_format(uint64_t ms, char *buf, size_t len);

#endif
