/* pol_lint: the warnings of `certgate check` about dangerous settings.
 * data/lint_warn.json holds one case of each warning (and a few near misses
 * inside the same rules); data/lint_clean.json the safe forms of the same
 * settings, which must give no warning at all. Every warning is compared
 * whole, position included. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pol_config.h"
#include "pol_lint.h"

static pol_snapshot_t *load(const char *name)
{
	char path[1024];
	cg_errors_t errs;
	snprintf(path, sizeof(path), "%s/%s", DATA_DIR, name);
	cg_errors_init(&errs);
	pol_snapshot_t *snap = pol_snapshot_load(path, &errs);
	for (size_t i = 0; i < errs.count; i++)
		print_error("%s\n", errs.items[i]);
	assert_int_equal(errs.count, 0);
	assert_non_null(snap);
	cg_errors_finish(&errs);
	return snap;
}

/* The warnings for name, each with the file's path cut off. */
static void expect(const char *name, const char *const *want, size_t n_want)
{
	pol_snapshot_t *snap = load(name);
	cg_errors_t warnings;
	char prefix[1024];
	int bad = 0;

	snprintf(prefix, sizeof(prefix), "%s/%s:", DATA_DIR, name);
	cg_errors_init(&warnings);
	pol_lint(snap, &warnings);
	for (size_t i = 0; i < warnings.count || i < n_want; i++) {
		const char *got = i < warnings.count ? warnings.items[i] : "(none)";
		if (strncmp(got, prefix, strlen(prefix)) == 0)
			got += strlen(prefix);
		const char *w = i < n_want ? want[i] : "(none)";
		if (strcmp(got, w) != 0) {
			print_error("warning %zu:\n  got  %s\n  want %s\n", i, got, w);
			bad++;
		}
	}
	cg_errors_finish(&warnings);
	pol_snapshot_unref(snap);
	assert_int_equal(bad, 0);
}

static void test_warnings(void **state)
{
	static const char *const want[] = {
	        "9:43: warning: gateway.proxy_protocol_from[1]: 0.0.0.0/0 trusts PROXY headers "
	        "from every IPv4 address: any client can claim to come from anywhere (and pass "
	        "sources conditions); list only your load balancers",
	        "9:56: warning: gateway.proxy_protocol_from[2]: ::/0 trusts PROXY headers from "
	        "every IPv6 address: any client can claim to come from anywhere (and pass sources "
	        "conditions); list only your load balancers",
	        "7:26: warning: gateway.max_cert_lifetime: 7d1s: login certificates valid over 7 "
	        "days are not short-lived; a stolen one stays useful that long",
	        "8:19: warning: gateway.clock_skew: 6m: accepting certificates that far in the "
	        "future hides a broken clock; keep it under 5 minutes",
	        "19:5: warning: rules[0]: allow rule \"everyone\" lets every user with a "
	        "certificate from client_ca into every service, from anywhere, with no min_trust: "
	        "name groups, users or devices, or set min_trust",
	        "20:5: warning: rules[1]: allow rule \"everyone-listed\" lets every user with a "
	        "certificate from client_ca into every service, from anywhere, with no min_trust: "
	        "name groups, users or devices, or set min_trust",
	        "24:20: warning: rules[3].db_users[0]: {user.local} is the same for "
	        "alice@example.com and alice@partner.example, and this rule's users are not "
	        "confined to one domain: restrict \"users\" to one (\"*@example.com\") or write "
	        "{user.local@example.com}",
	        "24:50: warning: rules[3].db_names[0]: {user.local} is the same for "
	        "alice@example.com and alice@partner.example, and this rule's users are not "
	        "confined to one domain: restrict \"users\" to one (\"*@example.com\") or write "
	        "{user.local@example.com}",
	        "24:50: warning: rules[3].db_names[0]: the glob beside {user.local} also matches "
	        "other users' names ({user.local}_* lets alice into alice_x_private): put a "
	        "character no user name holds, such as ':', between them, or drop the glob",
	        "26:69: warning: rules[4].db_users[0]: {user.local} is the same for "
	        "alice@example.com and alice@partner.example, and this rule's users are not "
	        "confined to one domain: restrict \"users\" to one (\"*@example.com\") or write "
	        "{user.local@example.com}",
	        "28:50: warning: rules[5].db_users[0]: {user.local} is the same for "
	        "alice@example.com and alice@partner.example, and this rule's users are not "
	        "confined to one domain: restrict \"users\" to one (\"*@example.com\") or write "
	        "{user.local@example.com}",
	        "31:20: warning: rules[6].db_users[0]: the glob beside {user.local} also matches "
	        "other users' names ({user.local}_* lets alice into alice_x_private): put a "
	        "character no user name holds, such as ':', between them, or drop the glob",
	        "31:38: warning: rules[6].db_users[1]: the glob beside {user.local@example.com} "
	        "also matches other users' names ({user.local}_* lets alice into "
	        "alice_x_private): put a character no user name holds, such as ':', between them, "
	        "or drop the glob",
	        "31:67: warning: rules[6].db_users[2]: the glob beside {user} also matches other "
	        "users' names ({user.local}_* lets alice into alice_x_private): put a character no "
	        "user name holds, such as ':', between them, or drop the glob",
	        "31:78: warning: rules[6].db_users[3]: the glob beside {user} also matches other "
	        "users' names ({user.local}_* lets alice into alice_x_private): put a character no "
	        "user name holds, such as ':', between them, or drop the glob",
	        "32:78: warning: rules[6].db_names[3]: the glob beside {user.local} also matches "
	        "other users' names ({user.local}_* lets alice into alice_x_private): put a "
	        "character no user name holds, such as ':', between them, or drop the glob",
	};
	(void)state;
	expect("lint_warn.json", want, sizeof(want) / sizeof(want[0]));
}

static void test_clean(void **state)
{
	(void)state;
	expect("lint_clean.json", NULL, 0);
}

/* The policy of the decision tests is a realistic one: its only warnings
 * are the {user.local} rules it keeps on purpose. */
static void test_decide_fixture(void **state)
{
	static const char *const want[] = {
	        "37:20: warning: rules[9].db_users[0]: {user.local} is the same for "
	        "alice@example.com and alice@partner.example, and this rule's users are not "
	        "confined to one domain: restrict \"users\" to one (\"*@example.com\") or write "
	        "{user.local@example.com}",
	};
	(void)state;
	expect("decide_basic.json", want, sizeof(want) / sizeof(want[0]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_warnings),
	        cmocka_unit_test(test_clean),
	        cmocka_unit_test(test_decide_fixture),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
