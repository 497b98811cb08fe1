/* Tests common/cg_audit.c: line shape and field order, escaping, logrotate
 * style reopen, and failure/recovery (a symlink switched from /dev/full to a
 * regular file stands in for "disk full, then fixed"); with the chain: seq
 * and prev, a restart, a rotation (with the gateway up, and while it is
 * down: the state file), a torn last line repaired, one writer per file,
 * the move to a new path, the tap, and no gap for a failed write. */
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
#include "cg_audit_chain.h"
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

/* ---- the chain ---- */

/* The verdict of the verifier over files, in order (NULL-terminated). */
static cg_chain_break_t verify(cg_chain_verifier_t *v, const char *const *paths)
{
	cg_chain_verifier_init(v);
	for (const char *const *p = paths; *p != NULL; p++) {
		cg_chain_verifier_next_file(v);
		char *text = slurp(*p);
		char *line = text;
		for (char *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1)
			(void)cg_chain_verifier_line(v, line, (size_t)(nl - line));
		if (*line != '\0')
			cg_chain_verifier_torn(v, line, strlen(line));
		free(text);
	}
	return cg_chain_verifier_finish(v);
}

static cg_audit_t *open_chained(const char *path, const char *state)
{
	char err[512] = "";
	cg_audit_opts_t opts = {
	        .path = path, .on_failure = CG_AUDIT_REFUSE, .chain = true, .state_path = state};
	cg_audit_t *audit = cg_audit_open_opts(&opts, err, sizeof(err));
	if (audit == NULL)
		fail_msg("open %s: %s", path, err);
	return audit;
}

static void emit_n(cg_audit_t *audit, int n)
{
	for (int i = 0; i < n; i++)
		assert_int_equal(cg_audit_emit(audit, "session.start",
		                               json_pack("{s:s, s:i}", "user", "alice", "i", i)),
		                 0);
}

/* seq and hash of a file's last line, and its line count. */
static size_t last_line(const char *path, uint64_t *seq, char hash[CG_CHAIN_HEX])
{
	char *text = slurp(path);
	size_t n = count_lines(text);
	char *end = text + strlen(text) - 1, *start = end;
	while (start > text && start[-1] != '\n')
		start--;
	char prev[CG_CHAIN_HEX];
	assert_int_equal(cg_chain_parse(start, (size_t)(end - start), seq, prev, NULL, 0),
	                 CG_CHAIN_LINE_OK);
	cg_chain_hash(start, (size_t)(end - start), hash);
	free(text);
	return n;
}

static void read_state(const char *path, uint64_t *seq, char hash[CG_CHAIN_HEX])
{
	char *text = slurp(path);
	json_t *st = json_loads(text, 0, NULL);
	assert_non_null(st);
	*seq = (uint64_t)json_integer_value(json_object_get(st, "seq"));
	snprintf(hash, CG_CHAIN_HEX, "%s", json_string_value(json_object_get(st, "hash")));
	json_decref(st);
	free(text);
}

static void test_chain_lines(void **state)
{
	struct fixture *fx = *state;
	char st_path[160];
	snprintf(st_path, sizeof(st_path), "%s.state", fx->path);
	cg_audit_t *audit = open_chained(fx->path, st_path);
	assert_true(cg_audit_chained(audit));
	assert_string_equal(cg_audit_state_path(audit), st_path);
	/* the state exists from the start (fsynced at open) */
	uint64_t seq;
	char hash[CG_CHAIN_HEX], head[CG_CHAIN_HEX];
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, 0);
	assert_string_equal(hash, CG_CHAIN_GENESIS);

	emit_n(audit, 2);
	/* seq and prev in fields cannot forge the writer's own */
	assert_int_equal(
	        cg_audit_emit(audit, "admin.lock",
	                      json_pack("{s:i, s:s, s:s}", "seq", 99, "prev", "beef", "by", "x")),
	        0);
	assert_int_equal(cg_audit_chain_head(audit, head), 3);
	cg_audit_close(audit);

	char *text = slurp(fx->path);
	assert_int_equal(count_lines(text), 3);
	char want_prev[CG_CHAIN_HEX];
	memcpy(want_prev, CG_CHAIN_GENESIS, CG_CHAIN_HEX);
	int i = 1;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		static const char *const order[] = {"ts", "event", "seq", "prev"};
		assert_key_order(line, order, 4);
		json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
		assert_non_null(obj);
		assert_int_equal(json_integer_value(json_object_get(obj, "seq")), i);
		assert_string_equal(json_string_value(json_object_get(obj, "prev")), want_prev);
		cg_chain_hash(line, strlen(line), want_prev);
		if (i == 3)
			assert_string_equal(json_string_value(json_object_get(obj, "by")), "x");
		json_decref(obj);
		i++;
	}
	free(text);
	assert_string_equal(head, want_prev);
	/* close wrote the last position */
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, 3);
	assert_string_equal(hash, want_prev);

	cg_chain_verifier_t v;
	const char *const files[] = {fx->path, NULL};
	assert_int_equal(verify(&v, files), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 3);
}

