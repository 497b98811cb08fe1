/* Tests common/cg_audit.c: line shape and field order, escaping, logrotate
 * style reopen, and failure/recovery (a symlink switched from /dev/full to a
 * regular file stands in for "disk full, then fixed"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cg_audit.h"
#include "cg_time.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -1;
	strcpy(fx->dir, "/tmp/cg-audit-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/audit.jsonl", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0)
		return -1;
	free(fx);
	return 0;
}

/* Whole file as a string (caller frees). */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *data = calloc(1, (size_t)n + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return data;
}

static size_t count_lines(const char *text)
{
	size_t n = 0;
	for (const char *p = text; *p; p++)
		n += *p == '\n';
	return n;
}

/* Checks that keys appear in this order in the raw line. */
static void assert_key_order(const char *line, const char *const *keys, size_t n)
{
	const char *prev = line;
	for (size_t i = 0; i < n; i++) {
		char quoted[64];
		snprintf(quoted, sizeof(quoted), "\"%s\":", keys[i]);
		const char *at = strstr(line, quoted);
		if (!at || at < prev)
			fail_msg("key %s missing or out of order in %s", keys[i], line);
		prev = at;
	}
}

static void test_lines(void **state)
{
	struct fixture *fx = *state;
	char err[256] = "";
	mode_t old_umask = umask(022);
	cg_audit_t *audit = cg_audit_open(fx->path, CG_AUDIT_REFUSE, err, sizeof(err));
	umask(old_umask);
	assert_non_null(audit);
	assert_string_equal(cg_audit_path(audit), fx->path);
	assert_int_equal(cg_audit_on_failure(audit), CG_AUDIT_REFUSE);
	cg_audit_set_on_failure(audit, CG_AUDIT_CONTINUE);
	assert_int_equal(cg_audit_on_failure(audit), CG_AUDIT_CONTINUE);
	assert_true(cg_audit_healthy(audit));

	struct stat st;
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	int64_t before = cg_wall_ms();
	/* Deliberately not alphabetical: the order must survive. */
	json_t *fields =
	        json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "session", "s-1", "client",
	                  "192.0.2.1:50000", "service", "orders-db", "bytes_up", (json_int_t)10,
	                  "bytes_down", (json_int_t)20, "reason", "client closed");
	assert_non_null(fields);
	assert_int_equal(cg_audit_emit(audit, "session.end", fields), 0);
	assert_int_equal(cg_audit_emit(audit, "gateway.start", NULL), 0);

	/* ts and event in fields cannot forge the writer's own */
	fields = json_pack("{s:s, s:s, s:s}", "ts", "1999", "zeta", "z", "event", "forged");
	assert_int_equal(cg_audit_emit(audit, "admin.lock", fields), 0);

	/* control characters escaped, UTF-8 kept as is */
	fields = json_pack("{s:s}", "sql", "select 1;\n\x01\t\xc3\xbc");
	assert_int_equal(cg_audit_emit(audit, "query", fields), 0);

	/* a huge value is written whole, on one line */
	enum { HUGE = 1 << 20 };
	char *big = malloc(HUGE + 1);
	assert_non_null(big);
	memset(big, 'q', HUGE);
	big[HUGE] = '\0';
	fields = json_object();
	json_object_set_new(fields, "sql", json_string(big));
	assert_int_equal(cg_audit_emit(audit, "query", fields), 0);
	free(big);
	int64_t after = cg_wall_ms();

	assert_int_equal(cg_audit_written(audit), 5);
	assert_int_equal(cg_audit_lost(audit), 0);
	cg_audit_close(audit);

	char *text = slurp(fx->path);
	assert_int_equal(count_lines(text), 5);
	char *save = NULL;
	int i = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		assert_true(strncmp(line, "{\"ts\":\"", 7) == 0);
		json_error_t jerr;
		json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
		if (!obj)
			fail_msg("line %d is not JSON: %s", i, jerr.text);
		const char *ts = json_string_value(json_object_get(obj, "ts"));
		assert_non_null(ts);
		assert_int_equal(strlen(ts), 24);
		char lo[CG_RFC3339_LEN], hi[CG_RFC3339_LEN];
		cg_rfc3339_ms(before, lo);
		cg_rfc3339_ms(after, hi);
		assert_true(strcmp(ts, lo) >= 0 && strcmp(ts, hi) <= 0);
		const char *event = json_string_value(json_object_get(obj, "event"));
		assert_non_null(event);

		switch (i) {
		case 0: {
			static const char *const order[] = {"ts",         "event",   "session",
			                                    "client",     "service", "bytes_up",
			                                    "bytes_down", "reason"};
			assert_key_order(line, order, sizeof(order) / sizeof(order[0]));
			assert_string_equal(event, "session.end");
			assert_int_equal(json_integer_value(json_object_get(obj, "bytes_down")),
			                 20);
			assert_int_equal(json_object_size(obj), 8);
			break;
		}
		case 1:
			assert_string_equal(event, "gateway.start");
			assert_int_equal(json_object_size(obj), 2);
			break;
		case 2:
			assert_string_equal(event, "admin.lock");
			assert_int_equal(json_object_size(obj), 3);
			assert_string_equal(json_string_value(json_object_get(obj, "zeta")), "z");
			assert_true(strstr(line, "1999") == NULL);
			break;
		case 3:
			assert_non_null(strstr(line, "\"sql\":\"select 1;\\n\\u0001\\t\xc3\xbc\""));
			break;
		case 4:
			assert_int_equal(strlen(json_string_value(json_object_get(obj, "sql"))),
			                 HUGE);
			break;
		}
		json_decref(obj);
		i++;
	}
	assert_int_equal(i, 5);
	free(text);
}

