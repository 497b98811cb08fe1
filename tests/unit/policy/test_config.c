/* pol_snapshot_load: the CONFIG.md example, defaults, every error reported
 * with file:line:col, policy_file, relative paths, sha256, lookups.
 * Fixtures are written to a fresh temporary folder from the strings below,
 * so their line and column numbers can be read right here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "pol_config.h"

static char tmpdir[PATH_MAX];
static char oldcwd[PATH_MAX];

static void write_file(const char *name, const char *text)
{
	FILE *f = fopen(name, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "could not remove %s\n", path);
}

/* Each test runs in its own empty temporary folder. */
static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/certgate-test-config-XXXXXX");
	if (!mkdtemp(tmpdir) || !getcwd(oldcwd, sizeof(oldcwd)) || chdir(tmpdir) != 0)
		return -1;
	/* resolve symlinks (e.g. /tmp) so expected absolute paths compare */
	return realpath(".", tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	if (chdir(oldcwd) != 0)
		return -1;
	rm_rf(tmpdir);
	return 0;
}

/* Loads name; returns the snapshot and leaves the errors in errs. */
static pol_snapshot_t *load(const char *name, cg_errors_t *errs)
{
	cg_errors_init(errs);
	return pol_snapshot_load(name, errs);
}

static void print_errors(const cg_errors_t *errs)
{
	for (size_t i = 0; i < errs->count; i++)
		print_message("  error: %s\n", errs->items[i]);
}

/* The position a loaded file was named at, as error messages quote it. */
static void assert_where(const pol_file_t *file, const char *want)
{
	char where[512];
	pol_file_where(file, where, sizeof(where));
	assert_string_equal(where, want);
}

static pol_snapshot_t *load_ok(const char *name)
{
	cg_errors_t errs;
	pol_snapshot_t *snap = load(name, &errs);
	print_errors(&errs);
	assert_int_equal(errs.count, 0);
	assert_non_null(snap);
	cg_errors_finish(&errs);
	return snap;
}

/* Asserts that loading fails with exactly the expected lines (any order). */
static void expect_errors(const char *name, const char *const *expected, size_t n)
{
	cg_errors_t errs;
	pol_snapshot_t *snap = load(name, &errs);
	size_t missing = 0;

	assert_null(snap);
	for (size_t i = 0; i < n; i++) {
		bool found = false;
		for (size_t k = 0; k < errs.count && !found; k++)
			found = strcmp(errs.items[k], expected[i]) == 0;
		if (!found) {
			print_message("missing error: %s\n", expected[i]);
			missing++;
		}
	}
	if (missing || errs.count != n) {
		print_message("got %zu errors:\n", errs.count);
		print_errors(&errs);
	}
	assert_int_equal(missing, 0);
	assert_int_equal(errs.count, n);
	cg_errors_finish(&errs);
}

#define EXPECT_ERRORS(name, ...)                                                                   \
	do {                                                                                       \
		const char *const expected_[] = {__VA_ARGS__};                                     \
		expect_errors(name, expected_, sizeof(expected_) / sizeof(expected_[0]));          \
	} while (0)

/* The example of CONFIG.md, verbatim. */
static const char example[] =
        "{\n"
        "  \"gateway\": {\n"
        "    \"listen\": [\"0.0.0.0:8443\"],\n"
        "    \"cert\": \"gateway.crt\",\n"
        "    \"key\": \"gateway.key\",\n"
        "    \"client_ca\": \"login-ca.crt\",\n"
        "    \"crl\": \"login-ca.crl\",\n"
        "    \"max_cert_lifetime\": \"24h\",\n"
        "    \"clock_skew\": \"30s\",\n"
        "    \"handshake_timeout\": \"10s\",\n"
        "    \"idle_timeout\": \"1h\",\n"
        "    \"max_connections\": 10000,\n"
        "    \"max_sessions_per_user\": 50,\n"
        "    \"proxy_protocol_from\": [\"10.0.0.0/8\"]\n"
        "  },\n"
        "  \"admin\": { \"listen\": \"127.0.0.1:9090\", \"token_file\": \"admin.token\" },\n"
        "  \"audit\": { \"path\": \"audit.jsonl\", \"on_failure\": \"refuse\" },\n"
        "  \"claims\": {\n"
        "    \"user\":         [\"san:email\", \"subject:CN\"],\n"
        "    \"groups\":       [\"subject:OU\"],\n"
        "    \"device_id\":    [\"san:uri:urn:certgate:device:\"],\n"
        "    \"device_trust\": [\"san:uri:urn:certgate:trust:\"]\n"
        "  },\n"
        "  \"services\": [\n"
        "    { \"name\": \"orders-db\", \"sni\": [\"orders-db.internal\"],\n"
        "      \"upstream\": [\"10.1.0.5:5432\", \"10.1.0.6:5432\"],\n"
        "      \"mode\": \"tunnel\", \"require_inner_tls\": true, \"connect_timeout\": \"5s\" },\n"
        "    { \"name\": \"billing-db\", \"listen\": \"0.0.0.0:5432\", \"mode\": \"postgres\",\n"
        "      \"upstream\": [\"10.1.0.7:5432\"],\n"
        "      \"upstream_tls\": { \"ca\": \"pg-server-ca.crt\", \"server_name\": "
        "\"billing-db.internal\",\n"
        "                        \"client_ca_cert\": \"db-ca.crt\", \"client_ca_key\": "
        "\"db-ca.key\" } }\n"
        "  ],\n"
        "  \"rules\": [\n"
        "    { \"name\": \"dba\",            \"effect\": \"allow\", \"services\": [\"*\"],         "
        "\"groups\": [\"dba\"],      \"min_trust\": \"high\" },\n"
        "    { \"name\": \"analysts\",       \"effect\": \"allow\", \"services\": [\"orders-db\"], "
        "\"groups\": [\"analysts\"], \"min_trust\": \"medium\",\n"
        "      \"db_users\": [\"analyst_ro\"], \"db_names\": [\"orders\"] },\n"
        "    { \"name\": \"no-contractors\", \"effect\": \"deny\",  \"services\": [\"*\"],         "
        "\"users\": [\"*@contractor.example\"] }\n"
        "  ]\n"
        "}\n";

static void assert_path(const char *got, const char *rel)
{
	char want[PATH_MAX * 2];
	snprintf(want, sizeof(want), "%s/%s", tmpdir, rel);
	assert_non_null(got);
	assert_string_equal(got, want);
}

/* The CONFIG.md example, verbatim, loads: its analysts rule names db_users
 * on a tunnel service (orders-db), which is legal and fails closed there
 * (only warned about)... */
static void test_example_db_users_on_tunnel(void **state)
{
	(void)state;
	write_file("certgate.json", example);
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_int_equal(snap->n_rules, 3);
	assert_string_equal(snap->rules[1].name, "analysts");
	assert_int_equal(snap->rules[1].n_db_users, 1);
	assert_string_equal(snap->rules[1].db_users[0], "analyst_ro");
	assert_int_equal(snap->rules[1].n_db_names, 1);
	pol_snapshot_unref(snap);
}

