/* cg_json: JSON documents that remember where each value came from.
 *
 * Data flow: the raw text is kept in the document (for hashing and for the
 * scan); jansson parses it with duplicate keys rejected, and a syntax error
 * becomes "name:line:col: message". Once jansson has accepted the text, a
 * small recursive scanner walks the same bytes and records, for every value,
 * its path ("services[1].upstream") and the 1-based line:column of its first
 * character. Validators then report errors at the exact place in the file.
 *
 * A valid configuration asks for a few positions only (the gateway quotes
 * where its CA, CRL and token file are named, whether loading them fails or
 * not): those are found by scans that follow just the path asked for and
 * skip every other subtree without building its path, so no map of the
 * whole document (one string per value: as costly as parsing it again) is
 * built. After FIND_SCANS such lookups (a document with errors, usually)
 * the map is built once and answers the rest.
 *
 * Columns count characters the way jansson does (UTF-8 continuation bytes do
 * not advance the column; a tab is one column), so positions from jansson
 * errors and from the scan agree. The scanner only ever sees text jansson
 * accepted, but it still checks bounds and gives up quietly on anything
 * unexpected: a missing position degrades to "name", never to a crash.
 *
 * Recursion depth is bounded by jansson's own nesting limit
 * (JSON_PARSER_MAX_DEPTH, 2048), which the text has already passed. */
#include "cg_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_strmap.h"

#define MAX_DOC_BYTES (16u * 1024 * 1024)
/* lookups answered by a scan for the one path before the map is built */
#define FIND_SCANS 4

struct position {
	unsigned line;
	unsigned col;
};

struct cg_jdoc {
	char *name;
	char *text; /* NUL-terminated copy of the parsed bytes */
	size_t len;
	json_t *root;
	/* path -> (index into positions) + 1, stored in the pointer; built on
	 * the first position asked for (only errors and warnings ask: a valid
	 * configuration of many rules never pays for it) */
	cg_strmap_t *paths;
	struct position *positions;
	size_t n_positions;
	size_t cap_positions;
	unsigned n_finds; /* lookups answered without the map so far */
};

/* Allocation failure while building a document is fatal: a loader that
 * silently lost positions or paths could only report worse errors, and the
 * process cannot do anything useful without memory at config-load time. */
static void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size);
	if (!q)
		abort();
	return q;
}

static char *xstrdup(const char *s)
{
	char *copy = strdup(s);
	if (!copy)
		abort();
	return copy;
}

/* ---- growable byte buffer, for paths and decoded keys ---- */

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

static void buf_append(struct buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_truncate(struct buf *b, size_t len)
{
	b->len = len;
	if (b->data)
		b->data[len] = '\0';
}

/* ---- the position scanner ---- */

struct scan {
	const char *p;
	const char *end;
	unsigned line;
	unsigned col; /* column of *p */
	cg_jdoc_t *doc;
	struct buf path;
	struct buf key;
	/* NULL: record every path into doc's map. Else only this path is
	 * looked for; the last value that has it wins, as in the map. */
	const char *target;
	bool found;
	struct position at_target;
	/* > 0: inside a value whose path cannot lead to target: paths are
	 * neither built nor recorded */
	unsigned skip;
};

static void advance(struct scan *s)
{
	unsigned char c = (unsigned char)*s->p++;
	if (c == '\n') {
		s->line++;
		s->col = 1;
	} else if ((c & 0xC0) != 0x80) {
		s->col++;
	}
}

static bool at(const struct scan *s, char c)
{
	return s->p < s->end && *s->p == c;
}

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		advance(s);
}

