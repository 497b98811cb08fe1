/* Audit log writer: JSON Lines, one write(2) per event so a line is whole or
 * absent, never interleaved. Every line starts {"ts":..., "event":...}. */
#ifndef CG_AUDIT_H
#define CG_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef enum { CG_AUDIT_REFUSE = 0, CG_AUDIT_CONTINUE } cg_audit_on_failure_t;

typedef struct cg_audit cg_audit_t;

/* path "-" means stdout. The file is opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC,
 * mode 0640. On failure returns NULL and a one-line reason in err. */
cg_audit_t *cg_audit_open(const char *path, cg_audit_on_failure_t on_failure, char *err,
                          size_t errlen);
void cg_audit_close(cg_audit_t *audit); /* accepts NULL */

const char *cg_audit_path(const cg_audit_t *audit);
void cg_audit_set_on_failure(cg_audit_t *audit, cg_audit_on_failure_t on_failure);
cg_audit_on_failure_t cg_audit_on_failure(const cg_audit_t *audit);

/* Writes one event: {"ts": now, "event": event, ...fields in their order}.
 * Steals the reference to fields (may be NULL). Returns 0, or a negative
 * errno when the line could not be written whole; after a failure the next
 * emit first tries to reopen the file (it may have been recreated). A failed
 * line is counted (cg_audit_lost). */
int cg_audit_emit(cg_audit_t *audit, const char *event, json_t *fields)
        __attribute__((warn_unused_result));

/* Reopens the file (SIGUSR1 / logrotate). Returns 0 or a negative errno; on
 * failure the old descriptor stays in use, unless its file was deleted: then
 * it is closed and the writer is unhealthy (every emit fails and is counted
 * as lost) until a reopen succeeds. */
int cg_audit_reopen(cg_audit_t *audit) __attribute__((warn_unused_result));

/* The written/lost counters go on from `from` (the audit log moving to a
 * new path is still the same log, for the metrics). */
void cg_audit_carry_counts(cg_audit_t *to, const cg_audit_t *from);

/* false after a write failed, until a later write succeeds. */
bool cg_audit_healthy(const cg_audit_t *audit);
uint64_t cg_audit_written(const cg_audit_t *audit);
uint64_t cg_audit_lost(const cg_audit_t *audit);

#endif
