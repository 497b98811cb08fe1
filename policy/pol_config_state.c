/* The "state" section (CONFIG.md, "state: one truth for many gateways"):
 * {"backend": "file", "dir": DIR} or {"backend": "postgres", "dsn": DSN,
 * "schema": NAME}. The connection string is read here the way libpq reads
 * it (PQconninfoParse: syntax only, nothing is resolved or connected), so
 * `certgate check` reports a typo at its position, and what the gateway
 * relies on later (host and hostaddr lists that pair up, no service file
 * hiding the host) is settled before it starts. The gateway cannot move its
 * state while it runs; the loader only reads the block. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pol_loader.h"

#define SCHEMA_DEFAULT "certgate"
#define SCHEMA_MAX     63 /* NAMEDATALEN - 1 */

/* A lowercase SQL identifier that needs no quoting and is not reserved
 * for the system (pg_*): it is written into SQL and used as the NOTIFY
 * channel as is. */
static bool schema_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > SCHEMA_MAX || strncmp(s, "pg_", 3) == 0)
		return false;
	if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

/* Entries of a libpq list value ("a,b,c"; an empty value is one empty
 * entry, as libpq counts them). */
static size_t list_count(const char *v)
{
	size_t n = 1;
	for (; *v != '\0'; v++)
		n += *v == ',';
	return n;
}

/* keyword=value the way libpq reads it back: quoted when it has to be. */
static void shown_append(char *buf, size_t len, const char *key, const char *value)
{
	size_t at = strlen(buf);
	bool quote = *value == '\0' || strpbrk(value, " \t\n'\\") != NULL;
	int n = snprintf(buf + at, len - at, "%s%s=%s", at > 0 ? " " : "", key, quote ? "'" : "");
	if (n < 0 || (size_t)n >= len - at)
		return;
	at += (size_t)n;
	for (const char *p = value; *p != '\0' && at + 3 < len; p++) {
		if (*p == '\'' || *p == '\\')
			buf[at++] = '\\';
		buf[at++] = *p;
	}
	buf[at] = '\0';
	if (quote && at + 1 < len) {
		buf[at++] = '\'';
		buf[at] = '\0';
	}
}

/* What the parsed options mean for the gateway; errors at state.dsn. */
static void check_options(loader_t *ld, const cg_jdoc_t *doc, PQconninfoOption *opts)
{
	pol_state_cfg_t *s = &ld->snap->state;
	const char *host = NULL, *hostaddr = NULL, *port = NULL, *sslmode = NULL;
	char shown[2048] = "";
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "service") == 0) {
			pol_ld_err(
			        ld, doc, "state.dsn",
			        "service= is not supported: write the host and the other settings "
			        "in the connection string itself");
			return;
		}
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			hostaddr = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "sslmode") == 0)
			sslmode = o->val;
		bool secret = strcmp(o->keyword, "password") == 0 ||
		              strcmp(o->keyword, "sslpassword") == 0;
		if (secret)
			s->dsn_has_password = true;
		shown_append(shown, sizeof(shown), o->keyword, secret ? "********" : o->val);
	}
	/* the gateway pairs every host name with its address(es) itself (it
	 * resolves names off the loop), so the lists must line up as libpq
	 * wants them to */
	size_t n_hosts = host != NULL       ? list_count(host)
	                 : hostaddr != NULL ? list_count(hostaddr)
	                                    : 1;
	if (host != NULL && hostaddr != NULL && list_count(hostaddr) != n_hosts) {
		pol_ld_err(ld, doc, "state.dsn", "%zu host names but %zu hostaddr values", n_hosts,
		           list_count(hostaddr));
		return;
	}
	if (port != NULL && list_count(port) != 1 && list_count(port) != n_hosts) {
		pol_ld_err(ld, doc, "state.dsn", "%zu ports for %zu hosts", list_count(port),
		           n_hosts);
		return;
	}
	/* a TCP connection (a host that is not a socket folder, or a
	 * hostaddr) whose server certificate is not checked */
	bool tcp = hostaddr != NULL || (host != NULL && host[0] != '/' && host[0] != '@');
	bool verified = sslmode != NULL &&
	                (strcmp(sslmode, "verify-full") == 0 || strcmp(sslmode, "verify-ca") == 0);
	s->dsn_unverified = tcp && !verified;
	if (sslmode != NULL)
		s->dsn_sslmode = pol_ld_xstrdup(ld, sslmode);
	s->dsn_shown = pol_ld_xstrdup(ld, shown);
}