/* ...and loads with every value once that rule names the postgres service. */
static void test_example(void **state)
{
	char text[sizeof(example) + 16];
	char *p;
	pol_snapshot_t *snap;
	const pol_gateway_t *g;
	const pol_service_t *svc;
	const pol_rule_t *r;
	(void)state;

	snprintf(text, sizeof(text), "%s", example);
	p = strstr(text, "\"services\": [\"orders-db\"], \"groups\": [\"analysts\"]");
	assert_non_null(p);
	memcpy(p, "\"services\": [\"billing-db\"],\"groups\": [\"analysts\"]", 49);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");

	assert_path(snap->config_path, "certgate.json");
	assert_null(snap->policy_path);
	assert_int_equal(strlen(snap->sha256), 64);

	g = &snap->gateway;
	assert_int_equal(g->n_listen, 1);
	assert_string_equal(g->listen[0], "0.0.0.0:8443");
	assert_string_equal(g->listen_addr[0].host, "0.0.0.0");
	assert_int_equal(g->listen_addr[0].port, 8443);
	assert_path(g->cert.path, "gateway.crt");
	assert_where(&g->cert, "certgate.json:4:13: gateway.cert");
	assert_path(g->key.path, "gateway.key");
	assert_path(g->client_ca.path, "login-ca.crt");
	assert_path(g->crl.path, "login-ca.crl");
	assert_where(&g->crl, "certgate.json:7:12: gateway.crl");
	assert_int_equal(g->max_cert_lifetime_ms, 24 * 3600 * 1000ULL);
	assert_int_equal(g->clock_skew_ms, 30000);
	assert_int_equal(g->handshake_timeout_ms, 10000);
	assert_int_equal(g->idle_timeout_ms, 3600 * 1000ULL);
	assert_int_equal(g->max_connections, 10000);
	assert_int_equal(g->max_sessions_per_user, 50);
	assert_int_equal(g->verify_depth, 4);
	assert_int_equal(g->n_proxy_protocol_from, 1);
	assert_int_equal(g->proxy_protocol_from[0].prefix, 8);

	assert_true(snap->admin.enabled);
	assert_string_equal(snap->admin.listen, "127.0.0.1:9090");
	assert_int_equal(snap->admin.listen_addr.port, 9090);
	assert_path(snap->admin.token_file.path, "admin.token");
	assert_path(snap->audit.path, "audit.jsonl");
	assert_int_equal(snap->audit.on_failure, CG_AUDIT_REFUSE);

	assert_int_equal(snap->claims.user.count, 2);
	assert_string_equal(snap->claims.user.items[0].text, "san:email");
	assert_int_equal(snap->claims.user.items[1].kind, POL_SRC_SUBJECT);
	assert_string_equal(snap->claims.device_trust.items[0].arg, "urn:certgate:trust:");

	assert_int_equal(snap->n_services, 2);
	svc = &snap->services[0];
	assert_string_equal(svc->name, "orders-db");
	assert_int_equal(svc->n_sni, 1);
	assert_string_equal(svc->sni[0], "orders-db.internal");
	assert_null(svc->listen);
	assert_int_equal(svc->n_upstream, 2);
	assert_string_equal(svc->upstream[1].host, "10.1.0.6");
	assert_int_equal(svc->upstream[1].port, 5432);
	assert_int_equal(svc->mode, POL_MODE_TUNNEL);
	assert_true(svc->require_inner_tls);
	assert_int_equal(svc->connect_timeout_ms, 5000);
	assert_false(svc->has_upstream_tls);
	svc = &snap->services[1];
	assert_string_equal(svc->name, "billing-db");
	assert_string_equal(svc->listen, "0.0.0.0:5432");
	assert_int_equal(svc->listen_addr.port, 5432);
	assert_int_equal(svc->mode, POL_MODE_POSTGRES);
	assert_false(svc->require_inner_tls);
	assert_false(svc->audit_queries);
	assert_true(svc->has_upstream_tls);
	assert_path(svc->upstream_tls.ca.path, "pg-server-ca.crt");
	assert_string_equal(svc->upstream_tls.server_name, "billing-db.internal");
	assert_path(svc->upstream_tls.client_ca_cert.path, "db-ca.crt");
	assert_path(svc->upstream_tls.client_ca_key.path, "db-ca.key");
	assert_where(&svc->upstream_tls.client_ca_key,
	             "certgate.json:31:73: services[1].upstream_tls.client_ca_key");

	assert_int_equal(snap->n_rules, 3);
	r = &snap->rules[0];
	assert_string_equal(r->name, "dba");
	assert_true(r->allow);
	assert_int_equal(r->n_services, 1);
	assert_string_equal(r->services[0], "*");
	assert_int_equal(r->n_groups, 1);
	assert_int_equal(r->min_trust, POL_TRUST_HIGH);
	assert_int_equal(r->n_users, 0);
	r = &snap->rules[1];
	assert_int_equal(r->min_trust, POL_TRUST_MEDIUM);
	assert_string_equal(r->db_users[0], "analyst_ro");
	assert_string_equal(r->db_names[0], "orders");
	r = &snap->rules[2];
	assert_false(r->allow);
	assert_string_equal(r->users[0], "*@contractor.example");
	assert_int_equal(r->min_trust, POL_TRUST_NONE);

	/* lookups: by name, by SNI, ASCII case-insensitive */
	assert_ptr_equal(pol_snapshot_service(snap, "orders-db"), &snap->services[0]);
	assert_ptr_equal(pol_snapshot_service(snap, "BILLING-DB"), &snap->services[1]);
	assert_null(pol_snapshot_service(snap, "nope"));
	assert_ptr_equal(pol_snapshot_service_by_sni(snap, "Orders-DB.Internal"),
	                 &snap->services[0]);
	assert_ptr_equal(pol_snapshot_service_by_sni(snap, "billing-db"), &snap->services[1]);
	assert_null(pol_snapshot_service_by_sni(snap, "billing-db.internal"));

	/* refcount */
	assert_ptr_equal(pol_snapshot_ref(snap), snap);
	assert_int_equal(atomic_load(&snap->refs), 2);
	pol_snapshot_unref(snap);
	assert_int_equal(atomic_load(&snap->refs), 1);
	pol_snapshot_unref(snap);
	pol_snapshot_unref(NULL);
}

static const char minimal[] = "{\n"
                              "  \"gateway\": {\n"
                              "    \"listen\": [\"[::]:8443\", \"127.0.0.1:8443\"],\n"
                              "    \"cert\": \"/etc/certgate/gw.crt\",\n"
                              "    \"key\": \"./keys/gw.key\",\n"
                              "    \"client_ca\": \"ca.crt\"\n"
                              "  },\n"
                              "  \"services\": [ { \"name\": \"wiki\", \"upstream\": "
                              "\"wiki.internal:443\" } ]\n"
                              "}\n";

static void test_defaults(void **state)
{
	pol_snapshot_t *snap;
	const pol_gateway_t *g;
	const json_t *shown, *gw;
	(void)state;

	write_file("certgate.json", minimal);
	snap = load_ok("certgate.json");
	g = &snap->gateway;
	assert_int_equal(g->n_listen, 2);
	assert_string_equal(g->listen_addr[0].host, "::");
	assert_string_equal(g->cert.path, "/etc/certgate/gw.crt");
	assert_path(g->key.path, "keys/gw.key");
	assert_null(g->crl.path);
	assert_null(g->crl.key);
	assert_int_equal(g->max_cert_lifetime_ms, 24 * 3600 * 1000ULL);
	assert_int_equal(g->clock_skew_ms, 30000);
	assert_int_equal(g->handshake_timeout_ms, 10000);
	assert_int_equal(g->idle_timeout_ms, 3600 * 1000ULL);
	assert_int_equal(g->max_connections, 10000);
	assert_int_equal(g->max_sessions_per_user, 0);
	assert_int_equal(g->max_handshakes_per_source, 10000 / 8);
	assert_int_equal(g->verify_depth, 4);
	assert_true(g->verify_cache);
	assert_int_equal(g->crl_check, POL_CRL_CHECK_CHAIN);
	assert_int_equal(g->n_proxy_protocol_from, 0);
	assert_false(snap->admin.enabled);
	assert_string_equal(snap->audit.path, "-");
	assert_int_equal(snap->audit.on_failure, CG_AUDIT_REFUSE);
	/* default claims map */
	assert_int_equal(snap->claims.user.count, 2);
	assert_string_equal(snap->claims.user.items[0].text, "san:email");
	assert_string_equal(snap->claims.user.items[1].text, "subject:CN");
	assert_string_equal(snap->claims.groups.items[0].text, "subject:OU");
	assert_string_equal(snap->claims.device_id.items[0].text, "san:uri:urn:certgate:device:");
	assert_string_equal(snap->claims.device_trust.items[0].text, "san:uri:urn:certgate:trust:");
	/* one service, defaults */
	assert_int_equal(snap->n_services, 1);
	assert_int_equal(snap->services[0].n_upstream, 1);
	assert_string_equal(snap->services[0].upstream[0].host, "wiki.internal");
	assert_int_equal(snap->services[0].mode, POL_MODE_TUNNEL);
	assert_int_equal(snap->services[0].connect_timeout_ms, 5000);
	assert_false(snap->services[0].require_inner_tls);
	assert_int_equal(snap->n_rules, 0);

	/* what GET /v1/policy shows: defaults filled in, durations as text */
	shown = snap->shown;
	assert_non_null(shown);
	gw = json_object_get(shown, "gateway");
	assert_string_equal(json_string_value(json_object_get(gw, "max_cert_lifetime")), "1d");
	assert_string_equal(json_string_value(json_object_get(gw, "clock_skew")), "30s");
	assert_string_equal(json_string_value(json_object_get(gw, "idle_timeout")), "1h");
	assert_int_equal(json_integer_value(json_object_get(gw, "max_connections")), 10000);
	assert_int_equal(json_integer_value(json_object_get(gw, "verify_depth")), 4);
	assert_true(json_is_true(json_object_get(gw, "verify_cache")));
	assert_string_equal(json_string_value(json_object_get(gw, "crl_check")), "chain");
	assert_string_equal(json_string_value(json_object_get(gw, "cert")), "/etc/certgate/gw.crt");
	assert_string_equal(
	        json_string_value(json_object_get(json_object_get(shown, "audit"), "on_failure")),
	        "refuse");
	assert_string_equal(json_string_value(json_array_get(
	                            json_object_get(json_object_get(shown, "claims"), "user"), 1)),
	                    "subject:CN");
	assert_string_equal(
	        json_string_value(json_object_get(
	                json_array_get(json_object_get(shown, "services"), 0), "connect_timeout")),
	        "5s");
	assert_int_equal(json_array_size(json_object_get(shown, "rules")), 0);
	assert_null(json_object_get(shown, "policy_file"));
	pol_snapshot_unref(snap);
}

