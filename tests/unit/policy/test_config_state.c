/* The "state" section (policy/pol_config_state.c): both backends, the
 * postgres connection string read the way libpq reads it, the schema's
 * identifier rule, what GET /v1/policy shows of the DSN (never its
 * password) and the warnings of `certgate check` about it. Each case is
 * one configuration with its state block written at line 3, so every
 * error's position reads right here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pol_config.h"
#include "pol_lint.h"

static char tmpdir[PATH_MAX];

/* A configuration whose line 3 is `"state": STATE,`. */
static void write_config(const char *state)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/certgate.json", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	        "{\n"
	        "  \"gateway\": {\"listen\": [\"127.0.0.1:8443\"], \"cert\": \"g.crt\", \"key\": "
	        "\"g.key\", \"client_ca\": \"ca.crt\"},\n"
	        "  \"state\": %s,\n"
	        "  \"services\": [{\"name\": \"db\", \"upstream\": \"127.0.0.1:5432\"}]\n"
	        "}\n",
	        state);
	assert_int_equal(fclose(f), 0);
}

/* Loads a configuration with this state block: the snapshot, or NULL with
 * the one error (its path cut off) in err. */
static pol_snapshot_t *load(const char *state, char *err, size_t errlen)
{
	char path[PATH_MAX + 32];
	cg_errors_t errs;
	write_config(state);
	snprintf(path, sizeof(path), "%s/certgate.json", tmpdir);
	cg_errors_init(&errs);
	pol_snapshot_t *snap = pol_snapshot_load(path, &errs);
	err[0] = '\0';
	if (errs.count > 0) {
		const char *e = errs.items[0];
		const char *cut = strstr(e, "certgate.json:");
		snprintf(err, errlen, "%s", cut != NULL ? cut + strlen("certgate.json:") : e);
	}
	if (errs.count > 1)
		print_error("more than one error, the second: %s\n", errs.items[1]);
	assert_true(errs.count <= 1);
	cg_errors_finish(&errs);
	return snap;
}

/* The error must be msg at the value that starts with at (line 3; the
 * state object starts at column 12). */
static void expect_error(const char *state, const char *at, const char *msg)
{
	char err[1024], want[1024];
	const char *where = strstr(state, at);
	assert_non_null(where);
	snprintf(want, sizeof(want), "3:%d: %s", 12 + (int)(where - state), msg);
	pol_snapshot_t *snap = load(state, err, sizeof(err));
	if (snap != NULL || strcmp(err, want) != 0)
		print_error("state %s\n  got  %s\n  want %s\n", state, err, want);
	assert_null(snap);
	assert_string_equal(err, want);
}

static pol_snapshot_t *load_ok(const char *state)
{
	char err[1024];
	pol_snapshot_t *snap = load(state, err, sizeof(err));
	if (snap == NULL)
		print_error("state %s: %s\n", state, err);
	assert_non_null(snap);
	return snap;
}

static int setup(void **unused)
{
	(void)unused;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/certgate-test-state-XXXXXX");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown(void **unused)
{
	(void)unused;
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/certgate.json", tmpdir);
	unlink(path);
	return rmdir(tmpdir);
}

static void test_file_backend(void **unused)
{
	(void)unused;
	pol_snapshot_t *snap = load_ok("{\"dir\": \"state\"}");
	assert_string_equal(snap->state.backend, "file");
	assert_non_null(strstr(snap->state.dir, "/state"));
	assert_null(snap->state.dsn);
	pol_snapshot_unref(snap);
	expect_error("{\"backend\": \"file\", \"dir\": \"s\", \"dsn\": \"host=x\"}", "\"host=x",
	             "state.dsn: only with backend \"postgres\"");
	expect_error("{\"backend\": \"file\", \"dir\": \"s\", \"schema\": \"x\"}", "\"x\"",
	             "state.schema: only with backend \"postgres\"");
	expect_error("{\"backend\": \"redis\"}", "\"redis",
	             "state.backend: expected \"file\" or \"postgres\"");
}

static void test_postgres_backend(void **unused)
{
	(void)unused;
	pol_snapshot_t *snap = load_ok(
	        "{\"backend\": \"postgres\", \"dsn\": \"postgresql://cg@db1.internal:5433/state"
	        "?sslmode=verify-full&sslrootcert=/etc/certgate/db-ca.crt\"}");
	assert_string_equal(snap->state.backend, "postgres");
	assert_string_equal(snap->state.schema, "certgate"); /* the default */
	assert_null(snap->state.dir);
	assert_false(snap->state.dsn_has_password);
	assert_false(snap->state.dsn_unverified);
	pol_snapshot_unref(snap);

	snap = load_ok("{\"backend\": \"postgres\", \"schema\": \"cg_prod_2\", \"dsn\": "
	               "\"host=/run/postgresql dbname=state\"}");
	assert_string_equal(snap->state.schema, "cg_prod_2");
	assert_false(snap->state.dsn_unverified); /* a socket folder: no network to trust */
	pol_snapshot_unref(snap);
}

static void test_postgres_errors(void **unused)
{
	(void)unused;
	expect_error("{\"backend\": \"postgres\"}", "{", "state: missing required key \"dsn\"");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host='db dbname=x\"}", "\"host",
	             "state.dsn: unterminated quoted string in connection info string");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host=db colour=blue\"}", "\"host",
	             "state.dsn: invalid connection option \"colour\"");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"postgresql://[::1/x\"}",
	             "\"postgresql",
	             "state.dsn: end of string reached when looking for matching \"]\" in IPv6 "
	             "host address in URI: \"postgresql://[::1/x\"");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"\"}", "\"\"",
	             "state.dsn: expected a non-empty string");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host=db\\u0007\"}", "\"host",
	             "state.dsn: expected a libpq connection string (\"postgresql://...\" or "
	             "\"host=... dbname=...\")");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"service=certgate\"}", "\"service",
	             "state.dsn: service= is not supported: write the host and the other settings "
	             "in the connection string itself");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host=a,b hostaddr=10.0.0.1\"}",
	             "\"host", "state.dsn: 2 host names but 1 hostaddr values");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host=a,b,c port=1,2\"}", "\"host",
	             "state.dsn: 2 ports for 3 hosts");
	expect_error("{\"backend\": \"postgres\", \"dsn\": \"host=x\", \"dir\": \"s\"}", "\"s\"",
	             "state.dir: only with backend \"file\"");
	static const char *const bad_schemas[] = {
	        "Certgate",
	        "cert-gate",
	        "9lives",
	        "pg_state",
	        "a b",
	        "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd", /* 64 */
	};
	for (size_t i = 0; i < sizeof(bad_schemas) / sizeof(bad_schemas[0]); i++) {
		char state[256];
		snprintf(state, sizeof(state),
		         "{\"backend\": \"postgres\", \"dsn\": \"host=x\", \"schema\": \"%s\"}",
		         bad_schemas[i]);
		/* the value after the last ": " */
		expect_error(
		        state, strrchr(state, ':') + 2,
		        "state.schema: expected a lowercase SQL identifier (a-z, 0-9 and _, not "
		        "starting with a digit or pg_, at most 63 characters)");
	}
}