static void test_chain_restart_and_rotation(void **state)
{
	struct fixture *fx = *state;
	char st_path[160], rot1[160], rot2[160];
	snprintf(st_path, sizeof(st_path), "%s.state", fx->path);
	snprintf(rot1, sizeof(rot1), "%s.2", fx->path);
	snprintf(rot2, sizeof(rot2), "%s.1", fx->path);
	uint64_t seq;
	char hash[CG_CHAIN_HEX], head[CG_CHAIN_HEX];

	cg_audit_t *audit = open_chained(fx->path, st_path);
	emit_n(audit, 2);
	cg_audit_close(audit);
	/* a restart continues from the file's last line, whatever the state
	 * says (it is the truth) */
	assert_int_equal(unlink(st_path), 0);
	audit = open_chained(fx->path, st_path);
	emit_n(audit, 1);
	assert_int_equal(last_line(fx->path, &seq, hash), 3);
	assert_int_equal(seq, 3);

	/* logrotate while up: rename, a line still to the old file, SIGUSR1 */
	assert_int_equal(rename(fx->path, rot1), 0);
	emit_n(audit, 1);
	assert_int_equal(cg_audit_reopen(audit), 0);
	/* the reopen wrote the state durably: the new file is empty */
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, 4);
	emit_n(audit, 2);
	/* a SIGUSR1 without a rotation keeps the file (and its lock) */
	assert_int_equal(cg_audit_reopen(audit), 0);
	emit_n(audit, 1);
	cg_audit_close(audit);

	/* rotated while down: the new file is empty, the state says where */
	assert_int_equal(rename(fx->path, rot2), 0);
	audit = open_chained(fx->path, st_path);
	assert_int_equal(cg_audit_chain_head(audit, head), 7);
	emit_n(audit, 2);
	cg_audit_close(audit);

	cg_chain_verifier_t v;
	const char *const series[] = {rot1, rot2, fx->path, NULL};
	assert_int_equal(verify(&v, series), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 9);
	assert_int_equal(v.last_seq, 9);
	/* and each file is a link: leaving one out breaks the series */
	const char *const gap[] = {rot1, fx->path, NULL};
	assert_int_equal(verify(&v, gap), CG_CHAIN_REMOVED);

	/* a lost state with an empty file: a new chain, which verify reports */
	assert_int_equal(unlink(st_path), 0);
	char rot3[160];
	snprintf(rot3, sizeof(rot3), "%s.0", fx->path);
	assert_int_equal(rename(fx->path, rot3), 0);
	audit = open_chained(fx->path, st_path);
	emit_n(audit, 1);
	cg_audit_close(audit);
	const char *const restarted[] = {rot3, fx->path, NULL};
	assert_int_equal(verify(&v, restarted), CG_CHAIN_RESTARTED);
}