static void load_postgres(loader_t *ld, const cg_jdoc_t *doc, const json_t *st)
{
	pol_state_cfg_t *s = &ld->snap->state;
	const char *dsn = NULL, *schema = NULL;
	if (json_object_get(st, "dir") != NULL)
		pol_ld_err(ld, doc, "state.dir", "only with backend \"file\"");
	if (pol_ld_get_string(ld, doc, st, "state", "schema", false, &schema)) {
		if (schema == NULL)
			schema = SCHEMA_DEFAULT;
		if (!schema_ok(schema))
			pol_ld_err(
			        ld, doc, "state.schema",
			        "expected a lowercase SQL identifier (a-z, 0-9 and _, not starting "
			        "with a digit or pg_, at most 63 characters)");
		else
			s->schema = pol_ld_xstrdup(ld, schema);
	}
	if (!pol_ld_get_string(ld, doc, st, "state", "dsn", true, &dsn) || dsn == NULL)
		return;
	if (*dsn == '\0' || pol_ld_has_control(dsn)) {
		pol_ld_err(ld, doc, "state.dsn",
		           "expected a libpq connection string (\"postgresql://...\" or "
		           "\"host=... dbname=...\")");
		return;
	}
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(dsn, &why);
	if (opts == NULL) {
		if (why == NULL) {
			ld->failed = true;
			cg_errors_add(ld->errs, "out of memory");
			return;
		}
		size_t n = strlen(why);
		while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
			why[--n] = '\0';
		pol_ld_err(ld, doc, "state.dsn", "%s", why);
		PQfreemem(why);
		return;
	}
	check_options(ld, doc, opts);
	PQconninfoFree(opts);
	s->dsn = pol_ld_xstrdup(ld, dsn);
}

void pol_ld_load_state(loader_t *ld, const cg_jdoc_t *doc, const json_t *st, const char *dir)
{
	static const char *const keys[] = {"backend", "dir", "dsn", "schema", NULL};
	pol_state_cfg_t *s = &ld->snap->state;
	const char *backend = NULL, *path = NULL;

	if (!st)
		return;
	if (!json_is_object(st)) {
		pol_ld_err(ld, doc, "state", "expected an object");
		return;
	}
	s->enabled = true;
	pol_ld_check_keys(ld, doc, st, "state", keys);
	if (!pol_ld_get_string(ld, doc, st, "state", "backend", false, &backend))
		return;
	if (backend != NULL && strcmp(backend, "postgres") == 0) {
		s->backend = pol_ld_xstrdup(ld, "postgres");
		load_postgres(ld, doc, st);
		return;
	}
	if (backend != NULL && strcmp(backend, "file") != 0) {
		pol_ld_err(ld, doc, "state.backend", "expected \"file\" or \"postgres\"");
		return;
	}
	s->backend = pol_ld_xstrdup(ld, "file");
	if (json_object_get(st, "dsn") != NULL)
		pol_ld_err(ld, doc, "state.dsn", "only with backend \"postgres\"");
	if (json_object_get(st, "schema") != NULL)
		pol_ld_err(ld, doc, "state.schema", "only with backend \"postgres\"");
	if (!pol_ld_get_string(ld, doc, st, "state", "dir", true, &path) || !path)
		return;
	if (*path == '\0' || pol_ld_has_control(path)) {
		pol_ld_err(ld, doc, "state.dir", "expected a folder path");
		return;
	}
	if (!(s->dir = pol_ld_path_join(dir, path))) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
}

void pol_ld_state_finish(pol_state_cfg_t *s)
{
	free(s->backend);
	free(s->dir);
	free(s->dsn);
	free(s->dsn_shown);
	free(s->schema);
	free(s->dsn_sslmode);
}
