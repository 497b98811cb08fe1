/* Configuration loader: certgate.json (and its policy_file) -> an immutable,
 * refcounted pol_snapshot_t.
 *
 * Data flow: cg_jdoc_load parses each file and remembers where every value
 * starts; the load_* functions below walk the JSON, fill the snapshot and
 * report every problem as "file:line:col: path: message" without stopping at
 * the first one (`certgate check` and a failed reload show them all). Only a
 * snapshot without a single error is returned; then the decision index
 * (pol_decide.c) and the JSON shown by GET /v1/policy are built from it.
 * Nothing here reads certificates or keys: the gateway loads those from the
 * absolute paths recorded in pol_file_t, quoting pol_file_t.where. */
#include "pol_config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cg_duration.h"
#include "cg_json.h"
#include "cg_log.h"
#include "cg_strmap.h"
#include "pol_internal.h"

#define PATH_BUF 512
#define MSG_BUF  512

typedef struct loader {
	cg_errors_t *errs;
	pol_snapshot_t *snap;
	bool failed;
	/* socket addresses of gateway.listen and services[].listen, for
	 * conflict checks (NULL entries when invalid) */
	struct sockaddr_storage *gw_listen_ss;
	bool *gw_listen_ok;
	struct sockaddr_storage *svc_listen_ss;
	bool *svc_listen_ok;
	bool *svc_listen_given;   /* the key is there, valid or not */
	cg_strmap_t *svc_by_name; /* exact service name -> index + 1 */
} loader_t;

/* ---------------------------------------------------------------------- */
/* Errors and paths                                                         */

static void err(loader_t *ld, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void err(loader_t *ld, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
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
static const char *pcat(char *buf, const char *a, const char *b)
{
	size_t la = strnlen(a, PATH_BUF - 1);
	size_t lb = strnlen(b, PATH_BUF - 1 - la);

	memmove(buf, a, la);
	memcpy(buf + la, b, lb);
	buf[la + lb] = '\0';
	return buf;
}

static const char *pkey(char *buf, const char *path, const char *key)
{
	char tmp[PATH_BUF];

	if (path[0] == '\0')
		return pcat(buf, "", key);
	pcat(tmp, path, ".");
	return pcat(buf, tmp, key);
}

static const char *pidx(char *buf, const char *path, size_t i)
{
	char num[32];

	snprintf(num, sizeof(num), "[%zu]", i);
	return pcat(buf, path, num);
}

/* Reports every key of obj not in allowed (NULL-terminated). */
static void check_keys(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
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
			err(ld, doc, pkey(kpath, path, key), "unknown key");
	}
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static char *xstrdup(loader_t *ld, const char *s)
{
	char *copy = strdup(s);
	if (!copy) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
	return copy;
}

static void *xcalloc(loader_t *ld, size_t n, size_t size)
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
static char *path_join(const char *dir, const char *rel)
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
static char *path_dir(const char *path)
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

static char *path_absolute(const char *path)
{
	char cwd[PATH_MAX];

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	return path_join(cwd, path);
}

static void file_finish(pol_file_t *file)
{
	free(file->path);
	free(file->key);
	file->path = NULL;
	file->key = NULL;
	file->doc = NULL;
}

void pol_file_where(const pol_file_t *file, char *buf, size_t len)
{
	char pos[PATH_BUF];
	if (file->doc == NULL || file->key == NULL) {
		snprintf(buf, len, "%s", file->key != NULL ? file->key : "(configuration)");
		return;
	}
	cg_jdoc_where(file->doc, file->key, pos, sizeof(pos));
	snprintf(buf, len, "%s: %s", pos, file->key);
}

/* ---------------------------------------------------------------------- */
/* Typed members                                                            */

static const char *const expect_hostport = "expected \"host:port\"";

/* String member: *out is NULL when absent. false on error (reported). */
static bool get_string(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                       const char *key, bool required, const char **out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	*out = NULL;
	if (!value) {
		if (required)
			err(ld, doc, path, "missing required key \"%s\"", key);
		return !required;
	}
	if (!json_is_string(value) || json_string_length(value) == 0 ||
	    strlen(json_string_value(value)) != json_string_length(value)) {
		err(ld, doc, pkey(kpath, path, key), "expected a non-empty string");
		return false;
	}
	*out = json_string_value(value);
	return true;
}

static void get_file(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool required, const char *dir, pol_file_t *out)
{
	const char *text;
	char kpath[PATH_BUF];

	if (!get_string(ld, doc, obj, path, key, required, &text) || !text)
		return;
	if (has_control(text)) {
		err(ld, doc, pkey(kpath, path, key), "expected a file path");
		return;
	}
	pkey(kpath, path, key);
	out->path = path_join(dir, text);
	out->key = strdup(kpath);
	out->doc = doc;
	if (!out->path || !out->key) {
		file_finish(out);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
}

/* Duration member; *out holds the default on entry and keeps it when the
 * key is absent or wrong. */
static void get_duration(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                         const char *key, bool allow_zero, uint64_t *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];
	uint64_t ms;

	if (!value)
		return;
	pkey(kpath, path, key);
	if (!json_is_string(value) || !cg_duration_parse(json_string_value(value), &ms))
		err(ld, doc, kpath, "expected a duration like \"30s\"");
	else if (ms == 0 && !allow_zero)
		err(ld, doc, kpath, "must be longer than 0");
	else
		*out = ms;
}

/* Integer member in [min, max]; *out holds the default on entry. */
static void get_uint(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, json_int_t min, json_int_t max, const char *expect,
                     uint32_t *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	if (!value)
		return;
	if (!json_is_integer(value) || json_integer_value(value) < min ||
	    json_integer_value(value) > max) {
		err(ld, doc, pkey(kpath, path, key), "%s", expect);
		return;
	}
	*out = (uint32_t)json_integer_value(value);
}

static void get_bool(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool def, bool *out)
{
	const json_t *value = json_object_get(obj, key);
	char kpath[PATH_BUF];

	*out = def;
	if (!value)
		return;
	if (!json_is_boolean(value)) {
		err(ld, doc, pkey(kpath, path, key), "expected true or false");
		return;
	}
	*out = json_is_true(value);
}

/* A listen address: "host:port" with a numeric IP host. */
static bool parse_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *value, const char *path,
                         cg_hostport_t *hp, struct sockaddr_storage *ss)
{
	if (!json_is_string(value) || !cg_hostport_parse(json_string_value(value), hp)) {
		err(ld, doc, path, "%s", expect_hostport);
		return false;
	}
	memset(ss, 0, sizeof(*ss));
	if (!cg_hostport_to_sockaddr(hp, ss)) {
		err(ld, doc, path,
		    "expected a numeric IP address like \"0.0.0.0:8443\" or \"[::]:8443\" (listen "
		    "addresses are not resolved)");
		return false;
	}
	return true;
}

/* A non-empty array of non-empty strings, each accepted by check (which may
 * be NULL) or reported with expect. Copies into *out / *n. */
static void get_string_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
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
	pkey(kpath, path, key);
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		err(ld, doc, kpath, "expected a non-empty array of strings");
		return;
	}
	count = json_array_size(arr);
	if (!(*out = xcalloc(ld, count, sizeof(**out))))
		return;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(arr, i);
		const char *s = json_string_value(item);
		if (!json_is_string(item) || json_string_length(item) == 0 ||
		    strlen(s) != json_string_length(item) || has_control(s)) {
			err(ld, doc, pidx(ipath, kpath, i), "expected a non-empty string");
			continue;
		}
		if (check && !check(s)) {
			err(ld, doc, pidx(ipath, kpath, i), "%s", expect);
			continue;
		}
		if (!((*out)[*n] = xstrdup(ld, s)))
			return;
		(*n)++;
	}
}

