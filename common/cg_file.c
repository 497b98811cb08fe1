/* Whole-or-nothing files (see cg_file.h). */
#include "cg_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Flushes the rename in path's folder to disk (best effort: a failure here
 * costs durability after a crash, not correctness). */
static void fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (slash == NULL) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(dir))
			return;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)fsync(fd);
	close(fd);
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cg_file_write_atomic(const char *path, mode_t mode, const void *data, size_t len)
{
	return cg_file_replace(path, mode, data, len, true);
}

int cg_file_replace(const char *path, mode_t mode, const void *data, size_t len, bool durable)
{
	/* a temporary name of this writer's own (process, then call): two
	 * writers of one path (two `certgate login` at once, say) never take
	 * each other's file, and the last rename wins whole */
	static atomic_uint calls;
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	(void)unlink(tmp); /* what an older certgate left behind, if anything */
	n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%u", path, (long)getpid(),
	             atomic_fetch_add(&calls, 1));
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	int rc = 0;
	if (fchmod(fd, mode) < 0) /* the umask may have narrowed it */
		rc = -errno;
	if (rc == 0)
		rc = write_all(fd, data, len);
	if (rc == 0 && durable && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	if (durable)
		fsync_parent(path);
	return 0;
}

int cg_file_read(const char *path, size_t max, char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	FILE *fp = fopen(path, "re");
	if (fp == NULL)
		return -errno;
	size_t cap = 4096, used = 0;
	char *buf = malloc(cap);
	int rc = buf != NULL ? 0 : -ENOMEM;
	while (rc == 0) {
		if (used + 1 == cap) {
			if (cap > max) {
				rc = -EFBIG;
				break;
			}
			char *bigger = realloc(buf, cap * 2);
			if (bigger == NULL) {
				rc = -ENOMEM;
				break;
			}
			buf = bigger;
			cap *= 2;
		}
		size_t got = fread(buf + used, 1, cap - 1 - used, fp);
		used += got;
		if (got == 0)
			break;
	}
	if (rc == 0 && ferror(fp))
		rc = -EIO;
	if (rc == 0 && used > max)
		rc = -EFBIG;
	fclose(fp);
	if (rc != 0) {
		free(buf);
		return rc;
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	return 0;
}

int cg_file_mkdirs(const char *dir, mode_t mode, char *failed, size_t failed_len)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	int rc = 0;
	for (char *p = path + 1; rc == 0 && *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, mode) < 0 && errno != EEXIST)
			rc = -errno;
		else
			*p = '/';
	}
	struct stat st;
	if (rc == 0 && mkdir(path, mode) < 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0 && stat(path, &st) < 0)
		rc = -errno;
	if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	if (rc != 0 && failed != NULL)
		snprintf(failed, failed_len, "%s", path);
	return rc;
}
