/* The device registry (gateway/state/state_devices.c): registration and
 * updates, forgetting (the forget time kept, never moved back), the
 * listing, the bound, and the saved form's round trip and refusals. */
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

static int setup(void **state)
{
	(void)state;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(scratch, sizeof(scratch), "%s/test_state_devices.XXXXXX", base);
	return mkdtemp(scratch) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
	return system(cmd) == 0 ? 0 : -1;
}

static gw_state_t *open_memory(uv_loop_t *loop)
{
	char err[256];
	uv_loop_init(loop);
	gw_state_t *st = gw_state_open(loop, NULL, err, sizeof(err));
	assert_non_null(st);
	return st;
}

static void test_register_and_update(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	gw_state_t *st = open_memory(&loop);
	bool registered = false;
	assert_null(gw_state_device_get(st, "d-1"));
	assert_null(gw_state_device_get(st, NULL));
	assert_int_equal(gw_state_device_seen(st, "d-1", "alice@example.com", "Linux 6.1", 1000,
	                                      &registered),
	                 0);
	assert_true(registered);
	const gw_device_t *d = gw_state_device_get(st, "d-1");
	assert_non_null(d);
	assert_string_equal(d->user, "alice@example.com");
	assert_string_equal(d->platform, "Linux 6.1");
	assert_int_equal(d->first_seen_ms, 1000);
	assert_int_equal(d->last_seen_ms, 1000);
	assert_int_equal(d->forgotten_ms, 0);
	/* a later login: last seen moves, no new registration; a login that
	 * reports no platform keeps the known one; the user follows the login */
	assert_int_equal(
	        gw_state_device_seen(st, "d-1", "bob@example.com", NULL, 2000, &registered), 0);
	assert_false(registered);
	d = gw_state_device_get(st, "d-1");
	assert_string_equal(d->user, "bob@example.com");
	assert_string_equal(d->platform, "Linux 6.1");
	assert_int_equal(d->first_seen_ms, 1000);
	assert_int_equal(d->last_seen_ms, 2000);
	assert_int_equal(
	        gw_state_device_seen(st, "d-1", "bob@example.com", "Linux 6.2", 3000, &registered),
	        0);
	assert_string_equal(gw_state_device_get(st, "d-1")->platform, "Linux 6.2");
	assert_true(gw_state_device_room(st, "d-1"));
	gw_state_close(st);
	uv_loop_close(&loop);
}

static void test_forget(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	gw_state_t *st = open_memory(&loop);
	bool registered;
	assert_false(gw_state_device_forget(st, "d-unknown", 1000));
	assert_int_equal(gw_state_device_forgotten_at(st, "d-unknown"), 0);
	assert_int_equal(gw_state_device_forgotten_at(st, NULL), 0);
	assert_int_equal(
	        gw_state_device_seen(st, "d-1", "alice@example.com", "Linux", 1000, &registered),
	        0);
	assert_true(gw_state_device_forget(st, "d-1", 5000));
	assert_false(gw_state_device_forget(st, "d-1", 6000)); /* forgotten already */
	assert_null(gw_state_device_get(st, "d-1"));
	assert_int_equal(gw_state_device_forgotten_at(st, "d-1"), 5000);
	/* its next login registers it anew; the forget time stays */
	assert_int_equal(
	        gw_state_device_seen(st, "d-1", "alice@example.com", NULL, 7000, &registered), 0);
	assert_true(registered);
	const gw_device_t *d = gw_state_device_get(st, "d-1");
	assert_non_null(d);
	assert_int_equal(d->first_seen_ms, 7000);
	assert_null(d->platform); /* what was known went with the forget */
	assert_int_equal(gw_state_device_forgotten_at(st, "d-1"), 5000);
	/* a clock stepped back never moves the forget time back */
	assert_true(gw_state_device_forget(st, "d-1", 4000));
	assert_int_equal(gw_state_device_forgotten_at(st, "d-1"), 5000);
	gw_state_close(st);
	uv_loop_close(&loop);
}