/* An array of CIDRs (may be empty when allow_empty). */
static void get_cidr_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
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
	pkey(kpath, path, key);
	if (!json_is_array(arr) || (!allow_empty && json_array_size(arr) == 0)) {
		err(ld, doc, kpath, "expected %sarray of CIDRs like \"10.0.0.0/8\"",
		    allow_empty ? "an " : "a non-empty ");
		return;
	}
	count = json_array_size(arr);
	if (!(*out = xcalloc(ld, count, sizeof(**out))))
		return;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(arr, i);
		if (!json_is_string(item) || !cg_cidr_parse(json_string_value(item), &(*out)[*n])) {
			err(ld, doc, pidx(ipath, kpath, i), "expected a CIDR like \"10.0.0.0/8\"");
			continue;
		}
		(*n)++;
	}
}

/* ---------------------------------------------------------------------- */
/* gateway, admin, audit                                                    */

/* gateway.listen: an array of numeric "host:port" (one plain string is
 * accepted too). */
static void load_gateway_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *listen)
{
	pol_gateway_t *g = &ld->snap->gateway;
	bool is_array = json_is_array(listen);
	size_t n = is_array ? json_array_size(listen) : 1;

	if (!is_array && !json_is_string(listen)) {
		err(ld, doc, "gateway.listen", "expected an array of \"host:port\"");
		return;
	}
	if (n == 0)
		return; /* allowed when every service listens on its own */
	g->listen = xcalloc(ld, n, sizeof(*g->listen));
	g->listen_addr = xcalloc(ld, n, sizeof(*g->listen_addr));
	ld->gw_listen_ss = xcalloc(ld, n, sizeof(*ld->gw_listen_ss));
	ld->gw_listen_ok = xcalloc(ld, n, sizeof(*ld->gw_listen_ok));
	if (!g->listen || !g->listen_addr || !ld->gw_listen_ss || !ld->gw_listen_ok)
		return;
	for (size_t i = 0; i < n; i++) {
		const json_t *item = is_array ? json_array_get(listen, i) : listen;
		char ipath[PATH_BUF];

		if (is_array)
			pidx(ipath, "gateway.listen", i);
		else
			pcat(ipath, "gateway.listen", "");
		if (!parse_listen(ld, doc, item, ipath, &g->listen_addr[g->n_listen],
		                  &ld->gw_listen_ss[i]))
			continue;
		ld->gw_listen_ok[i] = true;
		if (!(g->listen[g->n_listen] = xstrdup(ld, json_string_value(item))))
			return;
		g->n_listen++;
	}
}

