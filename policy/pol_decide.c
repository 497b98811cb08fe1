/* The decision: rules of a snapshot against one request (claims, service,
 * client address, trust feed value, database user and name).
 *
 * Deny overrides: every rule that can apply is considered; a matching deny
 * rule refuses, otherwise the first matching allow rule admits, otherwise the
 * default is deny. A rule that requires approval matches only while the
 * request's access grant runs (its end is the caller's to look up: the
 * decision stays a pure function of its inputs). The live path looks up the
 * rules that can apply to the request's service in an index built once per
 * snapshot (pol_index_create) and stops at the first matching deny rule; the
 * trace path (explain) walks every rule in policy order and says why each
 * one did not match. Both use the same condition checks, so they cannot
 * disagree. */
#include "pol_decide.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_addr.h"
#include "cg_time.h"
#include "cg_utf8.h"
#include "pol_index.h"
#include "pol_window.h"

/* ---------------------------------------------------------------------- */
/* Conditions                                                               */

/* The conditions of a rule, in the order they are checked and reported. */
typedef enum {
	COND_NONE = 0, /* matched */
	COND_SERVICES,
	COND_USERS,
	COND_GROUPS,
	COND_DEVICES,
	COND_MIN_TRUST,
	COND_SOURCES,
	COND_DB_USERS,
	COND_DB_NAMES,
	COND_WHEN,
	COND_APPROVAL,
} cond_t;

typedef struct eval {
	const pol_request_t *req;
	const char *user;  /* NULL: no user claim */
	pol_trust_t trust; /* effective */
	int64_t at_ms;     /* for time windows and access grants */
} eval_t;

static bool rule_names_service(const pol_rule_t *rule, const char *service)
{
	for (size_t i = 0; i < rule->n_services; i++)
		if (strcmp(rule->services[i], "*") == 0 || strcmp(rule->services[i], service) == 0)
			return true;
	return false;
}

static bool match_users(const pol_rule_t *rule, const char *user)
{
	if (!user)
		return false;
	/* case-insensitive: "*@contractor.example" must also catch
	 * "Bob@Contractor.Example" */
	for (size_t i = 0; i < rule->n_users; i++)
		if (fnmatch(rule->users[i], user, FNM_CASEFOLD) == 0)
			return true;
	return false;
}

static bool match_groups(const pol_rule_t *rule, const pol_claims_t *claims)
{
	if (!claims)
		return false;
	for (size_t i = 0; i < rule->n_groups; i++)
		for (size_t k = 0; k < claims->n_groups; k++)
			if (strcmp(rule->groups[i], claims->groups[k]) == 0)
				return true;
	return false;
}

static bool match_devices(const pol_rule_t *rule, const pol_claims_t *claims)
{
	if (!claims || !claims->device_id)
		return false;
	for (size_t i = 0; i < rule->n_devices; i++)
		if (strcmp(rule->devices[i], claims->device_id) == 0)
			return true;
	return false;
}

static bool match_sources(const pol_rule_t *rule, const struct sockaddr *source)
{
	if (!source)
		return false;
	for (size_t i = 0; i < rule->n_sources; i++)
		if (cg_cidr_contains(&rule->sources[i], source))
			return true;
	return false;
}

/* Length of s (n bytes) with the glob metacharacters escaped. */
static size_t escaped_len(const char *s, size_t n)
{
	size_t len = n;
	for (size_t i = 0; i < n; i++)
		len += strchr("*?[]\\", s[i]) != NULL && s[i] != '\0';
	return len;
}

static char *put_escaped(char *dst, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\0' && strchr("*?[]\\", s[i]))
			*dst++ = '\\';
		*dst++ = s[i];
	}
	return dst;
}

