/* Run-time state (gateway/state/): the model's rules, and the file
 * backend's round trip, refusals and failures. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cg_file.h"
#include "state/state.h"

static char scratch[256];

static const char *in_scratch(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", scratch, name);
	return buf;
}

static int setup(void **state)
{
	(void)state;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(scratch, sizeof(scratch), "%s/test_state.XXXXXX", base);
	return mkdtemp(scratch) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
	return system(cmd) == 0 ? 0 : -1;
}

/* Runs the loop until the state's writes are done. */
static void settle(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
}

static void test_memory_locks(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[256];
	gw_state_t *st = gw_state_open(&loop, NULL, err, sizeof(err));
	assert_non_null(st);
	assert_string_equal(gw_state_backend(st), "memory");
	const gw_lock_t *a = gw_state_lock_add(st, "Alice@Example.com", NULL, "stolen laptop", 1000,
	                                       0, "127.0.0.1:1");
	const gw_lock_t *b = gw_state_lock_add(st, NULL, "laptop-9", NULL, 1000, 5000, "x");
	assert_non_null(a);
	assert_non_null(b);
	assert_string_equal(a->id, "lock-1");
	assert_string_equal(b->id, "lock-2");
	/* users compare case-insensitively, devices exactly */
	gw_lock_match_t m;
	assert_true(gw_state_lock_match(st, "alice@example.com", NULL, 2000, &m));
	assert_string_equal(m.id, "lock-1");
	assert_string_equal(m.reason, "stolen laptop");
	assert_true(gw_state_lock_match(st, "bob@example.com", "laptop-9", 2000, &m));
	assert_string_equal(m.id, "lock-2");
	assert_string_equal(m.reason, "");
	assert_false(gw_state_lock_match(st, "bob@example.com", "LAPTOP-9", 2000, &m));
	/* b lapses at 5000: gone from matches, gets and listings */
	assert_false(gw_state_lock_match(st, NULL, "laptop-9", 5000, &m));
	assert_null(gw_state_lock_get(st, "lock-2", 5000));
	assert_ptr_equal(gw_state_locks(st, 5000), a);
	assert_null(a->next);
	assert_true(gw_state_lock_remove(st, "lock-1"));
	assert_false(gw_state_lock_remove(st, "lock-1"));
	assert_null(gw_state_locks(st, 5000));
	assert_null(gw_state_problem(st));
	gw_state_close(st);
	uv_loop_close(&loop);
}

