/* Run-time state shared record by record (gateway/state/): each shared
 * kind's record round trip from one gateway's model to another's, what a
 * record put tells about access (the observer hears only what tightens),
 * records that cannot be read, and the file backend still writing whole
 * documents through the record-level reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "state/state.h"
#include "state/state_model.h"

typedef struct keys {
	char list[8][32];
	size_t n;
} keys_t;

static void collect(void *ctx, const char *key)
{
	keys_t *k = ctx;
	if (k->n < 8)
		snprintf(k->list[k->n++], sizeof(k->list[0]), "%s", key);
}

/* Copies kind's record key from a to b, as the store would carry it. */
static gw_state_change_t carry(gw_state_t *a, gw_state_t *b, unsigned kind, const char *key,
                               int64_t *expires)
{
	const gw_state_kind_t *k = gw_state_kinds[kind];
	json_t *value = k->get(a, key, expires);
	char err[160];
	gw_state_change_t change = {0};
	assert_true(k->put(b, key, value, &change, err, sizeof(err)));
	json_decref(value);
	return change;
}

static void test_lock_record_round_trip(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *a = gw_state_open(&loop, NULL, err, sizeof(err));
	gw_state_t *b = gw_state_open(&loop, NULL, err, sizeof(err));
	const gw_lock_t *l =
	        gw_state_lock_add(a, "Bob@Example.com", NULL, "left", 1000, 90000, "127.0.0.1:1");
	assert_non_null(l);
	int64_t expires = -1;
	gw_state_change_t c = carry(a, b, GW_STATE_LOCKS, l->id, &expires);
	assert_int_equal(expires, 90000);
	/* a new lock tightens: the user's sessions are checked again */
	assert_true(c.tightens);
	assert_string_equal(c.user, "Bob@Example.com");
	assert_null(c.device);
	assert_string_equal(c.reason, "revoked: lock");
	gw_lock_match_t match;
	assert_true(gw_state_lock_match(b, "bob@example.com", NULL, 2000, &match));
	assert_string_equal(match.id, l->id);
	const gw_lock_t *got = gw_state_lock_get(b, l->id, 2000);
	assert_non_null(got);
	assert_string_equal(got->id, l->id);
	assert_string_equal(got->reason, "left");
	assert_string_equal(got->by, "127.0.0.1:1");
	assert_int_equal(got->created_ms, 1000);
	keys_t k = {0};
	gw_state_kinds[GW_STATE_LOCKS]->keys(b, collect, &k);
	assert_int_equal(k.n, 1);
	assert_string_equal(k.list[0], l->id);

	/* listed in creation order, whatever order they arrive in */
	const gw_lock_t *early = gw_state_lock_add(a, NULL, "laptop-2", NULL, 3000, 0, "x");
	const gw_lock_t *later = gw_state_lock_add(a, NULL, "laptop-1", NULL, 5000, 0, "x");
	carry(a, b, GW_STATE_LOCKS, later->id, &expires);
	carry(a, b, GW_STATE_LOCKS, early->id, &expires);
	const gw_lock_t *list = gw_state_locks(b, 6000);
	assert_string_equal(list->id, l->id);
	assert_string_equal(list->next->id, early->id);
	assert_string_equal(list->next->next->id, later->id);

	/* lifted on a: gone on b, and that does not tighten */
	char id[24];
	snprintf(id, sizeof(id), "%s", l->id);
	assert_true(gw_state_lock_remove(a, id));
	c = carry(a, b, GW_STATE_LOCKS, id, &expires);
	assert_false(c.tightens);
	assert_null(gw_state_lock_get(b, id, 2000));
	gw_state_close(a);
	gw_state_close(b);
	uv_loop_close(&loop);
}

static void test_trust_record_round_trip(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *a = gw_state_open(&loop, NULL, err, sizeof(err));
	gw_state_t *b = gw_state_open(&loop, NULL, err, sizeof(err));
	assert_int_equal(gw_state_trust_set(a, "laptop-7", POL_TRUST_LOW, 1000, 61000, "admin"), 0);
	int64_t expires;
	gw_state_change_t c = carry(a, b, GW_STATE_TRUST, "laptop-7", &expires);
	assert_int_equal(expires, 61000);
	assert_true(c.tightens);
	assert_null(c.user);
	assert_string_equal(c.device, "laptop-7");
	assert_string_equal(c.reason, "revoked: device trust");
	assert_int_equal(gw_state_trust_level(b, "laptop-7", 2000), POL_TRUST_LOW);
	assert_int_equal(gw_state_trust_level(b, "laptop-7", 61000), POL_TRUST_NONE); /* lapsed */
	assert_true(gw_state_trust_clear(a, "laptop-7"));
	assert_int_equal(gw_state_trust_set(b, "laptop-7", POL_TRUST_HIGH, 1000, 0, "x"), 0);
	c = carry(a, b, GW_STATE_TRUST, "laptop-7", &expires);
	assert_false(c.tightens); /* cleared: can only widen */
	assert_null(gw_state_trust_get(b, "laptop-7", 2000));
	gw_state_close(a);
	gw_state_close(b);
	uv_loop_close(&loop);
}

