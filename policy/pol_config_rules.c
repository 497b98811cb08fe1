/* The "rules" section (of certgate.json or of its policy_file): each rule's
 * conditions read and checked against the services already loaded, its
 * mode, time window and requires_approval, and rule names unique. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_log.h"
#include "cg_strmap.h"
#include "cg_time.h"
#include "cg_tz.h"
#include "pol_decide.h"
#include "pol_loader.h"
#include "pol_window.h"

/* ---------------------------------------------------------------------- */
/* rules                                                                    */

/* `{` may only open a placeholder: {user}, {user.local} or
 * {user.local@DOMAIN} (pol_placeholder). */
static bool db_pattern_ok(const char *s)
{
	for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
		const char *domain;
		size_t domain_len;
		if (pol_placeholder(p, &domain, &domain_len) == 0)
			return false;
	}
	return strlen(s) <= 1024;
}

static const pol_service_t *find_service(const loader_t *ld, const char *name)
{
	uintptr_t i = ld->svc_by_name ? (uintptr_t)cg_strmap_get(ld->svc_by_name, name) : 0;
	return i ? &ld->snap->services[i - 1] : NULL;
}

/* ---------------------------------------------------------------------- */
/* when                                                                     */

/* The zone called name, loaded once per snapshot whatever the number of
 * rules naming it. NULL after reporting at path. */
static const cg_tz_t *zone(loader_t *ld, const cg_jdoc_t *doc, const char *path, const char *name)
{
	pol_snapshot_t *snap = ld->snap;
	cg_tz_t *tz;
	char err[1200];
	if (snap->zones == NULL && (snap->zones = cg_strmap_create()) == NULL) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return NULL;
	}
	if ((tz = cg_strmap_get(snap->zones, name)) != NULL)
		return tz;
	if ((tz = cg_tz_load(name, err, sizeof(err))) == NULL) {
		pol_ld_err(ld, doc, path, "%s", err);
		return NULL;
	}
	cg_strmap_put(snap->zones, name, tz);
	return tz;
}

static bool get_time(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, int64_t *out)
{
	const char *text;
	char kpath[PATH_BUF];
	if (!pol_ld_get_string(ld, doc, obj, path, key, false, &text) || text == NULL)
		return false;
	if (!cg_rfc3339_parse(text, out)) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, key),
		           "expected an RFC 3339 time like \"2026-12-04T18:00:00Z\" or "
		           "\"2026-12-04T19:00:00+01:00\"");
		return false;
	}
	return true;
}

/* rules[i].when: {"days": [...], "hours": "08:00-18:00", "tz": ZONE,
 * "from": RFC3339, "until": RFC3339}. */
