/* Operational log on stderr (the audit log is separate: cg_audit.h).
 * One line per message: "certgate: LEVEL: message". */
#ifndef CG_LOG_H
#define CG_LOG_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum { CG_LOG_DEBUG = 0, CG_LOG_INFO, CG_LOG_WARN, CG_LOG_ERROR } cg_log_level_t;

void cg_log_set_level(cg_log_level_t level);
cg_log_level_t cg_log_get_level(void);

void cg_log(cg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs at most once per second for a given slot (one per call site, zeroed
 * to start); returns without logging otherwise. Counts suppressed lines and
 * says how many were suppressed on the next line that gets through. A slot
 * may be shared by threads. */
typedef struct cg_log_limit {
	_Atomic int64_t last_ms;
	_Atomic uint64_t suppressed;
} cg_log_limit_t;
void cg_log_limited(cg_log_limit_t *limit, cg_log_level_t level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#endif