static void record(struct scan *s, unsigned line, unsigned col)
{
	if (s->skip > 0)
		return;
	const char *path = s->path.data ? s->path.data : "";
	if (s->target != NULL) {
		if (strcmp(path, s->target) == 0) {
			s->found = true;
			s->at_target = (struct position){line, col};
		}
		return;
	}
	cg_jdoc_t *doc = s->doc;
	if (doc->n_positions == doc->cap_positions) {
		doc->cap_positions = doc->cap_positions ? doc->cap_positions * 2 : 64;
		doc->positions =
		        xrealloc(doc->positions, doc->cap_positions * sizeof(*doc->positions));
	}
	doc->positions[doc->n_positions] = (struct position){line, col};
	doc->n_positions++;
	cg_strmap_put(doc->paths, path, (void *)(uintptr_t)doc->n_positions);
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static void append_utf8(struct buf *b, uint32_t cp)
{
	char out[4];
	size_t n;
	if (cp < 0x80) {
		out[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		out[0] = (char)(0xF0 | (cp >> 18));
		out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	buf_append(b, out, n);
}

/* Reads a string starting at its opening quote. With out, decodes it. */
static bool scan_string(struct scan *s, struct buf *out)
{
	if (!at(s, '"'))
		return false;
	advance(s);
	if (out)
		buf_truncate(out, 0);
	while (s->p < s->end && *s->p != '"') {
		if (*s->p != '\\') {
			if (out)
				buf_append(out, s->p, 1);
			advance(s);
			continue;
		}
		advance(s);
		if (s->p >= s->end)
			return false;
		char e = *s->p;
		advance(s);
		char c;
		switch (e) {
		case '"':
		case '\\':
		case '/':
			c = e;
			break;
		case 'b':
			c = '\b';
			break;
		case 'f':
			c = '\f';
			break;
		case 'n':
			c = '\n';
			break;
		case 'r':
			c = '\r';
			break;
		case 't':
			c = '\t';
			break;
		case 'u': {
			if (s->end - s->p < 4)
				return false;
			int hi = hex4(s->p);
			if (hi < 0)
				return false;
			for (int i = 0; i < 4; i++)
				advance(s);
			uint32_t cp = (uint32_t)hi;
			if (hi >= 0xD800 && hi <= 0xDBFF && s->end - s->p >= 6 && s->p[0] == '\\' &&
			    s->p[1] == 'u') {
				int lo = hex4(s->p + 2);
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					for (int i = 0; i < 6; i++)
						advance(s);
					cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) +
					     ((uint32_t)lo - 0xDC00);
				}
			}
			/* jansson refuses lone surrogates and NUL in keys; be safe. */
			if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0)
				cp = 0xFFFD;
			if (out)
				append_utf8(out, cp);
			continue;
		}
		default:
			return false;
		}
		if (out)
			buf_append(out, &c, 1);
	}
	if (!at(s, '"'))
		return false;
	advance(s);
	return true;
}

static bool scan_value(struct scan *s);

/* Whether the current path is target or one of its ancestors. */
static bool leads_to_target(const struct scan *s)
{
	size_t n = s->path.len;
	const char *path = s->path.data ? s->path.data : "";
	return strncmp(s->target, path, n) == 0 &&
	       (s->target[n] == '\0' || s->target[n] == '.' || s->target[n] == '[');
}

/* Scans a member or element whose path segment has just been appended to
 * s->path (unless skipping), then truncates the path back to base. */
static bool scan_child(struct scan *s, size_t base)
{
	unsigned off = s->skip == 0 && s->target != NULL && !leads_to_target(s);
	s->skip += off;
	bool ok = scan_value(s);
	s->skip -= off;
	buf_truncate(&s->path, base);
	return ok;
}

static bool scan_object(struct scan *s)
{
	advance(s); /* '{' */
	skip_ws(s);
	if (at(s, '}')) {
		advance(s);
		return true;
	}
	size_t base = s->path.len;
	for (;;) {
		skip_ws(s);
		if (!scan_string(s, s->skip > 0 ? NULL : &s->key))
			return false;
		skip_ws(s);
		if (!at(s, ':'))
			return false;
		advance(s);

		if (s->skip == 0) {
			if (base > 0)
				buf_append(&s->path, ".", 1);
			buf_append(&s->path, s->key.data ? s->key.data : "", s->key.len);
		}
		if (!scan_child(s, base))
			return false;

		skip_ws(s);
		if (at(s, ',')) {
			advance(s);
			continue;
		}
		if (at(s, '}')) {
			advance(s);
			return true;
		}
		return false;
	}
}

static bool scan_array(struct scan *s)
{
	advance(s); /* '[' */
	skip_ws(s);
	if (at(s, ']')) {
		advance(s);
		return true;
	}
	size_t base = s->path.len;
	for (size_t index = 0;; index++) {
		if (s->skip == 0) {
			char seg[32];
			int n = snprintf(seg, sizeof(seg), "[%zu]", index);
			buf_append(&s->path, seg, (size_t)n);
		}
		if (!scan_child(s, base))
			return false;

		skip_ws(s);
		if (at(s, ',')) {
			advance(s);
			continue;
		}
		if (at(s, ']')) {
			advance(s);
			return true;
		}
		return false;
	}
}

static bool scan_value(struct scan *s)
{
	skip_ws(s);
	if (s->p >= s->end)
		return false;
	record(s, s->line, s->col);
	switch (*s->p) {
	case '{':
		return scan_object(s);
	case '[':
		return scan_array(s);
	case '"':
		return scan_string(s, NULL);
	default:
		/* number, true, false, null: runs up to a delimiter */
		while (s->p < s->end && !strchr(",]} \t\r\n", *s->p))
			advance(s);
		return true;
	}
}

/* With target NULL, fills doc's map with every path; else finds target's
 * position into *found (false when no value has that path). */
static bool scan_positions(cg_jdoc_t *doc, const char *target, struct position *found)
{
	struct scan s = {
	        .p = doc->text,
	        .end = doc->text + doc->len,
	        .line = 1,
	        .col = 1,
	        .doc = doc,
	        .target = target,
	};
	(void)scan_value(&s);
	free(s.path.data);
	free(s.key.data);
	if (s.found)
		*found = s.at_target;
	return s.found;
}

/* ---- public API ---- */

