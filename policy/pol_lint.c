/* Warnings about dangerous settings of a configuration that loads (see
 * pol_lint.h). Reads the snapshot only; positions come from the documents
 * the snapshot keeps, so each warning points at the value to change.
 *
 * The {user.local} checks follow from how pol_decide expands placeholders:
 * the expansion is a literal, so a pattern without globs names exactly one
 * name per user, and two users share a name only when their expansions are
 * equal (same local part, other domains) or when a glob beside the
 * placeholder runs on into another user's name. */
#include "pol_lint.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cg_duration.h"
#include "cg_json.h"
#include "pol_decide.h"

#define PATH_LEN 256

/* Characters no address local part or domain holds (outside quoted local
 * parts, which identity providers do not issue): one of them between a
 * placeholder and a glob keeps the glob from running into another user's
 * name. '[', ']' and '\' are left out: in a glob they are syntax. */
static const char separators[] = ":;,<>()\" @";

typedef struct lint {
	const pol_snapshot_t *snap;
	cg_errors_t *out;
} lint_t;

static void warn(lint_t *l, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void warn(lint_t *l, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
{
	char where[PATH_LEN + 64], msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (doc != NULL)
		cg_jdoc_where(doc, path, where, sizeof(where));
	else
		snprintf(where, sizeof(where), "%s", l->snap->config_path);
	cg_errors_add(l->out, "%s: warning: %s: %s", where, path, msg);
}

/* --- gateway ---------------------------------------------------------------- */

static void lint_gateway(lint_t *l)
{
	const pol_gateway_t *g = &l->snap->gateway;
	const cg_jdoc_t *doc = l->snap->doc_config;
	char path[PATH_LEN], shown[32];

	for (size_t i = 0; i < g->n_proxy_protocol_from; i++) {
		if (g->proxy_protocol_from[i].prefix != 0)
			continue;
		snprintf(path, sizeof(path), "gateway.proxy_protocol_from[%zu]", i);
		warn(l, doc, path,
		     "%s trusts PROXY headers from every %s address: any client can claim to come "
		     "from anywhere (and pass sources conditions); list only your load balancers",
		     g->proxy_protocol_from[i].family == AF_INET ? "0.0.0.0/0" : "::/0",
		     g->proxy_protocol_from[i].family == AF_INET ? "IPv4" : "IPv6");
	}
	if (g->max_cert_lifetime_ms > POL_LINT_MAX_LIFETIME_MS) {
		cg_duration_format(g->max_cert_lifetime_ms, shown, sizeof(shown));
		warn(l, doc, "gateway.max_cert_lifetime",
		     "%s: login certificates valid over 7 days are not short-lived; a stolen one "
		     "stays useful that long",
		     shown);
	}
	if (g->clock_skew_ms > POL_LINT_MAX_SKEW_MS) {
		cg_duration_format(g->clock_skew_ms, shown, sizeof(shown));
		warn(l, doc, "gateway.clock_skew",
		     "%s: accepting certificates that far in the future hides a broken clock; "
		     "keep it under 5 minutes",
		     shown);
	}
}

/* --- rules ------------------------------------------------------------------- */

static bool only_stars(const char *glob)
{
	return glob[0] != '\0' && strspn(glob, "*") == strlen(glob);
}

static bool any_only_stars(char *const *globs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (only_stars(globs[i]))
			return true;
	return false;
}

static bool names_every_service(const pol_snapshot_t *snap, const pol_rule_t *r)
{
	for (size_t i = 0; i < r->n_services; i++)
		if (strcmp(r->services[i], "*") == 0)
			return true;
	for (size_t s = 0; s < snap->n_services; s++) {
		bool named = false;
		for (size_t i = 0; i < r->n_services && !named; i++)
			named = strcmp(r->services[i], snap->services[s].name) == 0;
		if (!named)
			return false;
	}
	return true;
}

/* An allow rule nothing narrows: every user, every service, anywhere,
 * any database, no min_trust. */
static bool allows_everyone(const pol_snapshot_t *snap, const pol_rule_t *r)
{
	if (!r->allow || r->min_trust != POL_TRUST_NONE || r->n_groups > 0 || r->n_devices > 0)
		return false;
	if (r->n_users > 0 && !any_only_stars(r->users, r->n_users))
		return false;
	bool sources_open = r->n_sources == 0;
	for (size_t i = 0; i < r->n_sources; i++)
		sources_open = sources_open || r->sources[i].prefix == 0;
	if (!sources_open)
		return false;
	if (r->n_db_users > 0 && !any_only_stars(r->db_users, r->n_db_users))
		return false;
	if (r->n_db_names > 0 && !any_only_stars(r->db_names, r->n_db_names))
		return false;
	return names_every_service(snap, r);
}

/* The domain every users glob of r confines users to, when they all name
 * one and the same literal domain ("*@example.com", "bob@Example.com");
 * NULL otherwise (no users condition, "*", "*@*.example.com", two domains). */
static const char *single_domain(const pol_rule_t *r, size_t *len)
{
	const char *domain = NULL;
	*len = 0;
	for (size_t i = 0; i < r->n_users; i++) {
		const char *at = strrchr(r->users[i], '@');
		if (at == NULL || at[1] == '\0' || strpbrk(at + 1, "*?[]\\") != NULL)
			return NULL;
		size_t n = strlen(at + 1);
		if (domain != NULL && (n != *len || strncasecmp(domain, at + 1, n) != 0))
			return NULL;
		domain = at + 1;
		*len = n;
	}
	return domain;
}

/* Whether a glob sits beside the placeholder at [start, end) with no
 * separator between them: on its left back to from (the end of the
 * previous placeholder, or the pattern's start), on its right up to the
 * next placeholder. */
static bool glob_beside(const char *from, const char *start, const char *end)
{
	for (const char *p = end; *p != '\0'; p++) {
		const char *d;
		size_t dn;
		if (strchr(separators, *p) != NULL || pol_placeholder(p, &d, &dn) > 0)
			break;
		if (*p == '\\' && p[1] != '\0') {
			p++; /* an escaped character is a literal */
			continue;
		}
		if (strchr("*?[", *p) != NULL)
			return true;
	}
	for (const char *p = start; p > from;) {
		p--;
		if (strchr(separators, *p) != NULL)
			break;
		bool escaped = p > from && p[-1] == '\\';
		if (!escaped && strchr("*?]", *p) != NULL)
			return true;
	}
	return false;
}

static void lint_patterns(lint_t *l, const cg_jdoc_t *doc, size_t idx, const pol_rule_t *r,
                          const char *key, char *const *patterns, size_t n)
{
	char path[PATH_LEN];
	size_t domain_len;
	const char *domain = single_domain(r, &domain_len);

	for (size_t i = 0; i < n; i++) {
		const char *pattern = patterns[i];
		bool local_warned = false, glob_warned = false;
		const char *prev_end = pattern;
		snprintf(path, sizeof(path), "rules[%zu].%s[%zu]", idx, key, i);
		for (const char *p = strchr(pattern, '{'); p != NULL; p = strchr(p + 1, '{')) {
			const char *d;
			size_t dn, len = pol_placeholder(p, &d, &dn);
			if (len == 0)
				continue;
			bool plain_local = len == 12 && strncmp(p, "{user.local}", 12) == 0;
			if (plain_local && domain == NULL && !local_warned) {
				local_warned = true;
				warn(l, doc, path,
				     "{user.local} is the same for alice@example.com and "
				     "alice@partner.example, and this rule's users are not "
				     "confined to "
				     "one domain: restrict \"users\" to one (\"*@example.com\") or "
				     "write "
				     "{user.local@example.com}");
			}
			if (!glob_warned && glob_beside(prev_end, p, p + len)) {
				glob_warned = true;
				warn(l, doc, path,
				     "the glob beside %.*s also matches other users' names "
				     "({user.local}_* "
				     "lets alice into alice_x_private): put a character no user "
				     "name holds, "
				     "such as ':', between them, or drop the glob",
				     (int)len, p);
			}
			prev_end = p + len;
		}
	}
}

static void lint_rules(lint_t *l)
{
	const pol_snapshot_t *snap = l->snap;
	const cg_jdoc_t *doc = snap->doc_policy != NULL ? snap->doc_policy : snap->doc_config;
	char path[PATH_LEN];

	for (size_t i = 0; i < snap->n_rules; i++) {
		const pol_rule_t *r = &snap->rules[i];
		if (!r->allow)
			continue; /* a deny rule that matches too much refuses more */
		if (allows_everyone(snap, r)) {
			snprintf(path, sizeof(path), "rules[%zu]", i);
			warn(l, doc, path,
			     "allow rule \"%s\" lets every user with a certificate from client_ca "
			     "into "
			     "every service, from anywhere, with no min_trust: name groups, users "
			     "or "
			     "devices, or set min_trust",
			     r->name);
		}
		lint_patterns(l, doc, i, r, "db_users", r->db_users, r->n_db_users);
		lint_patterns(l, doc, i, r, "db_names", r->db_names, r->n_db_names);
	}
}

/* --- state ----------------------------------------------------------------- */

/* The shared state store decides who stays locked out: its connection
 * must not trust whoever answers on the network, and its password belongs
 * in a file of its own, not in a configuration that is shown and copied. */
static void lint_state(lint_t *l)
{
	const pol_state_cfg_t *s = &l->snap->state;
	if (s->dsn == NULL)
		return;
	if (s->dsn_has_password)
		warn(l, l->snap->doc_config, "state.dsn",
		     "the connection string holds a password: put it in a passfile (mode 0600, "
		     "passfile=...) or log in with a client certificate (sslcert=, sslkey=)");
	if (s->dsn_unverified)
		warn(l, l->snap->doc_config, "state.dsn",
		     "sslmode=%s does not verify the state database's certificate: anyone on the "
		     "path could answer for it (and unlock every lock); use sslmode=verify-full "
		     "with sslrootcert=",
		     s->dsn_sslmode != NULL ? s->dsn_sslmode : "prefer (libpq's default)");
}

void pol_lint(const pol_snapshot_t *snap, cg_errors_t *warnings)
{
	lint_t l = {.snap = snap, .out = warnings};
	lint_gateway(&l);
	lint_rules(&l);
	lint_state(&l);
}
