/* The decision index (pol_index.h): built once per snapshot from its
 * services and rules, then only read, by any number of threads at once. */
#include "pol_index.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_strmap.h"

/* A rule can only match a request that has what the rule requires first:
 * one of its groups, a user in the domain of its "*@domain" globs, one of
 * its devices. The index files every rule under those keys (or under no key,
 * when it requires none of them), per service it names ("*" rules under
 * "*"), so a decision looks up the few lists its own groups, user domain and
 * device lead to and merges them in policy order. Rules it never looks at
 * would fail on the condition they are filed by: the outcome is the same as
 * walking every rule, as the trace path (explain) does. */
typedef struct decide_index {
	cg_strmap_t *services; /* lower-cased service name -> index + 1 */
	cg_strmap_t *lists;    /* "<service or *>\x1f<key>" -> pol_rule_list_t */
} decide_index_t;

static bool rule_is_star(const pol_rule_t *rule)
{
	for (size_t i = 0; i < rule->n_services; i++)
		if (strcmp(rule->services[i], "*") == 0)
			return true;
	return false;
}

/* "*@example.com" -> "example.com": a glob that is a literal domain after
 * "*@" (no metacharacter, no further '@': the '@' it needs is then the
 * user's last one). NULL for any other pattern. */
static const char *glob_domain(const char *pattern)
{
	if (strncmp(pattern, "*@", 2) != 0 || pattern[2] == '\0')
		return NULL;
	return strpbrk(pattern + 2, "*?[]\\@") == NULL ? pattern + 2 : NULL;
}

void pol_index_lower(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	for (; src[i] != '\0' && i + 1 < len; i++)
		dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] - 'A' + 'a' : src[i]);
	dst[i] = '\0';
}

/* "<scope>\x1f<kind>:<value>", or "<scope>\x1f" for the rules that require
 * no key. False when it does not fit (no real request has such a key). */
static bool make_key(char *buf, const char *scope, char kind, const char *value)
{
	size_t ns = strlen(scope), nv = value ? strlen(value) : 0;
	if (ns + nv + 4 > POL_INDEX_KEY_MAX)
		return false;
	memcpy(buf, scope, ns);
	buf[ns++] = '\x1f';
	if (value) {
		buf[ns++] = kind;
		buf[ns++] = ':';
		memcpy(buf + ns, value, nv);
		ns += nv;
	}
	buf[ns] = '\0';
	return true;
}

static void list_free(void *p)
{
	pol_rule_list_t *list = p;
	if (list) {
		free(list->rules);
		free(list);
	}
}

static bool file_rule(cg_strmap_t *lists, const char *scope, char kind, const char *value, size_t r)
{
	char full[POL_INDEX_KEY_MAX];
	if (!make_key(full, scope, kind, value))
		return true; /* a key this long cannot come from a real request either */
	pol_rule_list_t *list = cg_strmap_get(lists, full);
	if (!list) {
		if (!(list = calloc(1, sizeof(*list))))
			return false;
		cg_strmap_put(lists, full, list);
	}
	if (list->n > 0 && list->rules[list->n - 1] == r)
		return true; /* filed twice under one key (two equal groups) */
	if (list->n == list->cap) {
		size_t cap = list->cap ? 2 * list->cap : 4;
		size_t *grown = realloc(list->rules, cap * sizeof(*grown));
		if (!grown)
			return false;
		list->rules = grown;
		list->cap = cap;
	}
	list->rules[list->n++] = r;
	return true;
}

/* Files rule r under each key it requires, in one scope. */
static bool file_rule_keys(cg_strmap_t *lists, const pol_rule_t *rule, const char *scope, size_t r)
{
	if (rule->n_groups > 0) {
		for (size_t i = 0; i < rule->n_groups; i++)
			if (!file_rule(lists, scope, 'g', rule->groups[i], r))
				return false;
		return true;
	}
	bool by_domain = rule->n_users > 0;
	for (size_t i = 0; i < rule->n_users && by_domain; i++)
		by_domain = glob_domain(rule->users[i]) != NULL;
	if (by_domain) {
		for (size_t i = 0; i < rule->n_users; i++) {
			char domain[POL_INDEX_KEY_MAX];
			pol_index_lower(domain, sizeof(domain), glob_domain(rule->users[i]));
			if (!file_rule(lists, scope, 'u', domain, r))
				return false;
		}
		return true;
	}
	if (rule->n_devices > 0) {
		for (size_t i = 0; i < rule->n_devices; i++)
			if (!file_rule(lists, scope, 'd', rule->devices[i], r))
				return false;
		return true;
	}
	return file_rule(lists, scope, 0, NULL, r);
}

void *pol_index_create(const pol_snapshot_t *snap)
{
	decide_index_t *index = calloc(1, sizeof(*index));
	if (!index || !(index->services = cg_strmap_create()) ||
	    !(index->lists = cg_strmap_create()))
		goto fail;
	for (size_t s = 0; s < snap->n_services; s++) {
		/* the loader refused names equal but for case: keys are unique */
		char name[POL_INDEX_KEY_MAX];
		pol_index_lower(name, sizeof(name), snap->services[s].name);
		cg_strmap_put(index->services, name, (void *)(uintptr_t)(s + 1));
	}
	for (size_t r = 0; r < snap->n_rules; r++) {
		const pol_rule_t *rule = &snap->rules[r];
		if (rule_is_star(rule)) {
			if (!file_rule_keys(index->lists, rule, "*", r))
				goto fail;
			continue;
		}
		for (size_t i = 0; i < rule->n_services; i++)
			if (!file_rule_keys(index->lists, rule, rule->services[i], r))
				goto fail;
	}
	return index;
fail:
	pol_index_destroy(index);
	return NULL;
}

const pol_service_t *pol_index_service(const void *index, const pol_snapshot_t *snap,
                                       const char *name)
{
	/* strcasecmp in the C locale (certgate never sets another) folds ASCII
	 * only, as pol_index_lower does */
	char key[POL_INDEX_KEY_MAX];
	pol_index_lower(key, sizeof(key), name);
	uintptr_t i = (uintptr_t)cg_strmap_get(((const decide_index_t *)index)->services, key);
	return i ? &snap->services[i - 1] : NULL;
}

void pol_index_destroy(void *index)
{
	decide_index_t *idx = index;

	if (!idx)
		return;
	cg_strmap_destroy(idx->services, NULL);
	cg_strmap_destroy(idx->lists, list_free);
	free(idx);
}

const pol_rule_list_t *pol_index_rules(const void *index, const char *scope, char kind,
                                       const char *value)
{
	char full[POL_INDEX_KEY_MAX];
	if (!make_key(full, scope, kind, value))
		return NULL;
	return cg_strmap_get(((const decide_index_t *)index)->lists, full);
}