static void test_reopen_after_rename(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	char rotated[160];
	snprintf(rotated, sizeof(rotated), "%s.1", fx->path);

	cg_audit_t *audit = cg_audit_open(fx->path, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(audit);
	assert_int_equal(cg_audit_emit(audit, "one", NULL), 0);

	/* logrotate: rename, then SIGUSR1 */
	assert_int_equal(rename(fx->path, rotated), 0);
	assert_int_equal(cg_audit_emit(audit, "two", NULL), 0); /* still the old file */
	assert_int_equal(cg_audit_reopen(audit), 0);
	assert_int_equal(cg_audit_emit(audit, "three", NULL), 0);

	/* A failed reopen keeps the old descriptor in use. */
	char rotated2[160];
	snprintf(rotated2, sizeof(rotated2), "%s.2", fx->path);
	assert_int_equal(rename(fx->path, rotated2), 0);
	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(cg_audit_reopen(audit), -EISDIR);
	assert_int_equal(cg_audit_emit(audit, "four", NULL), 0);
	assert_true(cg_audit_healthy(audit));
	assert_int_equal(cg_audit_written(audit), 4);
	cg_audit_close(audit);
	assert_int_equal(rmdir(fx->path), 0);

	char *old = slurp(rotated);
	assert_int_equal(count_lines(old), 2);
	assert_non_null(strstr(old, "\"event\":\"one\""));
	assert_non_null(strstr(old, "\"event\":\"two\""));
	free(old);
	char *cur = slurp(rotated2);
	assert_int_equal(count_lines(cur), 2);
	assert_non_null(strstr(cur, "\"event\":\"three\""));
	assert_non_null(strstr(cur, "\"event\":\"four\""));
	free(cur);
}

static void test_failure_and_recovery(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	char link[160], good[160];
	snprintf(link, sizeof(link), "%s/current.jsonl", fx->dir);
	snprintf(good, sizeof(good), "%s/good.jsonl", fx->dir);
	assert_int_equal(symlink("/dev/full", link), 0);

	cg_audit_t *audit = cg_audit_open(link, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(audit);
	json_t *fields = json_pack("{s:s}", "session", "s-9");
	assert_int_equal(cg_audit_emit(audit, "session.start", fields), -ENOSPC);
	assert_false(cg_audit_healthy(audit));
	assert_int_equal(cg_audit_lost(audit), 1);
	assert_int_equal(cg_audit_written(audit), 0);

	/* Still broken: the automatic reopen lands on /dev/full again. */
	assert_int_equal(cg_audit_emit(audit, "session.start", NULL), -ENOSPC);
	assert_int_equal(cg_audit_lost(audit), 2);
	assert_false(cg_audit_healthy(audit));

	/* "Disk fixed": the path now leads to a writable file. The next emit
	 * reopens on its own and succeeds. */
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink(good, link), 0);
	assert_int_equal(cg_audit_emit(audit, "session.end", NULL), 0);
	assert_true(cg_audit_healthy(audit));
	assert_int_equal(cg_audit_written(audit), 1);
	assert_int_equal(cg_audit_lost(audit), 2);
	cg_audit_close(audit);

	char *text = slurp(good);
	assert_int_equal(count_lines(text), 1);
	assert_non_null(strstr(text, "\"event\":\"session.end\""));
	free(text);

	/* An explicit reopen also recovers. */
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink("/dev/full", link), 0);
	audit = cg_audit_open(link, CG_AUDIT_CONTINUE, err, sizeof(err));
	assert_non_null(audit);
	assert_true(cg_audit_emit(audit, "x", NULL) < 0);
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink(good, link), 0);
	assert_int_equal(cg_audit_reopen(audit), 0);
	assert_false(cg_audit_healthy(audit)); /* until a write succeeds */
	assert_int_equal(cg_audit_emit(audit, "y", NULL), 0);
	assert_true(cg_audit_healthy(audit));
	cg_audit_close(audit);
}

