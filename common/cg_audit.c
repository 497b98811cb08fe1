/* cg_audit: the audit log writer (spec/AUDIT.md).
 *
 * Data flow: the caller hands over a jansson object of event fields; emit
 * builds a fresh object {"ts", "event", ...fields in insertion order},
 * serialises it compactly (UTF-8 kept, control characters escaped by
 * jansson), appends '\n' and hands the whole line to one write(2) on an
 * O_APPEND descriptor, so a line is either whole in the file or absent, and
 * lines from concurrent writers never interleave.
 *
 * Failure handling: a failed write marks the writer unhealthy and counts the
 * line as lost; the gateway reads cg_audit_healthy() to apply
 * audit.on_failure. Because the usual causes are "file deleted" or "disk
 * full, since fixed", the next emit first reopens the path. Reopen (SIGUSR1,
 * logrotate) opens the new descriptor before closing the old one, so a
 * failed reopen leaves the writer where it was, unless the old file was
 * deleted (then nothing is written until the path opens again). Path "-"
 * is stdout, fd 1, which is never closed or reopened.
 *
 * The chain (audit.chain): each line gets the next seq and, as prev, the
 * hash of the last line actually written; a line that fails to be written
 * takes neither (the next one reuses them), so the file's chain has no
 * hole for a write failure: those are counted, and audit.resumed says how
 * many. Where the chain resumes, and when its state file is written, is
 * cg_audit_resume.c's business. */
#include "cg_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cg_audit_chain.h"
#include "cg_audit_resume.h"
#include "cg_log.h"
#include "cg_time.h"
#include "cg_utf8.h"

struct cg_audit {
	pthread_mutex_t lock;
	char *path;
	int fd;
	bool is_stdout;
	bool healthy;
	cg_audit_on_failure_t on_failure;
	uint64_t written;
	uint64_t lost;
	/* the chain */
	bool chain;
	bool chain_known;         /* the position came from the file or the state */
	uint64_t seq;             /* of the last line written; 0: none yet */
	char prev[CG_CHAIN_HEX];  /* its hash */
	char *state_path;         /* NULL: no state file */
	uint64_t saved_seq;       /* what the state file says */
	bool saved;               /* ... once it was written */
	cg_audit_resume_t repair; /* a torn line cut off at open, not yet recorded */
	cg_log_limit_t state_log;
	/* who hears the lines */
	cg_audit_tap_fn tap;
	void *tap_ctx;
};

/* With the chain the file is read back at open (O_RDWR) and locked (lock:
 * see lock_file). */
