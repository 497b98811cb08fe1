/* Where a chained audit log resumes (see cg_audit_resume.h).
 *
 * Durability, decided here and in cg_audit.c: the audit file is never
 * fsynced per line, so neither is the state. The file's own last line is
 * the truth whenever the file has one (a kill -9 leaves every line written
 * before it, and at most one torn line, which is cut off on the next start
 * and recorded). The state file only matters when the file has no line
 * yet: right after logrotate's rename and SIGUSR1. It is written durably
 * (fsync) when that can happen: at open, at every reopen and at close;
 * in between, at most once a second without fsync, which a kill -9
 * cannot undo. */
#include "cg_audit_resume.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cg_file.h"
#include "cg_time.h"

#define CHUNK 65536

static int pread_all(int fd, void *buf, size_t len, off_t at)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, (char *)buf + got, len - got, at + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the file shrank under us */
		got += (size_t)n;
	}
	return 0;
}

/* The offset of the last '\n' in [0, end), or -1 when there is none. */
static int last_newline(int fd, off_t end, off_t *at)
{
	char buf[CHUNK];
	*at = -1;
	while (end > 0) {
		size_t n = end > CHUNK ? CHUNK : (size_t)end;
		int rc = pread_all(fd, buf, n, end - (off_t)n);
		if (rc != 0)
			return rc;
		const char *nl = memrchr(buf, '\n', n);
		if (nl != NULL) {
			*at = end - (off_t)n + (nl - buf);
			return 0;
		}
		end -= (off_t)n;
	}
	return 0;
}

/* SHA-256 of the bytes [from, to) of the file, in hex. */
static int hash_range(int fd, off_t from, off_t to, char hex[CG_CHAIN_HEX])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char buf[CHUNK];
	int rc = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		rc = -ENOMEM;
		goto out;
	}
	for (off_t at = from; at < to;) {
		size_t n = to - at > CHUNK ? CHUNK : (size_t)(to - at);
		if ((rc = pread_all(fd, buf, n, at)) != 0)
			goto out;
		if (EVP_DigestUpdate(ctx, buf, n) != 1) {
			rc = -ENOMEM;
			goto out;
		}
		at += (off_t)n;
	}
	if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != 32) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* A file that ends without a newline: keep the start of the torn line and
 * its hash for the record, then cut it off, so the next line starts on a
 * line of its own instead of being glued to half of an event. */
static int cut_torn(int fd, off_t size, cg_audit_resume_t *out, off_t *new_size)
{
	off_t nl;
	int rc = last_newline(fd, size, &nl);
	if (rc != 0)
		return rc;
	off_t start = nl + 1;
	out->torn_len = (size_t)(size - start);
	out->torn_kept = out->torn_len > CG_AUDIT_TORN_KEEP ? CG_AUDIT_TORN_KEEP : out->torn_len;
	out->torn = malloc(out->torn_kept + 1);
	if (out->torn == NULL)
		return -ENOMEM;
	if ((rc = pread_all(fd, out->torn, out->torn_kept, start)) != 0 ||
	    (rc = hash_range(fd, start, size, out->torn_hash)) != 0)
		goto fail;
	out->torn[out->torn_kept] = '\0';
	if (ftruncate(fd, start) < 0) {
		rc = -errno;
		goto fail;
	}
	*new_size = start;
	return 0;
fail:
	free(out->torn);
	out->torn = NULL;
	out->torn_len = out->torn_kept = 0;
	return rc;
}

int cg_audit_resume_read(int fd, cg_audit_resume_t *out)
{
	memset(out, 0, sizeof(*out));
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size == 0)
		return 0; /* nothing written yet, or not a file (a pipe, /dev/null) */
	off_t size = st.st_size;
	char last;
	int rc = pread_all(fd, &last, 1, size - 1);
	if (rc != 0)
		return rc;
	if (last != '\n' && (rc = cut_torn(fd, size, out, &size)) != 0)
		return rc;
	if (size == 0)
		return 0;

	off_t nl;
	if ((rc = last_newline(fd, size - 1, &nl)) != 0)
		return rc;
	off_t start = nl + 1;
	size_t len = (size_t)(size - 1 - start);
	if (len > CG_CHAIN_MAX_LINE)
		return 0; /* not an audit line: the state decides */
	char *line = malloc(len + 1);
	if (line == NULL)
		return -ENOMEM;
	if ((rc = pread_all(fd, line, len, start)) == 0) {
		char prev[CG_CHAIN_HEX];
		out->found = true;
		cg_chain_hash(line, len, out->hash);
		out->chained =
		        cg_chain_parse(line, len, &out->seq, prev, NULL, 0) == CG_CHAIN_LINE_OK;
	}
	free(line);
	return rc;
}

int cg_audit_state_read(const char *path, uint64_t *seq, char hash[CG_CHAIN_HEX], char *err,
                        size_t err_len)
{
	char *text = NULL;
	size_t len = 0;
	int rc = cg_file_read(path, 4096, &text, &len);
	if (rc != 0) {
		snprintf(err, err_len, "%s: %s", path, strerror(-rc));
		return rc;
	}
	json_error_t jerr;
	json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	json_t *s = json_object_get(obj, "seq"), *h = json_object_get(obj, "hash");
	if (!json_is_integer(s) || json_integer_value(s) < 0 || !json_is_string(h) ||
	    !cg_chain_hash_valid(json_string_value(h))) {
		snprintf(err, err_len,
		         "%s: not an audit state (expected {\"seq\": N, \"hash\": HEX})", path);
		json_decref(obj);
		return -EINVAL;
	}
	*seq = (uint64_t)json_integer_value(s);
	memcpy(hash, json_string_value(h), CG_CHAIN_HEX);
	json_decref(obj);
	return 0;
}

int cg_audit_state_write(const char *path, const char *log_path, uint64_t seq,
                         const char hash[CG_CHAIN_HEX], bool durable)
{
	char ts[CG_RFC3339_LEN];
	cg_rfc3339_ms(cg_wall_ms(), ts);
	json_t *obj = json_pack("{s:I, s:s, s:s, s:s}", "seq", (json_int_t)seq, "hash", hash,
	                        "file", log_path, "saved", ts);
	char *text = obj != NULL ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(obj);
	if (text == NULL)
		return -ENOMEM;
	size_t len = strlen(text);
	text[len] = '\0';
	char *line = malloc(len + 2);
	int rc = -ENOMEM;
	if (line != NULL) {
		memcpy(line, text, len);
		line[len] = '\n';
		rc = cg_file_replace(path, 0640, line, len + 1, durable);
		free(line);
	}
	free(text);
	return rc;
}
