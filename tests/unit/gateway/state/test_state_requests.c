/* Access requests and grants (gateway/state/state_requests.c): the
 * request's life (pending, approved or denied, expired once), the bounds,
 * the grant lookup the decision makes, and the file's round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cg_file.h"
#include "state/state.h"

#define MINUTE (60 * 1000)
#define HOUR   (60 * MINUTE)
#define T0     1780000000000LL

static char scratch[256];

static int setup(void **state)
{
	(void)state;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(scratch, sizeof(scratch), "%s/test_state_requests.XXXXXX", base);
	return mkdtemp(scratch) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
	return system(cmd) == 0 ? 0 : -1;
}

static gw_state_t *open_state(uv_loop_t *loop, const char *sub)
{
	char err[512], dir[512];
	if (sub != NULL)
		snprintf(dir, sizeof(dir), "%s/%s", scratch, sub);
	gw_state_t *st = gw_state_open(loop, sub != NULL ? dir : NULL, err, sizeof(err));
	if (st == NULL)
		print_error("%s\n", err);
	assert_non_null(st);
	return st;
}

static const gw_access_request_t *ask(gw_state_t *st, const char *user, const char *service,
                                      int64_t now)
{
	const gw_access_request_t *r = NULL;
	assert_int_equal(gw_state_access_ask(st, user, service, "incident 42", HOUR, now, user, &r),
	                 GW_ACCESS_OK);
	assert_non_null(r);
	return r;
}

static void test_life(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	gw_state_t *st = open_state(&loop, NULL);
	const gw_access_request_t *r = ask(st, "Sam@Example.com", "orders-db", T0), *other;
	assert_string_equal(r->id, "req-1");
	assert_int_equal(r->state, GW_ACCESS_PENDING);
	assert_string_equal(r->reason, "incident 42");
	assert_int_equal(r->created_ms, T0);
	assert_null(r->decided_by);
	/* pending is no grant */
	int64_t until = 1;
	assert_false(gw_state_grant_until(st, "sam@example.com", "orders-db", T0, &until));
	assert_int_equal(until, 0);
	/* the same user (any case) and service again: the pending one */
	assert_int_equal(gw_state_access_ask(st, "SAM@example.com", "orders-db", "again", MINUTE,
	                                     T0 + 1, "x", &other),
	                 GW_ACCESS_DUPLICATE);
	assert_ptr_equal(other, r);
	assert_int_equal(gw_state_access_decide(st, "req-9", true, "ann", NULL, T0, &other),
	                 GW_ACCESS_NOT_FOUND);
	assert_null(other);

	/* approved: a grant until decision + duration, for that user and service only */
	assert_int_equal(gw_state_access_decide(st, "req-1", true, "ann@example.com", "ok",
	                                        T0 + MINUTE, &other),
	                 GW_ACCESS_OK);
	assert_ptr_equal(other, r);
	assert_int_equal(r->state, GW_ACCESS_APPROVED);
	assert_string_equal(r->decided_by, "ann@example.com");
	assert_string_equal(r->decided_reason, "ok");
	assert_int_equal(r->decided_ms, T0 + MINUTE);
	assert_int_equal(r->until_ms, T0 + MINUTE + HOUR);
	assert_true(gw_state_grant_until(st, "sam@EXAMPLE.com", "orders-db", T0 + MINUTE, &until));
	assert_int_equal(until, T0 + MINUTE + HOUR);
	assert_false(gw_state_grant_until(st, "sam@example.com", "Orders-db", T0 + MINUTE, &until));
	assert_false(gw_state_grant_until(st, "bob@example.com", "orders-db", T0 + MINUTE, &until));
	assert_false(gw_state_grant_until(st, NULL, "orders-db", T0 + MINUTE, &until));
	/* its end is excluded, with or without the expiry pass */
	assert_true(gw_state_grant_until(st, "sam@example.com", "orders-db", T0 + MINUTE + HOUR - 1,
	                                 &until));
	assert_false(gw_state_grant_until(st, "sam@example.com", "orders-db", T0 + MINUTE + HOUR,
	                                  &until));
	/* decided twice: refused, the first decision stands */
	assert_int_equal(
	        gw_state_access_decide(st, "req-1", false, "bob", NULL, T0 + 2 * MINUTE, &other),
	        GW_ACCESS_NOT_PENDING);
	assert_ptr_equal(other, r);
	assert_int_equal(r->state, GW_ACCESS_APPROVED);
	assert_string_equal(r->decided_by, "ann@example.com");

	/* denied: no grant, a reason kept */
	const gw_access_request_t *d = ask(st, "sam@example.com", "billing-db", T0);
	assert_string_equal(d->id, "req-2");
	assert_int_equal(gw_state_access_decide(st, "req-2", false, "ann", "not now", T0, &other),
	                 GW_ACCESS_OK);
	assert_int_equal(d->state, GW_ACCESS_DENIED);
	assert_int_equal(d->until_ms, 0);
	assert_false(gw_state_grant_until(st, "sam@example.com", "billing-db", T0, &until));
	assert_ptr_equal(gw_state_access_get(st, "req-2"), d);
	assert_ptr_equal(gw_state_access_list(st), r); /* creation order */
	assert_ptr_equal(r->next, d);
	size_t counts[GW_ACCESS_STATES];
	gw_state_access_counts(st, counts);
	assert_int_equal(counts[GW_ACCESS_PENDING], 0);
	assert_int_equal(counts[GW_ACCESS_APPROVED], 1);
	assert_int_equal(counts[GW_ACCESS_DENIED], 1);
	gw_state_close(st);
	uv_loop_close(&loop);
}