size_t pol_placeholder(const char *p, const char **domain, size_t *domain_len)
{
	*domain = NULL;
	*domain_len = 0;
	if (strncmp(p, "{user}", 6) == 0)
		return 6;
	if (strncmp(p, "{user.local}", 12) == 0)
		return 12;
	if (strncmp(p, "{user.local@", 12) != 0)
		return 0;
	size_t n =
	        strspn(p + 12, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
	if (n == 0 || n > 253 || p[12 + n] != '}')
		return 0;
	*domain = p + 12;
	*domain_len = n;
	return 12 + n + 1;
}

/* Expands the placeholders of pattern into out (size *len + 1 from a first
 * pass with out == NULL; *len is the length needed). False when a
 * {user.local@DOMAIN} does not apply to this user: the pattern then
 * matches nothing. */
static bool expand(const char *pattern, const char *user, char *out, size_t *len)
{
	const char *at = strrchr(user, '@');
	size_t user_len = strlen(user);
	size_t local_len = at ? (size_t)(at - user) : user_len;
	char *o = out;

	*len = 0;
	for (const char *p = pattern; *p;) {
		const char *domain;
		size_t domain_len, n = pol_placeholder(p, &domain, &domain_len);
		size_t take = n == 6 ? user_len : local_len;
		if (n == 0) {
			if (o)
				*o++ = *p;
			(*len)++;
			p++;
			continue;
		}
		if (domain != NULL && (at == NULL || strlen(at + 1) != domain_len ||
		                       strncasecmp(at + 1, domain, domain_len) != 0))
			return false;
		if (o)
			o = put_escaped(o, user, take);
		*len += escaped_len(user, take);
		p += n;
	}
	if (o)
		*o = '\0';
	return true;
}

/* db_users / db_names: case-sensitive globs (PostgreSQL names are). The
 * user claim is substituted as a literal so it cannot widen the pattern. */
static bool match_db(char *const *patterns, size_t n, const char *user, const char *value,
                     bool on_oom)
{
	for (size_t i = 0; i < n; i++) {
		const char *pattern = patterns[i];
		char stack[1024];
		char *buf;
		size_t need;
		bool hit;

		if (!strchr(pattern, '{')) {
			if (fnmatch(pattern, value, 0) == 0)
				return true;
			continue;
		}
		if (!user || !expand(pattern, user, NULL, &need))
			continue;
		buf = need < sizeof(stack) ? stack : malloc(need + 1);
		if (!buf)
			return on_oom;
		expand(pattern, user, buf, &need);
		hit = fnmatch(buf, value, 0) == 0;
		if (buf != stack)
			free(buf);
		if (hit)
			return true;
	}
	return false;
}

/* The catalog's question (db_any): could some database user (or name)
 * meet this condition? For an allow rule, yes when one of its patterns
 * can apply to this user (a {user.local@DOMAIN} of another domain cannot);
 * a deny rule counts only when it refuses every name ("*"): one that
 * refuses some names leaves the others reachable. */
static bool match_db_any(char *const *patterns, size_t n, const char *user, bool allow)
{
	for (size_t i = 0; i < n; i++) {
		size_t need;
		if (!allow) {
			if (strcmp(patterns[i], "*") == 0)
				return true;
		} else if (!strchr(patterns[i], '{') ||
		           (user && expand(patterns[i], user, NULL, &need))) {
			return true;
		}
	}
	return false;
}

/* A db_users / db_names condition: the request's value against the
 * patterns; without one, the catalog's question (db_any), else fail
 * closed (a tunnel: an allow rule does not match and a deny rule does). */
static bool db_condition_fails(const pol_rule_t *rule, char *const *patterns, size_t n,
                               const eval_t *ev, const char *value, bool on_oom)
{
	if (value)
		return !match_db(patterns, n, ev->user, value, on_oom);
	if (ev->req->db_any)
		return !match_db_any(patterns, n, ev->user, rule->allow);
	return rule->allow;
}

/* First condition of rule that fails (COND_NONE when the rule matches).
 * *only_trust tells whether min_trust is the one and only failure. */
static cond_t rule_check(const pol_rule_t *rule, const eval_t *ev, bool check_services,
                         bool *only_trust)
{
	const pol_request_t *req = ev->req;
	/* on allocation failure a deny rule matches and an allow rule does not */
	bool on_oom = !rule->allow;
	cond_t first = COND_NONE;

	*only_trust = false;
	if (check_services && !(req->service && rule_names_service(rule, req->service)))
		return COND_SERVICES;
	if (rule->n_users && !match_users(rule, ev->user))
		return COND_USERS;
	if (rule->n_groups && !match_groups(rule, req->claims))
		return COND_GROUPS;
	if (rule->n_devices && !match_devices(rule, req->claims))
		return COND_DEVICES;
	if (rule->min_trust != POL_TRUST_NONE &&
	    (ev->trust == POL_TRUST_NONE || ev->trust < rule->min_trust))
		first = COND_MIN_TRUST;
	if (rule->n_sources && !match_sources(rule, req->source))
		return first ? first : COND_SOURCES;
	if (rule->n_db_users &&
	    db_condition_fails(rule, rule->db_users, rule->n_db_users, ev, req->db_user, on_oom))
		return first ? first : COND_DB_USERS;
	if (rule->n_db_names &&
	    db_condition_fails(rule, rule->db_names, rule->n_db_names, ev, req->db_name, on_oom))
		return first ? first : COND_DB_NAMES;
	if (rule->when != NULL && !pol_window_contains(rule->when, ev->at_ms))
		return first ? first : COND_WHEN;
	/* just-in-time access: the grant must still run at the decision's instant */
	if (rule->requires_approval && req->grant_until_ms <= ev->at_ms)
		return first ? first : COND_APPROVAL;
	*only_trust = first == COND_MIN_TRUST;
	return first;
}

/* ---------------------------------------------------------------------- */
/* Why a rule did not match (explain)                                       */

typedef struct text {
	char *buf;
	size_t cap, len;
} text_t;

static void text_add(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text_t *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->len + 1 >= t->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	t->len += (size_t)n;
	if (t->len >= t->cap) {
		t->len = t->cap - 1;
		/* mark the cut */
		if (t->cap > 4)
			memcpy(t->buf + t->cap - 4, "...", 4);
	}
}

static void text_list(text_t *t, char *const *items, size_t n)
{
	text_add(t, "[");
	for (size_t i = 0; i < n; i++)
		text_add(t, "%s%s", i ? ", " : "", items[i]);
	text_add(t, "]");
}

static void text_cidrs(text_t *t, const cg_cidr_t *nets, size_t n)
{
	text_add(t, "[");
	for (size_t i = 0; i < n; i++) {
		char ip[INET6_ADDRSTRLEN];
		if (!inet_ntop(nets[i].family, nets[i].addr, ip, sizeof(ip)))
			snprintf(ip, sizeof(ip), "?");
		text_add(t, "%s%s/%u", i ? ", " : "", ip, nets[i].prefix);
	}
	text_add(t, "]");
}

static void why_not(const pol_rule_t *rule, const eval_t *ev, cond_t cond, char *buf, size_t len)
{
	const pol_request_t *req = ev->req;
	text_t t = {.buf = buf, .cap = len, .len = 0};

	buf[0] = '\0';
	switch (cond) {
	case COND_NONE:
		break;
	case COND_SERVICES:
		text_add(&t, "services: %s not in ", req->service ? req->service : "(none)");
		text_list(&t, rule->services, rule->n_services);
		break;
	case COND_USERS:
		if (!ev->user) {
			text_add(&t, "users: no user claim");
			break;
		}
		text_add(&t, "users: %s does not match ", ev->user);
		text_list(&t, rule->users, rule->n_users);
		break;
	case COND_GROUPS:
		text_add(&t, "groups: none of ");
		text_list(&t, rule->groups, rule->n_groups);
		break;
	case COND_DEVICES:
		if (!req->claims || !req->claims->device_id) {
			text_add(&t, "devices: no device id, need one of ");
			text_list(&t, rule->devices, rule->n_devices);
			break;
		}
		text_add(&t, "devices: %s not in ", req->claims->device_id);
		text_list(&t, rule->devices, rule->n_devices);
		break;
	case COND_MIN_TRUST:
		text_add(&t, "min_trust: device trust %s < %s", pol_trust_name(ev->trust),
		         pol_trust_name(rule->min_trust));
		break;
	case COND_SOURCES:
		if (!req->source) {
			text_add(&t, "sources: client address unknown, need one of ");
		} else {
			char ip[64];
			cg_sockaddr_format_ip(req->source, ip, sizeof(ip));
			text_add(&t, "sources: %s not in ", ip);
		}
		text_cidrs(&t, rule->sources, rule->n_sources);
		break;
	case COND_DB_USERS:
		if (!req->db_user && req->db_any) {
			text_add(&t,
			         rule->allow ? "db_users: none applies to user %s: "
			                     : "db_users: refuses only some database users: ",
			         ev->user ? ev->user : "(none)");
			text_list(&t, rule->db_users, rule->n_db_users);
		} else if (!req->db_user)
			text_add(&t, "db_users: no database user (not a postgres-mode connection)");
		else {
			text_add(&t, "db_users: %s not in ", req->db_user);
			text_list(&t, rule->db_users, rule->n_db_users);
		}
		break;
	case COND_DB_NAMES:
		if (!req->db_name && req->db_any) {
			text_add(&t,
			         rule->allow ? "db_names: none applies to user %s: "
			                     : "db_names: refuses only some databases: ",
			         ev->user ? ev->user : "(none)");
			text_list(&t, rule->db_names, rule->n_db_names);
		} else if (!req->db_name)
			text_add(&t, "db_names: no database name (not a postgres-mode connection)");
		else {
			text_add(&t, "db_names: %s not in ", req->db_name);
			text_list(&t, rule->db_names, rule->n_db_names);
		}
		break;
	case COND_WHEN:
		text_add(&t, "when: ");
		if (t.len + 1 < t.cap)
			(void)pol_window_explain(rule->when, ev->at_ms, t.buf + t.len,
			                         t.cap - t.len);
		break;
	case COND_APPROVAL:
		if (req->grant_until_ms > 0) {
			char ended[CG_RFC3339_LEN];
			cg_rfc3339_ms(req->grant_until_ms, ended);
			text_add(&t, "requires_approval: the access grant for %s ended at %s",
			         req->service ? req->service : "(none)", ended);
		} else {
			text_add(&t, "requires_approval: no approved access request for %s",
			         req->service ? req->service : "(none)");
		}
		break;
	}
}

/* ---------------------------------------------------------------------- */
/* Decision                                                                 */

typedef struct verdict {
	const pol_rule_t *deny;          /* first matching (enforced) deny rule */
	const pol_rule_t *allow;         /* first matching allow rule */
	const pol_rule_t *trust_only;    /* first allow rule that failed only on min_trust */
	const pol_rule_t *approval_only; /* first allow rule that failed only for want of a grant */
	size_t n_would_deny;             /* matching permissive deny rules, the first ones */
	const pol_rule_t *would_deny[POL_WOULD_DENY_MAX];
	int64_t deny_opens_ms; /* earliest opening of a deny rule's window that alone failed */
} verdict_t;

static void consider(verdict_t *v, const pol_rule_t *rule, const eval_t *ev, cond_t cond,
                     bool only_trust)
{
	if (cond == COND_NONE) {
		if (!rule->allow && rule->permissive) {
			if (v->n_would_deny < POL_WOULD_DENY_MAX)
				v->would_deny[v->n_would_deny++] = rule;
		} else if (!rule->allow && !v->deny) {
			v->deny = rule;
		} else if (rule->allow && !v->allow) {
			v->allow = rule;
		}
	} else if (only_trust && rule->allow && !v->trust_only) {
		v->trust_only = rule;
	} else if (cond == COND_APPROVAL && !v->approval_only) {
		v->approval_only = rule; /* an allow rule: only those require approval */
	} else if (cond == COND_WHEN && !rule->allow && !rule->permissive) {
		/* it refuses once its window opens */
		int64_t opens = pol_window_next_change(rule->when, ev->at_ms);
		if (opens < v->deny_opens_ms)
			v->deny_opens_ms = opens;
	}
}

static bool service_known(const pol_snapshot_t *snap, const char *service)
{
	if (!service)
		return false;
	if (snap->index) {
		const pol_service_t *svc = pol_index_service(snap->index, snap, service);
		return svc != NULL && strcmp(svc->name, service) == 0; /* exact */
	}
	for (size_t i = 0; i < snap->n_services; i++)
		if (strcmp(snap->services[i].name, service) == 0)
			return true;
	return false;
}

/* The rules a request's keys lead to, gathered into a growing array. */
typedef struct candidates {
	size_t *rules;
	size_t n, cap;
	size_t stack[128];
	bool oom;
} candidates_t;

static void gather(candidates_t *c, const void *index, const char *scope, char kind,
                   const char *value)
{
	const pol_rule_list_t *list = pol_index_rules(index, scope, kind, value);
	if (!list)
		return;
	if (c->n + list->n > c->cap) {
		size_t cap = (c->n + list->n) * 2;
		size_t *grown = malloc(cap * sizeof(*grown));
		if (!grown) {
			c->oom = true;
			return;
		}
		memcpy(grown, c->rules, c->n * sizeof(*grown));
		if (c->rules != c->stack)
			free(c->rules);
		c->rules = grown;
		c->cap = cap;
	}
	memcpy(c->rules + c->n, list->rules, list->n * sizeof(*list->rules));
	c->n += list->n;
}

/* Candidates are few: insertion sort beats qsort's call overhead. */
static void sort_indexes(size_t *a, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		size_t x = a[i], j = i;
		for (; j > 0 && a[j - 1] > x; j--)
			a[j] = a[j - 1];
		a[j] = x;
	}
}