/* A record the store holds that no gateway could have written is refused,
 * and the model keeps what it had (a known lock stays). */
static void test_unreadable_records(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *st = gw_state_open(&loop, NULL, err, sizeof(err));
	const gw_lock_t *l = gw_state_lock_add(st, "bob@example.com", NULL, NULL, 1000, 0, "x");
	char id[24];
	snprintf(id, sizeof(id), "%s", l->id);
	static const char *const bad_locks[] = {
	        "{\"user\": \"a\", \"device\": \"b\", \"created\": 1, \"expires\": 0, \"by\": "
	        "\"x\"}",
	        "{\"created\": 1, \"expires\": 0, \"by\": \"x\"}",
	        "{\"user\": \"a\", \"created\": \"soon\", \"expires\": 0, \"by\": \"x\"}",
	        "{\"user\": \"a\", \"created\": 1, \"expires\": 0, \"by\": \"x\", \"extra\": 1}",
	        "[]",
	};
	for (size_t i = 0; i < sizeof(bad_locks) / sizeof(bad_locks[0]); i++) {
		json_t *v = json_loads(bad_locks[i], 0, NULL);
		gw_state_change_t c = {0};
		err[0] = '\0';
		assert_false(gw_state_kinds[GW_STATE_LOCKS]->put(st, id, v, &c, err, sizeof(err)));
		assert_true(err[0] != '\0');
		assert_false(c.tightens);
		json_decref(v);
		gw_lock_match_t match;
		assert_true(gw_state_lock_match(st, "bob@example.com", NULL, 2000, &match));
	}
	json_t *v = json_loads(
	        "{\"level\": \"sky-high\", \"set\": 1, \"expires\": 0, \"by\": \"x\"}", 0, NULL);
	gw_state_change_t c = {0};
	assert_false(gw_state_kinds[GW_STATE_TRUST]->put(st, "d", v, &c, err, sizeof(err)));
	json_decref(v);
	/* the used-token cache is not shared record by record */
	assert_null(gw_state_kinds[GW_STATE_TOKENS]->put);
	gw_state_close(st);
	uv_loop_close(&loop);
}

static int heard;
static char heard_device[32];

static void observer(void *ctx, const gw_state_change_t *change)
{
	(void)ctx;
	heard++;
	snprintf(heard_device, sizeof(heard_device), "%s", change->device ? change->device : "");
}

