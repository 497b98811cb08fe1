/* pol_decide: table-driven. data/decide_basic.json is the policy; each row
 * of the table below is one request and the decision it must get. Every row
 * is decided twice, through the per-service index (live path) and through the
 * trace path (explain), and both must agree. data/decide_time.json adds time
 * windows and permissive rules: its rows also give the instant, how long
 * the decision holds and the permissive rules that would deny. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_config.h"
#include "cg_time.h"
#include "cg_utf8.h"
#include "pol_decide.h"

#define T_NONE   POL_TRUST_NONE
#define T_DENY   POL_TRUST_ALWAYS_DENY
#define T_LOW    POL_TRUST_LOW
#define T_MEDIUM POL_TRUST_MEDIUM
#define T_HIGH   POL_TRUST_HIGH

#define MAX_GROUPS 3

typedef struct row {
	const char *service;
	const char *user;
	const char *groups[MAX_GROUPS]; /* NULL-terminated */
	const char *device_id;
	pol_trust_t device_trust;
	pol_trust_t feed_trust;
	const char *source; /* IP or NULL */
	const char *db_user;
	const char *db_name;
	bool allow;
	const char *rule;
	pol_why_t why;
} row_t;

#define ALLOW true
#define DENY  false
#define DD    "default-deny"
/* as db_user: no database user or name, and the catalog's question
 * (db_any): may some be used? */
#define ANY_DB "\001any"