/* shown never carries what a file holds: write a key and look for it. */
static void test_shown_has_no_key_material(void **state)
{
	pol_snapshot_t *snap;
	char *dump;
	(void)state;

	write_file("certgate.json", minimal);
	if (mkdir("keys", 0700) != 0 && errno != EEXIST)
		fail();
	write_file("keys/gw.key", "KEY-CONTENT-MARKER SECRETSECRET\n");
	write_file("ca.crt", "CA-CONTENT-MARKER");
	snap = load_ok("certgate.json");
	dump = json_dumps(snap->shown, JSON_COMPACT);
	assert_non_null(dump);
	assert_null(strstr(dump, "SECRETSECRET"));
	assert_null(strstr(dump, "CA-CONTENT-MARKER"));
	assert_non_null(strstr(dump, "keys/gw.key"));
	free(dump);
	pol_snapshot_unref(snap);
}

/* Many mistakes at once: every one is reported, each at its place. */
static const char mistakes[] =
        "{\n"                                                                              /* 1 */
        "  \"gateway\": {\n"                                                               /* 2 */
        "    \"listne\": [\"0.0.0.0:8443\"],\n"                                            /* 3 */
        "    \"listen\": [\"gw.example:8443\", \"0.0.0.0\"],\n"                            /* 4 */
        "    \"cert\": \"gw.crt\", \"key\": \"gw.key\",\n"                                 /* 5 */
        "    \"clock_skew\": \"30 seconds\",\n"                                            /* 6 */
        "    \"max_connections\": 0,\n"                                                    /* 7 */
        "    \"verify_depth\": 11\n"                                                       /* 8 */
        "  },\n"                                                                           /* 9 */
        "  \"audit\": { \"on_failure\": \"ignore\" },\n"                                   /* 10 */
        "  \"services\": [\n"                                                              /* 11 */
        "    { \"name\": \"orders-db\", \"upstream\": \"10.1.0.5\" },\n"                   /* 12 */
        "    { \"name\": \"orders-db\", \"upstream\": [\"10.1.0.6:5432\"],\n"              /* 13 */
        "      \"connect_timeout\": 5, \"mode\": \"tcp\" },\n"                             /* 14 */
        "    { \"name\": \"pg\", \"mode\": \"postgres\", \"upstream\": [],\n"              /* 15 */
        "      \"sni\": [\"ORDERS-DB\"] }\n"                                               /* 16 */
        "  ],\n"                                                                           /* 17 */
        "  \"rules\": [\n"                                                                 /* 18 */
        "    { \"name\": \"r1\", \"effect\": \"allow\", \"services\": [\"billing\"] },\n"  /* 19 */
        "    { \"name\": \"r1\", \"effect\": \"permit\", \"services\": [\"*\"],\n"         /* 20 */
        "      \"min_trust\": \"HIGH\", \"sources\": [\"10.0.0.0/33\"], \"users\": [] }\n" /* 21 */
        "  ]\n"                                                                            /* 22 */
        "}\n";

static void test_all_errors(void **state)
{
	(void)state;
	write_file("certgate.json", mistakes);
	EXPECT_ERRORS(
	        "certgate.json", "certgate.json:3:15: gateway.listne: unknown key",
	        "certgate.json:4:16: gateway.listen[0]: expected a numeric IP address like "
	        "\"0.0.0.0:8443\" or \"[::]:8443\" (listen addresses are not resolved)",
	        "certgate.json:4:35: gateway.listen[1]: expected \"host:port\"",
	        "certgate.json:2:14: gateway: missing required key \"client_ca\"",
	        "certgate.json:6:19: gateway.clock_skew: expected a duration like \"30s\"",
	        "certgate.json:7:24: gateway.max_connections: expected a positive integer",
	        "certgate.json:8:21: gateway.verify_depth: expected an integer from 1 to 10",
	        "certgate.json:10:28: audit.on_failure: expected \"refuse\" or \"continue\"",
	        "certgate.json:12:40: services[0].upstream: expected \"host:port\"",
	        "certgate.json:14:26: services[1].connect_timeout: expected a duration like "
	        "\"30s\"",
	        "certgate.json:14:37: services[1].mode: expected \"tunnel\" or \"postgres\"",
	        "certgate.json:15:53: services[2].upstream: expected \"host:port\" or a non-empty "
	        "array of them",
	        "certgate.json:15:5: services[2]: missing required key \"upstream_tls\" (postgres "
	        "mode)",
	        "certgate.json:13:15: services[1].name: duplicate service name \"orders-db\" (also "
	        "services[0])",
	        "certgate.json:16:15: services[2].sni[0]: server name \"ORDERS-DB\" already leads "
	        "to service \"orders-db\"",
	        "certgate.json:19:53: rules[0].services[0]: unknown service \"billing\"",
	        "certgate.json:20:31: rules[1].effect: expected \"allow\" or \"deny\"",
	        "certgate.json:21:20: rules[1].min_trust: expected one of \"always_deny\", "
	        "\"low\", "
	        "\"medium\", \"high\"",
	        "certgate.json:21:40: rules[1].sources[0]: expected a CIDR like \"10.0.0.0/8\"",
	        "certgate.json:21:65: rules[1].users: expected a non-empty array of strings",
	        "certgate.json:20:15: rules[1].name: duplicate rule name \"r1\" (also rules[0])");
}

static void test_unknown_keys(void **state)
{
	(void)state;
	write_file(
	        "certgate.json",
	        "{\n"
	        "  \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\",\n"
	        "               \"client_ca\": \"ca\", \"tls\": {} },\n"
	        "  \"admin\": { \"token\": \"x\" },\n"
	        "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\", \"timeout\": \"1s\",\n"
	        "                  \"upstream_tls\": null } ],\n"
	        "  \"rules\": [ { \"name\": \"r\", \"effect\": \"allow\", \"services\": [\"a\"],\n"
	        "               \"group\": [\"x\"] } ],\n"
	        "  \"claims\": { \"email\": [\"san:email\"] },\n"
	        "  \"extra\": 1\n"
	        "}\n");
	EXPECT_ERRORS("certgate.json", "certgate.json:3:42: gateway.tls: unknown key",
	              "certgate.json:4:23: admin.token: unknown key",
	              "certgate.json:5:62: services[0].timeout: unknown key",
	              "certgate.json:6:35: services[0].upstream_tls: upstream_tls applies only to "
	              "postgres-mode services",
	              "certgate.json:8:25: rules[0].group: unknown key",
	              "certgate.json:9:24: claims.email: unknown key (expected user, groups, "
	              "device_id or device_trust)",
	              "certgate.json:10:12: extra: unknown key");
}

