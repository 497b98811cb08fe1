/* JSON documents with source positions. jansson parses (duplicate keys
 * rejected); a second scan of the text records where every value starts, by
 * path ("gateway.listen[0]", "services[1].upstream"), so validators can say
 * "certgate.json:14:9: services[0].upstream: expected \"host:port\"". */
#ifndef CG_JSON_H
#define CG_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "cg_errors.h"

typedef struct cg_jdoc cg_jdoc_t;

/* Reads and parses a file (at most 16 MiB). On failure adds one line
 * "path:line:col: message" (or "path: reason" when unreadable) to errs and
 * returns NULL. */
cg_jdoc_t *cg_jdoc_load(const char *path, cg_errors_t *errs);

/* Same from memory; name is what error lines call the document. */
cg_jdoc_t *cg_jdoc_parse(const char *name, const char *text, size_t len, cg_errors_t *errs);

void cg_jdoc_destroy(cg_jdoc_t *doc);

json_t *cg_jdoc_root(const cg_jdoc_t *doc); /* borrowed */
/* Frees the parsed tree once it has been read; positions (from the text)
 * stay available. */
void cg_jdoc_drop_root(cg_jdoc_t *doc);
const char *cg_jdoc_name(const cg_jdoc_t *doc);
/* The raw bytes parsed (for hashing). */
const char *cg_jdoc_text(const cg_jdoc_t *doc, size_t *len);

/* "name:line:col" of the value at path (1-based line and column), or just
 * "name" when the path is unknown. Loading a document does not scan for
 * positions: the first few calls each scan the text for their one path
 * (no allocation per value), later ones build the map of every path once.
 * Path grammar: keys joined by '.', array indexes as "[N]"; "" is the
 * root. */
void cg_jdoc_where(const cg_jdoc_t *doc, const char *path, char *buf, size_t len);

/* Adds "name:line:col: path: message" to errs (message printf-formatted). */
void cg_jdoc_error(const cg_jdoc_t *doc, cg_errors_t *errs, const char *path, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

#endif