static void test_observer_hears_what_tightens(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *st = gw_state_open(&loop, NULL, err, sizeof(err));
	gw_state_change_t loose = {.kind = "trust", .key = "d1", .device = "d1"};
	gw_state_change_t tight = {.kind = "trust", .key = "d2", .tightens = true, .device = "d2"};
	gw_state_observe(st, &tight); /* no observer yet */
	gw_state_set_observer(st, observer, NULL);
	gw_state_observe(st, &loose);
	assert_int_equal(heard, 0);
	gw_state_observe(st, &tight);
	assert_int_equal(heard, 1);
	assert_string_equal(heard_device, "d2");
	gw_state_set_observer(st, NULL, NULL);
	gw_state_observe(st, &tight);
	assert_int_equal(heard, 1);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* A device's record goes from one gateway to the next; its forget tightens
 * (the device's sessions are checked again) and never goes back: a
 * registration that raced a forget, or a store that lost the record,
 * leaves the forget in the model, which then differs from what came in
 * (state_pg_sync.c writes it back). */
static void test_device_record_keeps_the_forget(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *a = gw_state_open(&loop, NULL, err, sizeof(err));
	gw_state_t *b = gw_state_open(&loop, NULL, err, sizeof(err));
	const gw_state_kind_t *k = gw_state_kinds[GW_STATE_DEVICES];
	bool registered;
	assert_int_equal(gw_state_device_seen(a, "dev-1", "bob", "linux", 1000, &registered), 0);
	int64_t expires = -1;
	gw_state_change_t c = carry(a, b, GW_STATE_DEVICES, "dev-1", &expires);
	assert_int_equal(expires, 0);
	assert_false(c.tightens); /* a login widens nothing */
	const gw_device_t *d = gw_state_device_get(b, "dev-1");
	assert_non_null(d);
	assert_string_equal(d->user, "bob");
	assert_string_equal(d->platform, "linux");
	assert_int_equal(d->first_seen_ms, 1000);

	/* forgotten on a: b's sessions of the device end */
	assert_true(gw_state_device_forget(a, "dev-1", 2000));
	c = carry(a, b, GW_STATE_DEVICES, "dev-1", &expires);
	assert_true(c.tightens);
	assert_string_equal(c.device, "dev-1");
	assert_null(c.user);
	assert_string_equal(c.reason, "revoked: device trust");
	assert_null(gw_state_device_get(b, "dev-1"));
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 2000);

	/* a login on another gateway that had not heard of the forget (its
	 * record: registered at 1500, never forgotten) does not undo it */
	json_t *raced = json_loads("{\"user\": \"bob\", \"platform\": null, \"first_seen\": 1000, "
	                           "\"last_seen\": 1500, \"forgotten\": 0}",
	                           0, NULL);
	c = (gw_state_change_t){0};
	assert_true(k->put(b, "dev-1", raced, &c, err, sizeof(err)));
	assert_false(c.tightens);
	assert_null(gw_state_device_get(b, "dev-1"));
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 2000);
	json_t *kept = k->get(b, "dev-1", &expires);
	assert_false(json_equal(kept, raced)); /* written back */
	assert_int_equal(json_integer_value(json_object_get(kept, "forgotten")), 2000);
	json_decref(kept);
	json_decref(raced);

	/* a login in the forget's own second came after it (the cut is that
	 * second's start: gw_state_device_forget) */
	json_t *same_second =
	        json_loads("{\"user\": \"bob\", \"platform\": null, \"first_seen\": 2500, "
	                   "\"last_seen\": 2500, \"forgotten\": 2000}",
	                   0, NULL);
	assert_true(k->put(b, "dev-1", same_second, &c, err, sizeof(err)));
	assert_non_null(gw_state_device_get(b, "dev-1"));
	json_decref(same_second);
	assert_true(gw_state_device_forget(b, "dev-1", 2600)); /* cut moves to 3000 */
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 3000);

	/* a login after the forget registers it anew, the forget kept */
	json_t *later = json_loads("{\"user\": \"bob\", \"platform\": null, \"first_seen\": 3000, "
	                           "\"last_seen\": 3000, \"forgotten\": 0}",
	                           0, NULL);
	assert_true(k->put(b, "dev-1", later, &c, err, sizeof(err)));
	assert_non_null(gw_state_device_get(b, "dev-1"));
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 3000);
	json_decref(later);

	/* the store without the record: the forget stays */
	assert_true(k->put(b, "dev-1", NULL, &c, err, sizeof(err)));
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 3000);
	assert_null(gw_state_device_get(b, "dev-1"));
	/* one never forgotten goes */
	assert_int_equal(gw_state_device_seen(b, "dev-2", "eve", NULL, 1000, &registered), 0);
	assert_true(k->put(b, "dev-2", NULL, &c, err, sizeof(err)));
	assert_null(k->get(b, "dev-2", &expires));

	/* not a device record: refused, the model keeps what it had */
	json_t *bad = json_loads("{\"user\": null, \"platform\": null, \"first_seen\": 0, "
	                         "\"last_seen\": 0, \"forgotten\": 0}",
	                         0, NULL);
	err[0] = '\0';
	assert_false(k->put(b, "dev-1", bad, &c, err, sizeof(err)));
	assert_true(err[0] != '\0');
	assert_int_equal(gw_state_device_forgotten_at(b, "dev-1"), 3000);
	json_decref(bad);
	keys_t keys = {0};
	k->keys(b, collect, &keys);
	assert_int_equal(keys.n, 1);
	assert_string_equal(keys.list[0], "dev-1");
	gw_state_close(a);
	gw_state_close(b);
	uv_loop_close(&loop);
}

/* An access request goes from one gateway to the next: its approval makes
 * the grant there (the user's sessions are checked again, so a session
 * admitted by an earlier grant runs on), its expiry ends it, and a request
 * that only waits or is denied changes no grant. */