/* clang-format off */
static const row_t rows[] = {
	/* service       user                        groups                  device        trust     feed      source         db_user       db_name          allow  rule               why */
	/* groups any-of, min_trust met by the claim */
	{"orders-db",   "alice@example.com",        {"dba"},                NULL,         T_HIGH,   T_NONE,   "10.0.0.1",    NULL,         NULL,            ALLOW, "dba",             POL_WHY_ALLOWED},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_MEDIUM, T_NONE,   NULL,          NULL,         NULL,            ALLOW, "analysts",        POL_WHY_ALLOWED},
	{"orders-db",   "dave@example.com",         {"sales", "data"},      NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            ALLOW, "analysts",        POL_WHY_ALLOWED},
	/* deny overrides an allow that also matches */
	{"orders-db",   "bob@contractor.example",   {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  "no-contractors",  POL_WHY_DENY_RULE},
	/* users globs are case-insensitive: capitals do not dodge a deny */
	{"orders-db",   "ALICE@Contractor.Example", {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  "no-contractors",  POL_WHY_DENY_RULE},
	{"wiki",        "Eve@CONTRACTOR.EXAMPLE",   {"staff"},              NULL,         T_NONE,   T_NONE,   "192.168.1.5", NULL,         NULL,            DENY,  "no-contractors",  POL_WHY_DENY_RULE},
	/* default deny */
	{"orders-db",   "carol@example.com",        {"sales"},              NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"orders-db",   "carol@example.com",        {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	/* groups are exact (no glob, case-sensitive) */
	{"orders-db",   "alice@example.com",        {"DBA", "db*"},         NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	/* min_trust: claim only, feed only, both (lower wins), none */
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_LOW,    T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	/* the feed only lowers: without a claim it cannot lift a device to a level */
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_NONE,   T_MEDIUM, NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_NONE,   T_HIGH,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"wiki",        "eve@example.com",          {"staff"},              NULL,         T_NONE,   T_DENY,   "10.0.0.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_NONE,   T_LOW,    NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_HIGH,   T_LOW,    NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_LOW,    T_HIGH,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_HIGH,   T_MEDIUM, NULL,          NULL,         NULL,            ALLOW, "analysts",        POL_WHY_ALLOWED},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_NONE,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "dave@example.com",         {"analysts"},           NULL,         T_DENY,   T_HIGH,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "alice@example.com",        {"dba"},                NULL,         T_HIGH,   T_MEDIUM, NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	/* devices */
	{"orders-db",   "kim@example.com",          {NULL},                 "kiosk-1",    T_LOW,    T_NONE,   NULL,          NULL,         NULL,            ALLOW, "kiosk",           POL_WHY_ALLOWED},
	{"orders-db",   "kim@example.com",          {NULL},                 "kiosk-2",    T_LOW,    T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"orders-db",   "kim@example.com",          {NULL},                 "kiosk-1",    T_DENY,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"orders-db",   "alice@example.com",        {"dba"},                "dev-stolen", T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  "blocked-device",  POL_WHY_DENY_RULE},
	/* sources v4 and v6; first matching allow names the decision */
	{"wiki",        "eve@example.com",          {"staff"},              NULL,         T_NONE,   T_NONE,   "192.168.1.5", NULL,         NULL,            ALLOW, "wiki-office",     POL_WHY_ALLOWED},
	{"wiki",        "eve@example.com",          {"staff"},              NULL,         T_NONE,   T_NONE,   "10.0.0.1",    NULL,         NULL,            ALLOW, "wiki-staff",      POL_WHY_ALLOWED},
	{"wiki",        "eve@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   "10.0.0.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"wiki",        "eve@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   "fd00::17",    NULL,         NULL,            ALLOW, "wiki-office",     POL_WHY_ALLOWED},
	{"wiki",        "eve@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   "2001:db8::1", NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"wiki",        "eve@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   "::ffff:192.168.9.9", NULL,  NULL,            ALLOW, "wiki-office",     POL_WHY_ALLOWED},
	{"wiki",        "eve@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	/* always_deny refuses even where the allowing rule names no min_trust */
	{"wiki",        "eve@example.com",          {"staff"},              NULL,         T_DENY,   T_NONE,   "10.0.0.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"wiki",        "eve@example.com",          {"staff"},              "dev-9",      T_HIGH,   T_DENY,   "10.0.0.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"wiki",        "eve@example.com",          {"staff"},              "dev-9",      T_LOW,    T_NONE,   "10.0.0.1",    NULL,         NULL,            ALLOW, "wiki-staff",      POL_WHY_ALLOWED},
	/* POL_WHY_TRUST only when min_trust is the one condition that failed */
	{"wiki",        "ian@example.com",          {NULL},                 NULL,         T_LOW,    T_NONE,   "10.8.1.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_TRUST},
	{"wiki",        "ian@example.com",          {NULL},                 NULL,         T_LOW,    T_NONE,   "10.9.1.1",    NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"wiki",        "ian@example.com",          {NULL},                 NULL,         T_HIGH,   T_NONE,   "10.8.1.1",    NULL,         NULL,            ALLOW, "wiki-vpn",        POL_WHY_ALLOWED},
	/* a rule for one service does not apply to another */
	{"wiki",        "dave@example.com",         {"analysts"},           NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	/* db_users / db_names with {user.local} */
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "billing",       ALLOW, "billing-self",    POL_WHY_ALLOWED},
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "bob",        "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "other",         DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "Fred",       "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "alice@example.com",        {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          "alice",      "anything",      ALLOW, "dba",             POL_WHY_ALLOWED},
	{"billing-db",  "alice@example.com",        {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          "postgres",   "billing",       DENY,  "no-superuser",    POL_WHY_DENY_RULE},
	/* glob injection through the user claim: substituted as a literal */
	{"billing-db",  "*@example.com",            {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "*@example.com",            {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "*",          "billing",       ALLOW, "billing-self",    POL_WHY_ALLOWED},
	{"billing-db",  "[a-z]*@example.com",       {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "f?ed@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "\\fred@example.com",       {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "billing",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"reports-db",  "*",                        {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "u_admin",    "personal",      DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"reports-db",  "hal@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "u_hal@example.com", "personal", ALLOW, "reports-personal", POL_WHY_ALLOWED},
	/* {user.local@DOMAIN}: the local part, only for users of DOMAIN (any case) */
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           ALLOW, "billing-own",     POL_WHY_ALLOWED},
	{"billing-db",  "fred@EXAMPLE.Com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           ALLOW, "billing-own",     POL_WHY_ALLOWED},
	{"billing-db",  "Fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "ro_fred",    "own:fred:tmp",  ALLOW, "billing-own",     POL_WHY_ALLOWED},
	{"billing-db",  "fred@partner.example",     {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@partner.example",     {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "ro_fred",    "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@sub.example.com",     {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.com.evil",    {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.co",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred",                     {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "a@b@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "a@b",        "own",           ALLOW, "billing-own",     POL_WHY_ALLOWED},
	{"billing-db",  "f*@example.com",           {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own",           DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "fred",       "own:freddy:x",  DENY,  DD,                POL_WHY_DEFAULT_DENY},
	/* several patterns, globs in db_names, case-sensitive db matching */
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "gina_ro",    "reports_2024",  ALLOW, "reports-ro",      POL_WHY_ALLOWED},
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "analyst_ro", "reports",       ALLOW, "reports-ro",      POL_WHY_ALLOWED},
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "GINA_RO",    "reports",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"reports-db",  "GINA@EXAMPLE.COM",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "GINA_ro",    "reports",       ALLOW, "reports-ro",      POL_WHY_ALLOWED},
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "gina_ro",    "REPORTS",       DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "postgres",   "reports",       DENY,  "no-superuser",    POL_WHY_DENY_RULE},
	/* db conditions fail closed where there is no database user (tunnel) */
	{"orders-db",   "svc@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
	{"billing-db",  "svc@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          "svc",        "x",             ALLOW, "svc-account",     POL_WHY_ALLOWED},
	{"billing-db",  "svc@example.com",          {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          NULL,         NULL,            DENY,  "no-superuser",    POL_WHY_DENY_RULE},
	/* ... so a deny rule naming db_users refuses a tunnel, where it cannot be checked */
	{"orders-db",   "root@example.com",         {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  "no-root-superuser", POL_WHY_DENY_RULE},
	{"billing-db",  "root@example.com",         {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          "root",       "x",             ALLOW, "dba",             POL_WHY_ALLOWED},
	{"billing-db",  "root@example.com",         {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          "postgres",   "x",             DENY,  "no-superuser",    POL_WHY_DENY_RULE},
	/* no user claim: refused whatever else the certificate says */
	{"orders-db",   NULL,                       {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_NO_USER},
	{"wiki",        NULL,                       {NULL},                 NULL,         T_NONE,   T_NONE,   "192.168.1.5", NULL,         NULL,            DENY,  DD,                POL_WHY_NO_USER},
	{"wiki",        "",                         {NULL},                 NULL,         T_NONE,   T_NONE,   "192.168.1.5", NULL,         NULL,            DENY,  DD,                POL_WHY_NO_USER},
	/* db_any (the catalog, explain without --db-user): an allow rule whose
	 * patterns can apply to the user admits; a deny rule refusing only some
	 * names does not hide the service, one refusing every name ("*") does */
	{"billing-db",  "fred@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          ANY_DB,       NULL,            ALLOW, "billing-self",    POL_WHY_ALLOWED},
	{"billing-db",  "root@example.com",         {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          ANY_DB,       NULL,            ALLOW, "dba",             POL_WHY_ALLOWED},
	{"reports-db",  "gina@example.com",         {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          ANY_DB,       NULL,            ALLOW, "reports-ro",      POL_WHY_ALLOWED},
	{"reports-db",  "gina@partner.example",     {NULL},                 NULL,         T_NONE,   T_NONE,   NULL,          ANY_DB,       NULL,            ALLOW, "reports-personal", POL_WHY_ALLOWED},
	{"reports-db",  "ivy@example.com",          {"interns"},            NULL,         T_NONE,   T_NONE,   NULL,          ANY_DB,       NULL,            DENY,  "no-interns",      POL_WHY_DENY_RULE},
	{"reports-db",  "ivy@example.com",          {"interns"},            NULL,         T_NONE,   T_NONE,   NULL,          "ivy_ro",     "reports",       DENY,  "no-interns",      POL_WHY_DENY_RULE},
	{"billing-db",  "ivy@example.com",          {"interns"},            NULL,         T_NONE,   T_NONE,   NULL,          ANY_DB,       NULL,            ALLOW, "billing-self",    POL_WHY_ALLOWED},
	/* a service that is not in the policy (e.g. removed by a reload) */
	{"gone-db",     "alice@example.com",        {"dba"},                NULL,         T_HIGH,   T_NONE,   NULL,          NULL,         NULL,            DENY,  DD,                POL_WHY_DEFAULT_DENY},
};
/* clang-format on */

static pol_snapshot_t *load_fixture(const char *name)
{
	char path[1024];
	cg_errors_t errs;
	pol_snapshot_t *snap;

	snprintf(path, sizeof(path), "%s/%s", DATA_DIR, name);
	cg_errors_init(&errs);
	snap = pol_snapshot_load(path, &errs);
	for (size_t i = 0; i < errs.count; i++)
		print_error("%s\n", errs.items[i]);
	assert_int_equal(errs.count, 0);
	assert_non_null(snap);
	cg_errors_finish(&errs);
	return snap;
}

static int setup(void **state)
{
	*state = load_fixture("decide_basic.json");
	return 0;
}

static int teardown(void **state)
{
	pol_snapshot_unref(*state);
	return 0;
}

/* A request built from a row; owns the claims and the address. */
typedef struct req_buf {
	pol_claims_t claims;
	char *groups[MAX_GROUPS];
	struct sockaddr_storage ss;
	pol_request_t req;
} req_buf_t;

static void build_request(const row_t *row, req_buf_t *rb)
{
	memset(rb, 0, sizeof(*rb));
	rb->claims.user = (char *)row->user;
	for (size_t i = 0; i < MAX_GROUPS && row->groups[i]; i++)
		rb->groups[rb->claims.n_groups++] = (char *)row->groups[i];
	rb->claims.groups = rb->claims.n_groups ? rb->groups : NULL;
	rb->claims.device_id = (char *)row->device_id;
	rb->claims.device_trust = row->device_trust;
	rb->req.service = row->service;
	rb->req.claims = &rb->claims;
	rb->req.feed_trust = row->feed_trust;
	rb->req.db_any = row->db_user != NULL && strcmp(row->db_user, ANY_DB) == 0;
	rb->req.db_user = rb->req.db_any ? NULL : row->db_user;
	rb->req.db_name = rb->req.db_any ? NULL : row->db_name;
	if (row->source) {
		struct sockaddr_in *in = (struct sockaddr_in *)&rb->ss;
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&rb->ss;
		if (inet_pton(AF_INET, row->source, &in->sin_addr) == 1) {
			in->sin_family = AF_INET;
			in->sin_port = htons(40000);
		} else {
			assert_int_equal(inet_pton(AF_INET6, row->source, &in6->sin6_addr), 1);
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons(40000);
		}
		rb->req.source = (const struct sockaddr *)&rb->ss;
	}
}

static const char *why_name(pol_why_t why)
{
	switch (why) {
	case POL_WHY_ALLOWED:
		return "ALLOWED";
	case POL_WHY_DENY_RULE:
		return "DENY_RULE";
	case POL_WHY_DEFAULT_DENY:
		return "DEFAULT_DENY";
	case POL_WHY_TRUST:
		return "TRUST";
	case POL_WHY_NO_USER:
		return "NO_USER";
	case POL_WHY_APPROVAL:
		return "APPROVAL";
	}
	return "?";
}

typedef struct trace_log {
	size_t calls;
	const pol_rule_t *rules[64];
	char why[64][1024];
	bool matched[64];
} trace_log_t;

static void record_trace(void *arg, const pol_rule_t *rule, const char *why_not)
{
	trace_log_t *log = arg;
	if (log->calls < 64) {
		log->rules[log->calls] = rule;
		log->matched[log->calls] = why_not == NULL;
		snprintf(log->why[log->calls], sizeof(log->why[0]), "%s", why_not ? why_not : "");
	}
	log->calls++;
}

static void test_table(void **state)
{
	const pol_snapshot_t *snap = *state;
	int failures = 0;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const row_t *row = &rows[i];
		req_buf_t rb;
		pol_decision_t live, explained;
		trace_log_t log = {0};

		build_request(row, &rb);
		pol_decide(snap, &rb.req, &live, NULL, NULL);
		pol_decide(snap, &rb.req, &explained, record_trace, &log);

		if (live.allow != row->allow || strcmp(live.rule, row->rule) != 0 ||
		    live.why != row->why) {
			print_error("row %zu (%s, %s, db %s/%s): got %s rule %s why %s (%s); "
			            "want %s rule %s why %s\n",
			            i, row->service, row->user ? row->user : "(no user)",
			            row->db_user ? row->db_user : "-",
			            row->db_name ? row->db_name : "-",
			            live.allow ? "allow" : "deny", live.rule, why_name(live.why),
			            live.reason, row->allow ? "allow" : "deny", row->rule,
			            why_name(row->why));
			failures++;
		}
		/* the explain path must reach the same decision */
		if (explained.allow != live.allow || strcmp(explained.rule, live.rule) != 0 ||
		    explained.why != live.why || strcmp(explained.reason, live.reason) != 0) {
			print_error("row %zu: explain says %s/%s/%s, live says %s/%s/%s\n", i,
			            explained.allow ? "allow" : "deny", explained.rule,
			            explained.reason, live.allow ? "allow" : "deny", live.rule,
			            live.reason);
			failures++;
		}
		if (log.calls != snap->n_rules) {
			print_error("row %zu: trace called %zu times for %zu rules\n", i, log.calls,
			            snap->n_rules);
			failures++;
		}
		if (live.effective_trust !=
		    pol_trust_effective(row->device_trust, row->feed_trust)) {
			print_error("row %zu: effective trust %d\n", i, (int)live.effective_trust);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void decide_row(const pol_snapshot_t *snap, const row_t *row, pol_decision_t *out,
                       trace_log_t *log)
{
	req_buf_t rb;
	build_request(row, &rb);
	pol_decide(snap, &rb.req, out, log ? record_trace : NULL, log);
}

static void test_reasons(void **state)
{
	const pol_snapshot_t *snap = *state;
	pol_decision_t d;
	const row_t allowed = {.service = "orders-db",
	                       .user = "alice@example.com",
	                       .groups = {"dba"},
	                       .device_trust = T_HIGH,
	                       .feed_trust = T_NONE};
	const row_t denied = {.service = "orders-db",
	                      .user = "bob@contractor.example",
	                      .groups = {"dba"},
	                      .device_trust = T_HIGH,
	                      .feed_trust = T_NONE};
	const row_t nothing = {.service = "orders-db",
	                       .user = "carol@example.com",
	                       .groups = {"sales"},
	                       .device_trust = T_HIGH,
	                       .feed_trust = T_NONE};
	const row_t low = {.service = "orders-db",
	                   .user = "dave@example.com",
	                   .groups = {"analysts"},
	                   .device_trust = T_HIGH,
	                   .feed_trust = T_LOW};
	const row_t none = {.service = "orders-db",
	                    .user = "dave@example.com",
	                    .groups = {"analysts"},
	                    .device_trust = T_NONE,
	                    .feed_trust = T_NONE};
	const row_t no_user = {.service = "orders-db",
	                       .groups = {"dba"},
	                       .device_trust = T_HIGH,
	                       .feed_trust = T_NONE};

	decide_row(snap, &allowed, &d, NULL);
	assert_true(d.allow);
	assert_string_equal(d.reason, "allowed by rule dba");
	assert_int_equal(d.effective_trust, POL_TRUST_HIGH);

	decide_row(snap, &denied, &d, NULL);
	assert_string_equal(d.reason, "denied by rule no-contractors");

	decide_row(snap, &nothing, &d, NULL);
	assert_string_equal(d.rule, "default-deny");
	assert_string_equal(d.reason, "no rule allows user carol@example.com on service orders-db");

	const row_t db_nothing = {.service = "billing-db",
	                          .user = "carol@example.com",
	                          .device_trust = T_NONE,
	                          .feed_trust = T_NONE,
	                          .db_user = "bob",
	                          .db_name = "billing"};
	decide_row(snap, &db_nothing, &d, NULL);
	assert_string_equal(d.rule, "default-deny");
	assert_string_equal(d.reason, "no rule allows user carol@example.com as db user bob on "
	                              "database billing of service billing-db");

	/* a reason longer than its buffer is cut on a character boundary:
	 * 124 bytes before the database name, then 40 two-byte characters */
	char long_db[81] = "";
	for (int i = 0; i < 40; i++)
		strcat(long_db, "\xc3\xa9");
	const row_t db_long = {.service = "billing-db",
	                       .user = "carol@example.com",
	                       .device_trust = T_NONE,
	                       .feed_trust = T_NONE,
	                       .db_user = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	                                  "\xc3\xa9\xc3\xa9\xc3\xa9",
	                       .db_name = long_db};
	decide_row(snap, &db_long, &d, NULL);
	assert_int_equal(strlen(d.reason), sizeof(d.reason) - 2); /* 191 would split one */
	assert_true(cg_utf8_valid(d.reason, strlen(d.reason)));

	decide_row(snap, &low, &d, NULL);
	assert_int_equal(d.why, POL_WHY_TRUST);
	assert_int_equal(d.effective_trust, POL_TRUST_LOW);
	assert_string_equal(d.reason,
	                    "device trust low is below min_trust medium of rule analysts");

	decide_row(snap, &none, &d, NULL);
	assert_string_equal(d.reason,
	                    "device trust none is below min_trust medium of rule analysts");

	decide_row(snap, &no_user, &d, NULL);
	assert_false(d.allow);
	assert_int_equal(d.why, POL_WHY_NO_USER);
	assert_string_equal(d.rule, "default-deny");
	assert_string_equal(d.reason, "certificate has no user claim");
}

static size_t rule_index(const pol_snapshot_t *snap, const char *name)
{
	for (size_t i = 0; i < snap->n_rules; i++)
		if (strcmp(snap->rules[i].name, name) == 0)
			return i;
	fail_msg("no rule %s", name);
	return 0;
}

#define assert_why(snap, log, name, text)                                                          \
	do {                                                                                       \
		size_t i_ = rule_index(snap, name);                                                \
		assert_ptr_equal((log).rules[i_], &(snap)->rules[i_]);                             \
		assert_string_equal((log).why[i_], text);                                          \
	} while (0)

static void test_trace(void **state)
{
	const pol_snapshot_t *snap = *state;
	pol_decision_t d;
	trace_log_t log = {0};
	const row_t carol = {.service = "orders-db",
	                     .user = "carol@example.com",
	                     .groups = {"sales"},
	                     .device_trust = T_HIGH,
	                     .feed_trust = T_NONE,
	                     .source = "10.0.0.1"};
	const row_t dave = {.service = "orders-db",
	                    .user = "dave@example.com",
	                    .groups = {"analysts"},
	                    .device_trust = T_LOW,
	                    .feed_trust = T_NONE};
	const row_t eve = {.service = "wiki",
	                   .user = "eve@example.com",
	                   .groups = {"staff"},
	                   .device_trust = T_NONE,
	                   .feed_trust = T_NONE,
	                   .source = "10.0.0.1"};
	const row_t fred = {.service = "billing-db",
	                    .user = "fred@example.com",
	                    .device_trust = T_NONE,
	                    .feed_trust = T_NONE,
	                    .db_user = "bob",
	                    .db_name = "billing"};
	const row_t svc = {.service = "orders-db",
	                   .user = "svc@example.com",
	                   .device_id = "kiosk-9",
	                   .device_trust = T_NONE,
	                   .feed_trust = T_NONE};

	decide_row(snap, &carol, &d, &log);
	assert_int_equal(log.calls, snap->n_rules);
	for (size_t i = 0; i < snap->n_rules; i++) {
		assert_ptr_equal(log.rules[i], &snap->rules[i]); /* policy order */
		assert_false(log.matched[i]);
	}
	assert_why(snap, log, "no-contractors",
	           "users: carol@example.com does not match [*@contractor.example]");
	assert_why(snap, log, "blocked-device", "devices: no device id, need one of [dev-stolen]");
	assert_why(snap, log, "dba", "groups: none of [dba]");
	assert_why(snap, log, "analysts", "groups: none of [analysts, data]");
	assert_why(snap, log, "wiki-office", "services: orders-db not in [wiki]");
	assert_why(snap, log, "no-superuser",
	           "services: orders-db not in [billing-db, reports-db]");
	assert_why(snap, log, "svc-account",
	           "users: carol@example.com does not match [svc@example.com]");

	memset(&log, 0, sizeof(log));
	decide_row(snap, &dave, &d, &log);
	assert_why(snap, log, "analysts", "min_trust: device trust low < medium");

	memset(&log, 0, sizeof(log));
	decide_row(snap, &eve, &d, &log);
	assert_true(d.allow);
	assert_why(snap, log, "wiki-office", "sources: 10.0.0.1 not in [192.168.0.0/16, fd00::/8]");
	/* min_trust comes before sources: it is the first failing condition */
	assert_why(snap, log, "wiki-vpn", "min_trust: device trust none < high");
	assert_true(log.matched[rule_index(snap, "wiki-staff")]);
	assert_string_equal(log.why[rule_index(snap, "wiki-staff")], "");

	memset(&log, 0, sizeof(log));
	decide_row(snap, &fred, &d, &log);
	assert_why(snap, log, "billing-self", "db_users: bob not in [{user.local}]");
	assert_why(snap, log, "no-superuser", "db_users: bob not in [postgres]");

	memset(&log, 0, sizeof(log));
	decide_row(snap, &svc, &d, &log);
	assert_why(snap, log, "blocked-device", "devices: kiosk-9 not in [dev-stolen]");
	assert_why(snap, log, "svc-account",
	           "db_users: no database user (not a postgres-mode connection)");

	/* db_any: what each db condition says when no database user is named */
	const row_t partner = {.service = "billing-db",
	                       .user = "fred@partner.example",
	                       .device_trust = T_NONE,
	                       .feed_trust = T_NONE,
	                       .db_user = ANY_DB};
	memset(&log, 0, sizeof(log));
	decide_row(snap, &partner, &d, &log);
	assert_why(snap, log, "billing-own",
	           "db_users: none applies to user fred@partner.example: "
	           "[{user.local@example.com}, ro_{user.local@Example.COM}]");
	assert_why(snap, log, "no-superuser",
	           "db_users: refuses only some database users: [postgres]");
	assert_true(log.matched[rule_index(snap, "billing-self")]);
	const row_t own = {.service = "billing-db",
	                   .user = "fred@example.com",
	                   .device_trust = T_NONE,
	                   .feed_trust = T_NONE,
	                   .db_user = ANY_DB};
	memset(&log, 0, sizeof(log));
	decide_row(snap, &own, &d, &log);
	assert_true(log.matched[rule_index(snap, "billing-own")]);
}

/* The index must hold, per service, exactly the rules naming it or "*". */
static void test_index_consistent(void **state)
{
	const pol_snapshot_t *snap = *state;
	const char *services[] = {"orders-db", "wiki", "billing-db", "reports-db"};
	const char *users[] = {"alice@example.com", "bob@contractor.example", "svc@example.com",
	                       "fred@example.com"};
	const char *groups[] = {"dba", "analysts", "staff", NULL};
	const char *sources[] = {NULL, "192.168.3.3", "10.1.1.1"};
	const char *dbs[] = {NULL, "fred", "postgres", "svc", ANY_DB};
	const pol_trust_t trusts[] = {T_NONE, T_LOW, T_MEDIUM, T_HIGH};
	size_t checked = 0;

	for (size_t a = 0; a < 4; a++)
		for (size_t b = 0; b < 4; b++)
			for (size_t c = 0; c < 4; c++)
				for (size_t e = 0; e < 3; e++)
					for (size_t f = 0; f < 5; f++)
						for (size_t t = 0; t < 4; t++) {
							row_t row = {.service = services[a],
							             .user = users[b],
							             .groups = {groups[c]},
							             .device_trust = trusts[t],
							             .feed_trust = T_NONE,
							             .source = sources[e],
							             .db_user = dbs[f],
							             .db_name = dbs[f] ? "billing"
							                               : NULL};
							pol_decision_t live, explained;
							trace_log_t log = {0};
							decide_row(snap, &row, &live, NULL);
							decide_row(snap, &row, &explained, &log);
							assert_int_equal(live.allow,
							                 explained.allow);
							assert_string_equal(live.rule,
							                    explained.rule);
							assert_string_equal(live.reason,
							                    explained.reason);
							checked++;
						}
	assert_int_equal(checked, 4 * 4 * 4 * 3 * 5 * 4);
}

static void test_trust_effective(void **state)
{
	(void)state;
	assert_int_equal(pol_trust_effective(T_NONE, T_NONE), T_NONE);
	assert_int_equal(pol_trust_effective(T_HIGH, T_NONE), T_HIGH);
	assert_int_equal(pol_trust_effective(T_NONE, T_LOW), T_NONE); /* the feed only lowers */
	assert_int_equal(pol_trust_effective(T_NONE, T_DENY), T_DENY);
	assert_int_equal(pol_trust_effective(T_HIGH, T_LOW), T_LOW);
	assert_int_equal(pol_trust_effective(T_LOW, T_HIGH), T_LOW);
	assert_int_equal(pol_trust_effective(T_DENY, T_HIGH), T_DENY);
	assert_int_equal(pol_trust_effective(T_MEDIUM, T_DENY), T_DENY);
}

static void test_trust_names(void **state)
{
	pol_trust_t t = T_NONE;
	(void)state;
	assert_true(pol_trust_parse("always_deny", &t));
	assert_int_equal(t, T_DENY);
	assert_true(pol_trust_parse("low", &t));
	assert_int_equal(t, T_LOW);
	assert_true(pol_trust_parse("medium", &t));
	assert_int_equal(t, T_MEDIUM);
	assert_true(pol_trust_parse("high", &t));
	assert_int_equal(t, T_HIGH);
	assert_false(pol_trust_parse("High", &t));
	assert_false(pol_trust_parse("none", &t));
	assert_false(pol_trust_parse("", &t));
	assert_false(pol_trust_parse(NULL, &t));
	assert_string_equal(pol_trust_name(T_NONE), "none");
	assert_string_equal(pol_trust_name(T_DENY), "always_deny");
	assert_string_equal(pol_trust_name(T_HIGH), "high");
}

/* --- time windows and permissive rules (data/decide_time.json) ----------------- */

typedef struct time_row {
	const char *service;
	const char *user;
	const char *groups[MAX_GROUPS];
	const char *db_user;
	const char *at;
	bool allow;
	const char *rule;
	const char *valid_until; /* NULL: never */
	const char *would_deny;  /* "a,b" or "" */
} time_row_t;

/* clang-format off */
static const time_row_t time_rows[] = {
	/* service      user                      groups                db_user     at (UTC)                allow  rule                      valid until             would deny */
	/* office hours, Europe/Berlin: Monday 2026-03-30 is in CEST */
	{"orders-db",  "sam@example.com",        {"staff"},            NULL,       "2026-03-30T08:00:00Z", ALLOW, "office-hours",           "2026-03-30T16:00:00Z", ""},
	{"orders-db",  "sam@example.com",        {"staff"},            NULL,       "2026-03-30T05:59:59Z", DENY,  DD,                       NULL,                   ""},
	{"orders-db",  "sam@example.com",        {"staff"},            NULL,       "2026-03-30T06:00:00Z", ALLOW, "office-hours",           "2026-03-30T16:00:00Z", ""},
	{"orders-db",  "sam@example.com",        {"staff"},            NULL,       "2026-03-30T16:00:00Z", DENY,  DD,                       NULL,                   ""},
	{"orders-db",  "sam@example.com",        {"staff"},            NULL,       "2026-03-28T10:00:00Z", DENY,  DD,                       NULL,                   ""},
	/* the first allowing rule decides, and its window how long */
	{"orders-db",  "sam@example.com",        {"staff", "admins"},  NULL,       "2026-03-30T08:00:00Z", ALLOW, "office-hours",           "2026-03-30T16:00:00Z", ""},
	{"orders-db",  "sam@example.com",        {"staff", "admins"},  NULL,       "2026-03-30T17:00:00Z", ALLOW, "always",                 NULL,                   ""},
	/* a deny rule's window opening ends an allow: Saturday 00:00 CET */
	{"orders-db",  "bob@contractor.example", {NULL},               NULL,       "2026-03-27T12:00:00Z", ALLOW, "contractors",            "2026-03-27T23:00:00Z", ""},
	{"orders-db",  "bob@contractor.example", {NULL},               NULL,       "2026-03-27T23:00:00Z", DENY,  "no-weekend-contractors", NULL,                   ""},
	{"orders-db",  "bob@contractor.example", {NULL},               NULL,       "2026-03-29T21:59:59Z", DENY,  "no-weekend-contractors", NULL,                   ""},
	{"orders-db",  "bob@contractor.example", {NULL},               NULL,       "2026-03-29T22:00:00Z", ALLOW, "contractors",            "2026-04-03T22:00:00Z", ""},
	/* across midnight in New York, the night DST starts (2026-03-08) */
	{"orders-db",  "ann@example.com",        {"oncall"},           NULL,       "2026-03-08T03:00:00Z", ALLOW, "night-shift",            "2026-03-08T10:00:00Z", ""}, /* 06:00 is EDT */
	{"orders-db",  "ann@example.com",        {"oncall"},           NULL,       "2026-03-09T03:00:00Z", ALLOW, "night-shift",            "2026-03-09T10:00:00Z", ""},
	{"orders-db",  "ann@example.com",        {"oncall"},           NULL,       "2026-03-09T10:00:00Z", DENY,  DD,                       NULL,                   ""},
	/* permissive deny rules: named, never refusing */
	{"billing-db", "ivy@example.com",        {"interns"},          "ivy",      "2026-03-30T10:00:00Z", ALLOW, "billing-staff",          NULL,                   "try-no-interns"},
	{"billing-db", "ivy@example.com",        {"interns"},          "ivy",      "2026-03-30T20:00:00Z", ALLOW, "billing-staff",          NULL,                   "try-no-interns,try-no-billing-at-night"},
	{"billing-db", "sam@example.com",        {"staff"},            "sam",      "2026-03-30T03:59:59.999Z", ALLOW, "billing-staff",      NULL,                   "try-no-billing-at-night"},
	{"billing-db", "sam@example.com",        {"staff"},            "sam",      "2026-03-30T04:00:00Z", ALLOW, "billing-staff",          NULL,                   ""},
	/* ... and nothing to report when the request is refused anyway */
	{"billing-db", "ivy@example.com",        {"interns"},          "postgres", "2026-03-30T10:00:00Z", DENY,  DD,                       NULL,                   ""},
	{"orders-db",  "bob@contractor.example", {"interns"},          NULL,       "2026-03-28T10:00:00Z", DENY,  "no-weekend-contractors", NULL,                   ""},
	{"orders-db",  "bob@contractor.example", {"interns"},          NULL,       "2026-03-27T10:00:00Z", ALLOW, "contractors",            "2026-03-27T23:00:00Z", "try-no-interns"},
	/* from (included) .. until (excluded; written with an offset) */
	{"billing-db", "dora@example.com",       {"dba"},              "postgres", "2026-12-05T21:59:59Z", DENY,  DD,                       NULL,                   ""},
	{"billing-db", "dora@example.com",       {"dba"},              "postgres", "2026-12-05T22:00:00Z", ALLOW, "migration",              "2026-12-06T04:00:00Z", "try-no-billing-at-night"},
	{"billing-db", "dora@example.com",       {"dba"},              "postgres", "2026-12-06T03:59:59Z", ALLOW, "migration",              "2026-12-06T04:00:00Z", "try-no-billing-at-night"},
	{"billing-db", "dora@example.com",       {"dba"},              "postgres", "2026-12-06T04:00:00Z", DENY,  DD,                       NULL,                   ""},
};
/* clang-format on */

static int64_t at_ms(const char *text)
{
	int64_t ms = 0;
	assert_true(cg_rfc3339_parse(text, &ms));
	return ms;
}

static void decide_time_row(const pol_snapshot_t *snap, const time_row_t *t, pol_decision_t *out,
                            trace_log_t *log)
{
	row_t row = {.service = t->service,
	             .user = t->user,
	             .device_trust = T_NONE,
	             .feed_trust = T_NONE,
	             .db_user = t->db_user,
	             .db_name = t->db_user != NULL ? "billing" : NULL};
	memcpy(row.groups, t->groups, sizeof(row.groups));
	req_buf_t rb;
	build_request(&row, &rb);
	rb.req.at_ms = at_ms(t->at);
	pol_decide(snap, &rb.req, out, log ? record_trace : NULL, log);
}

static void would_deny_text(const pol_decision_t *d, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < d->n_would_deny; i++)
		snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? "," : "",
		         d->would_deny[i]);
}

static void test_time_table(void **state)
{
	(void)state;
	pol_snapshot_t *snap = load_fixture("decide_time.json");
	int failures = 0;
	for (size_t i = 0; i < sizeof(time_rows) / sizeof(time_rows[0]); i++) {
		const time_row_t *t = &time_rows[i];
		pol_decision_t live, explained;
		trace_log_t log = {0};
		decide_time_row(snap, t, &live, NULL);
		decide_time_row(snap, t, &explained, &log);
		int64_t until = t->valid_until != NULL ? at_ms(t->valid_until) : INT64_MAX;
		char got_wd[256], exp_wd[256], got_until[CG_RFC3339_LEN] = "never";
		would_deny_text(&live, got_wd, sizeof(got_wd));
		would_deny_text(&explained, exp_wd, sizeof(exp_wd));
		if (live.valid_until_ms != INT64_MAX)
			cg_rfc3339_ms(live.valid_until_ms, got_until);
		if (live.allow != t->allow || strcmp(live.rule, t->rule) != 0 ||
		    live.valid_until_ms != until || strcmp(got_wd, t->would_deny) != 0) {
			print_error(
			        "time row %zu (%s %s at %s): got %s rule %s until %s would deny "
			        "[%s] (%s); want %s rule %s until %s would deny [%s]\n",
			        i, t->service, t->user, t->at, live.allow ? "allow" : "deny",
			        live.rule, got_until, got_wd, live.reason,
			        t->allow ? "allow" : "deny", t->rule,
			        t->valid_until ? t->valid_until : "never", t->would_deny);
			failures++;
		}
		if (explained.allow != live.allow || strcmp(explained.rule, live.rule) != 0 ||
		    explained.valid_until_ms != live.valid_until_ms ||
		    strcmp(got_wd, exp_wd) != 0) {
			print_error("time row %zu: explain says %s/%s [%s], live says %s/%s [%s]\n",
			            i, explained.allow ? "allow" : "deny", explained.rule, exp_wd,
			            live.allow ? "allow" : "deny", live.rule, got_wd);
			failures++;
		}
	}
	assert_int_equal(failures, 0);

	/* explain says why a window did not match, and that a permissive rule did */
	pol_decision_t d;
	trace_log_t log = {0};
	decide_time_row(snap, &time_rows[4], &d, &log);
	assert_why(snap, log, "office-hours",
	           "when: Sat 2026-03-28 11:00 CET (Europe/Berlin): sat is not in days [mon, tue, "
	           "wed, thu, fri]");
	memset(&log, 0, sizeof(log));
	decide_time_row(snap, &time_rows[3], &d, &log);
	assert_why(snap, log, "office-hours",
	           "when: Mon 2026-03-30 18:00 CEST (Europe/Berlin) is outside hours 08:00-18:00");
	memset(&log, 0, sizeof(log));
	decide_time_row(snap, &time_rows[14], &d, &log);
	assert_true(log.matched[rule_index(snap, "try-no-interns")]);
	assert_true(d.allow);

	/* the index and the trace agree on every hour of a week */
	const char *users[] = {"sam@example.com", "bob@contractor.example", "ann@example.com"};
	const char *groups[] = {"staff", "oncall", "interns", "dba", NULL};
	int64_t start = at_ms("2026-03-26T00:00:00Z");
	for (int64_t h = 0; h < 24 * 9; h++)
		for (size_t u = 0; u < 3; u++)
			for (size_t g = 0; g < 5; g++) {
				char when[CG_RFC3339_LEN];
				cg_rfc3339_ms(start + h * 3600000, when);
				time_row_t t = {.service = g == 3 ? "billing-db" : "orders-db",
				                .user = users[u],
				                .groups = {groups[g]},
				                .db_user = g == 3 ? "postgres" : NULL,
				                .at = when};
				pol_decision_t a, b;
				trace_log_t tl = {0};
				decide_time_row(snap, &t, &a, NULL);
				decide_time_row(snap, &t, &b, &tl);
				assert_int_equal(a.allow, b.allow);
				assert_string_equal(a.rule, b.rule);
				assert_true(a.valid_until_ms == b.valid_until_ms);
				assert_int_equal(a.n_would_deny, b.n_would_deny);
			}
	pol_snapshot_unref(snap);
}

/* A policy without rules denies everything (and names default-deny). */
static void test_empty_rules(void **state)
{
	pol_snapshot_t *snap = load_fixture("decide_norules.json");
	const row_t row = {.service = "orders-db",
	                   .user = "alice@example.com",
	                   .groups = {"dba"},
	                   .device_trust = T_HIGH,
	                   .feed_trust = T_NONE};
	pol_decision_t d;
	(void)state;

	assert_int_equal(snap->n_rules, 0);
	decide_row(snap, &row, &d, NULL);
	assert_false(d.allow);
	assert_int_equal(d.why, POL_WHY_DEFAULT_DENY);
	assert_string_equal(d.rule, "default-deny");
	pol_snapshot_unref(snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table),           cmocka_unit_test(test_reasons),
	        cmocka_unit_test(test_trace),           cmocka_unit_test(test_index_consistent),
	        cmocka_unit_test(test_trust_effective), cmocka_unit_test(test_trust_names),
	        cmocka_unit_test(test_empty_rules),     cmocka_unit_test(test_time_table),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
