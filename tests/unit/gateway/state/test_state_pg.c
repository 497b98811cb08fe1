/* The PostgreSQL backend's parts that need no database
 * (gateway/state/state_pg*.c): the connection string made safe for a
 * non-blocking connect (names paired with the addresses the gateway looked
 * up), the reconnection backoff, record ids in notifications, the SQL with
 * the schema written in, and a state whose store is away: changes kept
 * with the time they were made (what the last-writer-wins rule compares),
 * the rows a write would send, lock ids no other gateway can pick, and
 * token claims refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cg_time.h"
#include "state/state.h"
#include "state/state_pg.h"

static const char *value_of(const gw_pg_params_t *p, const char *key)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->keywords[i], key) == 0)
			return p->values[i];
	return NULL;
}

static char *addr_list[4][4];

/* resolved[i] holds the given addresses for host i (NULL-terminated). */
static gw_pg_resolved_t *resolve(const gw_pg_dsn_t *dsn, const char *const *const *addrs)
{
	gw_pg_resolved_t *r = calloc(dsn->n_hosts, sizeof(*r));
	assert_non_null(r);
	for (size_t i = 0; i < dsn->n_hosts && addrs[i] != NULL; i++) {
		r[i].addrs = addr_list[i];
		for (size_t k = 0; addrs[i][k] != NULL; k++)
			r[i].addrs[r[i].n++] = (char *)addrs[i][k];
		if (r[i].n == 0)
			snprintf(r[i].error, sizeof(r[i].error), "unknown node or service");
	}
	return r;
}

static void test_names_paired_with_addresses(void **unused)
{
	(void)unused;
	gw_pg_dsn_t dsn;
	gw_pg_params_t p;
	char err[256];
	assert_true(gw_pg_dsn_parse(&dsn,
	                            "postgresql://cg@db.internal:5433/state?sslmode=verify-full"
	                            "&application_name=cg-eu1",
	                            NULL, err, sizeof(err)));
	assert_int_equal(dsn.n_hosts, 1);
	assert_true(dsn.hosts[0].resolve);
	static const char *const a0[] = {"10.0.0.1", "fd00::7", NULL};
	static const char *const *const addrs[] = {a0, NULL};
	gw_pg_resolved_t *r = resolve(&dsn, addrs);
	assert_int_equal(gw_pg_params_build(&dsn, r, &p, err, sizeof(err)), 0);
	/* libpq connects to each address and checks the certificate against
	 * the name */
	assert_string_equal(value_of(&p, "host"), "db.internal,db.internal");
	assert_string_equal(value_of(&p, "hostaddr"), "10.0.0.1,fd00::7");
	assert_string_equal(value_of(&p, "port"), "5433,5433");
	assert_string_equal(value_of(&p, "dbname"), "state");
	assert_string_equal(value_of(&p, "user"), "cg");
	assert_string_equal(value_of(&p, "sslmode"), "verify-full");
	/* the gateway's defaults only where the string says nothing */
	assert_string_equal(value_of(&p, "application_name"), "cg-eu1");
	assert_string_equal(value_of(&p, "keepalives"), "1");
	assert_string_equal(value_of(&p, "tcp_user_timeout"), "15000");
	assert_string_equal(value_of(&p, "gssencmode"), "disable");
	assert_null(p.keywords[p.n]);
	gw_pg_params_finish(&p);
	free(r);
	gw_pg_dsn_finish(&dsn);
}

static void test_sockets_and_given_addresses_need_no_lookup(void **unused)
{
	(void)unused;
	gw_pg_dsn_t dsn;
	gw_pg_params_t p;
	char err[256];
	assert_true(gw_pg_dsn_parse(&dsn,
	                            "host=a.example,/run/postgresql,b.example "
	                            "hostaddr=,,192.0.2.9 port=6001,6002,6003 dbname=s",
	                            NULL, err, sizeof(err)));
	assert_int_equal(dsn.n_hosts, 3);
	assert_true(dsn.hosts[0].resolve);
	assert_false(dsn.hosts[1].resolve); /* a socket folder */
	assert_false(dsn.hosts[2].resolve); /* its address is given */
	static const char *const a0[] = {"198.51.100.1", NULL};
	static const char *const none[] = {NULL};
	static const char *const *const addrs[] = {a0, none, none, NULL};
	gw_pg_resolved_t *r = resolve(&dsn, addrs);
	assert_int_equal(gw_pg_params_build(&dsn, r, &p, err, sizeof(err)), 0);
	assert_string_equal(value_of(&p, "host"), "a.example,/run/postgresql,b.example");
	assert_string_equal(value_of(&p, "hostaddr"), "198.51.100.1,,192.0.2.9");
	assert_string_equal(value_of(&p, "port"), "6001,6002,6003");
	gw_pg_params_finish(&p);
	free(r);
	gw_pg_dsn_finish(&dsn);

	/* only a socket: nothing to look up, no hostaddr at all */
	assert_true(gw_pg_dsn_parse(&dsn, "host=/tmp/pg dbname=s", NULL, err, sizeof(err)));
	assert_false(dsn.hosts[0].resolve);
	r = resolve(&dsn, addrs);
	assert_int_equal(gw_pg_params_build(&dsn, r, &p, err, sizeof(err)), 0);
	assert_string_equal(value_of(&p, "host"), "/tmp/pg");
	assert_null(value_of(&p, "hostaddr"));
	assert_null(value_of(&p, "port"));
	gw_pg_params_finish(&p);
	free(r);
	gw_pg_dsn_finish(&dsn);
}

