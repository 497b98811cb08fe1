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
 * is stdout, fd 1, which is never closed or reopened. */
#include "cg_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cg_time.h"

struct cg_audit {
	char *path;
	int fd;
	bool is_stdout;
	bool healthy;
	cg_audit_on_failure_t on_failure;
	uint64_t written;
	uint64_t lost;
};

static int open_path(const char *path)
{
	int fd;
	do {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

cg_audit_t *cg_audit_open(const char *path, cg_audit_on_failure_t on_failure, char *err,
                          size_t errlen)
{
	cg_audit_t *audit = calloc(1, sizeof(*audit));
	if (!audit) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto fail_alloc;
	}
	audit->path = strdup(path);
	if (!audit->path) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto fail_path;
	}
	audit->on_failure = on_failure;
	audit->healthy = true;

	if (strcmp(path, "-") == 0) {
		audit->is_stdout = true;
		audit->fd = STDOUT_FILENO;
		return audit;
	}
	audit->fd = open_path(path);
	if (audit->fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-audit->fd));
		goto fail_open;
	}
	return audit;

fail_open:
	free(audit->path);
fail_path:
	free(audit);
fail_alloc:
	return NULL;
}

void cg_audit_close(cg_audit_t *audit)
{
	if (!audit)
		return;
	if (!audit->is_stdout && audit->fd >= 0)
		close(audit->fd);
	free(audit->path);
	free(audit);
}

const char *cg_audit_path(const cg_audit_t *audit)
{
	return audit->path;
}

void cg_audit_set_on_failure(cg_audit_t *audit, cg_audit_on_failure_t on_failure)
{
	audit->on_failure = on_failure;
}

cg_audit_on_failure_t cg_audit_on_failure(const cg_audit_t *audit)
{
	return audit->on_failure;
}

bool cg_audit_healthy(const cg_audit_t *audit)
{
	return audit->healthy;
}

uint64_t cg_audit_written(const cg_audit_t *audit)
{
	return audit->written;
}

void cg_audit_carry_counts(cg_audit_t *to, const cg_audit_t *from)
{
	to->written += from->written;
	to->lost += from->lost;
}

uint64_t cg_audit_lost(const cg_audit_t *audit)
{
	return audit->lost;
}

/* Shared by cg_audit_reopen and emit's recovery attempt. A failed reopen
 * keeps the old descriptor while its file still has a name (renamed by
 * logrotate: the lines still land somewhere visible). If that file was
 * deleted, every line written to it would vanish unseen: the descriptor is
 * dropped and the writer stays unhealthy until the path opens again. */
static int reopen(cg_audit_t *audit)
{
	if (audit->is_stdout)
		return 0;
	int fd = open_path(audit->path);
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
	return 0;
}

int cg_audit_reopen(cg_audit_t *audit)
{
	return reopen(audit);
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

/* Builds the serialised line, '\n' included. Returns 0 or -ENOMEM/-EINVAL. */
static int build_line(const char *event, json_t *fields, struct line *line)
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
	if (json_is_object(fields)) {
		const char *key;
		json_t *value;
		json_object_foreach(fields, key, value)
		{
			/* ts and event are the writer's: a field must not be able
			 * to forge or move them. */
			if (strcmp(key, "ts") == 0 || strcmp(key, "event") == 0)
				continue;
			if (json_object_set(obj, key, value) != 0)
				goto out;
		}
	}
	if (json_dump_callback(obj, line_append, line, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0)
		goto out;
	if (line_append("\n", 1, line) != 0)
		goto out;
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/* One write(2) for the whole line. On an O_APPEND regular file a short write
 * only happens when the disk fills mid-line; it is a sign of imminent
 * failure, and retrying the tail is the best that can be done (the next
 * write will most likely fail and mark the writer unhealthy anyway). */
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

int cg_audit_emit(cg_audit_t *audit, const char *event, json_t *fields)
{
	struct line line = {0};

	int rc = build_line(event, fields, &line);
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

	free(line.data);
	audit->healthy = true;
	audit->written++;
	return 0;

fail:
	free(line.data);
	audit->healthy = false;
	audit->lost++;
	return rc;
}
