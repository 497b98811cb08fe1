/* cg_audit_chain: the hash chain of the audit log (see cg_audit_chain.h).
 *
 * The writer (cg_audit.c) hashes each line it writes with cg_chain_hash
 * and puts that hash in the next line's "prev"; on start it reads the last
 * line back with cg_chain_parse. The verifier below recomputes the same
 * hashes over the bytes as they are in the files: no line can be edited,
 * removed, inserted or moved without a line's hash and its successor's
 * prev (or the seq run) disagreeing. Pure functions, no I/O: the fuzzer
 * (tests/fuzz/fuzz_audit_chain.c) drives the verifier directly. */
#include "cg_audit_chain.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

/* SHA-256 is fetched once: an implicit fetch on every line would cost more
 * than the hash of a short line. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void cg_chain_hash(const void *line, size_t len, char hex[CG_CHAIN_HEX])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	pthread_once(&sha256_once, fetch_sha256);
	if (EVP_Digest(line, len, md, &md_len, sha256_md ? sha256_md : EVP_sha256(), NULL) != 1 ||
	    md_len != 32) {
		/* cannot happen with the default provider; a hash that matches
		 * nothing keeps the chain failing closed */
		memset(hex, 'x', CG_CHAIN_HEX - 1);
		hex[CG_CHAIN_HEX - 1] = '\0';
		return;
	}
	for (unsigned i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
}

