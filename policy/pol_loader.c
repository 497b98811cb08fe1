/* The shared reading helpers of the configuration loader (pol_loader.h):
 * errors reported at a JSON path, the path strings themselves, file paths
 * made absolute, and typed members (strings, files, durations, integers,
 * booleans, listen addresses, string and CIDR lists). */
#include "pol_loader.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_duration.h"

#define MSG_BUF 512

/* ---------------------------------------------------------------------- */
/* Errors and paths                                                         */

void pol_ld_err(loader_t *ld, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
{
	char msg[MSG_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->failed = true;
	if (path[0] == '\0') {
		char where[PATH_BUF];
		cg_jdoc_where(doc, "", where, sizeof(where));
		cg_errors_add(ld->errs, "%s: %s", where, msg);
	} else {
		cg_jdoc_error(doc, ld->errs, path, "%s", msg);
	}
}

/* buf = a + b, truncated to PATH_BUF (paths are for humans; a truncated one
 * still points near the mistake). */
const char *pol_ld_pcat(char *buf, const char *a, const char *b)
{
	size_t la = strnlen(a, PATH_BUF - 1);
	size_t lb = strnlen(b, PATH_BUF - 1 - la);

	memmove(buf, a, la);
	memcpy(buf + la, b, lb);
	buf[la + lb] = '\0';
	return buf;
}

const char *pol_ld_pkey(char *buf, const char *path, const char *key)
{
	char tmp[PATH_BUF];

	if (path[0] == '\0')
		return pol_ld_pcat(buf, "", key);
	pol_ld_pcat(tmp, path, ".");
	return pol_ld_pcat(buf, tmp, key);
}

const char *pol_ld_pidx(char *buf, const char *path, size_t i)
{
	char num[32];

	snprintf(num, sizeof(num), "[%zu]", i);
	return pol_ld_pcat(buf, path, num);
}

/* Reports every key of obj not in allowed (NULL-terminated). */
void pol_ld_check_keys(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                       const char *const *allowed)
{
	const char *key;
	json_t *value;

	json_object_foreach((json_t *)obj, key, value)
	{
		bool known = false;
		char kpath[PATH_BUF];
		for (const char *const *a = allowed; *a && !known; a++)
			known = strcmp(*a, key) == 0;
		if (!known)
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key), "unknown key");
	}
}

bool pol_ld_has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

char *pol_ld_xstrdup(loader_t *ld, const char *s)
{
	char *copy = strdup(s);
	if (!copy) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
	return copy;
}

void *pol_ld_xcalloc(loader_t *ld, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
	return p;
}

/* ---------------------------------------------------------------------- */
/* File paths                                                               */

/* Joins dir and a relative path ("./" prefixes dropped); absolute paths are
 * returned as they are. */
char *pol_ld_path_join(const char *dir, const char *rel)
{
	char *out;
	size_t len;

	if (rel[0] == '/' || !dir || dir[0] == '\0')
		return strdup(rel);
	while (rel[0] == '.' && rel[1] == '/') {
		rel += 2;
		while (rel[0] == '/')
			rel++;
	}
	len = strlen(dir) + 1 + strlen(rel) + 1;
	out = malloc(len);
	if (!out)
		return NULL;
	if (strcmp(dir, "/") == 0)
		snprintf(out, len, "/%s", rel);
	else
		snprintf(out, len, "%s/%s", dir, rel);
	return out;
}

/* The folder part of a path ("" when it has none, "/" for the root). */
char *pol_ld_path_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;

	if (!slash)
		return strdup("");
	if (slash == path)
		return strdup("/");
	dir = malloc((size_t)(slash - path) + 1);
	if (!dir)
		return NULL;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	return dir;
}

char *pol_ld_path_absolute(const char *path)
{
	char cwd[PATH_MAX];

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	return pol_ld_path_join(cwd, path);
}

void pol_ld_file_finish(pol_file_t *file)
{
	free(file->path);
	free(file->key);
	file->path = NULL;
	file->key = NULL;
	file->doc = NULL;
}

/* ---------------------------------------------------------------------- */
/* Typed members                                                            */

const char *const pol_ld_expect_hostport = "expected \"host:port\"";

/* String member: *out is NULL when absent. false on error (reported). */
bool pol_ld_get_string(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                       const char *key, bool required, const char **out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	*out = NULL;
	if (!value) {
		if (required)
			pol_ld_err(ld, doc, path, "missing required key \"%s\"", key);
		return !required;
	}
	if (!json_is_string(value) || json_string_length(value) == 0 ||
	    strlen(json_string_value(value)) != json_string_length(value)) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key), "expected a non-empty string");
		return false;
	}
	*out = json_string_value(value);
	return true;
}