static void test_bad_durations(void **state)
{
	(void)state;
	write_file("certgate.json", "{\n"
	                            "  \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": "
	                            "\"c\", \"key\": \"k\",\n"
	                            "    \"client_ca\": \"ca\", \"max_cert_lifetime\": \"1d2x\", "
	                            "\"idle_timeout\": \"0\",\n"
	                            "    \"handshake_timeout\": \"0\" },\n"
	                            "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\", "
	                            "\"connect_timeout\": \"-5s\" } ]\n"
	                            "}\n");
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:3:45: gateway.max_cert_lifetime: expected a duration like \"30s\"",
	        "certgate.json:4:26: gateway.handshake_timeout: must be longer than 0",
	        "certgate.json:5:70: services[0].connect_timeout: expected a duration like "
	        "\"30s\"");
}

static void test_idle_timeout_zero(void **state)
{
	pol_snapshot_t *snap;
	(void)state;
	write_file(
	        "certgate.json",
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\",\n"
	        "    \"client_ca\": \"ca\", \"idle_timeout\": \"0\", \"clock_skew\": \"1m30s\" },\n"
	        "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	snap = load_ok("certgate.json");
	assert_int_equal(snap->gateway.idle_timeout_ms, 0);
	assert_int_equal(snap->gateway.clock_skew_ms, 90000);
	assert_string_equal(json_string_value(json_object_get(
	                            json_object_get(snap->shown, "gateway"), "clock_skew")),
	                    "1m30s");
	pol_snapshot_unref(snap);
}

static void test_verify_cache_switch(void **state)
{
	(void)state;
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"verify_cache\": false },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_false(snap->gateway.verify_cache);
	assert_true(json_is_false(
	        json_object_get(json_object_get(snap->shown, "gateway"), "verify_cache")));
	pol_snapshot_unref(snap);
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"verify_cache\": \"yes\" },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	static const char *const expected[] = {
	        "certgate.json:2:40: gateway.verify_cache: expected true or false",
	};
	expect_errors("certgate.json", expected, 1);
}

static void test_crl_check(void **state)
{
	(void)state;
	static const struct {
		const char *value;
		pol_crl_check_t mode;
	} modes[] = {
	        {"leaf", POL_CRL_CHECK_LEAF},
	        {"chain", POL_CRL_CHECK_CHAIN},
	        {"all", POL_CRL_CHECK_ALL},
	};
	char text[512];
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		snprintf(text, sizeof(text),
		         "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", "
		         "\"key\": \"k\",\n"
		         "    \"client_ca\": \"ca\", \"crl\": \"crl\", \"crl_check\": \"%s\" },\n"
		         "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n",
		         modes[i].value);
		write_file("certgate.json", text);
		pol_snapshot_t *snap = load_ok("certgate.json");
		assert_int_equal(snap->gateway.crl_check, modes[i].mode);
		assert_string_equal(json_string_value(json_object_get(
		                            json_object_get(snap->shown, "gateway"), "crl_check")),
		                    modes[i].value);
		pol_snapshot_unref(snap);
	}
	/* "chain" checks where a CRL is: fine without one */
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"crl_check\": \"chain\" },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	pol_snapshot_unref(load_ok("certgate.json"));
	/* the other two demand one */
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"crl_check\": \"all\" },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	static const char *const without_crl[] = {
	        "certgate.json:2:37: gateway.crl_check: \"all\" checks certificates against "
	        "gateway.crl, which is not set",
	};
	expect_errors("certgate.json", without_crl, 1);
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"crl\": \"crl\", \"crl_check\": \"intermediates\" "
	           "},\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	static const char *const unknown[] = {
	        "certgate.json:2:51: gateway.crl_check: expected \"leaf\", \"chain\" or \"all\"",
	};
	expect_errors("certgate.json", unknown, 1);
}

/* gateway.max_handshakes_per_source: an eighth of max_connections, at
 * least 16, unless set (0 = no limit). */
static void test_handshakes_per_source(void **state)
{
	static const struct {
		const char *keys;
		uint32_t want;
	} cases[] = {
	        {"\"max_connections\": 100", 16},
	        {"\"max_connections\": 800", 100},
	        {"\"max_connections\": 800, \"max_handshakes_per_source\": 5", 5},
	        {"\"max_handshakes_per_source\": 0", 0},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		snprintf(text, sizeof(text),
		         "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", "
		         "\"key\": \"k\", \"client_ca\": \"ca\", %s },\n"
		         "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n",
		         cases[i].keys);
		write_file("certgate.json", text);
		pol_snapshot_t *snap = load_ok("certgate.json");
		assert_int_equal(snap->gateway.max_handshakes_per_source, cases[i].want);
		assert_int_equal(
		        json_integer_value(json_object_get(json_object_get(snap->shown, "gateway"),
		                                           "max_handshakes_per_source")),
		        cases[i].want);
		pol_snapshot_unref(snap);
	}
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "    \"client_ca\": \"ca\", \"max_handshakes_per_source\": -1 },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ] }\n");
	static const char *const expected[] = {
	        "certgate.json:2:53: gateway.max_handshakes_per_source: expected a non-negative "
	        "integer",
	};
	expect_errors("certgate.json", expected, 1);
}

static void test_bad_listen(void **state)
{
	(void)state;
	write_file(
	        "certgate.json",
	        "{\n"
	        "  \"gateway\": { \"listen\": [\"localhost:8443\", \":8443\", \"0.0.0.0:0\",\n"
	        "                            \"::1:8443\", \"0.0.0.0:99999\", \"0.0.0.0:8443\",\n"
	        "                            \"0.0.0.0:8443\"],\n"
	        "    \"cert\": \"c\", \"key\": \"k\", \"client_ca\": \"ca\" },\n"
	        "  \"admin\": { \"listen\": \"0.0.0.0:9090\" },\n"
	        "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\", \"listen\": "
	        "\"db:5432\" },\n"
	        "                { \"name\": \"b\", \"upstream\": \"h:1\", \"listen\": "
	        "\"127.0.0.1:8443\" } ]\n"
	        "}\n");
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:2:27: gateway.listen[0]: expected a numeric IP address like "
	              "\"0.0.0.0:8443\" or \"[::]:8443\" (listen addresses are not resolved)",
	              "certgate.json:2:45: gateway.listen[1]: expected \"host:port\"",
	              "certgate.json:2:54: gateway.listen[2]: expected \"host:port\"",
	              "certgate.json:3:29: gateway.listen[3]: expected \"host:port\"",
	              "certgate.json:3:41: gateway.listen[4]: expected \"host:port\"",
	              "certgate.json:4:29: gateway.listen[6]: conflicts with gateway.listen[5]",
	              "certgate.json:6:24: admin.listen: a non-loopback admin listener needs a "
	              "token_file",
	              "certgate.json:7:61: services[0].listen: expected a numeric IP address like "
	              "\"0.0.0.0:8443\" or \"[::]:8443\" (listen addresses are not resolved)",
	              "certgate.json:8:61: services[1].listen: conflicts with gateway.listen[5]");
}