static void test_lookups_that_fail(void **unused)
{
	(void)unused;
	gw_pg_dsn_t dsn;
	gw_pg_params_t p;
	char err[256];
	/* one of two names: the other is used */
	assert_true(gw_pg_dsn_parse(&dsn, "host=gone.example,db2.example", NULL, err, sizeof(err)));
	static const char *const none[] = {NULL};
	static const char *const a1[] = {"192.0.2.2", NULL};
	static const char *const *const addrs[] = {none, a1, NULL};
	gw_pg_resolved_t *r = resolve(&dsn, addrs);
	assert_int_equal(gw_pg_params_build(&dsn, r, &p, err, sizeof(err)), 0);
	assert_string_equal(value_of(&p, "host"), "db2.example");
	assert_string_equal(value_of(&p, "hostaddr"), "192.0.2.2");
	gw_pg_params_finish(&p);
	free(r);
	/* none left: the attempt fails with the first name's reason */
	static const char *const *const nothing[] = {none, none, NULL};
	r = resolve(&dsn, nothing);
	assert_int_equal(gw_pg_params_build(&dsn, r, &p, err, sizeof(err)), -1);
	assert_string_equal(err, "cannot resolve gone.example: unknown node or service");
	free(r);
	gw_pg_dsn_finish(&dsn);

	/* PGHOST stands in for a missing host, and is looked up too */
	assert_true(gw_pg_dsn_parse(&dsn, "dbname=s", "pg.example", err, sizeof(err)));
	assert_int_equal(dsn.n_hosts, 1);
	assert_true(dsn.hosts[0].resolve);
	assert_string_equal(dsn.hosts[0].host, "pg.example");
	gw_pg_dsn_finish(&dsn);
}

static void test_backoff(void **unused)
{
	(void)unused;
	/* 100 ms doubling to 5 s; each wait in the upper half of its step */
	uint64_t step = 0;
	static const uint64_t steps[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		step = gw_pg_backoff_step(step);
		assert_int_equal(step, steps[i]);
		assert_int_equal(gw_pg_backoff_wait(step, 0.0), steps[i] / 2);
		uint64_t high = gw_pg_backoff_wait(step, 0.999999);
		assert_true(high < steps[i] && high >= steps[i] - 1);
	}
	assert_int_equal(gw_pg_backoff_wait(5000, 1.5), 2500); /* out of range: the low end */
}

static void test_record_ids(void **unused)
{
	(void)unused;
	unsigned kind;
	const char *key;
	char id[64];
	assert_true(gw_pg_record_parse("locks:lock-0123456789abcdef", &kind, &key));
	assert_int_equal(kind, GW_STATE_LOCKS);
	assert_string_equal(key, "lock-0123456789abcdef");
	assert_true(gw_pg_record_parse("trust:urn:device:7", &kind, &key));
	assert_int_equal(kind, GW_STATE_TRUST);
	assert_string_equal(key, "urn:device:7"); /* the kind ends at the first ':' */
	assert_false(gw_pg_record_parse("tokens:ab12", &kind, &key)); /* not shared */
	assert_false(gw_pg_record_parse("colours:red", &kind, &key));
	assert_false(gw_pg_record_parse("locks", &kind, &key));
	assert_true(gw_pg_record_id("trust", "laptop-1", id, sizeof(id)));
	assert_string_equal(id, "trust:laptop-1");
	assert_false(gw_pg_record_id(
	        "trust", "a key that does not fit in the sixty-four bytes of this buffer at all",
	        id, sizeof(id)));
	char big[GW_PG_KEY_MAX + 2];
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	char bigid[GW_PG_KEY_MAX + 64];
	assert_false(gw_pg_record_id("trust", big, bigid, sizeof(bigid))); /* NOTIFY's limit */
}

