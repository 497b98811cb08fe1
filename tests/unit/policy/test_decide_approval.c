/* pol_decide and just-in-time access: a requires_approval rule matches only
 * while the request's access grant runs, the decision holds until the grant
 * ends, a refusal for want of a grant says so, and explain says why.
 * data/decide_approval.json is the policy; each row is decided through the
 * index (live path) and the trace (explain), which must agree. Also the
 * loader's checks of requires_approval. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_time.h"
#include "pol_config.h"
#include "pol_decide.h"

#define T_NONE POL_TRUST_NONE
#define T_LOW  POL_TRUST_LOW
#define T_HIGH POL_TRUST_HIGH
#define ALLOW  true
#define DENY   false
#define DD     "default-deny"
#define NEVER  NULL

typedef struct row {
	const char *service;
	const char *user;
	const char *groups[2];
	pol_trust_t trust;
	const char *db_user;
	const char *at;
	const char *grant_until; /* NULL: no grant */
	bool allow;
	const char *rule;
	pol_why_t why;
	const char *valid_until; /* NULL: never */
} row_t;

/* clang-format off */
static const row_t rows[] = {
	/* service      user                      groups              trust   db_user     at                      grant until             allow  rule              why                    valid until */
	/* no grant, a grant, one that ends exactly now, one that ended */
	{"orders-db",  "sam@example.com",        {"oncall"},         T_NONE, NULL,       "2026-06-01T10:00:00Z", NULL,                   DENY,  DD,               POL_WHY_APPROVAL,      NEVER},
	{"orders-db",  "sam@example.com",        {"oncall"},         T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z", ALLOW, "oncall-jit",     POL_WHY_ALLOWED,       "2026-06-01T11:00:00Z"},
	{"orders-db",  "sam@example.com",        {"oncall"},         T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T10:00:00Z", DENY,  DD,               POL_WHY_APPROVAL,      NEVER},
	{"orders-db",  "sam@example.com",        {"oncall"},         T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T09:00:00Z", DENY,  DD,               POL_WHY_APPROVAL,      NEVER},
	/* deny overrides a grant */
	{"orders-db",  "bob@contractor.example", {"oncall"},         T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z", DENY,  "no-contractors", POL_WHY_DENY_RULE,     NEVER},
	/* a rule without approval needs no grant; the first allowing rule decides */
	{"orders-db",  "dora@example.com",       {"dba"},            T_NONE, NULL,       "2026-06-01T10:00:00Z", NULL,                   ALLOW, "dba",            POL_WHY_ALLOWED,       NEVER},
	{"orders-db",  "ann@example.com",        {"oncall", "dba"},  T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z", ALLOW, "oncall-jit",     POL_WHY_ALLOWED,       "2026-06-01T11:00:00Z"},
	{"orders-db",  "ann@example.com",        {"oncall", "dba"},  T_NONE, NULL,       "2026-06-01T10:00:00Z", NULL,                   ALLOW, "dba",            POL_WHY_ALLOWED,       NEVER},
	/* a grant admits no one the rule does not name */
	{"orders-db",  "carl@example.com",       {"staff"},          T_NONE, NULL,       "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z", DENY,  DD,               POL_WHY_DEFAULT_DENY,  NEVER},
	/* with a time window: the earlier of the window's end and the grant's */
	{"billing-db", "sam@example.com",        {NULL},             T_NONE, "sam",      "2026-06-01T10:00:00Z", "2026-06-01T12:00:00Z", ALLOW, "billing-jit",    POL_WHY_ALLOWED,       "2026-06-01T12:00:00Z"},
	{"billing-db", "sam@example.com",        {NULL},             T_NONE, "sam",      "2026-06-01T17:00:00Z", "2026-06-01T19:00:00Z", ALLOW, "billing-jit",    POL_WHY_ALLOWED,       "2026-06-01T18:00:00Z"},
	{"billing-db", "sam@example.com",        {NULL},             T_NONE, "sam",      "2026-06-01T19:00:00Z", "2026-06-01T23:00:00Z", DENY,  DD,               POL_WHY_DEFAULT_DENY,  NEVER},
	{"billing-db", "sam@example.com",        {NULL},             T_NONE, "postgres", "2026-06-01T10:00:00Z", "2026-06-01T12:00:00Z", DENY,  DD,               POL_WHY_DEFAULT_DENY,  NEVER},
	{"billing-db", "sam@example.com",        {NULL},             T_NONE, "sam",      "2026-06-01T10:00:00Z", NULL,                   DENY,  DD,               POL_WHY_APPROVAL,      NEVER},
	/* with min_trust: a grant does not lift the trust required */
	{"wiki",       "eve@example.com",        {NULL},             T_LOW,  NULL,       "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z", DENY,  DD,               POL_WHY_TRUST,         NEVER},
	{"wiki",       "eve@example.com",        {NULL},             T_LOW,  NULL,       "2026-06-01T10:00:00Z", NULL,                   DENY,  DD,               POL_WHY_DEFAULT_DENY,  NEVER},
	{"wiki",       "eve@example.com",        {NULL},             T_HIGH, NULL,       "2026-06-01T10:00:00Z", NULL,                   DENY,  DD,               POL_WHY_APPROVAL,      NEVER},
	{"wiki",       "eve@example.com",        {NULL},             T_HIGH, NULL,       "2026-06-01T10:00:00Z", "2026-06-02T10:00:00Z", ALLOW, "wiki-trusted-jit", POL_WHY_ALLOWED,     "2026-06-02T10:00:00Z"},
};
/* clang-format on */

typedef struct trace_log {
	size_t calls;
	const pol_rule_t *rules[16];
	char why[16][512];
} trace_log_t;

static void record_trace(void *arg, const pol_rule_t *rule, const char *why_not)
{
	trace_log_t *log = arg;
	if (log->calls < 16) {
		log->rules[log->calls] = rule;
		snprintf(log->why[log->calls], sizeof(log->why[0]), "%s", why_not ? why_not : "");
	}
	log->calls++;
}

static int64_t ms(const char *text)
{
	int64_t v = 0;
	assert_true(cg_rfc3339_parse(text, &v));
	return v;
}

static pol_snapshot_t *load_path(const char *path, cg_errors_t *errs)
{
	cg_errors_init(errs);
	return pol_snapshot_load(path, errs);
}

static int setup(void **state)
{
	cg_errors_t errs;
	*state = load_path(DATA_DIR "/decide_approval.json", &errs);
	for (size_t i = 0; i < errs.count; i++)
		print_error("%s\n", errs.items[i]);
	cg_errors_finish(&errs);
	return *state != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	pol_snapshot_unref(*state);
	return 0;
}

static void decide(const pol_snapshot_t *snap, const row_t *r, int64_t at, int64_t grant,
                   pol_decision_t *out, trace_log_t *log)
{
	char *groups[2] = {(char *)r->groups[0], (char *)r->groups[1]};
	pol_claims_t claims = {.user = (char *)r->user,
	                       .groups = groups,
	                       .n_groups = r->groups[1]   ? 2
	                                   : r->groups[0] ? 1
	                                                  : 0,
	                       .device_trust = r->trust};
	pol_request_t req = {.service = r->service,
	                     .claims = &claims,
	                     .feed_trust = T_NONE,
	                     .db_user = r->db_user,
	                     .db_name = r->db_user != NULL ? "billing" : NULL,
	                     .at_ms = at,
	                     .grant_until_ms = grant};
	pol_decide(snap, &req, out, log != NULL ? record_trace : NULL, log);
}

static void test_table(void **state)
{
	const pol_snapshot_t *snap = *state;
	int failures = 0;
	assert_true(snap->has_approvals);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const row_t *r = &rows[i];
		int64_t at = ms(r->at), grant = r->grant_until ? ms(r->grant_until) : 0;
		int64_t until = r->valid_until ? ms(r->valid_until) : INT64_MAX;
		pol_decision_t live, traced;
		trace_log_t log = {0};
		decide(snap, r, at, grant, &live, NULL);
		decide(snap, r, at, grant, &traced, &log);
		if (live.allow != r->allow || strcmp(live.rule, r->rule) != 0 ||
		    live.why != r->why || live.valid_until_ms != until) {
			print_error("row %zu (%s %s at %s, grant %s): got %s rule %s why %d until "
			            "%lld (%s)\n",
			            i, r->service, r->user, r->at,
			            r->grant_until ? r->grant_until : "-",
			            live.allow ? "allow" : "deny", live.rule, live.why,
			            (long long)live.valid_until_ms, live.reason);
			failures++;
		}
		if (traced.allow != live.allow || strcmp(traced.rule, live.rule) != 0 ||
		    traced.why != live.why || traced.valid_until_ms != live.valid_until_ms) {
			print_error("row %zu: explain says %s/%s, live says %s/%s\n", i,
			            traced.allow ? "allow" : "deny", traced.rule,
			            live.allow ? "allow" : "deny", live.rule);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* The refusal names the rule and what to do; explain says why the rule did
 * not match: no grant, or one that ended. */
static void test_reasons_and_trace(void **state)
{
	const pol_snapshot_t *snap = *state;
	pol_decision_t d;
	trace_log_t log = {0};
	decide(snap, &rows[0], ms(rows[0].at), 0, &d, &log);
	assert_string_equal(d.reason, "rule oncall-jit requires an approved access request for "
	                              "service orders-db (certgate request orders-db)");
	assert_ptr_equal(log.rules[2], &snap->rules[2]);
	assert_string_equal(log.why[2], "requires_approval: no approved access request for "
	                                "orders-db");
	memset(&log, 0, sizeof(log));
	decide(snap, &rows[3], ms(rows[3].at), ms(rows[3].grant_until), &d, &log);
	assert_string_equal(log.why[2], "requires_approval: the access grant for orders-db ended "
	                                "at 2026-06-01T09:00:00.000Z");
	memset(&log, 0, sizeof(log));
	decide(snap, &rows[1], ms(rows[1].at), ms(rows[1].grant_until), &d, &log);
	assert_string_equal(log.why[2], ""); /* matched */
	/* a window is checked before the grant: the window is the reason */
	memset(&log, 0, sizeof(log));
	decide(snap, &rows[11], ms(rows[11].at), ms(rows[11].grant_until), &d, &log);
	assert_non_null(strstr(log.why[4], "when: "));
}

/* Every grant end around the decision's instant: live and trace agree, the
 * rule matches exactly while at < grant, and the admission holds until the
 * grant's end. */
static void test_grant_boundaries(void **state)
{
	const pol_snapshot_t *snap = *state;
	int64_t at = ms("2026-06-01T10:00:00Z");
	for (int64_t delta = -3000; delta <= 3000; delta += 250) {
		int64_t grant = at + delta;
		pol_decision_t a, b;
		trace_log_t log = {0};
		decide(snap, &rows[1], at, grant, &a, NULL);
		decide(snap, &rows[1], at, grant, &b, &log);
		assert_int_equal(a.allow, delta > 0);
		assert_int_equal(b.allow, a.allow);
		assert_true(a.valid_until_ms == b.valid_until_ms);
		if (a.allow)
			assert_true(a.valid_until_ms == grant);
	}
}

/* at_ms 0 means now: with a rule that requires approval, the clock is read. */
static void test_now(void **state)
{
	const pol_snapshot_t *snap = *state;
	pol_decision_t d;
	int64_t now = cg_wall_ms();
	decide(snap, &rows[1], 0, now + 3600 * 1000, &d, NULL);
	assert_true(d.allow);
	decide(snap, &rows[1], 0, now - 1000, &d, NULL);
	assert_false(d.allow);
	assert_int_equal(d.why, POL_WHY_APPROVAL);
}

/* The loader: only allow rules, only booleans; GET /v1/policy shows it. */
static void test_config(void **state)
{
	(void)state;
	char path[512];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(path, sizeof(path), "%s/test_decide_approval.XXXXXX", tmp);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char text[] =
	        "{\"gateway\": {\"listen\": [\"0.0.0.0:8443\"], \"cert\": \"g.crt\", \"key\": "
	        "\"g.key\", \"client_ca\": \"ca.crt\"},\n"
	        " \"services\": [{\"name\": \"db\", \"upstream\": [\"10.0.0.1:5432\"]}],\n"
	        " \"rules\": [\n"
	        "  {\"name\": \"a\", \"effect\": \"deny\", \"services\": [\"db\"], "
	        "\"requires_approval\": true},\n"
	        "  {\"name\": \"b\", \"effect\": \"allow\", \"services\": [\"db\"], "
	        "\"requires_approval\": \"yes\"},\n"
	        "  {\"name\": \"c\", \"effect\": \"deny\", \"services\": [\"db\"], "
	        "\"requires_approval\": false}\n"
	        " ]}\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cg_errors_t errs;
	pol_snapshot_t *snap = load_path(path, &errs);
	assert_null(snap);
	bool deny_seen = false, type_seen = false;
	for (size_t i = 0; i < errs.count; i++) {
		deny_seen |= strstr(errs.items[i], ":4:") != NULL &&
		             strstr(errs.items[i], "rules[0].requires_approval: applies to allow "
		                                   "rules only") != NULL;
		type_seen |= strstr(errs.items[i], "rules[1].requires_approval") != NULL;
		assert_null(strstr(errs.items[i], "rules[2]")); /* false is fine on a deny rule */
	}
	assert_true(deny_seen);
	assert_true(type_seen);
	cg_errors_finish(&errs);
	unlink(path);

	/* shown as in force */
	snap = load_path(DATA_DIR "/decide_approval.json", &errs);
	assert_non_null(snap);
	cg_errors_finish(&errs);
	json_t *rules = json_object_get(snap->shown, "rules");
	assert_true(json_is_true(json_object_get(json_array_get(rules, 2), "requires_approval")));
	assert_null(json_object_get(json_array_get(rules, 3), "requires_approval"));
	pol_snapshot_unref(snap);
	snap = load_path(DATA_DIR "/decide_time.json", &errs);
	assert_non_null(snap);
	assert_false(snap->has_approvals);
	cg_errors_finish(&errs);
	pol_snapshot_unref(snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table),
	        cmocka_unit_test(test_reasons_and_trace),
	        cmocka_unit_test(test_grant_boundaries),
	        cmocka_unit_test(test_now),
	        cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