static void load_gateway(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw, const char *dir)
{
	static const char *const keys[] = {"listen",
	                                   "cert",
	                                   "key",
	                                   "client_ca",
	                                   "crl",
	                                   "max_cert_lifetime",
	                                   "clock_skew",
	                                   "handshake_timeout",
	                                   "idle_timeout",
	                                   "max_connections",
	                                   "max_sessions_per_user",
	                                   "proxy_protocol_from",
	                                   "verify_depth",
	                                   "verify_cache",
	                                   NULL};
	pol_gateway_t *g = &ld->snap->gateway;
	const char *path = "gateway";

	/* CONFIG.md defaults */
	g->max_cert_lifetime_ms = 24 * 3600 * 1000ULL;
	g->clock_skew_ms = 30 * 1000ULL;
	g->handshake_timeout_ms = 10 * 1000ULL;
	g->idle_timeout_ms = 3600 * 1000ULL;
	g->max_connections = 10000;
	g->max_sessions_per_user = 0;
	g->verify_depth = 4;
	g->verify_cache = true;
	if (!gw) {
		err(ld, doc, "", "missing required key \"gateway\"");
		return;
	}
	if (!json_is_object(gw)) {
		err(ld, doc, path, "expected an object");
		return;
	}
	check_keys(ld, doc, gw, path, keys);
	if (json_object_get(gw, "listen"))
		load_gateway_listen(ld, doc, json_object_get(gw, "listen"));
	get_file(ld, doc, gw, path, "cert", true, dir, &g->cert);
	get_file(ld, doc, gw, path, "key", true, dir, &g->key);
	get_file(ld, doc, gw, path, "client_ca", true, dir, &g->client_ca);
	get_file(ld, doc, gw, path, "crl", false, dir, &g->crl);
	get_duration(ld, doc, gw, path, "max_cert_lifetime", false, &g->max_cert_lifetime_ms);
	get_duration(ld, doc, gw, path, "clock_skew", true, &g->clock_skew_ms);
	get_duration(ld, doc, gw, path, "handshake_timeout", false, &g->handshake_timeout_ms);
	get_duration(ld, doc, gw, path, "idle_timeout", true, &g->idle_timeout_ms);
	get_uint(ld, doc, gw, path, "max_connections", 1, UINT32_MAX, "expected a positive integer",
	         &g->max_connections);
	get_uint(ld, doc, gw, path, "max_sessions_per_user", 0, UINT32_MAX,
	         "expected a non-negative integer", &g->max_sessions_per_user);
	get_uint(ld, doc, gw, path, "verify_depth", 1, 10, "expected an integer from 1 to 10",
	         &g->verify_depth);
	get_bool(ld, doc, gw, path, "verify_cache", true, &g->verify_cache);
	get_cidr_list(ld, doc, gw, path, "proxy_protocol_from", true, &g->proxy_protocol_from,
	              &g->n_proxy_protocol_from);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

static void load_admin(loader_t *ld, const cg_jdoc_t *doc, const json_t *adm, const char *dir)
{
	static const char *const keys[] = {"listen", "token_file", NULL};
	pol_admin_t *a = &ld->snap->admin;
	const json_t *listen;
	struct sockaddr_storage ss;
	bool listen_ok = false;

	if (!adm)
		return;
	if (!json_is_object(adm)) {
		err(ld, doc, "admin", "expected an object");
		return;
	}
	a->enabled = true;
	check_keys(ld, doc, adm, "admin", keys);
	listen = json_object_get(adm, "listen");
	if (listen) {
		listen_ok = parse_listen(ld, doc, listen, "admin.listen", &a->listen_addr, &ss);
		if (listen_ok)
			a->listen = xstrdup(ld, json_string_value(listen));
	} else {
		a->listen = xstrdup(ld, "127.0.0.1:9090");
		listen_ok = a->listen && cg_hostport_parse(a->listen, &a->listen_addr) &&
		            cg_hostport_to_sockaddr(&a->listen_addr, &ss);
	}
	get_file(ld, doc, adm, "admin", "token_file", false, dir, &a->token_file);
	/* ADMIN_API.md: no admin listener beyond loopback without a token */
	if (listen_ok && !a->token_file.path && !is_loopback(&ss))
		err(ld, doc, "admin.listen", "a non-loopback admin listener needs a token_file");
}

static void load_audit(loader_t *ld, const cg_jdoc_t *doc, const json_t *aud, const char *dir)
{
	static const char *const keys[] = {"path", "on_failure", NULL};
	pol_audit_cfg_t *a = &ld->snap->audit;
	const char *path = NULL, *on_failure = NULL;

	a->on_failure = CG_AUDIT_REFUSE;
	if (aud && !json_is_object(aud)) {
		err(ld, doc, "audit", "expected an object");
		aud = NULL;
	}
	if (aud) {
		check_keys(ld, doc, aud, "audit", keys);
		if (get_string(ld, doc, aud, "audit", "path", false, &path) && path &&
		    has_control(path)) {
			err(ld, doc, "audit.path", "expected a file path or \"-\"");
			path = NULL;
		}
		if (get_string(ld, doc, aud, "audit", "on_failure", false, &on_failure) &&
		    on_failure) {
			if (strcmp(on_failure, "refuse") == 0)
				a->on_failure = CG_AUDIT_REFUSE;
			else if (strcmp(on_failure, "continue") == 0)
				a->on_failure = CG_AUDIT_CONTINUE;
			else
				err(ld, doc, "audit.on_failure",
				    "expected \"refuse\" or \"continue\"");
		}
	}
	if (!path || strcmp(path, "-") == 0) {
		a->path = xstrdup(ld, "-");
	} else if (!(a->path = path_join(dir, path))) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
}

/* ---------------------------------------------------------------------- */
/* services                                                                 */

/* ASCII lower case copy (truncated to PATH_BUF) for case-insensitive keys. */
static void ascii_lower(char *dst, const char *src)
{
	size_t i = 0;
	for (; src[i] && i < PATH_BUF - 1; i++)
		dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] - 'A' + 'a') : src[i];
	dst[i] = '\0';
}