/* gateway.listen may be left out only when every service has its own. */
static void test_gateway_listen_optional(void **state)
{
	pol_snapshot_t *snap;
	(void)state;
	write_file("certgate.json",
	           "{ \"gateway\": { \"cert\": \"c\", \"key\": \"k\", \"client_ca\": \"ca\" },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\", \"listen\": "
	           "\"0.0.0.0:5432\" } ] }\n");
	snap = load_ok("certgate.json");
	assert_int_equal(snap->gateway.n_listen, 0);
	pol_snapshot_unref(snap);

	write_file("certgate.json",
	           "{ \"gateway\": { \"cert\": \"c\", \"key\": \"k\", \"client_ca\": \"ca\", "
	           "\"listen\": [] },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\", \"listen\": "
	           "\"0.0.0.0:5432\" },\n"
	           "                { \"name\": \"b\", \"upstream\": \"h:1\" } ] }\n");
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:1:70: gateway.listen: may be empty only when every service "
	              "has its own listen (service \"b\" has none)");

	write_file("certgate.json",
	           "{ \"gateway\": { \"cert\": \"c\", \"key\": \"k\", \"client_ca\": \"ca\" },\n"
	           "  \"services\": [ { \"name\": \"b\", \"upstream\": \"h:1\" } ] }\n");
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:1:14: gateway: missing required key \"listen\" (service \"b\" "
	              "has no listen of its own)");
}

static void test_services_rules_checks(void **state)
{
	(void)state;
	write_file(
	        "certgate.json",
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\",\n"
	        "               \"client_ca\": \"ca\" },\n"
	        "  \"services\": [\n"
	        "    { \"name\": \"tun\", \"upstream\": \"h:1\" },\n"
	        "    { \"name\": \"pg\", \"upstream\": \"h:1\", \"mode\": \"postgres\",\n"
	        "      \"upstream_tls\": { \"ca\": \"a\", \"server_name\": \"pg\" } },\n"
	        "    { \"name\": \"bad name\", \"upstream\": \"h:1\" },\n"
	        "    { \"upstream\": \"h:1\", \"audit_queries\": true }\n"
	        "  ],\n"
	        "  \"rules\": [\n"
	        "    { \"name\": \"a\", \"effect\": \"allow\", \"services\": [\"tun\", \"pg\"], "
	        "\"db_users\": [\"x\"] },\n"
	        "    { \"name\": \"b\", \"effect\": \"allow\", \"services\": [\"pg\"], "
	        "\"db_names\": [\"{usr}\"] },\n"
	        "    { \"name\": \"c\", \"effect\": \"allow\", \"services\": [\"*\"], "
	        "\"db_users\": [\"{user}\"] },\n"
	        "    { \"name\": \"d\", \"effect\": \"deny\", \"services\": [] },\n"
	        "    { \"name\": \"e\", \"effect\": \"deny\" },\n"
	        "    { \"name\": \"default-deny\", \"effect\": \"deny\", \"services\": [\"*\"] },\n"
	        "    { \"name\": \"f\", \"effect\": \"allow\", \"services\": [\"pg\"], "
	        "\"db_users\":\n"
	        "      [\"{user.local@example.com}\", \"{user.local@}\", \"{user.local@a_b}\",\n"
	        "       \"x{user.local@example.com\", \"{user.local@Ex-1.org}_{user}\"] }\n"
	        "  ]\n"
	        "}\n");
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:6:23: services[1].upstream_tls: missing required key "
	        "\"client_ca_cert\"",
	        "certgate.json:6:23: services[1].upstream_tls: missing required key "
	        "\"client_ca_key\"",
	        "certgate.json:7:15: services[2].name: expected letters, digits, '.', '_' or '-' "
	        "(at most 253 bytes)",
	        "certgate.json:8:5: services[3]: missing required key \"name\"",
	        "certgate.json:8:43: services[3].audit_queries: audit_queries applies only to "
	        "postgres-mode services",
	        "certgate.json:12:72: rules[1].db_names[0]: expected a pattern whose only "
	        "placeholders are {user}, {user.local} and {user.local@DOMAIN}",
	        "certgate.json:14:50: rules[3].services: expected a non-empty array of strings",
	        "certgate.json:15:5: rules[4]: missing required key \"services\"",
	        "certgate.json:16:15: rules[5].name: \"default-deny\" is reserved for the implicit "
	        "last rule",
	        "certgate.json:18:36: rules[6].db_users[1]: expected a pattern whose only "
	        "placeholders are {user}, {user.local} and {user.local@DOMAIN}",
	        "certgate.json:18:53: rules[6].db_users[2]: expected a pattern whose only "
	        "placeholders are {user}, {user.local} and {user.local@DOMAIN}",
	        "certgate.json:19:8: rules[6].db_users[3]: expected a pattern whose only "
	        "placeholders are {user}, {user.local} and {user.local@DOMAIN}");
}

/* rules[].when and rules[].mode: every mistake named where it is. */
static void test_when_and_mode(void **state)
{
	(void)state;
	write_file(
	        "certgate.json",
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\",\n"
	        "               \"client_ca\": \"ca\" },\n"
	        "  \"services\": [ { \"name\": \"tun\", \"upstream\": \"h:1\" } ],\n"
	        "  \"rules\": [\n"
	        "    { \"name\": \"a\", \"effect\": \"allow\", \"services\": [\"*\"],\n"
	        "      \"when\": { \"days\": [\"mon\", \"Tues\", 3], \"hours\": \"8:00-18:00\",\n"
	        "                \"tz\": \"Europe/Berln\" } },\n"
	        "    { \"name\": \"b\", \"effect\": \"deny\", \"services\": [\"*\"],\n"
	        "      \"when\": { \"from\": \"2026-12-02T00:00:00Z\", \"until\": "
	        "\"2026-12-01T23:00:00-01:00\" } },\n"
	        "    { \"name\": \"c\", \"effect\": \"deny\", \"services\": [\"*\"],\n"
	        "      \"when\": { \"hours\": \"08:00-18:00\", \"from\": \"yesterday\" } },\n"
	        "    { \"name\": \"d\", \"effect\": \"deny\", \"services\": [\"*\"], \"when\": {} "
	        "},\n"
	        "    { \"name\": \"e\", \"effect\": \"deny\", \"services\": [\"*\"], \"when\": [] "
	        "},\n"
	        "    { \"name\": \"f\", \"effect\": \"allow\", \"services\": [\"*\"], \"mode\": "
	        "\"permissive\" },\n"
	        "    { \"name\": \"g\", \"effect\": \"deny\", \"services\": [\"*\"], \"mode\": "
	        "\"dry-run\" "
	        "},\n"
	        "    { \"name\": \"h\", \"effect\": \"deny\", \"services\": [\"*\"],\n"
	        "      \"when\": { \"days\": [], \"tz\": \"../../etc/passwd\", \"at\": 1 } },\n"
	        "    { \"name\": \"i\", \"effect\": \"deny\", \"services\": [\"*\"],\n"
	        "      \"when\": { \"hours\": \"09:00-09:00\", \"tz\": \"UTC\" } }\n"
	        "  ]\n"
	        "}\n");
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:6:33: rules[0].when.days[1]: expected one of \"mon\", \"tue\", "
	        "\"wed\", \"thu\", \"fri\", \"sat\", \"sun\"",
	        "certgate.json:6:41: rules[0].when.days[2]: expected one of \"mon\", \"tue\", "
	        "\"wed\", \"thu\", \"fri\", \"sat\", \"sun\"",
	        "certgate.json:6:54: rules[0].when.hours: expected \"HH:MM-HH:MM\" in 24-hour "
	        "local "
	        "time, start and end different (\"08:00-18:00\", \"22:00-06:00\", "
	        "\"00:00-24:00\")",
	        "certgate.json:7:23: rules[0].when.tz: unknown time zone \"Europe/Berln\" (no such "
	        "zone in /usr/share/zoneinfo)",
	        "certgate.json:9:58: rules[1].when.until: expected a time after from: the window "
	        "would never open",
	        "certgate.json:11:15: rules[2].when: missing key \"tz\": days and hours are local "
	        "times of a zone such as \"Europe/Berlin\" or \"UTC\"",
	        "certgate.json:11:49: rules[2].when.from: expected an RFC 3339 time like "
	        "\"2026-12-04T18:00:00Z\" or \"2026-12-04T19:00:00+01:00\"",
	        "certgate.json:12:65: rules[3].when: expected at least one of \"days\", \"hours\", "
	        "\"from\" and \"until\"",
	        "certgate.json:13:65: rules[4].when: expected an object with \"days\", \"hours\", "
	        "\"tz\", \"from\" or \"until\"",
	        "certgate.json:14:66: rules[5].mode: \"permissive\" applies to deny rules only (an "
	        "allow rule that is not enforced would admit no one)",
	        "certgate.json:15:65: rules[6].mode: expected \"enforce\" or \"permissive\"",
	        "certgate.json:17:61: rules[7].when.at: unknown key",
	        "certgate.json:17:25: rules[7].when.days: expected a list of days like [\"mon\", "
	        "\"tue\", \"wed\"]",
	        "certgate.json:17:35: rules[7].when.tz: expected a time zone name like "
	        "\"Europe/Berlin\" or \"UTC\"",
	        "certgate.json:19:26: rules[8].when.hours: expected \"HH:MM-HH:MM\" in 24-hour "
	        "local "
	        "time, start and end different (\"08:00-18:00\", \"22:00-06:00\", "
	        "\"00:00-24:00\")");
}

