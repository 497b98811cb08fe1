/* Fuzzes the audit chain's verifier (common/cg_audit_chain.c), the parser
 * behind `certgate audit verify`.
 *
 * The first byte picks the mode, the rest is its input:
 *   'c' construct  the rest, split at '\n', becomes the "v" values of a
 *                  chain built the writer's way (same fields, same hash);
 *                  it must verify, and then every single change the chain
 *                  promises to catch must be caught: one byte of any line
 *                  but the last flipped, a line but the first and the last
 *                  removed, two neighbours swapped. Bytes 1-2 of the input
 *                  pick the line and the byte.
 *   anything else  raw files: split at NUL into files and at '\n' into
 *                  lines (a file's rest without '\n' is a torn line) and
 *                  fed to the verifier; its verdict must be coherent.
 * Properties checked, beyond "no crash, no leak, no UB": an intact verdict
 * verified every line; a break names a line that exists and says why. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cg_audit_chain.h"
#include "cg_utf8.h"
#include "fuzz_util.h"

#define MAX_CHAIN 24

/* ---- raw ---- */

static void fuzz_raw(const uint8_t *data, size_t size)
{
	cg_chain_verifier_t v;
	uint64_t complete = 0;
	size_t files = 0;
	bool torn = false;

	cg_chain_verifier_init(&v);
	size_t start = 0;
	while (start <= size) {
		const uint8_t *nul = memchr(data + start, 0, size - start);
		size_t end = nul ? (size_t)(nul - data) : size;
		cg_chain_verifier_next_file(&v);
		files++;
		size_t line = start;
		while (line < end) {
			const uint8_t *nl = memchr(data + line, '\n', end - line);
			size_t stop = nl ? (size_t)(nl - data) : end;
			uint8_t *copy = fuzz_copy(data + line, stop - line);
			if (nl) {
				(void)cg_chain_verifier_line(&v, copy, stop - line);
				complete++;
			} else {
				cg_chain_verifier_torn(&v, copy, stop - line);
				torn = true;
			}
			free(copy);
			line = stop + 1;
		}
		if (!nul)
			break;
		start = end + 1;
	}
	cg_chain_break_t kind = cg_chain_verifier_finish(&v);
	FUZZ_CHECK(cg_chain_verifier_finish(&v) == kind); /* idempotent */
	FUZZ_CHECK(v.lines == complete);
	FUZZ_CHECK(strcmp(cg_chain_break_name(kind), "unknown") != 0);
	if (kind == CG_CHAIN_INTACT) {
		FUZZ_CHECK(!torn);
		FUZZ_CHECK(v.verified == complete);
		FUZZ_CHECK(complete == 0 || (v.last_seq - v.first_seq + 1 == complete));
	} else {
		FUZZ_CHECK(v.why[0] != '\0' && memchr(v.why, '\0', sizeof(v.why)) != NULL);
		FUZZ_CHECK(v.break_file < files);
		FUZZ_CHECK(v.break_line >= 1);
		FUZZ_CHECK(v.verified <= complete);
	}
}

/* ---- constructed ---- */

typedef struct built {
	char *lines[MAX_CHAIN];
	size_t len[MAX_CHAIN];
	size_t n;
} built_t;

/* The writer's line: ts, event, seq, prev, then the fields (cg_audit.c). */
static void build(built_t *b, const char *text, size_t size)
{
	char prev[CG_CHAIN_HEX];
	memcpy(prev, CG_CHAIN_GENESIS, CG_CHAIN_HEX);
	b->n = 0;
	size_t at = 0;
	while (b->n < MAX_CHAIN) {
		const char *nl = at < size ? memchr(text + at, '\n', size - at) : NULL;
		size_t stop = nl ? (size_t)(nl - text) : size;
		json_t *obj =
		        json_pack("{s:s, s:s, s:I, s:s}", "ts", "2026-12-01T10:00:00.000Z", "event",
		                  "fuzz", "seq", (json_int_t)(b->n + 1), "prev", prev);
		FUZZ_CHECK(obj != NULL);
		FUZZ_CHECK(cg_json_set_lossy(obj, "v", text + at, stop - at) == 0);
		char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(obj);
		FUZZ_CHECK(line != NULL && strchr(line, '\n') == NULL);
		b->lines[b->n] = line;
		b->len[b->n] = strlen(line);
		cg_chain_hash(line, b->len[b->n], prev);
		b->n++;
		if (!nl)
			break;
		at = stop + 1;
	}
}