/* Service and server names: [A-Za-z0-9._-]+, at most 253 bytes (a DNS name). */
static bool is_service_name(const char *s)
{
	if (!*s || strlen(s) > 253)
		return false;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static void load_upstream_tls(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj,
                              const char *spath, const char *dir, pol_service_t *svc)
{
	static const char *const keys[] = {"ca", "server_name", "client_ca_cert", "client_ca_key",
	                                   NULL};
	char path[PATH_BUF];
	const char *server_name;

	pkey(path, spath, "upstream_tls");
	if (!json_is_object(obj)) {
		err(ld, doc, path, "expected an object");
		return;
	}
	svc->has_upstream_tls = true;
	check_keys(ld, doc, obj, path, keys);
	get_file(ld, doc, obj, path, "ca", true, dir, &svc->upstream_tls.ca);
	if (get_string(ld, doc, obj, path, "server_name", true, &server_name) && server_name) {
		char kpath[PATH_BUF];
		if (has_control(server_name) || strchr(server_name, ' '))
			err(ld, doc, pkey(kpath, path, "server_name"), "expected a host name");
		else
			svc->upstream_tls.server_name = xstrdup(ld, server_name);
	}
	get_file(ld, doc, obj, path, "client_ca_cert", true, dir,
	         &svc->upstream_tls.client_ca_cert);
	get_file(ld, doc, obj, path, "client_ca_key", true, dir, &svc->upstream_tls.client_ca_key);
}

static void load_service(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, size_t idx,
                         const char *dir, pol_service_t *svc)
{
	static const char *const keys[] = {"name",
	                                   "sni",
	                                   "listen",
	                                   "upstream",
	                                   "mode",
	                                   "require_inner_tls",
	                                   "connect_timeout",
	                                   "audit_queries",
	                                   "upstream_tls",
	                                   NULL};
	char path[PATH_BUF], kpath[PATH_BUF], ipath[PATH_BUF];
	const char *name, *mode;
	const json_t *value, *up;
	bool mode_ok = true;

	svc->connect_timeout_ms = 5000;
	pidx(path, "services", idx);
	if (!json_is_object(obj)) {
		err(ld, doc, path, "expected an object");
		return;
	}
	check_keys(ld, doc, obj, path, keys);

	if (get_string(ld, doc, obj, path, "name", true, &name) && name) {
		if (!is_service_name(name))
			err(ld, doc, pkey(kpath, path, "name"),
			    "expected letters, digits, '.', '_' or '-' (at most 253 bytes)");
		else
			svc->name = xstrdup(ld, name);
	}
	value = json_object_get(obj, "sni");
	if (!(json_is_array(value) && json_array_size(value) == 0)) /* [] = none */
		get_string_list(ld, doc, obj, path, "sni", is_service_name,
		                "expected a server name", &svc->sni, &svc->n_sni);

	if ((value = json_object_get(obj, "listen")) != NULL) {
		ld->svc_listen_given[idx] = true;
		pkey(kpath, path, "listen");
		if (parse_listen(ld, doc, value, kpath, &svc->listen_addr,
		                 &ld->svc_listen_ss[idx])) {
			ld->svc_listen_ok[idx] = true;
			svc->listen = xstrdup(ld, json_string_value(value));
		}
	}

	up = json_object_get(obj, "upstream");
	pkey(kpath, path, "upstream");
	if (!up) {
		err(ld, doc, path, "missing required key \"upstream\"");
	} else if (json_is_string(up)) {
		svc->upstream = xcalloc(ld, 1, sizeof(*svc->upstream));
		if (svc->upstream) {
			if (cg_hostport_parse(json_string_value(up), &svc->upstream[0]))
				svc->n_upstream = 1;
			else
				err(ld, doc, kpath, "%s", expect_hostport);
		}
	} else if (json_is_array(up) && json_array_size(up) > 0) {
		svc->upstream = xcalloc(ld, json_array_size(up), sizeof(*svc->upstream));
		for (size_t i = 0; svc->upstream && i < json_array_size(up); i++) {
			const json_t *item = json_array_get(up, i);
			if (json_is_string(item) &&
			    cg_hostport_parse(json_string_value(item),
			                      &svc->upstream[svc->n_upstream]))
				svc->n_upstream++;
			else
				err(ld, doc, pidx(ipath, kpath, i), "%s", expect_hostport);
		}
	} else {
		err(ld, doc, kpath, "expected \"host:port\" or a non-empty array of them");
	}

	svc->mode = POL_MODE_TUNNEL;
	if (get_string(ld, doc, obj, path, "mode", false, &mode) && mode) {
		if (strcmp(mode, "tunnel") == 0)
			svc->mode = POL_MODE_TUNNEL;
		else if (strcmp(mode, "postgres") == 0)
			svc->mode = POL_MODE_POSTGRES;
		else
			err(ld, doc, pkey(kpath, path, "mode"),
			    "expected \"tunnel\" or \"postgres\"");
		mode_ok = svc->mode == POL_MODE_POSTGRES || strcmp(mode, "tunnel") == 0;
	} else if (json_object_get(obj, "mode")) {
		mode_ok = false;
	}
	get_bool(ld, doc, obj, path, "require_inner_tls", false, &svc->require_inner_tls);
	get_duration(ld, doc, obj, path, "connect_timeout", false, &svc->connect_timeout_ms);
	get_bool(ld, doc, obj, path, "audit_queries", false, &svc->audit_queries);
	if (!mode_ok)
		return; /* the mode-dependent checks below would only add noise */

	/* settings that would be silently ignored in the other mode are errors:
	 * an operator who wrote them expects them to take effect */
	if (svc->mode == POL_MODE_POSTGRES && svc->require_inner_tls)
		err(ld, doc, pkey(kpath, path, "require_inner_tls"),
		    "require_inner_tls applies only to tunnel-mode services");
	if (svc->mode == POL_MODE_TUNNEL && svc->audit_queries)
		err(ld, doc, pkey(kpath, path, "audit_queries"),
		    "audit_queries applies only to postgres-mode services");

	value = json_object_get(obj, "upstream_tls");
	if (value && svc->mode != POL_MODE_POSTGRES)
		err(ld, doc, pkey(kpath, path, "upstream_tls"),
		    "upstream_tls applies only to postgres-mode services");
	else if (value)
		load_upstream_tls(ld, doc, value, path, dir, svc);
	else if (svc->mode == POL_MODE_POSTGRES)
		err(ld, doc, path, "missing required key \"upstream_tls\" (postgres mode)");
}

/* Two listen addresses that cannot both be bound: equal, or the same port
 * with the wildcard address of the same family. */
static bool listen_conflict(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
		                                      x->sin_addr.s_addr == htonl(INADDR_ANY) ||
		                                      y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		       (memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 ||
		        IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
		        IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
	}
	return false;
}

static void load_services(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr, const char *dir)
{
	pol_snapshot_t *snap = ld->snap;
	char path[PATH_BUF], other[PATH_BUF];
	cg_strmap_t *names;
	size_t n;

	if (!arr) {
		err(ld, doc, "", "missing required key \"services\"");
		return;
	}
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		err(ld, doc, "services", "expected a non-empty array of services");
		return;
	}
	n = json_array_size(arr);
	snap->services = xcalloc(ld, n, sizeof(*snap->services));
	ld->svc_listen_ss = xcalloc(ld, n, sizeof(*ld->svc_listen_ss));
	ld->svc_listen_ok = xcalloc(ld, n, sizeof(*ld->svc_listen_ok));
	ld->svc_listen_given = xcalloc(ld, n, sizeof(*ld->svc_listen_given));
	if (!snap->services || !ld->svc_listen_ss || !ld->svc_listen_ok || !ld->svc_listen_given)
		return;
	snap->n_services = n;
	for (size_t i = 0; i < n; i++)
		load_service(ld, doc, json_array_get(arr, i), i, dir, &snap->services[i]);

	/* Names and SNI names share one case-insensitive namespace: a TLS
	 * server name must lead to exactly one service. */
	if (!(names = cg_strmap_create()) || !(ld->svc_by_name = cg_strmap_create())) {
		cg_strmap_destroy(names, NULL);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const pol_service_t *svc = &snap->services[i];
		char key[PATH_BUF];
		uintptr_t j;

		if (!svc->name)
			continue;
		ascii_lower(key, svc->name);
		if ((j = (uintptr_t)cg_strmap_get(names, key)) != 0) {
			pidx(path, "services", i);
			err(ld, doc, pkey(other, path, "name"),
			    "duplicate service name \"%s\" (also services[%zu])", svc->name,
			    (size_t)(j - 1));
			continue;
		}
		cg_strmap_put(names, key, (void *)(uintptr_t)(i + 1));
		cg_strmap_put(ld->svc_by_name, svc->name, (void *)(uintptr_t)(i + 1));
	}
	for (size_t i = 0; i < n; i++) {
		const pol_service_t *svc = &snap->services[i];
		for (size_t k = 0; k < svc->n_sni; k++) {
			char key[PATH_BUF], spath[PATH_BUF];
			uintptr_t j;

			ascii_lower(key, svc->sni[k]);
			if ((j = (uintptr_t)cg_strmap_get(names, key)) == 0) {
				cg_strmap_put(names, key, (void *)(uintptr_t)(i + 1));
				continue;
			}
			pidx(path, "services", i);
			pkey(spath, path, "sni");
			err(ld, doc, pidx(other, spath, k),
			    "server name \"%s\" already leads to service \"%s\"", svc->sni[k],
			    snap->services[j - 1].name);
		}
	}
	cg_strmap_destroy(names, NULL);

	/* own listeners: distinct from each other and from gateway.listen */
	for (size_t i = 0; i < n; i++) {
		bool reported = false;
		if (!ld->svc_listen_ok[i])
			continue;
		pidx(path, "services", i);
		pkey(other, path, "listen");
		for (size_t j = 0; j < i && !reported; j++) {
			if (ld->svc_listen_ok[j] &&
			    listen_conflict(&ld->svc_listen_ss[i], &ld->svc_listen_ss[j])) {
				err(ld, doc, other, "conflicts with the listen of services[%zu]",
				    j);
				reported = true;
			}
		}
	}
}