/* A valid when and mode load, are shown as in force, and zones are shared. */
static void test_when_loads(void **state)
{
	(void)state;
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "               \"client_ca\": \"ca\" },\n"
	           "  \"services\": [ { \"name\": \"tun\", \"upstream\": \"h:1\" } ],\n"
	           "  \"rules\": [\n"
	           "    { \"name\": \"a\", \"effect\": \"allow\", \"mode\": \"enforce\", "
	           "\"services\": [\"*\"],\n"
	           "      \"when\": { \"days\": [\"FRI\", \"mon\", \"sun\"], \"hours\": "
	           "\"22:00-06:00\",\n"
	           "                \"tz\": \"Europe/Berlin\", \"from\": "
	           "\"2026-12-01T01:00:00+01:00\",\n"
	           "                \"until\": \"2027-01-01T00:00:00Z\" } },\n"
	           "    { \"name\": \"b\", \"effect\": \"deny\", \"mode\": \"permissive\", "
	           "\"services\": "
	           "[\"*\"],\n"
	           "      \"when\": { \"hours\": \"00:00-24:00\", \"tz\": \"Europe/Berlin\" } }\n"
	           "  ]\n"
	           "}\n");
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_non_null(snap->rules[0].when);
	assert_ptr_equal(snap->rules[0].when->tz, snap->rules[1].when->tz);
	assert_int_equal(cg_strmap_count(snap->zones), 1);
	assert_false(snap->rules[0].permissive);
	assert_true(snap->rules[1].permissive);
	char *shown = json_dumps(json_object_get(snap->shown, "rules"), JSON_COMPACT);
	assert_string_equal(
	        shown,
	        "[{\"name\":\"a\",\"effect\":\"allow\",\"services\":[\"*\"],\"when\":{\"days\":"
	        "[\"mon\",\"fri\",\"sun\"],\"hours\":\"22:00-06:00\",\"tz\":\"Europe/Berlin\","
	        "\"from\":\"2026-12-01T00:00:00.000Z\",\"until\":\"2027-01-01T00:00:00.000Z\"}},"
	        "{\"name\":\"b\",\"effect\":\"deny\",\"mode\":\"permissive\",\"services\":[\"*\"],"
	        "\"when\":{\"hours\":\"00:00-24:00\",\"tz\":\"Europe/Berlin\"}}]");
	free(shown);
	pol_snapshot_unref(snap);
}

/* function_calls: "audit" (the default) or "refuse", postgres mode only. */
static void test_function_calls(void **state)
{
	(void)state;
	static const char head[] =
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\", \"client_ca\": \"ca\" },\n"
	        "  \"rules\": [],\n"
	        "  \"services\": [\n";
	static const char tls[] = "\"upstream_tls\": { \"ca\": \"a\", \"server_name\": \"pg\", "
	                          "\"client_ca_cert\": \"d\", \"client_ca_key\": \"e\" }";
	char text[2048];
	snprintf(text, sizeof(text),
	         "%s"
	         "    { \"name\": \"a\", \"upstream\": \"h:1\", \"mode\": \"postgres\", %s },\n"
	         "    { \"name\": \"b\", \"upstream\": \"h:1\", \"mode\": \"postgres\", %s,\n"
	         "      \"function_calls\": \"refuse\" },\n"
	         "    { \"name\": \"c\", \"upstream\": \"h:1\", \"mode\": \"postgres\", %s,\n"
	         "      \"function_calls\": \"audit\" }\n"
	         "  ]\n}\n",
	         head, tls, tls, tls);
	write_file("certgate.json", text);
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_int_equal(snap->services[0].function_calls, POL_FCALL_AUDIT);
	assert_int_equal(snap->services[1].function_calls, POL_FCALL_REFUSE);
	assert_int_equal(snap->services[2].function_calls, POL_FCALL_AUDIT);
	pol_snapshot_unref(snap);

	snprintf(text, sizeof(text),
	         "%s"
	         "    { \"name\": \"a\", \"upstream\": \"h:1\", \"mode\": \"postgres\", %s,\n"
	         "      \"function_calls\": \"log\" },\n"
	         "    { \"name\": \"b\", \"upstream\": \"h:1\", \"function_calls\": \"audit\" }\n"
	         "  ]\n}\n",
	         head, tls);
	write_file("certgate.json", text);
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:5:25: services[0].function_calls: expected \"audit\" or "
	              "\"refuse\"",
	              "certgate.json:6:57: services[1].function_calls: function_calls applies only "
	              "to postgres-mode services");
}

/* description and client_port: what the user's catalog shows; the
 * catalog's server name is no service's. */
static void test_catalog_keys(void **state)
{
	(void)state;
	static const char head[] =
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\", \"client_ca\": \"ca\" },\n"
	        "  \"rules\": [],\n"
	        "  \"services\": [\n";
	char text[4096];
	snprintf(text, sizeof(text),
	         "%s"
	         "    { \"name\": \"a\", \"upstream\": \"h:1\", \"client_port\": 15432,\n"
	         "      \"description\": \"Orders (read/write) \u2014 prod\" },\n"
	         "    { \"name\": \"b\", \"upstream\": \"h:1\", \"client_port\": 65535 },\n"
	         "    { \"name\": \"c\", \"upstream\": \"h:1\" }\n"
	         "  ]\n}\n",
	         head);
	write_file("certgate.json", text);
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_int_equal(snap->services[0].client_port, 15432);
	assert_string_equal(snap->services[0].description, "Orders (read/write) \xe2\x80\x94 prod");
	assert_int_equal(snap->services[1].client_port, 65535);
	assert_null(snap->services[1].description);
	assert_int_equal(snap->services[2].client_port, 0);
	json_t *shown = json_array_get(json_object_get(snap->shown, "services"), 0);
	assert_int_equal(json_integer_value(json_object_get(shown, "client_port")), 15432);
	assert_non_null(json_object_get(shown, "description"));
	pol_snapshot_unref(snap);

	char long_text[300];
	memset(long_text, 'x', 257);
	long_text[257] = '\0';
	snprintf(text, sizeof(text),
	         "%s"
	         "    { \"name\": \"a\", \"upstream\": \"h:1\", \"client_port\": 0 },\n"
	         "    { \"name\": \"b\", \"upstream\": \"h:1\", \"client_port\": 65536 },\n"
	         "    { \"name\": \"c\", \"upstream\": \"h:1\", \"client_port\": \"5432\" },\n"
	         "    { \"name\": \"d\", \"upstream\": \"h:1\", \"client_port\": 7000 },\n"
	         "    { \"name\": \"e\", \"upstream\": \"h:1\", \"client_port\": 7000 },\n"
	         "    { \"name\": \"f\", \"upstream\": \"h:1\", \"description\": \"a\\nb\" },\n"
	         "    { \"name\": \"g\", \"upstream\": \"h:1\", \"description\": \"\" },\n"
	         "    { \"name\": \"h\", \"upstream\": \"h:1\", \"description\": \"%s\" },\n"
	         "    { \"name\": \"Certgate-Catalog\", \"upstream\": \"h:1\" },\n"
	         "    { \"name\": \"i\", \"upstream\": \"h:1\", \"sni\": [\"certgate-catalog\"] }\n"
	         "  ]\n}\n",
	         head, long_text);
	write_file("certgate.json", text);
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:4:54: services[0].client_port: expected a port number from 1 to "
	        "65535",
	        "certgate.json:5:54: services[1].client_port: expected a port number from 1 to "
	        "65535",
	        "certgate.json:6:54: services[2].client_port: expected a port number from 1 to "
	        "65535",
	        "certgate.json:8:54: services[4].client_port: port 7000 is also the client_port of "
	        "services[3]",
	        "certgate.json:9:54: services[5].description: expected 1 to 256 bytes of UTF-8 "
	        "text "
	        "without control characters",
	        "certgate.json:10:54: services[6].description: expected a non-empty string",
	        "certgate.json:11:54: services[7].description: expected 1 to 256 bytes of UTF-8 "
	        "text without control characters",
	        "certgate.json:12:15: services[8].name: \"Certgate-Catalog\" is reserved for the "
	        "user's catalog (certgate services)",
	        "certgate.json:13:47: services[9].sni[0]: \"certgate-catalog\" is reserved for the "
	        "user's catalog (certgate services)");
}