static void test_request_record_carries_the_grant(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *a = gw_state_open(&loop, NULL, err, sizeof(err));
	gw_state_t *b = gw_state_open(&loop, NULL, err, sizeof(err));
	const gw_access_request_t *req;
	assert_int_equal(gw_state_access_ask(a, "Frank@example.com", "orders-db", "INC-1", 60000,
	                                     1000, "127.0.0.1:1", &req),
	                 GW_ACCESS_OK);
	char id[24];
	snprintf(id, sizeof(id), "%s", req->id);
	int64_t expires = -1, until = 0;
	gw_state_change_t c = carry(a, b, GW_STATE_REQUESTS, id, &expires);
	assert_int_equal(expires, 0);
	assert_false(c.tightens); /* pending: no grant yet */
	assert_non_null(gw_state_access_get(b, id));
	assert_int_equal(gw_state_access_get(b, id)->state, GW_ACCESS_PENDING);
	assert_false(gw_state_grant_until(b, "frank@example.com", "orders-db", 2000, &until));

	assert_int_equal(gw_state_access_decide(a, id, true, "carol", "ok", 2000, &req),
	                 GW_ACCESS_OK);
	c = carry(a, b, GW_STATE_REQUESTS, id, &expires);
	assert_true(c.tightens);
	assert_string_equal(c.user, "Frank@example.com");
	assert_null(c.device);
	assert_string_equal(c.reason, "revoked: policy");
	assert_true(gw_state_grant_until(b, "frank@example.com", "orders-db", 3000, &until));
	assert_int_equal(until, 62000);
	assert_int_equal(gw_state_access_next_expiry(b), 62000);

	/* expired on a: the grant is gone on b, the record kept a while */
	assert_int_equal(gw_state_access_expire(a, 62000, NULL, NULL), 1);
	c = carry(a, b, GW_STATE_REQUESTS, id, &expires);
	assert_true(c.tightens);
	assert_string_equal(c.user, "Frank@example.com");
	assert_true(expires > 62000);
	assert_false(gw_state_grant_until(b, "frank@example.com", "orders-db", 3000, &until));
	assert_int_equal(gw_state_access_get(b, id)->state, GW_ACCESS_EXPIRED);
	assert_int_equal(gw_state_access_next_expiry(b), INT64_MAX);

	/* a denied one changes no grant */
	assert_int_equal(gw_state_access_ask(a, "frank@example.com", "orders-db", "INC-2", 60000,
	                                     4000, "127.0.0.1:1", &req),
	                 GW_ACCESS_OK);
	char id2[24];
	snprintf(id2, sizeof(id2), "%s", req->id);
	assert_string_not_equal(id2, id);
	assert_int_equal(gw_state_access_decide(a, id2, false, "carol", NULL, 5000, &req),
	                 GW_ACCESS_OK);
	c = carry(a, b, GW_STATE_REQUESTS, id2, &expires);
	assert_false(c.tightens);
	keys_t k = {0};
	gw_state_kinds[GW_STATE_REQUESTS]->keys(b, collect, &k);
	assert_int_equal(k.n, 2);
	assert_string_equal(k.list[0], id);
	assert_string_equal(k.list[1], id2);

	/* an approved record that went from the store: its grant goes, told */
	const gw_state_kind_t *kind = gw_state_kinds[GW_STATE_REQUESTS];
	json_t *v = kind->get(a, id, &expires);
	json_object_set_new(v, "state", json_string("approved"));
	c = (gw_state_change_t){0};
	assert_true(kind->put(b, id, v, &c, err, sizeof(err)));
	assert_true(c.tightens);
	assert_true(gw_state_grant_until(b, "frank@example.com", "orders-db", 3000, &until));
	c = (gw_state_change_t){0};
	assert_true(kind->put(b, id, NULL, &c, err, sizeof(err)));
	assert_true(c.tightens);
	assert_string_equal(c.user, "Frank@example.com");
	assert_false(gw_state_grant_until(b, "frank@example.com", "orders-db", 3000, &until));
	assert_null(gw_state_access_get(b, id));
	/* a record whose id is not its key is refused */
	err[0] = '\0';
	assert_false(kind->put(b, "req-other", v, &c, err, sizeof(err)));
	assert_true(err[0] != '\0');
	json_decref(v);
	gw_state_close(a);
	gw_state_close(b);
	uv_loop_close(&loop);
}

static gw_token_claim_t claimed;
static int claims;

static void on_claim(void *ctx, gw_token_claim_t result)
{
	(void)ctx;
	claimed = result;
	claims++;
}

/* Memory and file answer a claim before the call returns. */
static void test_claims_answer_at_once(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[160];
	gw_state_t *st = gw_state_open(&loop, NULL, err, sizeof(err));
	const char *h = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";
	gw_state_token_claim(st, h, 9000, 1000, on_claim, NULL);
	assert_int_equal(claims, 1);
	assert_int_equal(claimed, GW_TOKEN_FRESH);
	gw_state_token_claim(st, h, 9000, 2000, on_claim, NULL);
	assert_int_equal(claims, 2);
	assert_int_equal(claimed, GW_TOKEN_REPLAYED);
	gw_state_close(st);
	uv_loop_close(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_lock_record_round_trip),
	        cmocka_unit_test(test_trust_record_round_trip),
	        cmocka_unit_test(test_device_record_keeps_the_forget),
	        cmocka_unit_test(test_request_record_carries_the_grant),
	        cmocka_unit_test(test_unreadable_records),
	        cmocka_unit_test(test_observer_hears_what_tightens),
	        cmocka_unit_test(test_claims_answer_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