/* service listen vs gateway.listen; needs the count of gateway.listen as
 * written (entries may be invalid). */
static void check_listen_overlap(loader_t *ld, const cg_jdoc_t *doc, size_t n_gw)
{
	pol_snapshot_t *snap = ld->snap;
	char path[PATH_BUF], lpath[PATH_BUF];

	if (!ld->svc_listen_ok || !ld->gw_listen_ok)
		return;
	for (size_t i = 0; i < snap->n_services; i++) {
		if (!ld->svc_listen_ok[i])
			continue;
		for (size_t j = 0; j < n_gw; j++) {
			if (ld->gw_listen_ok[j] &&
			    listen_conflict(&ld->svc_listen_ss[i], &ld->gw_listen_ss[j])) {
				pidx(path, "services", i);
				err(ld, doc, pkey(lpath, path, "listen"),
				    "conflicts with gateway.listen[%zu]", j);
				break;
			}
		}
	}
}

/* gateway.listen may be empty or absent only when every service listens on
 * its own address. */
static void check_gateway_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw)
{
	pol_snapshot_t *snap = ld->snap;
	const json_t *listen = gw ? json_object_get(gw, "listen") : NULL;
	const char *lonely = NULL;

	if (!json_is_object(gw))
		return;
	if (listen && !(json_is_array(listen) && json_array_size(listen) == 0))
		return; /* non-empty (or a type error already reported) */
	for (size_t i = 0; i < snap->n_services && !lonely; i++)
		if (!ld->svc_listen_given[i])
			lonely = snap->services[i].name ? snap->services[i].name : "?";
	if (!lonely)
		return;
	if (listen)
		err(ld, doc, "gateway.listen",
		    "may be empty only when every service has its own listen (service \"%s\" has "
		    "none)",
		    lonely);
	else
		err(ld, doc, "gateway",
		    "missing required key \"listen\" (service \"%s\" has no listen of its own)",
		    lonely);
}

/* ---------------------------------------------------------------------- */
/* rules                                                                    */