/* GET /v1/policy shows the DSN as libpq reads it, never its password. */
static void test_shown_without_password(void **unused)
{
	(void)unused;
	pol_snapshot_t *snap =
	        load_ok("{\"backend\": \"postgres\", \"dsn\": "
	                "\"postgresql://cg:s3cr%27t@db:5432/state?sslmode=require\"}");
	assert_true(snap->state.dsn_has_password);
	const char *shown = snap->state.dsn_shown;
	assert_null(strstr(shown, "s3cr"));
	assert_non_null(strstr(shown, "password=********"));
	assert_non_null(strstr(shown, "host=db"));
	assert_non_null(strstr(shown, "sslmode=require"));
	char *policy = json_dumps(snap->shown, 0);
	assert_non_null(policy);
	assert_null(strstr(policy, "s3cr"));
	assert_non_null(strstr(policy, "\"schema\": \"certgate\""));
	free(policy);
	pol_snapshot_unref(snap);

	/* a value with a space is quoted back the way libpq reads it */
	snap = load_ok(
	        "{\"backend\": \"postgres\", \"dsn\": \"host=db application_name='a b\\\\'c'\"}");
	assert_non_null(strstr(snap->state.dsn_shown, "application_name='a b\\'c'"));
	pol_snapshot_unref(snap);
}

static void expect_warnings(const char *state, const char *const *want, size_t n)
{
	pol_snapshot_t *snap = load_ok(state);
	cg_errors_t warnings;
	cg_errors_init(&warnings);
	pol_lint(snap, &warnings);
	for (size_t i = 0; i < warnings.count; i++)
		print_error("warning: %s\n", warnings.items[i]);
	assert_int_equal(warnings.count, n);
	for (size_t i = 0; i < n; i++)
		assert_non_null(strstr(warnings.items[i], want[i]));
	cg_errors_finish(&warnings);
	pol_snapshot_unref(snap);
}

static void test_warnings(void **unused)
{
	(void)unused;
	static const char *const both[] = {
	        "3:43: warning: state.dsn: the connection string holds a password: put it in a "
	        "passfile",
	        "3:43: warning: state.dsn: sslmode=prefer (libpq's default) does not verify the "
	        "state database's certificate",
	};
	expect_warnings("{\"backend\": \"postgres\", \"dsn\": \"host=db password=x\"}", both, 2);
	static const char *const require[] = {
	        "state.dsn: sslmode=require does not verify the state database's certificate",
	};
	expect_warnings(
	        "{\"backend\": \"postgres\", \"dsn\": \"hostaddr=10.0.0.5 sslmode=require\"}",
	        require, 1);
	expect_warnings("{\"backend\": \"postgres\", \"dsn\": \"host=db sslmode=verify-full "
	                "passfile=/etc/certgate/pgpass\"}",
	                NULL, 0);
	expect_warnings("{\"backend\": \"postgres\", \"dsn\": \"host=/run/postgresql\"}", NULL, 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	        T(test_file_backend),           T(test_postgres_backend), T(test_postgres_errors),
	        T(test_shown_without_password), T(test_warnings),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