/* Lines in the given order (indexes into b), one file. */
static cg_chain_break_t check(const built_t *b, const size_t *order, size_t n, size_t flip_line,
                              size_t flip_byte)
{
	cg_chain_verifier_t v;
	cg_chain_verifier_init(&v);
	cg_chain_verifier_next_file(&v);
	for (size_t i = 0; i < n; i++) {
		const built_t *src = b;
		uint8_t *copy =
		        fuzz_copy((const uint8_t *)src->lines[order[i]], src->len[order[i]]);
		size_t len = src->len[order[i]];
		if (order[i] == flip_line && len > 0)
			copy[flip_byte % len] ^= 0x01;
		/* a flip may make a newline: then the line is two lines */
		size_t s = 0;
		for (size_t k = 0; k <= len; k++) {
			if (k == len || copy[k] == '\n') {
				(void)cg_chain_verifier_line(&v, copy + s, k - s);
				s = k + 1;
			}
		}
		free(copy);
	}
	cg_chain_break_t kind = cg_chain_verifier_finish(&v);
	if (kind == CG_CHAIN_INTACT && flip_line == (size_t)-1)
		FUZZ_CHECK(v.verified == n);
	return kind;
}

static void fuzz_construct(const uint8_t *data, size_t size)
{
	built_t b;
	size_t order[MAX_CHAIN];
	unsigned pick_line = size > 0 ? data[0] : 0, pick_byte = size > 1 ? data[1] : 0;

	build(&b, (const char *)data, size);
	for (size_t i = 0; i < b.n; i++)
		order[i] = i;
	/* as written, it verifies */
	FUZZ_CHECK(check(&b, order, b.n, (size_t)-1, 0) == CG_CHAIN_INTACT);
	if (b.n >= 2) {
		/* any byte of any line but the last: caught */
		size_t line = pick_line % (b.n - 1);
		FUZZ_CHECK(check(&b, order, b.n, line, pick_byte * 131u + pick_line) !=
		           CG_CHAIN_INTACT);
		/* two neighbours swapped: caught */
		size_t i = pick_byte % (b.n - 1);
		order[i] = i + 1;
		order[i + 1] = i;
		/* (the first two swapped: the chain seems to start at seq 2, and
		 * seq 1 with the genesis prev after it looks like a new chain) */
		FUZZ_CHECK(check(&b, order, b.n, (size_t)-1, 0) ==
		           (i == 0 ? CG_CHAIN_RESTARTED : CG_CHAIN_REORDERED));
		order[i] = i;
		order[i + 1] = i + 1;
	}
	if (b.n >= 3) {
		/* a line between the first and the last removed: caught */
		size_t gone = 1 + pick_line % (b.n - 2);
		size_t k = 0;
		for (size_t i = 0; i < b.n; i++)
			if (i != gone)
				order[k++] = i;
		FUZZ_CHECK(check(&b, order, k, (size_t)-1, 0) == CG_CHAIN_REMOVED);
	}
	for (size_t i = 0; i < b.n; i++)
		free(b.lines[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	if (size > 0 && data[0] == 'c') {
		uint8_t *rest = fuzz_copy(data + 1, size - 1);
		fuzz_construct(rest, size - 1);
		free(rest);
	} else {
		fuzz_raw(data, size);
	}
	return 0;
}