/* `{` may only open {user} or {user.local}. */
static bool db_pattern_ok(const char *s)
{
	for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
		if (strncmp(p, "{user}", 6) != 0 && strncmp(p, "{user.local}", 12) != 0)
			return false;
	}
	return strlen(s) <= 1024;
}

static const pol_service_t *find_service(const loader_t *ld, const char *name)
{
	uintptr_t i = ld->svc_by_name ? (uintptr_t)cg_strmap_get(ld->svc_by_name, name) : 0;
	return i ? &ld->snap->services[i - 1] : NULL;
}

static void load_rule(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, size_t idx,
                      pol_rule_t *rule)
{
	static const char *const keys[] = {"name",     "effect",   "services",  "users",
	                                   "groups",   "devices",  "min_trust", "sources",
	                                   "db_users", "db_names", NULL};
	char path[PATH_BUF], kpath[PATH_BUF], ipath[PATH_BUF];
	const char *name, *effect, *trust;
	bool star = false, all_postgres = true;

	rule->min_trust = POL_TRUST_NONE;
	pidx(path, "rules", idx);
	if (!json_is_object(obj)) {
		err(ld, doc, path, "expected an object");
		return;
	}
	check_keys(ld, doc, obj, path, keys);

	if (get_string(ld, doc, obj, path, "name", true, &name) && name) {
		if (has_control(name))
			err(ld, doc, pkey(kpath, path, "name"), "expected a printable name");
		else if (strcmp(name, "default-deny") == 0)
			err(ld, doc, pkey(kpath, path, "name"),
			    "\"default-deny\" is reserved for the implicit last rule");
		else
			rule->name = xstrdup(ld, name);
	}
	if (get_string(ld, doc, obj, path, "effect", true, &effect) && effect) {
		if (strcmp(effect, "allow") == 0)
			rule->allow = true;
		else if (strcmp(effect, "deny") == 0)
			rule->allow = false;
		else
			err(ld, doc, pkey(kpath, path, "effect"), "expected \"allow\" or \"deny\"");
	}

	if (!json_object_get(obj, "services"))
		err(ld, doc, path, "missing required key \"services\"");
	get_string_list(ld, doc, obj, path, "services", NULL, NULL, &rule->services,
	                &rule->n_services);
	pkey(kpath, path, "services");
	for (size_t i = 0; i < rule->n_services; i++) {
		const pol_service_t *svc;
		if (strcmp(rule->services[i], "*") == 0) {
			star = true;
			continue;
		}
		svc = find_service(ld, rule->services[i]);
		if (!svc)
			err(ld, doc, pidx(ipath, kpath, i), "unknown service \"%s\"",
			    rule->services[i]);
		else if (svc->mode != POL_MODE_POSTGRES)
			all_postgres = false;
	}

	get_string_list(ld, doc, obj, path, "users", NULL, NULL, &rule->users, &rule->n_users);
	get_string_list(ld, doc, obj, path, "groups", NULL, NULL, &rule->groups, &rule->n_groups);
	get_string_list(ld, doc, obj, path, "devices", NULL, NULL, &rule->devices,
	                &rule->n_devices);
	if (get_string(ld, doc, obj, path, "min_trust", false, &trust) && trust &&
	    !pol_trust_parse(trust, &rule->min_trust)) {
		err(ld, doc, pkey(kpath, path, "min_trust"),
		    "expected one of \"always_deny\", \"low\", \"medium\", \"high\"");
		rule->min_trust = POL_TRUST_NONE;
	}
	get_cidr_list(ld, doc, obj, path, "sources", false, &rule->sources, &rule->n_sources);
	get_string_list(ld, doc, obj, path, "db_users", db_pattern_ok,
	                "expected a pattern whose only placeholders are {user} and {user.local}",
	                &rule->db_users, &rule->n_db_users);
	get_string_list(ld, doc, obj, path, "db_names", db_pattern_ok,
	                "expected a pattern whose only placeholders are {user} and {user.local}",
	                &rule->db_names, &rule->n_db_names);

	/* A tunnel never learns the database user or name: there such a rule
	 * fails closed (an allow does not match, a deny does). Legal, since
	 * the contract's own example does it, but worth a warning. */
	if (!star && !all_postgres) {
		static const char *const db_keys[] = {"db_users", "db_names"};
		for (size_t i = 0; i < 2; i++) {
			if (json_object_get(obj, db_keys[i]) == NULL)
				continue;
			char where[512];
			cg_jdoc_where(doc, pkey(kpath, path, db_keys[i]), where, sizeof(where));
			cg_log(CG_LOG_WARN,
			       "%s: %s.%s: names a tunnel-mode service, where the database %s is "
			       "not known: this rule %s there",
			       where, path, db_keys[i], i == 0 ? "user" : "name",
			       rule->allow ? "never admits" : "always refuses");
		}
	}
}

static void load_rules(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr)
{
	pol_snapshot_t *snap = ld->snap;
	cg_strmap_t *names;
	size_t n;

	if (!arr)
		return; /* no rules: everything is denied */
	if (!json_is_array(arr)) {
		err(ld, doc, "rules", "expected an array of rules");
		return;
	}
	n = json_array_size(arr);
	if (n == 0)
		return;
	if (!(snap->rules = xcalloc(ld, n, sizeof(*snap->rules))))
		return;
	snap->n_rules = n;
	for (size_t i = 0; i < n; i++)
		load_rule(ld, doc, json_array_get(arr, i), i, &snap->rules[i]);
	if (!(names = cg_strmap_create())) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uintptr_t j;
		if (!snap->rules[i].name)
			continue;
		if ((j = (uintptr_t)cg_strmap_get(names, snap->rules[i].name)) != 0) {
			char path[PATH_BUF], kpath[PATH_BUF];
			pidx(path, "rules", i);
			err(ld, doc, pkey(kpath, path, "name"),
			    "duplicate rule name \"%s\" (also rules[%zu])", snap->rules[i].name,
			    (size_t)(j - 1));
			continue;
		}
		cg_strmap_put(names, snap->rules[i].name, (void *)(uintptr_t)(i + 1));
	}
	cg_strmap_destroy(names, NULL);
}

