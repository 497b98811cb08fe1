/* The "rules" section (of certgate.json or of its policy_file): each rule's
 * conditions read and checked against the services already loaded, and rule
 * names unique. */
#include <stdint.h>
#include <string.h>

#include "cg_log.h"
#include "cg_strmap.h"
#include "pol_decide.h"
#include "pol_loader.h"

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