static void test_services_required(void **state)
{
	(void)state;
	write_file("certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\",\n"
	           "  \"key\": \"k\", \"client_ca\": \"ca\" }, \"services\": [] }\n");
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:2:48: services: expected a non-empty array of services");
	write_file("certgate.json", "{}\n");
	EXPECT_ERRORS("certgate.json", "certgate.json:1:1: missing required key \"gateway\"",
	              "certgate.json:1:1: missing required key \"services\"");
	write_file("certgate.json", "[]\n");
	EXPECT_ERRORS("certgate.json", "certgate.json:1:1: expected a JSON object");
	write_file("certgate.json", "{ \"gateway\": {}, }\n");
	{
		cg_errors_t errs;
		assert_null(load("certgate.json", &errs));
		assert_int_equal(errs.count, 1);
		assert_non_null(strstr(errs.items[0], "certgate.json:1:"));
		cg_errors_finish(&errs);
	}
	{
		cg_errors_t errs;
		assert_null(load("missing.json", &errs));
		assert_int_equal(errs.count, 1);
		assert_non_null(strstr(errs.items[0], "missing.json"));
		cg_errors_finish(&errs);
	}
}

static const char split_config[] =
        "{\n"
        "  \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": \"k\",\n"
        "               \"client_ca\": \"ca\" },\n"
        "  \"services\": [ { \"name\": \"orders-db\", \"upstream\": \"h:1\" } ],\n"
        "  \"policy_file\": \"policy/policy.json\"\n"
        "}\n";

static void test_policy_file(void **state)
{
	pol_snapshot_t *snap;
	char path[PATH_MAX * 2];
	(void)state;

	if (mkdir("policy", 0700) != 0)
		fail();
	write_file("certgate.json", split_config);
	write_file("policy/policy.json", "{\n"
	                                 "  \"claims\": { \"user\": [\"subject:CN\"] },\n"
	                                 "  \"rules\": [ { \"name\": \"all\", \"effect\": "
	                                 "\"allow\", \"services\": [\"*\"] } ]\n"
	                                 "}\n");
	snap = load_ok("certgate.json");
	snprintf(path, sizeof(path), "%s/policy/policy.json", tmpdir);
	assert_string_equal(snap->policy_path, path);
	assert_int_equal(snap->n_rules, 1);
	assert_string_equal(snap->rules[0].name, "all");
	assert_int_equal(snap->claims.user.count, 1);
	assert_string_equal(snap->claims.user.items[0].text, "subject:CN");
	assert_string_equal(json_string_value(json_object_get(snap->shown, "policy_file")), path);
	pol_snapshot_unref(snap);

	/* errors in the policy file point into the policy file */
	write_file("policy/policy.json",
	           "{\n"
	           "  \"rules\": [\n"
	           "    { \"name\": \"a\", \"effect\": \"allow\", \"services\": [\"billing\"] },\n"
	           "    { \"name\": \"b\", \"effect\": \"allow\", \"services\": [\"*\"], "
	           "\"min_trust\": \"hi\" }\n"
	           "  ],\n"
	           "  \"claims\": { \"user\": [\"san:emial\"] },\n"
	           "  \"services\": []\n"
	           "}\n");
	EXPECT_ERRORS(
	        "certgate.json", "policy/policy.json:7:15: services: unknown key",
	        "policy/policy.json:6:24: claims.user[0]: unknown source (expected "
	        "subject:ATTR, san:email, san:dns, san:uri:PREFIX or ext:OID)",
	        "policy/policy.json:3:52: rules[0].services[0]: unknown service \"billing\"",
	        "policy/policy.json:4:71: rules[1].min_trust: expected one of \"always_deny\", "
	        "\"low\", \"medium\", \"high\"");

	/* claims or rules in both files: an error, in the main config */
	write_file("policy/policy.json", "{ \"rules\": [] }\n");
	write_file("certgate.json",
	           "{\n"
	           "  \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	           "\"k\",\n"
	           "               \"client_ca\": \"ca\" },\n"
	           "  \"services\": [ { \"name\": \"orders-db\", \"upstream\": \"h:1\" } ],\n"
	           "  \"claims\": {},\n"
	           "  \"rules\": [],\n"
	           "  \"policy_file\": \"policy/policy.json\"\n"
	           "}\n");
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:5:13: claims: not allowed here when policy_file is set (it "
	        "holds the claims)",
	        "certgate.json:6:12: rules: not allowed here when policy_file is set (it holds "
	        "the rules)");

	/* a missing policy file is an error naming it */
	write_file("certgate.json", split_config);
	if (unlink("policy/policy.json") != 0)
		fail();
	EXPECT_ERRORS("certgate.json", "policy/policy.json: No such file or directory");
}

/* Relative paths resolve against the folder of the config file, not the
 * working directory; the policy file is found the same way. */
static void test_relative_paths(void **state)
{
	pol_snapshot_t *snap;
	char want[PATH_MAX * 2];
	(void)state;

	if (mkdir("etc", 0700) != 0 || mkdir("etc/certgate", 0700) != 0)
		fail();
	write_file("etc/certgate/certgate.json",
	           "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"tls/gw.crt\",\n"
	           "    \"key\": \"./tls/gw.key\", \"client_ca\": \"/abs/ca.crt\", \"crl\": "
	           "\"../crl.pem\" },\n"
	           "  \"audit\": { \"path\": \"log/audit.jsonl\" },\n"
	           "  \"admin\": { \"token_file\": \"admin.token\" },\n"
	           "  \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ],\n"
	           "  \"policy_file\": \"policy.json\" }\n");
	write_file("etc/certgate/policy.json", "{ \"rules\": [] }\n");
	snap = load_ok("etc/certgate/certgate.json");
	snprintf(want, sizeof(want), "%s/etc/certgate/certgate.json", tmpdir);
	assert_string_equal(snap->config_path, want);
	assert_path(snap->gateway.cert.path, "etc/certgate/tls/gw.crt");
	assert_path(snap->gateway.key.path, "etc/certgate/tls/gw.key");
	assert_string_equal(snap->gateway.client_ca.path, "/abs/ca.crt");
	assert_path(snap->gateway.crl.path, "etc/certgate/../crl.pem");
	assert_path(snap->audit.path, "etc/certgate/log/audit.jsonl");
	assert_path(snap->admin.token_file.path, "etc/certgate/admin.token");
	assert_path(snap->policy_path, "etc/certgate/policy.json");
	assert_where(&snap->gateway.cert, "etc/certgate/certgate.json:1:52: gateway.cert");
	pol_snapshot_unref(snap);
}

