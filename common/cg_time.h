/* Wall-clock time for audit timestamps and certificate validity. */
#ifndef CG_TIME_H
#define CG_TIME_H

#include <stddef.h>
#include <stdint.h>

#define CG_RFC3339_LEN 32

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t cg_wall_ms(void);

/* "2026-11-26T23:10:04.123Z" (UTC, always milliseconds) into buf. */
void cg_rfc3339_ms(int64_t epoch_ms, char buf[CG_RFC3339_LEN]);

#endif
