/* Tests common/cg_file.c: whole-file replacement by writers that race. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cg_file.h"

#define ROUNDS 300

/* Two processes replace one file ROUNDS times each, each with its own
 * bytes. Every replacement succeeds (a shared temporary name made one
 * writer delete or rename the other's), and the file is always one
 * writer's bytes whole. */
static void test_racing_writers(void **state)
{
	(void)state;
	char dir[] = "/tmp/cg-file-test-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof(path), "%s/login-key.pem", dir);
	static const char *const texts[2] = {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
	                                     "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n"};
	pid_t kids[2];
	for (int w = 0; w < 2; w++) {
		kids[w] = fork();
		assert_true(kids[w] >= 0);
		if (kids[w] == 0) {
			int failed = 0;
			for (int i = 0; i < ROUNDS; i++)
				failed += cg_file_replace(path, 0600, texts[w], strlen(texts[w]),
				                          false) != 0;
			_exit(failed > 0 ? 1 : 0);
		}
	}
	for (int w = 0; w < 2; w++) {
		int status = 0;
		assert_int_equal(waitpid(kids[w], &status, 0), kids[w]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0); /* not one replacement failed */
	}
	char *got = NULL;
	size_t len = 0;
	assert_int_equal(cg_file_read(path, 4096, &got, &len), 0);
	assert_true(strcmp(got, texts[0]) == 0 || strcmp(got, texts[1]) == 0);
	free(got);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* no temporary file is left */
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 1", dir);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_racing_writers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