static void test_chain_torn_repair(void **state)
{
	struct fixture *fx = *state;
	cg_audit_t *audit = open_chained(fx->path, NULL);
	emit_n(audit, 2);
	cg_audit_close(audit);

	/* a writer killed in the middle of a line */
	static const char torn[] = "{\"ts\":\"2026-12-01T10:00:00.000Z\",\"event\":\"sess\xc3";
	FILE *f = fopen(fx->path, "a");
	assert_non_null(f);
	fputs(torn, f);
	fclose(f);
	cg_chain_verifier_t v;
	const char *const files[] = {fx->path, NULL};
	assert_int_equal(verify(&v, files), CG_CHAIN_TORN);
	assert_int_equal(v.break_line, 3);

	audit = open_chained(fx->path, NULL);
	/* cut at once: nothing glued to it even before the next line */
	char *text = slurp(fx->path);
	assert_int_equal(count_lines(text), 2);
	assert_true(text[strlen(text) - 1] == '\n');
	free(text);
	emit_n(audit, 1);
	cg_audit_close(audit);
	assert_int_equal(verify(&v, files), CG_CHAIN_INTACT);
	assert_int_equal(v.verified, 4);

	text = slurp(fx->path);
	char *third = strchr(strchr(text, '\n') + 1, '\n') + 1;
	json_t *rec = json_loadb(third, (size_t)(strchr(third, '\n') - third), 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "event")), "audit.repaired");
	assert_int_equal(json_integer_value(json_object_get(rec, "seq")), 3);
	assert_int_equal(json_integer_value(json_object_get(rec, "torn_bytes")), strlen(torn));
	char want[CG_CHAIN_HEX];
	cg_chain_hash(torn, strlen(torn), want);
	assert_string_equal(json_string_value(json_object_get(rec, "torn_sha256")), want);
	/* kept as text, the cut-off character escaped (cg_utf8) */
	assert_non_null(strstr(json_string_value(json_object_get(rec, "torn")), "sess\\xc3"));
	assert_string_equal(json_string_value(json_array_get(json_object_get(rec, "escaped"), 0)),
	                    "torn");
	json_decref(rec);
	char *fourth = strchr(third, '\n') + 1;
	assert_non_null(strstr(fourth, "\"seq\":4"));
	free(text);
}