/* ---------------------------------------------------------------------- */
/* Snapshot life                                                            */

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void service_finish(pol_service_t *svc)
{
	free(svc->name);
	free_strings(svc->sni, svc->n_sni);
	free(svc->listen);
	free(svc->upstream);
	file_finish(&svc->upstream_tls.ca);
	free(svc->upstream_tls.server_name);
	file_finish(&svc->upstream_tls.client_ca_cert);
	file_finish(&svc->upstream_tls.client_ca_key);
}

static void rule_finish(pol_rule_t *r)
{
	free(r->name);
	free_strings(r->services, r->n_services);
	free_strings(r->users, r->n_users);
	free_strings(r->groups, r->n_groups);
	free_strings(r->devices, r->n_devices);
	free(r->sources);
	free_strings(r->db_users, r->n_db_users);
	free_strings(r->db_names, r->n_db_names);
}

static void snapshot_free(pol_snapshot_t *snap)
{
	pol_gateway_t *g = &snap->gateway;

	pol_index_destroy(snap->index);
	json_decref(snap->shown);
	cg_jdoc_destroy(snap->doc_config);
	cg_jdoc_destroy(snap->doc_policy);
	free(snap->config_path);
	free(snap->policy_path);
	/* gateway.listen may hold fewer strings than addresses were parsed */
	free_strings(g->listen, g->n_listen);
	free(g->listen_addr);
	file_finish(&g->cert);
	file_finish(&g->key);
	file_finish(&g->client_ca);
	file_finish(&g->crl);
	free(g->proxy_protocol_from);
	free(snap->admin.listen);
	file_finish(&snap->admin.token_file);
	free(snap->audit.path);
	pol_claims_map_finish(&snap->claims);
	for (size_t i = 0; i < snap->n_services; i++)
		service_finish(&snap->services[i]);
	free(snap->services);
	for (size_t i = 0; i < snap->n_rules; i++)
		rule_finish(&snap->rules[i]);
	free(snap->rules);
	free(snap);
}

