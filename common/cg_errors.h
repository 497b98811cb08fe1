/* A list of human-readable error lines, for loaders that report every error
 * they find (config check, reload) rather than stopping at the first. */
#ifndef CG_ERRORS_H
#define CG_ERRORS_H

#include <stddef.h>

typedef struct cg_errors {
	char **items;
	size_t count;
	size_t cap;
} cg_errors_t;

void cg_errors_init(cg_errors_t *errs);
void cg_errors_finish(cg_errors_t *errs); /* frees every item */
void cg_errors_add(cg_errors_t *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
