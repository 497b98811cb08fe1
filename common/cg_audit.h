/* Audit log writer: JSON Lines, one write(2) per event so a line is whole or
 * absent, never interleaved. Every line starts {"ts":..., "event":...};
 * with the chain (CONFIG.md audit.chain) "seq" and "prev" follow
 * (cg_audit_chain.h). Safe to call from several threads: a line's seq, its
 * write and the tap happen under one lock, in order. */
#ifndef CG_AUDIT_H
#define CG_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef enum { CG_AUDIT_REFUSE = 0, CG_AUDIT_CONTINUE } cg_audit_on_failure_t;

typedef struct cg_audit cg_audit_t;

typedef struct cg_audit_opts {
	const char *path; /* "-": stdout */
	cg_audit_on_failure_t on_failure;
	bool chain;             /* seq and prev on every line */
	const char *state_path; /* the chain's state file; NULL: none */
} cg_audit_opts_t;

/* path "-" means stdout. The file is opened O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC,
 * mode 0640 (O_RDWR with the chain, which also locks it: flock, one writer
 * per chained file). With the chain, the position to continue from is the
 * file's last complete line, else the state file, else seq 1; a torn last
 * line (no newline: a writer killed mid-line) is cut off, and recorded by
 * an audit.repaired event before the next line. The state file is written
 * at once (fsynced). On failure returns NULL and a one-line reason in err. */
cg_audit_t *cg_audit_open_opts(const cg_audit_opts_t *opts, char *err, size_t errlen);

/* The same without the chain. */
cg_audit_t *cg_audit_open(const char *path, cg_audit_on_failure_t on_failure, char *err,
                          size_t errlen);
/* Closes the file; with the chain, writes the state file (fsynced) first.
 * Accepts NULL. */
void cg_audit_close(cg_audit_t *audit);

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

/* All that goes on when the log moves to a new path: the counters, the
 * tap, and the chain's position when the new file had none of its own
 * (no line, no state): the first line there links to the old file's last. */
void cg_audit_carry(cg_audit_t *to, const cg_audit_t *from);

/* Hears every line written, in order, right after its write succeeded: the
 * event object as written (ts, event, seq, prev, fields) and its bytes
 * (newline excluded). Called under the writer's lock: it must not emit.
 * NULL fn removes it. */
typedef void (*cg_audit_tap_fn)(void *ctx, const json_t *line_obj, const char *line, size_t len);
void cg_audit_set_tap(cg_audit_t *audit, cg_audit_tap_fn fn, void *ctx);

bool cg_audit_chained(const cg_audit_t *audit);
const char *cg_audit_state_path(const cg_audit_t *audit); /* NULL: none */
/* Rewrites the state file from now on at state_path (NULL: none); written
 * at once. 0 or a negative errno. */
int cg_audit_set_state_path(cg_audit_t *audit, const char *state_path)
        __attribute__((warn_unused_result));
/* The last line written: its seq (0: none yet) and hash (hex). */
uint64_t cg_audit_chain_head(const cg_audit_t *audit, char hash[65]);
/* Writes the state file if the chain moved since it was last written (no
 * fsync): the gateway calls it once a second. 0 or a negative errno. */
int cg_audit_save_state(cg_audit_t *audit);

/* false after a write failed, until a later write succeeds. */
bool cg_audit_healthy(const cg_audit_t *audit);
uint64_t cg_audit_written(const cg_audit_t *audit);
uint64_t cg_audit_lost(const cg_audit_t *audit);

#endif