static void test_memory_trust(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[256];
	gw_state_t *st = gw_state_open(&loop, NULL, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(gw_state_trust_level(st, "d1", 0), POL_TRUST_NONE);
	assert_int_equal(gw_state_trust_level(st, NULL, 0), POL_TRUST_NONE);
	assert_int_equal(gw_state_trust_set(st, "d1", POL_TRUST_LOW, 100, 0, "me"), 0);
	assert_int_equal(gw_state_trust_set(st, "d2", POL_TRUST_MEDIUM, 100, 200, "me"), 0);
	assert_int_equal(gw_state_trust_level(st, "d1", 150), POL_TRUST_LOW);
	assert_int_equal(gw_state_trust_level(st, "d2", 150), POL_TRUST_MEDIUM);
	assert_int_equal(gw_state_trust_level(st, "d2", 200), POL_TRUST_NONE);   /* lapsed */
	assert_int_equal(gw_state_trust_level(st, "d2", 150), POL_TRUST_MEDIUM); /* a pure read */
	assert_null(gw_state_trust_get(st, "d2", 200));                          /* lapsed */
	assert_null(gw_state_trust_get(st, "d2", 150));                          /* and dropped */
	const gw_trust_entry_t *e = gw_state_trust_get(st, "d1", 150);
	assert_non_null(e);
	assert_string_equal(e->by, "me");
	assert_true(gw_state_trust_clear(st, "d1"));
	assert_false(gw_state_trust_clear(st, "d1"));
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* Saved, reopened: the same locks and levels, ids counting on, lapsed
 * entries gone, files 0600. */
static void test_file_round_trip(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[512], dir[512];
	snprintf(dir, sizeof(dir), "%s", in_scratch("round/trip"));
	gw_state_t *st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	assert_string_equal(gw_state_backend(st), "file");
	int64_t now = 1700000000000;
	assert_non_null(gw_state_lock_add(st, "alice@example.com", NULL, "why", now, 0, "a"));
	assert_non_null(gw_state_lock_add(st, NULL, "d7", NULL, now, now + 1000, "b"));
	for (int i = 0; i < 50; i++) /* coalesced while a write is in flight */
		assert_int_equal(gw_state_trust_set(st, "d1",
		                                    i % 2 ? POL_TRUST_HIGH : POL_TRUST_LOW, now, 0,
		                                    "c"),
		                 0);
	settle(&loop);
	assert_null(gw_state_problem(st));
	gw_state_close(st);

	struct stat sb;
	char path[600];
	snprintf(path, sizeof(path), "%s/locks.json", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	gw_lock_match_t l;
	assert_true(gw_state_lock_match(st, "ALICE@example.com", NULL, now, &l));
	assert_string_equal(l.id, "lock-1");
	assert_string_equal(l.reason, "why");
	assert_non_null(gw_state_lock_get(st, "lock-2", now));
	assert_null(gw_state_lock_get(st, "lock-2", now + 1000));              /* lapsed */
	assert_int_equal(gw_state_trust_level(st, "d1", now), POL_TRUST_HIGH); /* the last one */
	const gw_lock_t *next = gw_state_lock_add(st, "bob@example.com", NULL, NULL, now, 0, "d");
	assert_string_equal(next->id, "lock-3");
	settle(&loop);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* A file that cannot be read refuses the start, naming file and place. */
static void test_file_unreadable_refuses(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[512], dir[512];
	snprintf(dir, sizeof(dir), "%s", in_scratch("bad"));
	assert_int_equal(cg_file_mkdirs(dir, 0700, NULL, 0), 0);
	char path[600];
	snprintf(path, sizeof(path), "%s/locks.json", dir);
	static const char torn[] = "{\"next\": 3, \"locks\": [{\"id\": \"lock-1\"";
	assert_int_equal(cg_file_write_atomic(path, 0600, torn, sizeof(torn) - 1), 0);
	assert_null(gw_state_open(&loop, dir, err, sizeof(err)));
	assert_non_null(strstr(err, "locks.json:1:"));

	static const char odd[] = "{\"next\": 3, \"locks\": [{\"id\": \"lock-1\", \"created\": 1,"
	                          " \"expires\": 0, \"by\": \"x\"}]}";
	assert_int_equal(cg_file_write_atomic(path, 0600, odd, sizeof(odd) - 1), 0);
	assert_null(gw_state_open(&loop, dir, err, sizeof(err)));
	assert_non_null(strstr(err, "locks[0]"));

	unlink(path); /* locks.json */
	snprintf(path, sizeof(path), "%s/trust.json", dir);
	static const char level[] = "{\"devices\": {\"d\": {\"level\": \"godlike\", \"set\": 1,"
	                            " \"expires\": 0, \"by\": \"x\"}}}";
	assert_int_equal(cg_file_write_atomic(path, 0600, level, sizeof(level) - 1), 0);
	assert_null(gw_state_open(&loop, dir, err, sizeof(err)));
	assert_non_null(strstr(err, "devices.d"));
	uv_loop_close(&loop);
}

/* A write that fails keeps the change in memory, says why, counts it, and
 * the next change that can be written clears the problem. */
static void test_file_write_failure(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[512], dir[512];
	snprintf(dir, sizeof(dir), "%s", in_scratch("fail"));
	gw_state_t *st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	char blocker[600];
	snprintf(blocker, sizeof(blocker), "%s/locks.json", dir);
	assert_int_equal(mkdir(blocker, 0700), 0); /* rename over a folder fails */
	assert_non_null(gw_state_lock_add(st, "eve@example.com", NULL, NULL, 1, 0, "x"));
	settle(&loop);
	assert_non_null(gw_state_problem(st));
	assert_non_null(strstr(gw_state_problem(st), "locks.json"));
	assert_int_equal(gw_state_errors(st), 1);
	assert_true(gw_state_lock_match(st, "eve@example.com", NULL, 1,
	                                &(gw_lock_match_t){0})); /* still in force */
	assert_int_equal(rmdir(blocker), 0);
	assert_non_null(gw_state_lock_add(st, "mallory@example.com", NULL, NULL, 1, 0, "x"));
	settle(&loop);
	assert_null(gw_state_problem(st));
	gw_state_close(st);
	st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	assert_true(gw_state_lock_match(st, "eve@example.com", NULL, 1, &(gw_lock_match_t){0}));
	assert_true(gw_state_lock_match(st, "mallory@example.com", NULL, 1, &(gw_lock_match_t){0}));
	gw_state_close(st);
	uv_loop_close(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_memory_locks),
	        cmocka_unit_test(test_memory_trust),
	        cmocka_unit_test(test_file_round_trip),
	        cmocka_unit_test(test_file_unreadable_refuses),
	        cmocka_unit_test(test_file_write_failure),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
