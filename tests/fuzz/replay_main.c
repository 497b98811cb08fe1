/* A stand-in for libFuzzer's main() where there is no libFuzzer (gcc): runs
 * a fuzz target once on every file named on the command line, or in the
 * directories named there, so the seed corpora and every crash kept in them
 * are replayed by the ordinary unit builds (and under ASan + UBSan in
 * build-asan) as regression tests. Exits non-zero if a target aborts, which
 * it does on any broken check, or if no input was found. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static size_t replayed;

static void replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t size = 0, cap = 0;

	if (!f) {
		perror(path);
		exit(2);
	}
	for (;;) {
		if (size == cap) {
			cap = cap ? cap * 2 : 4096;
			data = realloc(data, cap);
			FUZZ_CHECK(data != NULL);
		}
		size_t n = fread(data + size, 1, cap - size, f);
		size += n;
		if (n == 0)
			break;
	}
	FUZZ_CHECK(!ferror(f));
	fclose(f);
	/* an exactly-sized copy, as libFuzzer hands its inputs over */
	uint8_t *exact = fuzz_copy(data, size);
	free(data);
	LLVMFuzzerTestOneInput(exact, size);
	free(exact);
	replayed++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static void replay_path(const char *path)
{
	struct stat st;
	struct dirent **entries;
	int n;

	if (stat(path, &st) != 0) {
		perror(path);
		exit(2);
	}
	if (!S_ISDIR(st.st_mode)) {
		replay_file(path);
		return;
	}
	n = scandir(path, &entries, NULL, by_name);
	if (n < 0) {
		perror(path);
		exit(2);
	}
	for (int i = 0; i < n; i++) {
		if (entries[i]->d_name[0] != '.') {
			size_t len = strlen(path) + 1 + strlen(entries[i]->d_name) + 1;
			char *child = malloc(len);
			FUZZ_CHECK(child != NULL);
			snprintf(child, len, "%s/%s", path, entries[i]->d_name);
			replay_path(child);
			free(child);
		}
		free(entries[i]);
	}
	free(entries);
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		replay_path(argv[i]);
	printf("%zu inputs replayed\n", replayed);
	return replayed > 0 ? 0 : 1;
}