static void sha256_hex(const char *a, const char *b, char out[65])
{
	unsigned char md[32];
	unsigned len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	assert_non_null(ctx);
	assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_DigestUpdate(ctx, a, strlen(a)), 1);
	if (b)
		assert_int_equal(EVP_DigestUpdate(ctx, b, strlen(b)), 1);
	assert_int_equal(EVP_DigestFinal_ex(ctx, md, &len), 1);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_sha256(void **state)
{
	static const char policy1[] = "{ \"rules\": [] }\n";
	static const char policy2[] = "{ \"rules\": [ { \"name\": \"x\", \"effect\": \"deny\", "
	                              "\"services\": [\"*\"] } ] }\n";
	pol_snapshot_t *snap;
	char first[65], want[65];
	(void)state;

	if (mkdir("policy", 0700) != 0)
		fail();
	write_file("certgate.json", split_config);
	write_file("policy/policy.json", policy1);
	snap = load_ok("certgate.json");
	sha256_hex(split_config, policy1, want);
	assert_string_equal(snap->sha256, want);
	memcpy(first, snap->sha256, sizeof(first));
	pol_snapshot_unref(snap);

	write_file("policy/policy.json", policy2);
	snap = load_ok("certgate.json");
	sha256_hex(split_config, policy2, want);
	assert_string_equal(snap->sha256, want);
	assert_string_not_equal(snap->sha256, first);
	pol_snapshot_unref(snap);

	/* without a policy file: the config bytes alone */
	write_file("certgate.json", minimal);
	snap = load_ok("certgate.json");
	sha256_hex(minimal, NULL, want);
	assert_string_equal(snap->sha256, want);
	pol_snapshot_unref(snap);
}

/* audit: chain (default on), its state file (default PATH.state, none for
 * stdout), and syslog's address, facility and format. */
static void test_audit_section(void **state)
{
	(void)state;
	static const char head[] =
	        "{ \"gateway\": { \"listen\": [\"0.0.0.0:8443\"], \"cert\": \"c\", \"key\": "
	        "\"k\", \"client_ca\": \"ca\" },\n"
	        "  \"rules\": [], \"services\": [ { \"name\": \"a\", \"upstream\": \"h:1\" } ],\n";
	char text[2048], want[PATH_MAX + 32];

	snprintf(text, sizeof(text), "%s  \"audit\": { \"path\": \"audit.jsonl\" }\n}\n", head);
	write_file("certgate.json", text);
	pol_snapshot_t *snap = load_ok("certgate.json");
	assert_true(snap->audit.chain);
	snprintf(want, sizeof(want), "%s/audit.jsonl.state", tmpdir);
	assert_string_equal(snap->audit.state, want);
	assert_int_equal(snap->audit.syslog.transport, POL_SYSLOG_NONE);
	json_t *shown = json_object_get(snap->shown, "audit");
	assert_true(json_is_true(json_object_get(shown, "chain")));
	assert_string_equal(json_string_value(json_object_get(shown, "state")), want);
	pol_snapshot_unref(snap);

	/* stdout: no state unless named; chain off: none */
	snprintf(text, sizeof(text), "%s  \"audit\": { \"path\": \"-\" }\n}\n", head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	assert_true(snap->audit.chain);
	assert_null(snap->audit.state);
	pol_snapshot_unref(snap);
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"path\": \"-\", \"state\": \"run/chain.state\" }\n}\n", head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	snprintf(want, sizeof(want), "%s/run/chain.state", tmpdir);
	assert_string_equal(snap->audit.state, want);
	pol_snapshot_unref(snap);
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"path\": \"a.jsonl\", \"chain\": false }\n}\n", head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	assert_false(snap->audit.chain);
	assert_null(snap->audit.state);
	pol_snapshot_unref(snap);

	/* syslog */
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"syslog\": { \"address\": \"tcp:siem.example:6514\",\n"
	         "    \"facility\": \"local3\", \"format\": \"rfc5424\" } }\n}\n",
	         head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	const pol_syslog_cfg_t *sl = &snap->audit.syslog;
	assert_int_equal(sl->transport, POL_SYSLOG_TCP);
	assert_string_equal(sl->host.host, "siem.example");
	assert_int_equal(sl->host.port, 6514);
	assert_int_equal(sl->facility, 19);
	assert_string_equal(sl->address, "tcp:siem.example:6514");
	shown = json_object_get(json_object_get(snap->shown, "audit"), "syslog");
	assert_string_equal(json_string_value(json_object_get(shown, "facility")), "local3");
	pol_snapshot_unref(snap);
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"syslog\": { \"address\": \"unix:/dev/log\" } }\n}\n", head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	assert_int_equal(snap->audit.syslog.transport, POL_SYSLOG_UNIX);
	assert_string_equal(snap->audit.syslog.unix_path, "/dev/log");
	assert_int_equal(snap->audit.syslog.facility, 4); /* auth */
	pol_snapshot_unref(snap);
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"syslog\": { \"address\": \"udp:[::1]:514\" } }\n}\n", head);
	write_file("certgate.json", text);
	snap = load_ok("certgate.json");
	assert_int_equal(snap->audit.syslog.transport, POL_SYSLOG_UDP);
	assert_string_equal(snap->audit.syslog.host.host, "::1");
	pol_snapshot_unref(snap);

	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"path\": \"a.jsonl\", \"chain\": false, \"state\": \"s\",\n"
	         "    \"syslog\": { \"address\": \"smtp:x:1\", \"facility\": \"mail2\",\n"
	         "      \"format\": \"rfc3164\", \"tls\": true } }\n}\n",
	         head);
	write_file("certgate.json", text);
	EXPECT_ERRORS("certgate.json",
	              "certgate.json:3:58: audit.state: applies only with audit.chain on",
	              "certgate.json:4:28: audit.syslog.address: expected \"unix:/PATH\", "
	              "\"udp:HOST:PORT\" or \"tcp:HOST:PORT\"",
	              "certgate.json:4:52: audit.syslog.facility: expected a facility name: auth, "
	              "authpriv, daemon, user, local0 ... local7, security, ...",
	              "certgate.json:5:17: audit.syslog.format: expected \"rfc5424\"",
	              "certgate.json:5:35: audit.syslog.tls: unknown key");
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"path\": \"a\", \"state\": \"a\",\n"
	         "    \"syslog\": { \"address\": \"unix:dev/log\" } }\n}\n",
	         head);
	write_file("certgate.json", text);
	EXPECT_ERRORS(
	        "certgate.json",
	        "certgate.json:3:36: audit.state: must not be the audit log itself",
	        "certgate.json:4:28: audit.syslog.address: expected \"unix:\" and an absolute "
	        "socket path (at most 107 bytes)");
	snprintf(text, sizeof(text),
	         "%s  \"audit\": { \"syslog\": { \"address\": \"tcp:nohost\" } }\n}\n", head);
	write_file("certgate.json", text);
	EXPECT_ERRORS("certgate.json", "certgate.json:3:37: audit.syslog.address: expected "
	                               "\"unix:/PATH\", \"udp:HOST:PORT\" or \"tcp:HOST:PORT\" "
	                               "(expected \"host:port\")");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	        T(test_example_db_users_on_tunnel),
	        T(test_example),
	        T(test_defaults),
	        T(test_shown_has_no_key_material),
	        T(test_all_errors),
	        T(test_unknown_keys),
	        T(test_bad_durations),
	        T(test_idle_timeout_zero),
	        T(test_verify_cache_switch),
	        T(test_crl_check),
	        T(test_handshakes_per_source),
	        T(test_bad_listen),
	        T(test_gateway_listen_optional),
	        T(test_services_rules_checks),
	        T(test_services_required),
	        T(test_function_calls),
	        T(test_when_and_mode),
	        T(test_when_loads),
	        T(test_catalog_keys),
	        T(test_policy_file),
	        T(test_relative_paths),
	        T(test_sha256),
	        T(test_audit_section),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