static void load_when(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *rpath,
                      pol_rule_t *rule)
{
	static const char *const keys[] = {"days", "hours", "tz", "from", "until", NULL};
	char path[PATH_BUF], kpath[PATH_BUF], ipath[PATH_BUF];
	const json_t *days = json_object_get(obj, "days");
	const char *hours, *tz_name;
	pol_window_t w = {0};

	pol_ld_pkey(path, rpath, "when");
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, path,
		           "expected an object with \"days\", \"hours\", \"tz\", \"from\" or "
		           "\"until\"");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, path, keys);
	if (days != NULL) {
		pol_ld_pkey(kpath, path, "days");
		if (!json_is_array(days) || json_array_size(days) == 0)
			pol_ld_err(ld, doc, kpath,
			           "expected a list of days like [\"mon\", \"tue\", \"wed\"]");
		w.has_days = true;
		for (size_t i = 0; json_is_array(days) && i < json_array_size(days); i++) {
			const char *name = json_string_value(json_array_get(days, i));
			int d = name != NULL ? pol_window_parse_day(name) : -1;
			if (d < 0)
				pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i),
				           "expected one of \"mon\", \"tue\", \"wed\", \"thu\", "
				           "\"fri\", \"sat\", \"sun\"");
			else
				w.days |= (uint8_t)(1u << d);
		}
	}
	if (pol_ld_get_string(ld, doc, obj, path, "hours", false, &hours) && hours != NULL) {
		w.has_hours = true;
		if (!pol_window_parse_hours(hours, &w.start_s, &w.end_s))
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "hours"),
			           "expected \"HH:MM-HH:MM\" in 24-hour local time, start and end "
			           "different (\"08:00-18:00\", \"22:00-06:00\", \"00:00-24:00\")");
	}
	if (pol_ld_get_string(ld, doc, obj, path, "tz", false, &tz_name) && tz_name != NULL)
		w.tz = zone(ld, doc, pol_ld_pkey(kpath, path, "tz"), tz_name);
	else if (w.has_days || w.has_hours)
		/* the server's own zone is no good guess: say which one */
		pol_ld_err(ld, doc, path,
		           "missing key \"tz\": days and hours are local times of a zone such as "
		           "\"Europe/Berlin\" or \"UTC\"");
	w.has_from = get_time(ld, doc, obj, path, "from", &w.from_ms);
	w.has_until = get_time(ld, doc, obj, path, "until", &w.until_ms);
	if (w.has_from && w.has_until && w.from_ms >= w.until_ms)
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "until"),
		           "expected a time after from: the window would never open");
	if (!w.has_days && !w.has_hours && json_object_get(obj, "from") == NULL &&
	    json_object_get(obj, "until") == NULL)
		pol_ld_err(ld, doc, path,
		           "expected at least one of \"days\", \"hours\", "
		           "\"from\" and \"until\"");
	if ((rule->when = pol_ld_xcalloc(ld, 1, sizeof(*rule->when))) != NULL)
		*rule->when = w;
	ld->snap->has_windows = true;
}

/* ---------------------------------------------------------------------- */
/* a rule                                                                   */

