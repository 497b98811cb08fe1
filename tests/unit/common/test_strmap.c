/* Tests common/cg_strmap.c: basic operations, and a long random
 * insert/replace/remove run checked against a plain array. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cg_strmap.h"

#define N_KEYS 10000

static void test_basic(void **state)
{
	(void)state;
	cg_strmap_t *map = cg_strmap_create();
	int a = 1, b = 2, c = 3;

	assert_int_equal(cg_strmap_count(map), 0);
	assert_null(cg_strmap_get(map, "alice"));
	assert_null(cg_strmap_put(map, "alice", &a));
	assert_null(cg_strmap_put(map, "bob", &b));
	assert_null(cg_strmap_put(map, "", &c)); /* the empty key is a key */
	assert_int_equal(cg_strmap_count(map), 3);
	assert_ptr_equal(cg_strmap_get(map, "alice"), &a);
	assert_ptr_equal(cg_strmap_get(map, "bob"), &b);
	assert_ptr_equal(cg_strmap_get(map, ""), &c);
	assert_null(cg_strmap_get(map, "alic"));

	/* replace returns the old value, count unchanged */
	assert_ptr_equal(cg_strmap_put(map, "alice", &c), &a);
	assert_int_equal(cg_strmap_count(map), 3);
	assert_ptr_equal(cg_strmap_get(map, "alice"), &c);

	assert_ptr_equal(cg_strmap_remove(map, "bob"), &b);
	assert_null(cg_strmap_remove(map, "bob"));
	assert_null(cg_strmap_get(map, "bob"));
	assert_int_equal(cg_strmap_count(map), 2);
	cg_strmap_destroy(map, NULL);
	cg_strmap_destroy(NULL, NULL);
}

static void test_keys_are_copied(void **state)
{
	(void)state;
	cg_strmap_t *map = cg_strmap_create();
	char key[16] = "session-1";
	int v = 7;
	assert_null(cg_strmap_put(map, key, &v));
	strcpy(key, "xxxxxxxxx");
	assert_ptr_equal(cg_strmap_get(map, "session-1"), &v);
	assert_null(cg_strmap_get(map, key));
	cg_strmap_destroy(map, NULL);
}

struct visit {
	size_t seen;
	size_t stop_after;
	uintptr_t sum;
};

static bool visit(const char *key, void *value, void *arg)
{
	struct visit *v = arg;
	(void)key;
	v->seen++;
	v->sum += (uintptr_t)value;
	return v->stop_after == 0 || v->seen < v->stop_after;
}

/* cg_strmap_foreach_key: sums the numbers after the keys' "k" */
static void add_key(void *ctx, const char *key)
{
	*(uintptr_t *)ctx += (uintptr_t)strtoul(key + 1, NULL, 10);
}

static void test_foreach(void **state)
{
	(void)state;
	cg_strmap_t *map = cg_strmap_create();
	char key[32];
	uintptr_t want = 0;
	for (uintptr_t i = 1; i <= 100; i++) {
		snprintf(key, sizeof(key), "k%u", (unsigned)i);
		cg_strmap_put(map, key, (void *)i);
		want += i;
	}
	struct visit all = {0};
	cg_strmap_foreach(map, visit, &all);
	assert_int_equal(all.seen, 100);
	assert_int_equal(all.sum, want);

	struct visit early = {.stop_after = 10};
	cg_strmap_foreach(map, visit, &early);
	assert_int_equal(early.seen, 10);

	uintptr_t keys = 0;
	cg_strmap_foreach_key(map, add_key, &keys);
	assert_int_equal(keys, want);
	cg_strmap_destroy(map, NULL);
}

static void test_destroy_frees_values(void **state)
{
	(void)state;
	cg_strmap_t *map = cg_strmap_create();
	char key[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "user%d@example.com", i);
		char *value = malloc(16);
		assert_non_null(value);
		cg_strmap_put(map, key, value);
	}
	/* Leak checkers (valgrind / asan setups) verify free was called. */
	cg_strmap_destroy(map, free);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static bool count_entries(const char *key, void *value, void *arg)
{
	(void)key;
	(void)value;
	(*(size_t *)arg)++;
	return true;
}

static void test_stress_against_reference(void **state)
{
	(void)state;
	static void *reference[N_KEYS]; /* NULL: absent */
	char key[32];
	size_t present = 0;
	cg_strmap_t *map = cg_strmap_create();

	memset(reference, 0, sizeof(reference));
	for (int round = 0; round < 400000; round++) {
		uint64_t r = rng();
		size_t k = (size_t)(r % N_KEYS);
		/* Keys that share long prefixes and differ in the tail. */
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", k);
		void *value = (void *)(uintptr_t)((r >> 16) | 1);

		switch ((r >> 40) % 5) {
		case 0:
		case 1: /* insert or replace */
			assert_ptr_equal(cg_strmap_put(map, key, value), reference[k]);
			if (!reference[k])
				present++;
			reference[k] = value;
			break;
		case 2:
		case 3: /* remove */
			assert_ptr_equal(cg_strmap_remove(map, key), reference[k]);
			if (reference[k])
				present--;
			reference[k] = NULL;
			break;
		default:
			assert_ptr_equal(cg_strmap_get(map, key), reference[k]);
			break;
		}
		assert_int_equal(cg_strmap_count(map), present);

		/* Periodically check every key, present or not. */
		if (round % 50000 == 0) {
			for (size_t i = 0; i < N_KEYS; i++) {
				snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
				assert_ptr_equal(cg_strmap_get(map, key), reference[i]);
			}
			size_t n = 0;
			cg_strmap_foreach(map, count_entries, &n);
			assert_int_equal(n, present);
		}
	}

	/* Fill completely, then empty completely. */
	for (size_t i = 0; i < N_KEYS; i++) {
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
		cg_strmap_put(map, key, (void *)(uintptr_t)(i + 1));
	}
	assert_int_equal(cg_strmap_count(map), N_KEYS);
	for (size_t i = 0; i < N_KEYS; i++) {
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
		assert_ptr_equal(cg_strmap_get(map, key), (void *)(uintptr_t)(i + 1));
	}
	for (size_t i = 0; i < N_KEYS; i += 2) {
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
		assert_ptr_equal(cg_strmap_remove(map, key), (void *)(uintptr_t)(i + 1));
	}
	for (size_t i = 0; i < N_KEYS; i++) {
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
		assert_ptr_equal(cg_strmap_get(map, key),
		                 i % 2 ? (void *)(uintptr_t)(i + 1) : NULL);
	}
	for (size_t i = 1; i < N_KEYS; i += 2) {
		snprintf(key, sizeof(key), "cn=user-%zu,ou=dba", i);
		assert_ptr_equal(cg_strmap_remove(map, key), (void *)(uintptr_t)(i + 1));
	}
	assert_int_equal(cg_strmap_count(map), 0);
	cg_strmap_destroy(map, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_basic),
	        cmocka_unit_test(test_keys_are_copied),
	        cmocka_unit_test(test_foreach),
	        cmocka_unit_test(test_destroy_frees_values),
	        cmocka_unit_test(test_stress_against_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
