/* Where a chained audit log resumes (CONFIG.md audit.chain, audit.state):
 * the last complete line of the file is the truth; when the file has none
 * (a fresh file after logrotate), the state file written beside it keeps
 * the last seq and hash. Used by cg_audit.c only. */
#ifndef CG_AUDIT_RESUME_H
#define CG_AUDIT_RESUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_audit_chain.h"

/* The bytes of a torn last line kept for the audit.repaired event. */
#define CG_AUDIT_TORN_KEEP 4096

typedef struct cg_audit_resume {
	bool found;              /* the file has a complete last line */
	bool chained;            /* ... and it has a valid seq and prev */
	uint64_t seq;            /* its seq (when chained) */
	char hash[CG_CHAIN_HEX]; /* its hash (when found) */
	/* a torn last line, cut off */
	size_t torn_len;
	char *torn; /* its first bytes (at most CG_AUDIT_TORN_KEEP), malloc'd */
	size_t torn_kept;
	char torn_hash[CG_CHAIN_HEX]; /* of all torn_len bytes */
} cg_audit_resume_t;

/* Reads the end of the audit file open on fd (O_RDWR): the last complete
 * line's seq and hash, and, when the file ends without a newline, cuts
 * that torn line off (ftruncate) after keeping what the event needs.
 * 0, or a negative errno (nothing was changed then). A last line too long
 * to be an audit line is left unread (found false). The caller frees
 * out->torn. */
int cg_audit_resume_read(int fd, cg_audit_resume_t *out) __attribute__((warn_unused_result));

/* The state file: {"seq": N, "hash": "..."} (plus "file" and "saved" for
 * people). 0; -ENOENT when missing; another negative errno, or -EINVAL for
 * content that is not a state (err says what). */
int cg_audit_state_read(const char *path, uint64_t *seq, char hash[CG_CHAIN_HEX], char *err,
                        size_t err_len) __attribute__((warn_unused_result));

/* Replaces the state file whole (tmp + rename). durable: fsynced, file and
 * folder; otherwise it survives a kill -9 but maybe not a power loss. */
int cg_audit_state_write(const char *path, const char *log_path, uint64_t seq,
                         const char hash[CG_CHAIN_HEX], bool durable)
        __attribute__((warn_unused_result));

#endif