static void load_rule(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, size_t idx,
                      pol_rule_t *rule)
{
	static const char *const keys[] = {
	        "name",    "effect",    "services",          "users",    "groups",
	        "devices", "min_trust", "sources",           "db_users", "db_names",
	        "mode",    "when",      "requires_approval", NULL};
	char path[PATH_BUF], kpath[PATH_BUF], ipath[PATH_BUF];
	const char *name, *effect = NULL, *trust, *mode;
	bool star = false, all_postgres = true;

	rule->min_trust = POL_TRUST_NONE;
	pol_ld_pidx(path, "rules", idx);
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, path, "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, path, keys);

	if (pol_ld_get_string(ld, doc, obj, path, "name", true, &name) && name) {
		if (pol_ld_has_control(name))
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "name"),
			           "expected a printable name");
		else if (strcmp(name, "default-deny") == 0)
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "name"),
			           "\"default-deny\" is reserved for the implicit last rule");
		else
			rule->name = pol_ld_xstrdup(ld, name);
	}
	if (pol_ld_get_string(ld, doc, obj, path, "effect", true, &effect) && effect) {
		if (strcmp(effect, "allow") == 0)
			rule->allow = true;
		else if (strcmp(effect, "deny") == 0)
			rule->allow = false;
		else
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "effect"),
			           "expected \"allow\" or \"deny\"");
	}

	if (pol_ld_get_string(ld, doc, obj, path, "mode", false, &mode) && mode) {
		if (strcmp(mode, "permissive") == 0)
			rule->permissive = true;
		else if (strcmp(mode, "enforce") != 0)
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "mode"),
			           "expected \"enforce\" or \"permissive\"");
		/* an allow rule that is not enforced would admit no one: trying one
		 * on live traffic has no meaning, so it is refused, not guessed */
		if (rule->permissive && rule->allow)
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "mode"),
			           "\"permissive\" applies to deny rules only (an allow rule that "
			           "is not enforced would admit no one)");
	}
	if (json_object_get(obj, "when") != NULL)
		load_when(ld, doc, json_object_get(obj, "when"), path, rule);
	pol_ld_get_bool(ld, doc, obj, path, "requires_approval", false, &rule->requires_approval);
	if (rule->requires_approval) {
		/* an approval widens access for a while: on a deny rule it would
		 * have to mean "refuse only those who were approved", which no
		 * one wants; refused, not guessed */
		if (effect != NULL && strcmp(effect, "deny") == 0)
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "requires_approval"),
			           "applies to allow rules only (an approved access request "
			           "admits; it cannot make a deny rule refuse)");
		ld->snap->has_approvals = true;
	}

	if (!json_object_get(obj, "services"))
		pol_ld_err(ld, doc, path, "missing required key \"services\"");
	pol_ld_get_string_list(ld, doc, obj, path, "services", NULL, NULL, &rule->services,
	                       &rule->n_services);
	pol_ld_pkey(kpath, path, "services");
	for (size_t i = 0; i < rule->n_services; i++) {
		const pol_service_t *svc;
		if (strcmp(rule->services[i], "*") == 0) {
			star = true;
			continue;
		}
		svc = find_service(ld, rule->services[i]);
		if (!svc)
			pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i), "unknown service \"%s\"",
			           rule->services[i]);
		else if (svc->mode != POL_MODE_POSTGRES)
			all_postgres = false;
	}

	pol_ld_get_string_list(ld, doc, obj, path, "users", NULL, NULL, &rule->users,
	                       &rule->n_users);
	pol_ld_get_string_list(ld, doc, obj, path, "groups", NULL, NULL, &rule->groups,
	                       &rule->n_groups);
	pol_ld_get_string_list(ld, doc, obj, path, "devices", NULL, NULL, &rule->devices,
	                       &rule->n_devices);
	if (pol_ld_get_string(ld, doc, obj, path, "min_trust", false, &trust) && trust &&
	    !pol_trust_parse(trust, &rule->min_trust)) {
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "min_trust"),
		           "expected one of \"always_deny\", \"low\", \"medium\", \"high\"");
		rule->min_trust = POL_TRUST_NONE;
	}
	pol_ld_get_cidr_list(ld, doc, obj, path, "sources", false, &rule->sources,
	                     &rule->n_sources);
	pol_ld_get_string_list(
	        ld, doc, obj, path, "db_users", db_pattern_ok,
	        "expected a pattern whose only placeholders are {user}, {user.local} and "
	        "{user.local@DOMAIN}",
	        &rule->db_users, &rule->n_db_users);
	pol_ld_get_string_list(
	        ld, doc, obj, path, "db_names", db_pattern_ok,
	        "expected a pattern whose only placeholders are {user}, {user.local} and "
	        "{user.local@DOMAIN}",
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
			cg_jdoc_where(doc, pol_ld_pkey(kpath, path, db_keys[i]), where,
			              sizeof(where));
			cg_log(CG_LOG_WARN,
			       "%s: %s.%s: names a tunnel-mode service, where the database %s is "
			       "not known: this rule %s there",
			       where, path, db_keys[i], i == 0 ? "user" : "name",
			       rule->allow ? "never admits" : "always refuses");
		}
	}
}

void pol_ld_load_rules(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr)
{
	pol_snapshot_t *snap = ld->snap;
	cg_strmap_t *names;
	size_t n;

	if (!arr)
		return; /* no rules: everything is denied */
	if (!json_is_array(arr)) {
		pol_ld_err(ld, doc, "rules", "expected an array of rules");
		return;
	}
	n = json_array_size(arr);
	if (n == 0)
		return;
	if (!(snap->rules = pol_ld_xcalloc(ld, n, sizeof(*snap->rules))))
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
			pol_ld_pidx(path, "rules", i);
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "name"),
			           "duplicate rule name \"%s\" (also rules[%zu])",
			           snap->rules[i].name, (size_t)(j - 1));
			continue;
		}
		cg_strmap_put(names, snap->rules[i].name, (void *)(uintptr_t)(i + 1));
	}
	cg_strmap_destroy(names, NULL);
}