static int open_path(const char *path, bool chain)
{
	int fd;
	do {
		fd = open(path, (chain ? O_RDWR : O_WRONLY) | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

/* Two writers on one chained file would interleave two seq runs: the
 * writer holds an exclusive flock on its file (closed on error). */
static int lock_file(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return fd;
	int err = errno == EWOULDBLOCK ? EBUSY : errno;
	close(fd);
	return -err;
}

static const char *open_error(int rc)
{
	return rc == -EBUSY ? "in use by another writer (a chained audit log has one writer)"
	                    : strerror(-rc);
}

/* Under the lock (or before the writer is shared). */
static int write_state(cg_audit_t *audit, bool durable)
{
	if (audit->state_path == NULL || !audit->chain)
		return 0;
	int rc = cg_audit_state_write(audit->state_path, audit->path, audit->seq, audit->prev,
	                              durable);
	if (rc == 0) {
		audit->saved_seq = audit->seq;
		audit->saved = true;
	}
	return rc;
}

/* Where the chain goes on: the file's last complete line, else the state
 * file, else the beginning. Cuts a torn last line off (kept in
 * audit->repair for the audit.repaired event). */
static int resume_chain(cg_audit_t *audit, char *err, size_t errlen)
{
	cg_audit_resume_t *r = &audit->repair;
	uint64_t state_seq = 0;
	char state_hash[CG_CHAIN_HEX], why[512];
	bool have_state = false;

	audit->seq = 0;
	memcpy(audit->prev, CG_CHAIN_GENESIS, CG_CHAIN_HEX);
	if (!audit->is_stdout) {
		int rc = cg_audit_resume_read(audit->fd, r);
		if (rc != 0) {
			snprintf(err, errlen,
			         "%s: cannot read the end of the file to continue its chain: %s",
			         audit->path, strerror(-rc));
			return rc;
		}
		if (r->torn != NULL)
			cg_log(CG_LOG_WARN,
			       "audit: %s ended with a torn line (%zu bytes without a newline, "
			       "from a "
			       "writer stopped mid-line): cut off, recorded in audit.repaired",
			       audit->path, r->torn_len);
	}
	if (audit->state_path != NULL) {
		int rc = cg_audit_state_read(audit->state_path, &state_seq, state_hash, why,
		                             sizeof(why));
		have_state = rc == 0;
		if (rc != 0 && rc != -ENOENT)
			cg_log(CG_LOG_WARN, "audit: chain state ignored: %s", why);
	}
	if (r->found) {
		memcpy(audit->prev, r->hash, CG_CHAIN_HEX);
		/* a last line without seq (written with the chain off) still
		 * anchors prev; the count goes on from the state if there is one */
		audit->seq = r->chained ? r->seq : have_state ? state_seq : 0;
		audit->chain_known = true;
	} else if (have_state) {
		audit->seq = state_seq;
		memcpy(audit->prev, state_hash, CG_CHAIN_HEX);
		audit->chain_known = true;
	}
	return 0;
}

cg_audit_t *cg_audit_open_opts(const cg_audit_opts_t *opts, char *err, size_t errlen)
{
	const char *path = opts->path;
	cg_audit_t *audit = calloc(1, sizeof(*audit));
	if (!audit) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto fail_alloc;
	}
	audit->path = strdup(path);
	audit->state_path = opts->chain && opts->state_path ? strdup(opts->state_path) : NULL;
	if (!audit->path || (opts->chain && opts->state_path && !audit->state_path)) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto fail_path;
	}
	pthread_mutex_init(&audit->lock, NULL);
	audit->on_failure = opts->on_failure;
	audit->healthy = true;
	audit->chain = opts->chain;

	if (strcmp(path, "-") == 0) {
		audit->is_stdout = true;
		audit->fd = STDOUT_FILENO;
	} else {
		audit->fd = open_path(path, opts->chain);
		if (audit->fd >= 0 && opts->chain)
			audit->fd = lock_file(audit->fd);
		if (audit->fd < 0) {
			snprintf(err, errlen, "%s: %s", path, open_error(audit->fd));
			goto fail_open;
		}
	}
	if (audit->chain) {
		if (resume_chain(audit, err, errlen) != 0)
			goto fail_chain;
		int rc = write_state(audit, true);
		if (rc != 0) {
			snprintf(err, errlen, "%s: cannot write the chain state %s: %s", path,
			         audit->state_path, strerror(-rc));
			goto fail_chain;
		}
	}
	return audit;

fail_chain:
	free(audit->repair.torn);
	if (!audit->is_stdout)
		close(audit->fd);
fail_open:
	pthread_mutex_destroy(&audit->lock);
fail_path:
	free(audit->state_path);
	free(audit->path);
	free(audit);
fail_alloc:
	return NULL;
}

cg_audit_t *cg_audit_open(const char *path, cg_audit_on_failure_t on_failure, char *err,
                          size_t errlen)
{
	cg_audit_opts_t opts = {.path = path, .on_failure = on_failure};
	return cg_audit_open_opts(&opts, err, errlen);
}

void cg_audit_close(cg_audit_t *audit)
{
	if (!audit)
		return;
	int rc = write_state(audit, true);
	if (rc != 0)
		cg_log(CG_LOG_WARN, "audit: cannot write the chain state %s: %s", audit->state_path,
		       strerror(-rc));
	if (!audit->is_stdout && audit->fd >= 0)
		close(audit->fd);
	pthread_mutex_destroy(&audit->lock);
	free(audit->repair.torn);
	free(audit->state_path);
	free(audit->path);
	free(audit);
}

const char *cg_audit_path(const cg_audit_t *audit)
{
	return audit->path;
}

/* The writer's own lock, for the getters: the fields they read change
 * under it on whichever thread writes a line (the admin API and the
 * control loop read them from another). */
static pthread_mutex_t *lock_of(const cg_audit_t *audit)
{
	return &((cg_audit_t *)audit)->lock;
}

void cg_audit_set_on_failure(cg_audit_t *audit, cg_audit_on_failure_t on_failure)
{
	pthread_mutex_lock(&audit->lock);
	audit->on_failure = on_failure;
	pthread_mutex_unlock(&audit->lock);
}

cg_audit_on_failure_t cg_audit_on_failure(const cg_audit_t *audit)
{
	pthread_mutex_lock(lock_of(audit));
	cg_audit_on_failure_t on_failure = audit->on_failure;
	pthread_mutex_unlock(lock_of(audit));
	return on_failure;
}

bool cg_audit_healthy(const cg_audit_t *audit)
{
	pthread_mutex_lock(lock_of(audit));
	bool healthy = audit->healthy;
	pthread_mutex_unlock(lock_of(audit));
	return healthy;
}

uint64_t cg_audit_written(const cg_audit_t *audit)
{
	pthread_mutex_lock(lock_of(audit));
	uint64_t written = audit->written;
	pthread_mutex_unlock(lock_of(audit));
	return written;
}

void cg_audit_carry_counts(cg_audit_t *to, const cg_audit_t *from)
{
	to->written += from->written;
	to->lost += from->lost;
}

void cg_audit_carry(cg_audit_t *to, const cg_audit_t *from)
{
	pthread_mutex_lock(&to->lock);
	cg_audit_carry_counts(to, from);
	to->tap = from->tap;
	to->tap_ctx = from->tap_ctx;
	if (to->chain && from->chain && !to->chain_known && to->written == from->written) {
		to->seq = from->seq;
		memcpy(to->prev, from->prev, CG_CHAIN_HEX);
		to->chain_known = true;
		int rc = write_state(to, true);
		if (rc != 0)
			cg_log(CG_LOG_WARN, "audit: cannot write the chain state %s: %s",
			       to->state_path, strerror(-rc));
	}
	pthread_mutex_unlock(&to->lock);
}

uint64_t cg_audit_lost(const cg_audit_t *audit)
{
	pthread_mutex_lock(lock_of(audit));
	uint64_t lost = audit->lost;
	pthread_mutex_unlock(lock_of(audit));
	return lost;
}

void cg_audit_set_tap(cg_audit_t *audit, cg_audit_tap_fn fn, void *ctx)
{
	pthread_mutex_lock(&audit->lock);
	audit->tap = fn;
	audit->tap_ctx = ctx;
	pthread_mutex_unlock(&audit->lock);
}

bool cg_audit_chained(const cg_audit_t *audit)
{
	return audit->chain;
}

const char *cg_audit_state_path(const cg_audit_t *audit)
{
	return audit->state_path;
}

int cg_audit_set_state_path(cg_audit_t *audit, const char *state_path)
{
	char *copy = NULL;
	if (state_path != NULL && (copy = strdup(state_path)) == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&audit->lock);
	free(audit->state_path);
	audit->state_path = audit->chain ? copy : NULL;
	if (!audit->chain)
		free(copy);
	int rc = write_state(audit, true);
	pthread_mutex_unlock(&audit->lock);
	return rc;
}

uint64_t cg_audit_chain_head(const cg_audit_t *audit, char hash[65])
{
	pthread_mutex_lock(lock_of(audit));
	uint64_t seq = audit->seq;
	memcpy(hash, audit->prev, CG_CHAIN_HEX);
	pthread_mutex_unlock(lock_of(audit));
	return seq;
}

int cg_audit_save_state(cg_audit_t *audit)
{
	int rc = 0;
	pthread_mutex_lock(&audit->lock);
	if (audit->chain && audit->state_path != NULL &&
	    (!audit->saved || audit->saved_seq != audit->seq)) {
		rc = write_state(audit, false);
		if (rc != 0)
			cg_log_limited(&audit->state_log, CG_LOG_WARN,
			               "audit: cannot write the chain state %s: %s",
			               audit->state_path, strerror(-rc));
	}
	pthread_mutex_unlock(&audit->lock);
	return rc;
}

/* Shared by cg_audit_reopen and emit's recovery attempt. A failed reopen
 * keeps the old descriptor while its file still has a name (renamed by
 * logrotate: the lines still land somewhere visible). If that file was
 * deleted, every line written to it would vanish unseen: the descriptor is
 * dropped and the writer stays unhealthy until the path opens again.
 * With the chain, the new file continues the chain from memory (the last
 * line written is known), and the state file is written durably: this is
 * the moment logrotate leaves an empty file behind. */
static int reopen(cg_audit_t *audit)
{
	if (audit->is_stdout)
		return 0;
	int fd = open_path(audit->path, audit->chain);
	struct stat now, before;
	if (fd >= 0 && audit->fd >= 0 && fstat(fd, &now) == 0 && fstat(audit->fd, &before) == 0 &&
	    now.st_dev == before.st_dev && now.st_ino == before.st_ino) {
		close(fd); /* the same file (SIGUSR1 without a rotation) */
		return 0;
	}
	if (fd >= 0 && audit->chain)
		fd = lock_file(fd);
	if (fd < 0) {
		struct stat st;
		if (audit->fd >= 0 && fstat(audit->fd, &st) == 0 && st.st_nlink == 0) {
			close(audit->fd);
			audit->fd = -1;
			audit->healthy = false;
		}
		return fd;
	}
	int old = audit->fd;
	audit->fd = fd;
	if (old >= 0)
		close(old);
	int rc = write_state(audit, true);
	if (rc != 0)
		cg_log_limited(&audit->state_log, CG_LOG_WARN,
		               "audit: cannot write the chain state %s: %s", audit->state_path,
		               strerror(-rc));
	return 0;
}

int cg_audit_reopen(cg_audit_t *audit)
{
	pthread_mutex_lock(&audit->lock);
	int rc = reopen(audit);
	pthread_mutex_unlock(&audit->lock);
	return rc;
}

/* A serialised line being built by json_dump_callback. */
struct line {
	char *data;
	size_t len;
	size_t cap;
};

static int line_append(const char *buffer, size_t size, void *data)
{
	struct line *line = data;
	if (line->len + size + 1 > line->cap) {
		size_t cap = line->cap ? line->cap : 512;
		while (cap < line->len + size + 1)
			cap *= 2;
		char *grown = realloc(line->data, cap);
		if (!grown)
			return -1;
		line->data = grown;
		line->cap = cap;
	}
	memcpy(line->data + line->len, buffer, size);
	line->len += size;
	return 0;
}

/* Builds the event object and its serialised line, '\n' included: ts,
 * event, with the chain seq and prev, then the fields in their order.
 * Returns 0 (*out holds the object) or -ENOMEM/-EINVAL. */
static int build_line(const cg_audit_t *audit, const char *event, json_t *fields, struct line *line,
                      json_t **out)
{
	char ts[CG_RFC3339_LEN];
	int rc = -ENOMEM;

	json_t *obj = json_object();
	if (!obj)
		return -ENOMEM;
	cg_rfc3339_ms(cg_wall_ms(), ts);
	if (json_object_set_new(obj, "ts", json_string(ts)) != 0)
		goto out;
	if (json_object_set_new(obj, "event", json_string(event)) != 0) {
		rc = -EINVAL; /* event is not valid UTF-8 */
		goto out;
	}
	if (audit->chain &&
	    (json_object_set_new(obj, "seq", json_integer((json_int_t)(audit->seq + 1))) != 0 ||
	     json_object_set_new(obj, "prev", json_string(audit->prev)) != 0))
		goto out;
	if (json_is_object(fields)) {
		const char *key;
		json_t *value;
		json_object_foreach(fields, key, value)
		{
			/* ts, event, seq and prev are the writer's: a field must
			 * not be able to forge or move them. */
			if (strcmp(key, "ts") == 0 || strcmp(key, "event") == 0 ||
			    strcmp(key, "seq") == 0 || strcmp(key, "prev") == 0)
				continue;
			if (json_object_set(obj, key, value) != 0)
				goto out;
		}
	}
	if (json_dump_callback(obj, line_append, line, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0)
		goto out;
	if (line_append("\n", 1, line) != 0)
		goto out;
	*out = obj;
	return 0;
out:
	json_decref(obj);
	return rc;
}

/* One line, whole or not at all: if the disk fills in the middle of it, the
 * part already written is cut off again (ftruncate back to where the file
 * ended), so the next line never lands glued to half of this one. */
static int write_line(int fd, const char *data, size_t len)
{
	size_t written = 0;
	while (written < len) {
		ssize_t n = write(fd, data + written, len - written);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;
			if (written > 0) {
				off_t end = lseek(fd, 0, SEEK_END);
				if (end >= (off_t)written &&
				    ftruncate(fd, end - (off_t)written) != 0) {
					/* a pipe or a file we may not truncate: nothing to undo */
				}
			}
			return -err;
		}
		written += (size_t)n;
	}
	return 0;
}

/* Under the lock. */
static int emit_locked(cg_audit_t *audit, const char *event, json_t *fields)
{
	struct line line = {0};
	json_t *obj = NULL;

	int rc = build_line(audit, event, fields, &line, &obj);
	json_decref(fields);
	if (rc != 0)
		goto fail;

	if (!audit->healthy) {
		/* The file may have been recreated or the disk freed: try a
		 * fresh descriptor; on failure keep the old one and try it. */
		rc = reopen(audit);
		if (audit->fd < 0)
			goto fail; /* the old file was deleted: rc says why */
	}
	rc = write_line(audit->fd, line.data, line.len);
	if (rc != 0)
		goto fail;

	audit->healthy = true;
	audit->written++;
	if (audit->chain) {
		audit->seq++;
		cg_chain_hash(line.data, line.len - 1, audit->prev);
	}
	if (audit->tap != NULL)
		audit->tap(audit->tap_ctx, obj, line.data, line.len - 1);
	json_decref(obj);
	free(line.data);
	return 0;

fail:
	json_decref(obj);
	free(line.data);
	audit->healthy = false;
	audit->lost++;
	return rc;
}

/* The torn line cut off at open, recorded before the first line after it:
 * its size, its hash, and its first bytes as text (escaped where they are
 * not UTF-8, the usual way). Tried again with the next line if it fails. */
static void record_repair(cg_audit_t *audit)
{
	cg_audit_resume_t *r = &audit->repair;
	json_t *f = json_pack("{s:I, s:s}", "torn_bytes", (json_int_t)r->torn_len, "torn_sha256",
	                      r->torn_hash);
	if (f == NULL || cg_json_set_lossy(f, "torn", r->torn, r->torn_kept) != 0) {
		json_decref(f);
		return;
	}
	if (emit_locked(audit, "audit.repaired", f) == 0) {
		free(r->torn);
		r->torn = NULL;
	}
}

int cg_audit_emit(cg_audit_t *audit, const char *event, json_t *fields)
{
	pthread_mutex_lock(&audit->lock);
	if (audit->repair.torn != NULL)
		record_repair(audit);
	int rc = emit_locked(audit, event, fields);
	pthread_mutex_unlock(&audit->lock);
	return rc;
}