static void test_sql_has_the_schema(void **unused)
{
	(void)unused;
	char *listen = gw_pg_sql(GW_PG_SQL_LISTEN, "cg_eu");
	assert_string_equal(listen, "LISTEN cg_eu; SELECT (extract(epoch FROM clock_timestamp()) * "
	                            "1000)::bigint");
	free(listen);
	char *migrate = gw_pg_sql(GW_PG_SQL_MIGRATE, "cg_eu");
	assert_non_null(strstr(migrate, "SET search_path = pg_catalog;"));
	assert_non_null(strstr(migrate, "pg_advisory_xact_lock(hashtext('certgate state schema "
	                                "cg_eu'))"));
	assert_non_null(strstr(migrate, "CREATE SCHEMA cg_eu;"));
	assert_non_null(strstr(migrate, "IF v > 1 THEN"));
	assert_non_null(strstr(migrate, "ERRCODE = 'CGV01'"));
	assert_null(strchr(migrate, '@'));
	free(migrate);
	char *write = gw_pg_sql(GW_PG_SQL_WRITE, "cg_eu");
	assert_non_null(strstr(write, "INSERT INTO cg_eu.records"));
	assert_non_null(strstr(write, "WHERE r.updated_at <= excluded.updated_at"));
	assert_non_null(strstr(write, "pg_notify('cg_eu', kind || ':' || key)"));
	free(write);
}

static void on_claim(void *ctx, gw_token_claim_t result)
{
	*(gw_token_claim_t *)ctx = result;
}

/* A state whose store is not reached (the loop never runs here): every
 * change is kept with the time it was made, and nothing needing the
 * store's answer is granted. */
static void test_store_away(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[256];
	gw_state_t *st =
	        gw_state_open_postgres(&loop, "host=/nonexistent dbname=s", "cg", err, sizeof(err));
	assert_non_null(st);
	assert_string_equal(gw_state_backend(st), "postgres");
	assert_false(gw_state_connected(st));
	assert_non_null(gw_state_problem(st));

	int64_t before = cg_wall_ms();
	const gw_lock_t *l = gw_state_lock_add(st, "bob@example.com", NULL, NULL, before, 0, "x");
	const gw_lock_t *m = gw_state_lock_add(st, "eve@example.com", NULL, NULL, before, 0, "x");
	assert_non_null(l);
	assert_non_null(m);
	/* ids no other gateway picks: "lock-" and 16 hex digits */
	assert_int_equal(strlen(l->id), 21);
	assert_int_equal(strspn(l->id + 5, "0123456789abcdef"), 16);
	assert_string_not_equal(l->id, m->id);
	assert_int_equal(gw_state_trust_set(st, "laptop-3", POL_TRUST_LOW, before, 0, "x"), 0);
	assert_int_equal(gw_state_pending(st), 3);
	/* enforced here while the store is away */
	gw_lock_match_t match;
	assert_true(gw_state_lock_match(st, "BOB@example.com", NULL, before, &match));

	/* a change is stamped when it is made, not when it reaches the store:
	 * the offset to the store's clock is all that is added */
	char id[64];
	snprintf(id, sizeof(id), "locks:%s", l->id);
	gw_pg_change_t *c = cg_strmap_get(st->pg->changes, id);
	assert_non_null(c);
	assert_true(c->changed_ms >= before && c->changed_ms <= cg_wall_ms());
	st->pg->offset_ms = 250;
	json_t *row = gw_pg_change_row(st->pg, id, c);
	assert_string_equal(json_string_value(json_object_get(row, "kind")), "locks");
	assert_string_equal(json_string_value(json_object_get(row, "key")), l->id);
	assert_false(json_is_true(json_object_get(row, "deleted")));
	assert_int_equal(json_integer_value(json_object_get(row, "stamp")), c->changed_ms + 250);
	assert_string_equal(
	        json_string_value(json_object_get(json_object_get(row, "value"), "user")),
	        "bob@example.com");
	json_decref(row);

	/* lifted while away: a tombstone, stamped when it was lifted */
	int64_t first = c->changed_ms;
	assert_true(gw_state_lock_remove(st, id + 6));
	assert_int_equal(gw_state_pending(st), 3); /* still one change per record */
	c = cg_strmap_get(st->pg->changes, id);
	assert_true(c->changed_ms >= first);
	row = gw_pg_change_row(st->pg, id, c);
	assert_true(json_is_null(json_object_get(row, "value")));
	assert_true(json_is_true(json_object_get(row, "deleted")));
	json_decref(row);

	/* a token claim needs the store's answer: refused at once */
	gw_token_claim_t got = GW_TOKEN_FRESH;
	gw_state_token_claim(st, "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12",
	                     before + 60000, before, on_claim, &got);
	assert_int_equal(got, GW_TOKEN_UNAVAILABLE);

	gw_state_stop(st);
	uv_run(&loop, UV_RUN_DEFAULT); /* the timers close */
	gw_state_close(st);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_names_paired_with_addresses),
	        cmocka_unit_test(test_sockets_and_given_addresses_need_no_lookup),
	        cmocka_unit_test(test_lookups_that_fail),
	        cmocka_unit_test(test_backoff),
	        cmocka_unit_test(test_record_ids),
	        cmocka_unit_test(test_sql_has_the_schema),
	        cmocka_unit_test(test_store_away),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