cg_jdoc_t *cg_jdoc_parse(const char *name, const char *text, size_t len, cg_errors_t *errs)
{
	/* JSON has no place for a raw NUL byte (in a string it is written
	 * \u0000), yet jansson skips one right after a number or a literal
	 * ("[1\0, 2]" loads as [1,2]) and the position scanner would stop
	 * there: refuse the text instead. Found by tests/fuzz/fuzz_parse. */
	const char *nul = memchr(text, '\0', len);
	if (nul) {
		struct scan s = {.p = text, .end = nul, .line = 1, .col = 1};
		while (s.p < s.end)
			advance(&s);
		cg_errors_add(errs, "%s:%u:%u: NUL byte in the document", name, s.line, s.col);
		return NULL;
	}

	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line > 0)
			cg_errors_add(errs, "%s:%d:%d: %s", name, jerr.line, jerr.column,
			              jerr.text);
		else
			cg_errors_add(errs, "%s: %s", name, jerr.text);
		return NULL;
	}

	cg_jdoc_t *doc = calloc(1, sizeof(*doc));
	if (!doc)
		abort();
	doc->name = xstrdup(name);
	doc->text = xrealloc(NULL, len + 1);
	memcpy(doc->text, text, len);
	doc->text[len] = '\0';
	doc->len = len;
	doc->root = root;
	return doc;
}

cg_jdoc_t *cg_jdoc_load(const char *path, cg_errors_t *errs)
{
	cg_jdoc_t *doc = NULL;
	char *data = NULL;
	size_t len = 0, cap = 0;

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cg_errors_add(errs, "%s: %s", path, strerror(errno));
		return NULL;
	}
	/* Read to EOF rather than trusting st_size: the path may be a pipe or
	 * a file being rewritten. Stop one byte past the limit. */
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 64 * 1024;
			if (cap > MAX_DOC_BYTES + 1)
				cap = MAX_DOC_BYTES + 1;
			data = xrealloc(data, cap);
		}
		ssize_t n = read(fd, data + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			cg_errors_add(errs, "%s: %s", path, strerror(errno));
			goto fail_read;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MAX_DOC_BYTES) {
			cg_errors_add(errs, "%s: file too large (more than 16 MiB)", path);
			goto fail_read;
		}
	}
	doc = cg_jdoc_parse(path, data ? data : "", len, errs);

fail_read:
	free(data);
	close(fd);
	return doc;
}

void cg_jdoc_destroy(cg_jdoc_t *doc)
{
	if (!doc)
		return;
	json_decref(doc->root);
	cg_strmap_destroy(doc->paths, NULL);
	free(doc->positions);
	free(doc->text);
	free(doc->name);
	free(doc);
}

json_t *cg_jdoc_root(const cg_jdoc_t *doc)
{
	return doc->root;
}

void cg_jdoc_drop_root(cg_jdoc_t *doc)
{
	json_decref(doc->root);
	doc->root = NULL;
}

const char *cg_jdoc_name(const cg_jdoc_t *doc)
{
	return doc->name;
}

const char *cg_jdoc_text(const cg_jdoc_t *doc, size_t *len)
{
	if (len)
		*len = doc->len;
	return doc->text;
}

/* The position of path into *pos; false when no value has that path. */
static bool lookup(const cg_jdoc_t *cdoc, const char *path, struct position *pos)
{
	/* the position map and the count of lookups are a cache of the
	 * (immutable) text: filling them does not change what the document
	 * says */
	cg_jdoc_t *doc = (cg_jdoc_t *)cdoc;
	if (path == NULL)
		path = "";
	if (doc->paths == NULL && doc->n_finds < FIND_SCANS) {
		doc->n_finds++;
		return scan_positions(doc, path, pos);
	}
	if (doc->paths == NULL) {
		doc->paths = cg_strmap_create();
		(void)scan_positions(doc, NULL, NULL);
	}
	uintptr_t slot = (uintptr_t)cg_strmap_get(doc->paths, path);
	if (slot == 0 || slot > doc->n_positions)
		return false;
	*pos = doc->positions[slot - 1];
	return true;
}

void cg_jdoc_where(const cg_jdoc_t *doc, const char *path, char *buf, size_t len)
{
	if (len == 0)
		return;
	struct position pos;
	if (lookup(doc, path, &pos))
		snprintf(buf, len, "%s:%u:%u", doc->name, pos.line, pos.col);
	else
		snprintf(buf, len, "%s", doc->name);
}

void cg_jdoc_error(const cg_jdoc_t *doc, cg_errors_t *errs, const char *path, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();

	struct position pos;
	bool found = lookup(doc, path, &pos);
	bool has_path = path && *path;
	if (found && has_path)
		cg_errors_add(errs, "%s:%u:%u: %s: %s", doc->name, pos.line, pos.col, path, msg);
	else if (found)
		cg_errors_add(errs, "%s:%u:%u: %s", doc->name, pos.line, pos.col, msg);
	else if (has_path)
		cg_errors_add(errs, "%s: %s: %s", doc->name, path, msg);
	else
		cg_errors_add(errs, "%s: %s", doc->name, msg);
	free(msg);
}