static void test_list(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	gw_state_t *st = open_memory(&loop);
	bool registered;
	assert_int_equal(gw_state_device_seen(st, "d-c", "c@x", NULL, 3000, &registered), 0);
	assert_int_equal(gw_state_device_seen(st, "d-b", "b@x", NULL, 1000, &registered), 0);
	assert_int_equal(gw_state_device_seen(st, "d-a", "a@x", NULL, 1000, &registered), 0);
	assert_int_equal(gw_state_device_seen(st, "d-gone", "g@x", NULL, 500, &registered), 0);
	assert_true(gw_state_device_forget(st, "d-gone", 600));
	gw_device_view_t *views;
	size_t n;
	assert_int_equal(gw_state_devices_list(st, &views, &n), 0);
	assert_int_equal(n, 3); /* the forgotten one is not listed */
	assert_string_equal(views[0].id, "d-a");
	assert_string_equal(views[1].id, "d-b");
	assert_string_equal(views[2].id, "d-c");
	assert_string_equal(views[2].device->user, "c@x");
	free(views);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* Past the bound a new device is refused; known ones (forgotten ones too)
 * still log in. */
static void test_bounded(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	gw_state_t *st = open_memory(&loop);
	bool registered;
	char id[32];
	for (int i = 0; i < GW_STATE_DEVICES_MAX; i++) {
		snprintf(id, sizeof(id), "d-%d", i);
		assert_int_equal(gw_state_device_seen(st, id, "u@x", NULL, 1, &registered), 0);
	}
	assert_true(gw_state_device_forget(st, "d-7", 2));
	assert_false(gw_state_device_room(st, "d-new"));
	assert_int_equal(gw_state_device_seen(st, "d-new", "u@x", NULL, 3, &registered), -2);
	assert_null(gw_state_device_get(st, "d-new"));
	assert_true(gw_state_device_room(st, "d-7"));
	assert_int_equal(gw_state_device_seen(st, "d-7", "u@x", NULL, 3, &registered), 0);
	assert_true(registered);
	assert_int_equal(gw_state_device_seen(st, "d-8", "u@x", NULL, 3, &registered), 0);
	gw_state_close(st);
	uv_loop_close(&loop);
}

/* Saved and read back: registered and forgotten devices alike, 0600. */
static void test_file_round_trip(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char err[512], dir[512];
	snprintf(dir, sizeof(dir), "%s/round", scratch);
	gw_state_t *st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	bool registered;
	int64_t now = 1700000000000;
	assert_int_equal(gw_state_device_seen(st, "d-1", "alice@example.com",
	                                      "Linux 6.1 Debian GNU/Linux 12 (bookworm)", now,
	                                      &registered),
	                 0);
	assert_int_equal(gw_state_device_seen(st, "d-2", "bob@example.com", NULL, now, &registered),
	                 0);
	for (int i = 1; i <= 50; i++) /* coalesced while a write is in flight */
		assert_int_equal(gw_state_device_seen(st, "d-1", "alice@example.com", NULL, now + i,
		                                      &registered),
		                 0);
	assert_true(gw_state_device_forget(st, "d-2", now + 100));
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_null(gw_state_problem(st));
	gw_state_close(st);

	char path[600];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/devices.json", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	st = gw_state_open(&loop, dir, err, sizeof(err));
	assert_non_null(st);
	const gw_device_t *d = gw_state_device_get(st, "d-1");
	assert_non_null(d);
	assert_string_equal(d->user, "alice@example.com");
	assert_string_equal(d->platform, "Linux 6.1 Debian GNU/Linux 12 (bookworm)");
	assert_int_equal(d->first_seen_ms, now);
	assert_int_equal(d->last_seen_ms, now + 50);
	assert_null(gw_state_device_get(st, "d-2"));
	assert_int_equal(gw_state_device_forgotten_at(st, "d-2"), now + 100);
	gw_state_close(st);
	uv_loop_close(&loop);
}

static void refused(uv_loop_t *loop, const char *dir, const char *text, const char *expect)
{
	char path[600], err[512];
	snprintf(path, sizeof(path), "%s/devices.json", dir);
	assert_int_equal(cg_file_write_atomic(path, 0600, text, strlen(text)), 0);
	assert_null(gw_state_open(loop, dir, err, sizeof(err)));
	if (strstr(err, expect) == NULL)
		fail_msg("expected \"%s\" in \"%s\"", expect, err);
}

/* What the registry could not have written refuses the start. */
static void test_file_refusals(void **unused)
{
	(void)unused;
	uv_loop_t loop;
	uv_loop_init(&loop);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/bad", scratch);
	assert_int_equal(cg_file_mkdirs(dir, 0700, NULL, 0), 0);
	refused(&loop, dir, "{\"devices\": {\"d-1\": {\"user\": \"a\"", "devices.json:1:");
	refused(&loop, dir, "{\"registry\": {}}", "expected {\"devices\"");
	refused(&loop, dir,
	        "{\"devices\": {\"d-1\": {\"user\": \"a\", \"platform\": null, \"first_seen\": "
	        "1}}}",
	        "devices.d-1: expected");
	/* neither registered (no user) nor forgotten (never) */
	refused(&loop, dir,
	        "{\"devices\": {\"d-1\": {\"user\": null, \"platform\": null, \"first_seen\": 0,"
	        " \"last_seen\": 0, \"forgotten\": 0}}}",
	        "devices.d-1: neither");
	refused(&loop, dir,
	        "{\"devices\": {\"d-1\": {\"user\": \"a\", \"platform\": null, \"first_seen\": -5,"
	        " \"last_seen\": 0, \"forgotten\": 0}}}",
	        "before 1970");
	refused(&loop, dir,
	        "{\"devices\": {\"d\\u0001\": {\"user\": \"a\", \"platform\": null, \"first_seen\":"
	        " 1, \"last_seen\": 1, \"forgotten\": 0}}}",
	        "devices: not a device id");
	uv_loop_close(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_register_and_update),
	        cmocka_unit_test(test_forget),
	        cmocka_unit_test(test_list),
	        cmocka_unit_test(test_bounded),
	        cmocka_unit_test(test_file_round_trip),
	        cmocka_unit_test(test_file_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