static void test_chain_one_writer(void **state)
{
	struct fixture *fx = *state;
	char err[512] = "";
	cg_audit_t *audit = open_chained(fx->path, NULL);
	cg_audit_opts_t opts = {.path = fx->path, .on_failure = CG_AUDIT_REFUSE, .chain = true};
	assert_null(cg_audit_open_opts(&opts, err, sizeof(err)));
	assert_non_null(strstr(err, "in use by another writer"));
	/* the unchained writer takes no lock (as before) */
	cg_audit_t *plain = cg_audit_open(fx->path, CG_AUDIT_REFUSE, err, sizeof(err));
	assert_non_null(plain);
	cg_audit_close(plain);
	cg_audit_close(audit);
	audit = open_chained(fx->path, NULL); /* free again */
	cg_audit_close(audit);

	/* an unwritable state refuses the open: the chain would not link
	 * across a rotation */
	char bad_state[200];
	snprintf(bad_state, sizeof(bad_state), "%s/missing/audit.state", fx->dir);
	opts.state_path = bad_state;
	assert_null(cg_audit_open_opts(&opts, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot write the chain state"));
}

struct tapped {
	int calls;
	char last[1024];
	uint64_t seq;
};

static void tap(void *ctx, const json_t *obj, const char *line, size_t len)
{
	struct tapped *t = ctx;
	t->calls++;
	snprintf(t->last, sizeof(t->last), "%.*s", (int)len, line);
	t->seq = (uint64_t)json_integer_value(json_object_get(obj, "seq"));
}

static void test_chain_move_and_tap(void **state)
{
	struct fixture *fx = *state;
	char moved[160];
	snprintf(moved, sizeof(moved), "%s/moved.jsonl", fx->dir);
	struct tapped t = {0};
	cg_audit_t *audit = open_chained(fx->path, NULL);
	cg_audit_set_tap(audit, tap, &t);
	emit_n(audit, 2);
	assert_int_equal(t.calls, 2);
	assert_int_equal(t.seq, 2);
	uint64_t seq;
	char hash[CG_CHAIN_HEX];
	last_line(fx->path, &seq, hash);
	/* the tap hears the line's bytes, as in the file */
	char tapped_hash[CG_CHAIN_HEX];
	cg_chain_hash(t.last, strlen(t.last), tapped_hash);
	assert_string_equal(tapped_hash, hash);

	/* a reload moves the log to a new, empty path: the chain goes on */
	cg_audit_t *next = open_chained(moved, NULL);
	cg_audit_carry(next, audit);
	cg_audit_close(audit);
	emit_n(next, 1);
	assert_int_equal(t.calls, 3);
	assert_int_equal(t.seq, 3);
	assert_int_equal(cg_audit_written(next), 3);
	cg_audit_close(next);
	cg_chain_verifier_t v;
	const char *const series[] = {fx->path, moved, NULL};
	assert_int_equal(verify(&v, series), CG_CHAIN_INTACT);

	/* a failed write takes no seq: no hole in the file's chain */
	char link[160], good[160];
	snprintf(link, sizeof(link), "%s/current.jsonl", fx->dir);
	snprintf(good, sizeof(good), "%s/good.jsonl", fx->dir);
	assert_int_equal(symlink("/dev/full", link), 0);
	audit = open_chained(link, NULL);
	assert_int_equal(cg_audit_emit(audit, "session.start", NULL), -ENOSPC);
	assert_int_equal(cg_audit_chain_head(audit, hash), 0);
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink(good, link), 0);
	emit_n(audit, 2);
	cg_audit_close(audit);
	const char *const after[] = {good, NULL};
	assert_int_equal(verify(&v, after), CG_CHAIN_INTACT);
	assert_int_equal(v.first_seq, 1);
	assert_int_equal(v.verified, 2);
}

static void test_chain_state_saves(void **state)
{
	struct fixture *fx = *state;
	char st_path[160];
	snprintf(st_path, sizeof(st_path), "%s.state", fx->path);
	cg_audit_t *audit = open_chained(fx->path, st_path);
	emit_n(audit, 3);
	uint64_t seq;
	char hash[CG_CHAIN_HEX], head[CG_CHAIN_HEX];
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, 0); /* not per line */
	assert_int_equal(cg_audit_save_state(audit), 0);
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, cg_audit_chain_head(audit, head));
	assert_string_equal(hash, head);
	/* nothing new: nothing written */
	assert_int_equal(unlink(st_path), 0);
	assert_int_equal(cg_audit_save_state(audit), 0);
	assert_int_equal(access(st_path, F_OK), -1);
	emit_n(audit, 1);
	assert_int_equal(cg_audit_save_state(audit), 0);
	read_state(st_path, &seq, hash);
	assert_int_equal(seq, 4);

	/* a new state path (a reload) is written at once */
	char other[160];
	snprintf(other, sizeof(other), "%s/other.state", fx->dir);
	assert_int_equal(cg_audit_set_state_path(audit, other), 0);
	read_state(other, &seq, hash);
	assert_int_equal(seq, 4);
	cg_audit_close(audit);

	/* garbage in the state: ignored (the file has lines anyway) */
	FILE *f = fopen(other, "w");
	fputs("{nonsense", f);
	fclose(f);
	audit = open_chained(fx->path, other);
	assert_int_equal(cg_audit_chain_head(audit, head), 4);
	cg_audit_close(audit);
}

static void test_chain_stdout(void **state)
{
	struct fixture *fx = *state;
	char out[160];
	snprintf(out, sizeof(out), "%s/stdout.jsonl", fx->dir);
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	FILE *f = fopen(out, "w");
	assert_non_null(f);
	dup2(fileno(f), STDOUT_FILENO);
	fclose(f);
	char err[256];
	cg_audit_opts_t opts = {.path = "-", .on_failure = CG_AUDIT_REFUSE, .chain = true};
	cg_audit_t *audit = cg_audit_open_opts(&opts, err, sizeof(err));
	int rc1 = audit ? cg_audit_emit(audit, "gateway.start", NULL) : -1;
	int rc2 = audit ? cg_audit_emit(audit, "gateway.stop", NULL) : -1;
	cg_audit_close(audit);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	assert_non_null(audit);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	cg_chain_verifier_t v;
	const char *const files[] = {out, NULL};
	assert_int_equal(verify(&v, files), CG_CHAIN_INTACT);
	assert_int_equal(v.first_seq, 1);
	assert_int_equal(v.last_seq, 2);
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
	        cmocka_unit_test_setup_teardown(test_chain_lines, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_restart_and_rotation, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_torn_repair, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_one_writer, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_move_and_tap, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_state_saves, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_chain_stdout, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