static void test_bad_event(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	cg_audit_t *audit = cg_audit_open(fx->path, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(audit);
	assert_true(cg_audit_emit(audit, "bad\xff", json_object()) < 0);
	assert_int_equal(cg_audit_lost(audit), 1);
	assert_false(cg_audit_healthy(audit));
	assert_int_equal(cg_audit_emit(audit, "good", NULL), 0);
	assert_true(cg_audit_healthy(audit));
	cg_audit_close(audit);
	cg_audit_close(NULL);
}

/* A disk that fills in the middle of a line: the part written is cut off
 * again, so the file holds whole lines only (RLIMIT_FSIZE stops the write
 * part way, like a full disk, without root or a mount). */
static void test_no_torn_line(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	cg_audit_t *audit = cg_audit_open(fx->path, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(audit);
	assert_int_equal(cg_audit_emit(audit, "gateway.start", NULL), 0);
	struct stat st;
	assert_int_equal(stat(fx->path, &st), 0);

	struct rlimit old, small;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = (rlim_t)st.st_size + 20; /* room for part of the next line */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	int rc = cg_audit_emit(audit, "session.start",
	                       json_pack("{s:s}", "padding", "0123456789012345678901234567890123"));
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_true(rc < 0);
	assert_false(cg_audit_healthy(audit));
	assert_int_equal(stat(fx->path, &st), 0);

	assert_int_equal(cg_audit_emit(audit, "gateway.stop", NULL), 0);
	cg_audit_close(audit);
	char *text = slurp(fx->path);
	assert_int_equal(count_lines(text), 2);
	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		json_error_t jerr;
		json_t *j = json_loads(line, 0, &jerr);
		if (j == NULL)
			fail_msg("torn line: %s", line);
		json_decref(j);
	}
	free(text);
}

/* A reopen that fails after the file was deleted (not just renamed) stops
 * writing into the deleted file: events count as lost, the writer is
 * unhealthy, and the path works again once it can be opened. */
static void test_reopen_after_delete(void **state)
{
	struct fixture *fx = *state;
	char err[256], dir[200], path[240];
	snprintf(dir, sizeof(dir), "%s/logs", fx->dir);
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	cg_audit_t *audit = cg_audit_open(path, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(audit);
	assert_int_equal(cg_audit_emit(audit, "gateway.start", NULL), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0); /* the path cannot be opened now */
	assert_true(cg_audit_reopen(audit) < 0);
	assert_false(cg_audit_healthy(audit));
	uint64_t lost = cg_audit_lost(audit);
	assert_true(cg_audit_emit(audit, "session.start", NULL) < 0);
	assert_int_equal(cg_audit_lost(audit), lost + 1);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(cg_audit_emit(audit, "session.end", NULL), 0);
	assert_true(cg_audit_healthy(audit));
	cg_audit_close(audit);
	char *text = slurp(path);
	assert_int_equal(count_lines(text), 1);
	assert_non_null(strstr(text, "session.end"));
	free(text);
}

static void test_open_failure(void **state)
{
	struct fixture *fx = *state;
	char err[256] = "";
	char path[160];
	snprintf(path, sizeof(path), "%s/missing/audit.jsonl", fx->dir);
	assert_null(cg_audit_open(path, CG_AUDIT_REFUSE, err, sizeof(err)));
	char want[256];
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(err, want);
}

static void test_stdout(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	char out[160];
	snprintf(out, sizeof(out), "%s/stdout.jsonl", fx->dir);

	/* Point fd 1 at a file for the duration (cmocka reports on stdout). */
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	FILE *f = fopen(out, "w");
	assert_non_null(f);
	dup2(fileno(f), STDOUT_FILENO);
	fclose(f);

	cg_audit_t *audit = cg_audit_open("-", CG_AUDIT_REFUSE, err, sizeof(err));
	int rc1 = audit ? cg_audit_emit(audit, "gateway.start", NULL) : -1;
	int rc2 = audit ? cg_audit_reopen(audit) : -1;
	int rc3 = audit ? cg_audit_emit(audit, "gateway.stop", NULL) : -1;
	cg_audit_close(audit); /* must not close fd 1 */
	int still_open = write(STDOUT_FILENO, "", 0);

	dup2(saved, STDOUT_FILENO);
	close(saved);
	assert_non_null(audit);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	assert_int_equal(rc3, 0);
	assert_int_equal(still_open, 0);

	char *text = slurp(out);
	assert_int_equal(count_lines(text), 2);
	assert_non_null(strstr(text, "\"event\":\"gateway.stop\""));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_lines, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_reopen_after_rename, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_failure_and_recovery, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_bad_event, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_no_torn_line, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_reopen_after_delete, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stdout, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