static bool hash_docs(const cg_jdoc_t *cfg, const cg_jdoc_t *pol, char out[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	const char *text;
	size_t len;
	bool ok;

	if (!ctx)
		return false;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
	text = cg_jdoc_text(cfg, &len);
	ok = ok && EVP_DigestUpdate(ctx, text, len) == 1;
	if (pol) {
		text = cg_jdoc_text(pol, &len);
		ok = ok && EVP_DigestUpdate(ctx, text, len) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return false;
	for (unsigned i = 0; i < md_len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return true;
}

/* Loads the policy_file named by the config: claims and rules only. */
static cg_jdoc_t *load_policy_file(loader_t *ld, const cg_jdoc_t *cfg, const json_t *root,
                                   const char *config_path, const char *cfg_dir)
{
	static const char *const keys[] = {"claims", "rules", NULL};
	const json_t *value = json_object_get(root, "policy_file");
	const char *text;
	char *shown_dir, *display;
	cg_jdoc_t *pol;

	if (!value)
		return NULL;
	if (!get_string(ld, cfg, root, "", "policy_file", false, &text) || !text)
		return NULL;
	if (has_control(text)) {
		err(ld, cfg, "policy_file", "expected a file path");
		return NULL;
	}
	/* errors name the policy file the way the config's own name was given */
	shown_dir = path_dir(config_path);
	display = shown_dir ? path_join(shown_dir, text) : NULL;
	free(shown_dir);
	ld->snap->policy_path = path_join(cfg_dir, text);
	if (!display || !ld->snap->policy_path) {
		free(display);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return NULL;
	}
	pol = cg_jdoc_load(display, ld->errs);
	free(display);
	if (!pol) {
		ld->failed = true;
		return NULL;
	}
	if (!json_is_object(cg_jdoc_root(pol))) {
		err(ld, pol, "", "expected an object with \"claims\" and \"rules\"");
		return pol;
	}
	check_keys(ld, pol, cg_jdoc_root(pol), "", keys);
	if (json_object_get(root, "claims"))
		err(ld, cfg, "claims",
		    "not allowed here when policy_file is set (it holds the claims)");
	if (json_object_get(root, "rules"))
		err(ld, cfg, "rules",
		    "not allowed here when policy_file is set (it holds the rules)");
	return pol;
}

static pol_snapshot_t *load(const char *config_path, cg_errors_t *errs, bool *complete)
{
	static const char *const keys[] = {"gateway",  "admin", "audit",       "claims",
	                                   "services", "rules", "policy_file", NULL};
	loader_t ld = {.errs = errs};
	cg_jdoc_t *cfg = NULL, *pol = NULL;
	const cg_jdoc_t *pdoc;
	const json_t *root, *proot, *gw;
	char *cfg_dir = NULL;
	size_t n_gw_listen = 0;

	if (!(ld.snap = calloc(1, sizeof(*ld.snap)))) {
		cg_errors_add(errs, "%s: out of memory", config_path);
		return NULL;
	}
	atomic_init(&ld.snap->refs, 1);
	ld.snap->audit.on_failure = CG_AUDIT_REFUSE;

	if (!(cfg = cg_jdoc_load(config_path, errs))) {
		ld.failed = true;
		goto done;
	}
	root = cg_jdoc_root(cfg);
	if (!json_is_object(root)) {
		err(&ld, cfg, "", "expected a JSON object");
		goto done;
	}
	ld.snap->config_path = path_absolute(config_path);
	cfg_dir = ld.snap->config_path ? path_dir(ld.snap->config_path) : NULL;
	if (!cfg_dir) {
		cg_errors_add(errs, "%s: cannot make the path absolute", config_path);
		ld.failed = true;
		goto done;
	}
	check_keys(&ld, cfg, root, "", keys);
	pol = load_policy_file(&ld, cfg, root, config_path, cfg_dir);

	gw = json_object_get(root, "gateway");
	load_gateway(&ld, cfg, gw, cfg_dir);
	if (json_is_object(gw)) {
		const json_t *listen = json_object_get(gw, "listen");
		n_gw_listen = json_is_array(listen) ? json_array_size(listen) : listen ? 1 : 0;
	}
	load_admin(&ld, cfg, json_object_get(root, "admin"), cfg_dir);
	load_audit(&ld, cfg, json_object_get(root, "audit"), cfg_dir);

	/* claims and rules come from the policy file when there is one */
	if (json_object_get(root, "policy_file")) {
		pdoc = pol;
		proot = pol && json_is_object(cg_jdoc_root(pol)) ? cg_jdoc_root(pol) : NULL;
	} else {
		pdoc = cfg;
		proot = root;
	}
	if (pdoc && proot &&
	    !pol_claims_map_compile(&ld.snap->claims, pdoc, json_object_get(proot, "claims"), errs))
		ld.failed = true;

	load_services(&ld, cfg, json_object_get(root, "services"), cfg_dir);
	if (ld.snap->n_services > 0 && ld.svc_listen_given) {
		check_gateway_listen(&ld, cfg, gw);
		check_listen_overlap(&ld, cfg, n_gw_listen);
	}
	/* gateway.listen entries must not repeat */
	for (size_t i = 0; ld.gw_listen_ok && i < n_gw_listen; i++) {
		for (size_t j = 0; ld.gw_listen_ok[i] && j < i; j++) {
			if (ld.gw_listen_ok[j] &&
			    listen_conflict(&ld.gw_listen_ss[i], &ld.gw_listen_ss[j])) {
				char path[PATH_BUF];
				err(&ld, cfg, pidx(path, "gateway.listen", i),
				    "conflicts with gateway.listen[%zu]", j);
				break;
			}
		}
	}

	if (pdoc && proot)
		load_rules(&ld, pdoc, json_object_get(proot, "rules"));
	/* Nothing below reads the parsed trees (the index and the shown JSON
	 * are built from the snapshot; the hash from the texts): free them
	 * now, so what follows reuses their memory instead of growing the
	 * heap. The texts stay with the snapshot for positions in later
	 * errors. */
	if (pol != NULL)
		cg_jdoc_drop_root(pol);
	cg_jdoc_drop_root(cfg);

	if (ld.failed)
		goto done;
	if (!hash_docs(cfg, pol, ld.snap->sha256)) {
		cg_errors_add(errs, "%s: cannot compute sha256", config_path);
		ld.failed = true;
		goto done;
	}
	if (!(ld.snap->index = pol_index_create(ld.snap)) ||
	    !(ld.snap->shown = pol_show_snapshot(ld.snap))) {
		cg_errors_add(errs, "%s: out of memory", config_path);
		ld.failed = true;
	}

done:
	free(cfg_dir);
	free(ld.gw_listen_ss);
	free(ld.gw_listen_ok);
	free(ld.svc_listen_ss);
	free(ld.svc_listen_ok);
	free(ld.svc_listen_given);
	cg_strmap_destroy(ld.svc_by_name, NULL);
	/* the texts stay with the snapshot (file positions for later errors),
	 * the parsed trees do not (already dropped unless a step above failed;
	 * dropping twice is harmless) */
	if (pol != NULL)
		cg_jdoc_drop_root(pol);
	if (cfg != NULL)
		cg_jdoc_drop_root(cfg);
	ld.snap->doc_policy = pol;
	ld.snap->doc_config = cfg;
	*complete = !ld.failed;
	if (ld.failed && ld.snap->config_path == NULL) { /* not even a JSON object */
		snapshot_free(ld.snap);
		return NULL;
	}
	return ld.snap;
}

pol_snapshot_t *pol_snapshot_load(const char *config_path, cg_errors_t *errs)
{
	bool complete;
	pol_snapshot_t *snap = load(config_path, errs, &complete);
	if (snap != NULL && !complete) {
		snapshot_free(snap);
		return NULL;
	}
	return snap;
}

pol_snapshot_t *pol_snapshot_load_partial(const char *config_path, cg_errors_t *errs,
                                          bool *complete)
{
	return load(config_path, errs, complete);
}

pol_snapshot_t *pol_snapshot_ref(pol_snapshot_t *snap)
{
	if (snap)
		atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
	return snap;
}

void pol_snapshot_unref(pol_snapshot_t *snap)
{
	if (snap && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
		snapshot_free(snap);
}

const pol_service_t *pol_snapshot_service(const pol_snapshot_t *snap, const char *name)
{
	if (!snap || !name)
		return NULL;
	if (snap->index)
		return pol_index_service(snap->index, snap, name);
	for (size_t i = 0; i < snap->n_services; i++)
		if (strcasecmp(snap->services[i].name, name) == 0)
			return &snap->services[i];
	return NULL;
}

const pol_service_t *pol_snapshot_service_by_sni(const pol_snapshot_t *snap, const char *sni)
{
	if (!snap || !sni)
		return NULL;
	for (size_t i = 0; i < snap->n_services; i++) {
		const pol_service_t *svc = &snap->services[i];
		if (strcasecmp(svc->name, sni) == 0)
			return svc;
		for (size_t k = 0; k < svc->n_sni; k++)
			if (strcasecmp(svc->sni[k], sni) == 0)
				return svc;
	}
	return NULL;
}