typedef struct heard {
	size_t n;
	char ids[8][24];
	bool grant_gone; /* the lookup no longer finds it when fn hears it */
	gw_state_t *st;
} heard_t;

static void on_expired(void *arg, const gw_access_request_t *r)
{
	heard_t *h = arg;
	int64_t until;
	assert_int_equal(r->state, GW_ACCESS_EXPIRED);
	if (h->n < 8)
		snprintf(h->ids[h->n], sizeof(h->ids[0]), "%s", r->id);
	h->n++;
	h->grant_gone = !gw_state_grant_until(h->st, r->user, r->service, 0, &until) ||
	                until != r->until_ms;
}

/* Grants expire once each, in order of their end; the latest grant of a
 * pair holds until its own end. */
static void test_expiry(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	gw_state_t *st = open_state(&loop, NULL);
	const gw_access_request_t *out;
	assert_int_equal(gw_state_access_next_expiry(st), INT64_MAX);
	assert_int_equal(gw_state_access_ask(st, "sam@example.com", "db", "a", 3000, T0, "x", &out),
	                 GW_ACCESS_OK);
	assert_int_equal(gw_state_access_decide(st, "req-1", true, "ann", NULL, T0, &out),
	                 GW_ACCESS_OK);
	assert_int_equal(gw_state_access_ask(st, "sam@example.com", "db", "b", 9000, T0, "x", &out),
	                 GW_ACCESS_OK);
	assert_int_equal(gw_state_access_decide(st, "req-2", true, "ann", NULL, T0, &out),
	                 GW_ACCESS_OK);
	assert_int_equal(gw_state_access_next_expiry(st), T0 + 3000);
	int64_t until;
	assert_true(gw_state_grant_until(st, "sam@example.com", "db", T0, &until));
	assert_int_equal(until, T0 + 9000); /* the latest */

	heard_t h = {.st = st};
	assert_int_equal(gw_state_access_expire(st, T0 + 2999, on_expired, &h), 0);
	assert_int_equal(gw_state_access_expire(st, T0 + 3000, on_expired, &h), 1);
	assert_int_equal(h.n, 1);
	assert_string_equal(h.ids[0], "req-1");
	assert_int_equal(gw_state_access_get(st, "req-1")->state, GW_ACCESS_EXPIRED);
	assert_int_equal(gw_state_access_get(st, "req-1")->until_ms, T0 + 3000); /* kept */
	assert_true(gw_state_grant_until(st, "sam@example.com", "db", T0 + 3000, &until));
	assert_int_equal(until, T0 + 9000);
	assert_int_equal(gw_state_access_next_expiry(st), T0 + 9000);
	/* once per grant */
	assert_int_equal(gw_state_access_expire(st, T0 + 5000, on_expired, &h), 0);
	assert_int_equal(gw_state_access_expire(st, T0 + 20000, on_expired, &h), 1);
	assert_int_equal(h.n, 2);
	assert_string_equal(h.ids[1], "req-2");
	assert_true(h.grant_gone);
	assert_false(gw_state_grant_until(st, "sam@example.com", "db", 0, &until));
	assert_int_equal(gw_state_access_next_expiry(st), INT64_MAX);
	assert_int_equal(gw_state_access_expire(st, T0 + 30000, on_expired, &h), 0);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* Pending requests are bounded per user and in all; decided ones are
 * forgotten past the history bound, the oldest first. */
static void test_bounds(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	gw_state_t *st = open_state(&loop, NULL);
	const gw_access_request_t *out;
	char service[32], user[64];
	for (int i = 0; i < GW_ACCESS_PENDING_PER_USER; i++) {
		snprintf(service, sizeof(service), "svc-%d", i);
		ask(st, "sam@example.com", service, T0);
	}
	assert_int_equal(
	        gw_state_access_ask(st, "SAM@example.com", "svc-x", "r", MINUTE, T0, "x", &out),
	        GW_ACCESS_LIMIT_USER);
	assert_null(out);
	/* a decision makes room */
	assert_int_equal(gw_state_access_decide(st, "req-1", false, "ann", NULL, T0, &out),
	                 GW_ACCESS_OK);
	ask(st, "sam@example.com", "svc-x", T0);
	/* the total */
	int n = GW_ACCESS_PENDING_PER_USER;
	for (int u = 0; n < GW_ACCESS_PENDING_MAX; u++)
		for (int i = 0; i < GW_ACCESS_PENDING_PER_USER && n < GW_ACCESS_PENDING_MAX; i++) {
			snprintf(user, sizeof(user), "u%d@example.com", u);
			snprintf(service, sizeof(service), "svc-%d", i);
			ask(st, user, service, T0);
			n++;
		}
	assert_int_equal(
	        gw_state_access_ask(st, "new@example.com", "db", "r", MINUTE, T0, "x", &out),
	        GW_ACCESS_LIMIT_TOTAL);
	size_t counts[GW_ACCESS_STATES];
	gw_state_access_counts(st, counts);
	assert_int_equal(counts[GW_ACCESS_PENDING], GW_ACCESS_PENDING_MAX);

	/* deny every one: the history keeps the newest GW_ACCESS_HISTORY_MAX */
	char id[24];
	for (uint64_t i = 2; i <= GW_ACCESS_PENDING_MAX + 1; i++) {
		snprintf(id, sizeof(id), "req-%llu", (unsigned long long)i);
		assert_int_equal(gw_state_access_decide(st, id, false, "ann", NULL, T0, &out),
		                 GW_ACCESS_OK);
	}
	gw_state_access_counts(st, counts);
	assert_int_equal(counts[GW_ACCESS_PENDING], 0);
	assert_int_equal(counts[GW_ACCESS_DENIED], GW_ACCESS_HISTORY_MAX);
	assert_null(gw_state_access_get(st, "req-1")); /* the oldest decided, gone */
	assert_non_null(gw_state_access_get(st, "req-1001"));
	/* an approved grant is never forgotten for the history's sake */
	ask(st, "ann@example.com", "db", T0);
	assert_int_equal(gw_state_access_decide(st, "req-1002", true, "bob", NULL, T0, &out),
	                 GW_ACCESS_OK);
	ask(st, "ann@example.com", "db2", T0);
	assert_int_equal(gw_state_access_decide(st, "req-1003", false, "bob", NULL, T0, &out),
	                 GW_ACCESS_OK);
	assert_non_null(gw_state_access_get(st, "req-1002"));
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* Saved, reopened: the same requests, the grant held, ids counting on; an
 * expiry saved is not heard again. */
static void test_file_round_trip(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	gw_state_t *st = open_state(&loop, "trip");
	const gw_access_request_t *out;
	ask(st, "sam@example.com", "orders-db", T0);
	ask(st, "sam@example.com", "billing-db", T0);
	ask(st, "bob@example.com", "orders-db", T0);
	assert_int_equal(gw_state_access_decide(st, "req-1", true, "ann", "incident", T0, &out),
	                 GW_ACCESS_OK);
	assert_int_equal(gw_state_access_decide(st, "req-2", false, "ann", NULL, T0, &out),
	                 GW_ACCESS_OK);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_null(gw_state_problem(st));
	gw_state_close(st);

	st = open_state(&loop, "trip");
	const gw_access_request_t *r = gw_state_access_get(st, "req-1");
	assert_non_null(r);
	assert_int_equal(r->state, GW_ACCESS_APPROVED);
	assert_string_equal(r->user, "sam@example.com");
	assert_string_equal(r->service, "orders-db");
	assert_string_equal(r->reason, "incident 42");
	assert_string_equal(r->requested_by, "sam@example.com");
	assert_string_equal(r->decided_by, "ann");
	assert_string_equal(r->decided_reason, "incident");
	assert_int_equal(r->duration_ms, HOUR);
	assert_int_equal(r->until_ms, T0 + HOUR);
	int64_t until;
	assert_true(gw_state_grant_until(st, "sam@example.com", "orders-db", T0, &until));
	assert_int_equal(until, T0 + HOUR);
	assert_int_equal(gw_state_access_get(st, "req-2")->state, GW_ACCESS_DENIED);
	assert_null(gw_state_access_get(st, "req-2")->decided_reason);
	assert_int_equal(gw_state_access_get(st, "req-3")->state, GW_ACCESS_PENDING);
	assert_string_equal(ask(st, "eve@example.com", "db", T0)->id, "req-4");
	/* expired while the gateway was down: heard once, then saved */
	heard_t h = {.st = st};
	assert_int_equal(gw_state_access_expire(st, T0 + 2 * HOUR, on_expired, &h), 1);
	uv_run(&loop, UV_RUN_DEFAULT);
	gw_state_close(st);
	st = open_state(&loop, "trip");
	assert_int_equal(gw_state_access_get(st, "req-1")->state, GW_ACCESS_EXPIRED);
	assert_int_equal(gw_state_access_expire(st, T0 + 3 * HOUR, on_expired, &h), 0);
	assert_int_equal(h.n, 1);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* A file that is not what this gateway writes refuses the start. */
static void test_file_refused(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[512], dir[512], path[600];
	snprintf(dir, sizeof(dir), "%s/bad", scratch);
	assert_int_equal(cg_file_mkdirs(dir, 0700, NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/requests.json", dir);
	static const char *const bad[] = {
	        "{\"next\": 1, \"requests\": [",
	        "{\"next\": 1, \"requests\": [{\"id\": \"req-1\"}]}",
	        "{\"next\": 1, \"requests\": [{\"id\": \"req-1\", \"user\": \"u\", \"service\": "
	        "\"s\", \"duration\": 1000, \"state\": \"granted\", \"created\": 1, \"decided\": "
	        "0, "
	        "\"until\": 0}]}",
	        /* approved with no end */
	        "{\"next\": 1, \"requests\": [{\"id\": \"req-1\", \"user\": \"u\", \"service\": "
	        "\"s\", \"duration\": 1000, \"state\": \"approved\", \"created\": 1, "
	        "\"decided_by\": \"a\", \"decided\": 2, \"until\": 0}]}",
	};
	static const char *const want[] = {"requests.json:1:", "requests[0]", "requests[0]: state",
	                                   "requests[0]: req-1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cg_file_write_atomic(path, 0600, bad[i], strlen(bad[i])), 0);
		assert_null(gw_state_open(&loop, dir, err, sizeof(err)));
		if (strstr(err, want[i]) == NULL)
			fail_msg("case %zu: %s", i, err);
	}
	uv_loop_close(&loop);
}

static void test_state_names(void **unused)
{
	(void)unused;
	gw_access_state_t s;
	for (unsigned i = 0; i < GW_ACCESS_STATES; i++) {
		assert_true(gw_access_state_parse(gw_access_state_name((gw_access_state_t)i), &s));
		assert_int_equal(s, i);
	}
	assert_false(gw_access_state_parse("Pending", &s));
	assert_false(gw_access_state_parse(NULL, &s));
	assert_string_equal(gw_access_state_name(GW_ACCESS_EXPIRED), "expired");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_life),         cmocka_unit_test(test_expiry),
	        cmocka_unit_test(test_bounds),       cmocka_unit_test(test_file_round_trip),
	        cmocka_unit_test(test_file_refused), cmocka_unit_test(test_state_names),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