/* Live path: the rules the request's service, groups, user domain and
 * device lead to, in policy order; stops at the first matching deny rule. */
static void decide_indexed(const pol_snapshot_t *snap, const eval_t *ev, verdict_t *v)
{
	const void *index = snap->index;
	const pol_request_t *req = ev->req;
	const pol_claims_t *claims = req->claims;
	candidates_t c = {.cap = 128};
	c.rules = c.stack;
	const char *scopes[2] = {req->service, "*"};
	const char *at = strrchr(ev->user, '@');
	char domain[POL_INDEX_KEY_MAX];
	if (at)
		pol_index_lower(domain, sizeof(domain), at + 1);
	for (int sc = 0; sc < 2; sc++) {
		gather(&c, index, scopes[sc], 0, NULL);
		for (size_t i = 0; claims && i < claims->n_groups; i++)
			gather(&c, index, scopes[sc], 'g', claims->groups[i]);
		if (at)
			gather(&c, index, scopes[sc], 'u', domain);
		if (claims && claims->device_id)
			gather(&c, index, scopes[sc], 'd', claims->device_id);
	}
	if (c.oom) {
		/* fail closed: walk everything */
		for (size_t i = 0; i < snap->n_rules && !v->deny; i++) {
			bool only_trust;
			const pol_rule_t *rule = &snap->rules[i];
			cond_t cond = rule_check(rule, ev, true, &only_trust);
			consider(v, rule, ev, cond, only_trust);
		}
	} else {
		sort_indexes(c.rules, c.n);
		for (size_t i = 0; i < c.n && !v->deny; i++) {
			if (i > 0 && c.rules[i] == c.rules[i - 1])
				continue; /* reached by two keys */
			const pol_rule_t *rule = &snap->rules[c.rules[i]];
			/* once an allow rule matched, only a deny rule can change it */
			if (v->allow && rule->allow)
				continue;
			bool only_trust;
			cond_t cond = rule_check(rule, ev, false, &only_trust);
			consider(v, rule, ev, cond, only_trust);
		}
	}
	if (c.rules != c.stack)
		free(c.rules);
}

