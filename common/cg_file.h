/* Files the way a gateway must write them: whole or not at all. Renewed
 * login certificates are picked up by `certgate connect` while they are
 * being replaced, and state files must survive a kill -9 mid-write, so a
 * file is written beside its final name, fsynced, and renamed over it. */
#ifndef CG_FILE_H
#define CG_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Writes len bytes of data to path atomically: path.tmp is created (O_EXCL,
 * O_NOFOLLOW) with mode and no wider for a moment (0600 keys are never
 * readable by others), filled, fsynced and renamed over path; the folder
 * is fsynced after. 0, or a negative errno with path.tmp removed. */
int cg_file_write_atomic(const char *path, mode_t mode, const void *data, size_t len)
        __attribute__((warn_unused_result));

/* The same; with durable false nothing is fsynced: the file is still
 * replaced whole (a reader or a kill -9 sees the old or the new), but a
 * power loss may leave the old one, or none. For state rewritten often
 * whose loss costs little (the audit chain's position between rotations). */
int cg_file_replace(const char *path, mode_t mode, const void *data, size_t len, bool durable)
        __attribute__((warn_unused_result));

/* Reads the whole file (at most max bytes) into *out: malloc'd, with a NUL
 * after the *len bytes. 0, or a negative errno (-ENOENT when missing,
 * -EFBIG over max). */
int cg_file_read(const char *path, size_t max, char **out, size_t *len)
        __attribute__((warn_unused_result));

/* mkdir -p; the folders it creates get mode. 0, or a negative errno (the
 * failing prefix of dir in failed, when given, of size failed_len). */
int cg_file_mkdirs(const char *dir, mode_t mode, char *failed, size_t failed_len)
        __attribute__((warn_unused_result));

#endif
