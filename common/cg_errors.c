/* cg_errors: a growable list of malloc'd error lines. Loaders append every
 * problem they find with cg_errors_add; the caller prints them and frees the
 * list with cg_errors_finish.
 *
 * Allocation failure here is fatal (abort): these helpers are called on error
 * paths with no sensible way to report "could not report the error", and a
 * loader that silently dropped an error line could accept a bad policy. */
#include "cg_errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void cg_errors_init(cg_errors_t *errs)
{
	errs->items = NULL;
	errs->count = 0;
	errs->cap = 0;
}

void cg_errors_finish(cg_errors_t *errs)
{
	for (size_t i = 0; i < errs->count; i++)
		free(errs->items[i]);
	free(errs->items);
	cg_errors_init(errs);
}

void cg_errors_add(cg_errors_t *errs, const char *fmt, ...)
{
	char *line = NULL;
	va_list ap;

	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort(); /* OOM: see the top of the file */

	if (errs->count == errs->cap) {
		size_t cap = errs->cap ? errs->cap * 2 : 8;
		char **items = realloc(errs->items, cap * sizeof(*items));
		if (!items)
			abort();
		errs->items = items;
		errs->cap = cap;
	}
	errs->items[errs->count++] = line;
}