bool cg_chain_hash_valid(const char *text)
{
	size_t i = 0;
	for (; text[i] != '\0'; i++)
		if (i >= 64 ||
		    !((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
			return false;
	return i == 64;
}

static void say(char *why, size_t why_len, const char *text)
{
	if (why != NULL && why_len > 0)
		snprintf(why, why_len, "%s", text);
}

cg_chain_line_t cg_chain_parse(const void *line, size_t len, uint64_t *seq, char prev[CG_CHAIN_HEX],
                               char *why, size_t why_len)
{
	json_error_t err;
	if (len == 0) {
		say(why, why_len, "an empty line");
		return CG_CHAIN_LINE_NOT_JSON;
	}
	/* every line the writer can write: a value may hold U+0000 (\u0000) */
	json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	if (obj == NULL) {
		if (why != NULL && why_len > 0)
			snprintf(why, why_len, "not JSON: %s (column %d)", err.text, err.column);
		return CG_CHAIN_LINE_NOT_JSON;
	}
	cg_chain_line_t rc = CG_CHAIN_LINE_BAD;
	if (!json_is_object(obj)) {
		say(why, why_len, "not a JSON object");
		rc = CG_CHAIN_LINE_NOT_JSON;
		goto out;
	}
	json_t *s = json_object_get(obj, "seq"), *p = json_object_get(obj, "prev");
	if (s == NULL && p == NULL) {
		say(why, why_len, "no seq and no prev");
		rc = CG_CHAIN_LINE_UNCHAINED;
		goto out;
	}
	if (!json_is_integer(s) || json_integer_value(s) < 1) {
		say(why, why_len, s == NULL ? "prev without seq" : "seq is not a positive integer");
		goto out;
	}
	if (!json_is_string(p) || !cg_chain_hash_valid(json_string_value(p))) {
		say(why, why_len,
		    p == NULL ? "seq without prev" : "prev is not 64 lower-case hex digits");
		goto out;
	}
	*seq = (uint64_t)json_integer_value(s);
	memcpy(prev, json_string_value(p), CG_CHAIN_HEX);
	rc = CG_CHAIN_LINE_OK;
out:
	json_decref(obj);
	return rc;
}

const char *cg_chain_break_name(cg_chain_break_t kind)
{
	switch (kind) {
	case CG_CHAIN_INTACT:
		return "intact";
	case CG_CHAIN_EDITED:
		return "edited";
	case CG_CHAIN_REMOVED:
		return "removed";
	case CG_CHAIN_INSERTED:
		return "inserted";
	case CG_CHAIN_REORDERED:
		return "reordered";
	case CG_CHAIN_TORN:
		return "torn";
	case CG_CHAIN_NOT_JSON:
		return "not json";
	case CG_CHAIN_UNCHAINED:
		return "unchained";
	case CG_CHAIN_MALFORMED:
		return "malformed";
	case CG_CHAIN_RESTARTED:
		return "restarted";
	}
	return "unknown";
}

/* ---- the verifier ---- */

enum { PENDING_NONE, PENDING_EDIT, PENDING_JUMP };

void cg_chain_verifier_init(cg_chain_verifier_t *v)
{
	memset(v, 0, sizeof(*v));
	v->file = (size_t)-1;
}

void cg_chain_verifier_next_file(cg_chain_verifier_t *v)
{
	v->file++;
	v->line_in_file = 0;
	v->file_has_line = false;
}

static bool broken(const cg_chain_verifier_t *v)
{
	return v->kind != CG_CHAIN_INTACT || v->pending != PENDING_NONE;
}

/* The first break, at the current line. */
static void fail(cg_chain_verifier_t *v, cg_chain_break_t kind, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void fail(cg_chain_verifier_t *v, cg_chain_break_t kind, const char *fmt, ...)
{
	va_list ap;
	v->kind = kind;
	v->break_file = v->file;
	v->break_line = v->line_in_file;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

/* At a file's first line, a mismatch with the line before is a mismatch
 * with the previous file's last line. */
static const char *boundary(const cg_chain_verifier_t *v)
{
	return v->line_in_file == 1 && v->file > 0
	               ? " (at the start of a file: are the files given in order, none missing?)"
	               : "";
}

static void good(cg_chain_verifier_t *v, uint64_t seq, const void *line, size_t len)
{
	v->last_seq = seq;
	cg_chain_hash(line, len, v->last_hash);
	v->prev_file = v->file;
	v->prev_line = v->line_in_file;
	v->verified++;
}

/* After a break that needs the following lines to be told apart. */
static void classify(cg_chain_verifier_t *v, const void *line, size_t len)
{
	uint64_t seq = 0;
	char prev[CG_CHAIN_HEX];
	bool ok = cg_chain_parse(line, len, &seq, prev, NULL, 0) == CG_CHAIN_LINE_OK;

	if (v->pending == PENDING_EDIT) {
		/* the suspect line's own hash is its successor's prev: only the
		 * line before it can have changed */
		if (ok && seq == v->jump_seq + 1 && strcmp(prev, v->suspect_hash) == 0) {
			v->kind = CG_CHAIN_EDITED;
			v->break_file = v->prev_file;
			v->break_line = v->prev_line;
			v->verified--; /* that line's own link held, its bytes did not */
			snprintf(v->why, sizeof(v->why),
			         "line seq %" PRIu64
			         " was changed: its hash is not the prev of the "
			         "line after it%s",
			         v->jump_seq - 1,
			         v->edit_at_file_start ? " (the first line of the next file)" : "");
		} else {
			v->kind = CG_CHAIN_EDITED;
			snprintf(v->why, sizeof(v->why),
			         "line seq %" PRIu64
			         " was changed: its prev is not the hash of the "
			         "line before it, and its own hash is not the prev of the line "
			         "after it",
			         v->jump_seq);
		}
		v->pending = PENDING_NONE;
		return;
	}
	if (v->pending == PENDING_JUMP && ok) {
		if (seq == v->want_seq)
			v->seen_want = true;
		if (seq == v->jump_seq)
			v->seen_jump_again = true;
	}
}

bool cg_chain_verifier_line(cg_chain_verifier_t *v, const void *line, size_t len)
{
	v->lines++;
	v->line_in_file++;
	bool first_in_file = !v->file_has_line;
	v->file_has_line = true;
	if (v->finished)
		return false;
	if (broken(v)) {
		if (v->pending != PENDING_NONE)
			classify(v, line, len);
		return false;
	}
	if (len > CG_CHAIN_MAX_LINE) {
		fail(v, CG_CHAIN_MALFORMED, "a line longer than %u bytes: not an audit line",
		     CG_CHAIN_MAX_LINE);
		return false;
	}

	uint64_t seq = 0;
	char prev[CG_CHAIN_HEX], why[160];
	switch (cg_chain_parse(line, len, &seq, prev, why, sizeof(why))) {
	case CG_CHAIN_LINE_NOT_JSON:
		fail(v, CG_CHAIN_NOT_JSON, "%s", why);
		return false;
	case CG_CHAIN_LINE_UNCHAINED:
		if (!v->started)
			fail(v, CG_CHAIN_UNCHAINED,
			     "no seq and no prev: this log was written with audit.chain off");
		else
			fail(v, CG_CHAIN_UNCHAINED,
			     "no seq and no prev in a chained log: a line inserted, or written "
			     "with "
			     "audit.chain off");
		return false;
	case CG_CHAIN_LINE_BAD:
		fail(v, CG_CHAIN_MALFORMED, "%s", why);
		return false;
	case CG_CHAIN_LINE_OK:
		break;
	}

	if (!v->started) {
		/* nothing before the first line can be checked */
		v->started = true;
		v->first_seq = seq;
		good(v, seq, line, len);
		return true;
	}
	uint64_t want = v->last_seq + 1;
	if (seq == 1 && strcmp(prev, CG_CHAIN_GENESIS) == 0) {
		fail(v, CG_CHAIN_RESTARTED,
		     "the chain starts over (seq 1 after seq %" PRIu64
		     "): the writer lost its place (its log and audit.state gone, or a new "
		     "installation)%s",
		     v->last_seq, boundary(v));
		return false;
	}
	if (seq == want) {
		if (strcmp(prev, v->last_hash) == 0) {
			good(v, seq, line, len);
			return true;
		}
		/* this line's prev, or the line before it, was changed: the line
		 * after this one tells which */
		fail(v, CG_CHAIN_EDITED, "prev is not the hash of the line before%s", boundary(v));
		v->pending = PENDING_EDIT;
		v->jump_seq = seq;
		v->edit_at_file_start = first_in_file && v->file > 0;
		cg_chain_hash(line, len, v->suspect_hash);
		return false;
	}
	if (seq > want) {
		fail(v, CG_CHAIN_REMOVED, "seq jumps from %" PRIu64 " to %" PRIu64, v->last_seq,
		     seq);
		v->pending = PENDING_JUMP;
		v->want_seq = want;
		v->jump_seq = seq;
		return false;
	}
	if (seq < v->first_seq)
		fail(v, CG_CHAIN_INSERTED,
		     "seq %" PRIu64 " is before the start of the chain (seq %" PRIu64
		     "): a line inserted or moved%s",
		     seq, v->first_seq, boundary(v));
	else
		fail(v, CG_CHAIN_INSERTED,
		     "seq %" PRIu64 " again (expected %" PRIu64 "): a line inserted or copied%s",
		     seq, want, boundary(v));
	return false;
}

bool cg_chain_verifier_decided(const cg_chain_verifier_t *v)
{
	return v->finished || (v->kind != CG_CHAIN_INTACT && v->pending == PENDING_NONE);
}

void cg_chain_verifier_torn(cg_chain_verifier_t *v, const void *line, size_t len)
{
	(void)line;
	v->line_in_file++;
	v->file_has_line = true;
	if (v->finished || broken(v))
		return;
	fail(v, CG_CHAIN_TORN,
	     "a torn last line: %zu byte(s) without a newline (the writer stopped mid-line: "
	     "kill -9, a crash or power loss; certgate serve cuts it off and records it in "
	     "audit.repaired when it opens the file again)",
	     len);
}

cg_chain_break_t cg_chain_verifier_finish(cg_chain_verifier_t *v)
{
	if (v->finished)
		return v->kind;
	v->finished = true;
	if (v->pending == PENDING_EDIT) {
		v->kind = CG_CHAIN_EDITED;
		snprintf(v->why, sizeof(v->why),
		         "prev is not the hash of the line before: that line, or this line's prev, "
		         "was changed%s",
		         v->edit_at_file_start
		                 ? " (at the start of a file: are the files given in order?)"
		                 : "");
	} else if (v->pending == PENDING_JUMP) {
		uint64_t missing = v->jump_seq - v->want_seq;
		if (v->seen_jump_again) {
			v->kind = CG_CHAIN_INSERTED;
			snprintf(v->why, sizeof(v->why),
			         "seq %" PRIu64 " where %" PRIu64 " was due, and seq %" PRIu64
			         " comes again later: this line was inserted",
			         v->jump_seq, v->want_seq, v->jump_seq);
		} else if (v->seen_want) {
			v->kind = CG_CHAIN_REORDERED;
			snprintf(v->why, sizeof(v->why),
			         "seq %" PRIu64 " comes before seq %" PRIu64
			         " (which is further on): lines out of order",
			         v->jump_seq, v->want_seq);
		} else {
			v->kind = CG_CHAIN_REMOVED;
			snprintf(v->why, sizeof(v->why),
			         "seq jumps from %" PRIu64 " to %" PRIu64 ": %" PRIu64
			         " line(s) missing%s",
			         v->want_seq - 1, v->jump_seq, missing,
			         v->break_line == 1 && v->break_file > 0
			                 ? " (at the start of a file: a file of the series left "
			                   "out?)"
			                 : "");
		}
	}
	v->pending = PENDING_NONE;
	return v->kind;
}
