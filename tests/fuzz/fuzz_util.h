/* Helpers shared by the fuzz targets: a check that holds in every build
 * (assert() vanishes under NDEBUG) and exactly-sized heap copies, so that a
 * parser reading one byte past what it was given shows up under ASan even
 * when the fuzzer's own buffer happens to be longer. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a crash: libFuzzer saves the input that caused it. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__,      \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* data[0..size) in a heap block of exactly size bytes (1 when size is 0).
 * The caller frees. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
	uint8_t *copy = calloc(1, size ? size : 1);
	FUZZ_CHECK(copy != NULL);
	if (size)
		memcpy(copy, data, size);
	return copy;
}

/* data[0..size) as a NUL-terminated string in a block of size + 1 bytes (an
 * embedded NUL simply ends the string early). The caller frees. */
static inline char *fuzz_string(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	FUZZ_CHECK(text != NULL);
	if (size)
		memcpy(text, data, size);
	text[size] = '\0';
	return text;
}

#endif