void pol_ld_get_file(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool required, const char *dir, pol_file_t *out)
{
	const char *text;
	char kpath[PATH_BUF];

	if (!pol_ld_get_string(ld, doc, obj, path, key, required, &text) || !text)
		return;
	if (pol_ld_has_control(text)) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key), "expected a file path");
		return;
	}
	pol_ld_pkey(kpath, path, key);
	out->path = pol_ld_path_join(dir, text);
	out->key = strdup(kpath);
	out->doc = doc;
	if (!out->path || !out->key) {
		pol_ld_file_finish(out);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
}

/* Duration member; *out holds the default on entry and keeps it when the
 * key is absent or wrong. */
void pol_ld_get_duration(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                         const char *key, bool allow_zero, uint64_t *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];
	uint64_t ms;

	if (!value)
		return;
	pol_ld_pkey(kpath, path, key);
	if (!json_is_string(value) || !cg_duration_parse(json_string_value(value), &ms))
		pol_ld_err(ld, doc, kpath, "expected a duration like \"30s\"");
	else if (ms == 0 && !allow_zero)
		pol_ld_err(ld, doc, kpath, "must be longer than 0");
	else
		*out = ms;
}

/* Integer member in [min, max]; *out holds the default on entry. */
void pol_ld_get_uint(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, json_int_t min, json_int_t max, const char *expect,
                     uint32_t *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	if (!value)
		return;
	if (!json_is_integer(value) || json_integer_value(value) < min ||
	    json_integer_value(value) > max) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key), "%s", expect);
		return;
	}
	*out = (uint32_t)json_integer_value(value);
}

void pol_ld_get_bool(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool def, bool *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	*out = def;
	if (!value)
		return;
	if (!json_is_boolean(value)) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key), "expected true or false");
		return;
	}
	*out = json_is_true(value);
}

/* A listen address: "host:port" with a numeric IP host. */
bool pol_ld_parse_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *value, const char *path,
                         cg_hostport_t *hp, struct sockaddr_storage *ss)
{
	if (!json_is_string(value) || !cg_hostport_parse(json_string_value(value), hp)) {
		pol_ld_err(ld, doc, path, "%s", pol_ld_expect_hostport);
		return false;
	}
	memset(ss, 0, sizeof(*ss));
	if (!cg_hostport_to_sockaddr(hp, ss)) {
		pol_ld_err(ld, doc, path,
		           "expected a numeric IP address like \"0.0.0.0:8443\" or \"[::]:8443\" "
		           "(listen "
		           "addresses are not resolved)");
		return false;
	}
	return true;
}

/* A non-empty array of non-empty strings, each accepted by check (which may
 * be NULL) or reported with expect. Copies into *out / *n. */
void pol_ld_get_string_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                            const char *key, bool (*check)(const char *), const char *expect,
                            char ***out, size_t *n)
{
	const json_t *arr = json_object_get(obj, key);
	char kpath[PATH_BUF];
	char ipath[PATH_BUF];
	size_t count;

	*out = NULL;
	*n = 0;
	if (!arr)
		return;
	pol_ld_pkey(kpath, path, key);
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		pol_ld_err(ld, doc, kpath, "expected a non-empty array of strings");
		return;
	}
	count = json_array_size(arr);
	if (!(*out = pol_ld_xcalloc(ld, count, sizeof(**out))))
		return;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(arr, i);
		const char *s = json_string_value(item);
		if (!json_is_string(item) || json_string_length(item) == 0 ||
		    strlen(s) != json_string_length(item) || pol_ld_has_control(s)) {
			pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i),
			           "expected a non-empty string");
			continue;
		}
		if (check && !check(s)) {
			pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i), "%s", expect);
			continue;
		}
		if (!((*out)[*n] = pol_ld_xstrdup(ld, s)))
			return;
		(*n)++;
	}
}

/* An array of CIDRs (may be empty when allow_empty). */
void pol_ld_get_cidr_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                          const char *key, bool allow_empty, cg_cidr_t **out, size_t *n)
{
	const json_t *arr = json_object_get(obj, key);
	char kpath[PATH_BUF];
	char ipath[PATH_BUF];
	size_t count;

	*out = NULL;
	*n = 0;
	if (!arr)
		return;
	pol_ld_pkey(kpath, path, key);
	if (!json_is_array(arr) || (!allow_empty && json_array_size(arr) == 0)) {
		pol_ld_err(ld, doc, kpath, "expected %sarray of CIDRs like \"10.0.0.0/8\"",
		           allow_empty ? "an " : "a non-empty ");
		return;
	}
	count = json_array_size(arr);
	if (!(*out = pol_ld_xcalloc(ld, count, sizeof(**out))))
		return;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(arr, i);
		if (!json_is_string(item) || !cg_cidr_parse(json_string_value(item), &(*out)[*n])) {
			pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i),
			           "expected a CIDR like \"10.0.0.0/8\"");
			continue;
		}
		(*n)++;
	}
}