void pol_decide(const pol_snapshot_t *snap, const pol_request_t *req, pol_decision_t *out,
                pol_trace_fn trace, void *trace_arg)
{
	const pol_claims_t *claims = req->claims;
	eval_t ev = {
	        .req = req,
	        /* an empty user is no user */
	        .user = claims && claims->user && claims->user[0] ? claims->user : NULL,
	        .trust = pol_trust_effective(claims ? claims->device_trust : POL_TRUST_NONE,
	                                     req->feed_trust),
	        /* the clock is read only when a window or a grant needs it */
	        .at_ms = req->at_ms != 0 || !(snap->has_windows || snap->has_approvals)
	                         ? req->at_ms
	                         : cg_wall_ms(),
	};
	verdict_t v = {.deny_opens_ms = INT64_MAX};
	bool known = service_known(snap, req->service);
	bool only_trust;

	memset(out, 0, sizeof(*out));
	out->allow = false;
	out->why = POL_WHY_DEFAULT_DENY;
	out->rule = "default-deny";
	out->effective_trust = ev.trust;
	out->valid_until_ms = INT64_MAX;

	if (trace) {
		/* explain: every rule, in policy order */
		for (size_t i = 0; i < snap->n_rules; i++) {
			const pol_rule_t *rule = &snap->rules[i];
			cond_t cond = rule_check(rule, &ev, true, &only_trust);
			char why[1024];
			why_not(rule, &ev, cond, why, sizeof(why));
			trace(trace_arg, rule, cond == COND_NONE ? NULL : why);
			consider(&v, rule, &ev, cond, only_trust);
		}
	} else if (ev.user && known && snap->index) {
		decide_indexed(snap, &ev, &v);
	} else if (ev.user && known) {
		/* no index (a snapshot not made by pol_snapshot_load) */
		for (size_t i = 0; i < snap->n_rules && !v.deny; i++) {
			const pol_rule_t *rule = &snap->rules[i];
			cond_t cond = rule_check(rule, &ev, true, &only_trust);
			consider(&v, rule, &ev, cond, only_trust);
		}
	}

	if (!ev.user) {
		out->why = POL_WHY_NO_USER;
		snprintf(out->reason, sizeof(out->reason), "certificate has no user claim");
	} else if (!known) {
		snprintf(out->reason, sizeof(out->reason), "unknown service %s",
		         req->service ? req->service : "(none)");
	} else if (v.deny) {
		out->why = POL_WHY_DENY_RULE;
		out->rule = v.deny->name;
		snprintf(out->reason, sizeof(out->reason), "denied by rule %s", v.deny->name);
	} else if (ev.trust == POL_TRUST_ALWAYS_DENY) {
		/* the lowest level is a verdict of its own: no rule admits the
		 * device, whether it names min_trust or not */
		out->why = POL_WHY_TRUST;
		snprintf(out->reason, sizeof(out->reason),
		         "device trust always_deny: every rule refuses this device");
	} else if (v.allow) {
		out->allow = true;
		out->why = POL_WHY_ALLOWED;
		out->rule = v.allow->name;
		snprintf(out->reason, sizeof(out->reason), "allowed by rule %s", v.allow->name);
		out->valid_until_ms = v.deny_opens_ms;
		if (v.allow->when != NULL) {
			int64_t closes = pol_window_next_change(v.allow->when, ev.at_ms);
			if (closes < out->valid_until_ms)
				out->valid_until_ms = closes;
		}
		/* admitted by an approval: it holds until the grant ends */
		if (v.allow->requires_approval && req->grant_until_ms < out->valid_until_ms)
			out->valid_until_ms = req->grant_until_ms;
		out->n_would_deny = v.n_would_deny;
		for (size_t i = 0; i < v.n_would_deny; i++)
			out->would_deny[i] = v.would_deny[i]->name;
	} else if (v.trust_only) {
		out->why = POL_WHY_TRUST;
		snprintf(out->reason, sizeof(out->reason),
		         "device trust %s is below min_trust %s of rule %s",
		         pol_trust_name(ev.trust), pol_trust_name(v.trust_only->min_trust),
		         v.trust_only->name);
	} else if (v.approval_only) {
		out->why = POL_WHY_APPROVAL;
		snprintf(out->reason, sizeof(out->reason),
		         "rule %s requires an approved access request for service %s (certgate "
		         "request %s)",
		         v.approval_only->name, req->service, req->service);
	} else if (req->db_user != NULL) {
		snprintf(out->reason, sizeof(out->reason),
		         "no rule allows user %s as db user %s on database %s of service %s",
		         ev.user, req->db_user, req->db_name != NULL ? req->db_name : "?",
		         req->service);
	} else {
		snprintf(out->reason, sizeof(out->reason), "no rule allows user %s on service %s",
		         ev.user, req->service);
	}
	/* the names in it are cut by bytes when long: never inside a character
	 * (the audit would have to escape half of one) */
	size_t n = strlen(out->reason);
	if (n == sizeof(out->reason) - 1)
		out->reason[cg_utf8_complete(out->reason, n)] = '\0';
}
