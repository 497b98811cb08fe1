/* The audit log's hash chain (CONFIG.md audit.chain): one definition for
 * the writer (cg_audit.c) and the verifier (`certgate audit verify`).
 *
 * Every chained line carries "seq" (1, 2, ...) and "prev", the lower-case
 * hex SHA-256 of the previous line's bytes without its newline; the first
 * line of a chain has seq 1 and a prev of 64 zeros (CG_CHAIN_GENESIS). */
#ifndef CG_AUDIT_CHAIN_H
#define CG_AUDIT_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CG_CHAIN_HEX     65 /* 64 hex digits and a NUL */
#define CG_CHAIN_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
/* The verifier refuses a line longer than this (an audit line is far
 * smaller: values from peers are cut to a few KiB). */
#define CG_CHAIN_MAX_LINE (16u << 20)

/* hex = SHA-256 of line[0..len), lower-case. */
void cg_chain_hash(const void *line, size_t len, char hex[CG_CHAIN_HEX]);

/* Whether text is 64 lower-case hex digits (and a NUL). */
bool cg_chain_hash_valid(const char *text);

typedef enum {
	CG_CHAIN_LINE_OK,        /* a JSON object with a valid seq and prev */
	CG_CHAIN_LINE_NOT_JSON,  /* not one JSON object (or duplicate keys) */
	CG_CHAIN_LINE_UNCHAINED, /* a JSON object with neither seq nor prev */
	CG_CHAIN_LINE_BAD,       /* seq or prev missing or malformed */
} cg_chain_line_t;

/* Reads seq and prev from one line (newline excluded). why (may be NULL)
 * gets a short reason unless the result is CG_CHAIN_LINE_OK. */
cg_chain_line_t cg_chain_parse(const void *line, size_t len, uint64_t *seq, char prev[CG_CHAIN_HEX],
                               char *why, size_t why_len);

/* How a chain breaks, in the verifier's words. */
typedef enum {
	CG_CHAIN_INTACT = 0,
	CG_CHAIN_EDITED,    /* a line's hash is not the next line's prev */
	CG_CHAIN_REMOVED,   /* seq jumps forward and the missing seq never comes */
	CG_CHAIN_INSERTED,  /* a seq seen before, or one that comes again later */
	CG_CHAIN_REORDERED, /* seq jumps forward, and the skipped seq comes later */
	CG_CHAIN_TORN,      /* a file ends without a newline */
	CG_CHAIN_NOT_JSON,  /* a line is not a JSON object */
	CG_CHAIN_UNCHAINED, /* a line without seq and prev (audit.chain off) */
	CG_CHAIN_MALFORMED, /* seq or prev malformed, or a line too long */
	CG_CHAIN_RESTARTED, /* seq 1 again: a new chain began (state lost) */
} cg_chain_break_t;

const char *cg_chain_break_name(cg_chain_break_t kind);

/* The verifier: a state machine fed with the lines of a series of files
 * in order. It stops judging at the first break; lines fed after it are
 * only read to tell a removal from a reordering or an insertion (and an
 * edited line from an edited prev), which needs the lines that follow. */
typedef struct cg_chain_verifier {
	/* the chain so far */
	uint64_t lines;     /* complete lines fed (all files) */
	uint64_t verified;  /* lines verified before the break (or all) */
	uint64_t first_seq; /* seq of the first chained line */
	uint64_t last_seq;  /* seq of the last good line */
	char last_hash[CG_CHAIN_HEX];
	size_t file;           /* index of the file being read (0-based) */
	uint64_t line_in_file; /* 1-based number of the last line fed */
	bool started;          /* a chained line was seen */
	bool file_has_line;    /* the current file has had a line */
	/* the break: where and why */
	cg_chain_break_t kind;
	size_t break_file;
	uint64_t break_line;
	char why[512];
	/* while a break's kind waits for the lines after it */
	int pending; /* 0, or which classification is waiting (private) */
	uint64_t want_seq, jump_seq;
	bool seen_want, seen_jump_again;
	bool edit_at_file_start; /* the suspect line opens a file */
	char suspect_hash[CG_CHAIN_HEX];
	size_t prev_file;
	uint64_t prev_line;
	bool finished;
} cg_chain_verifier_t;

void cg_chain_verifier_init(cg_chain_verifier_t *v);

/* The next file of the series begins (call it before its first line, also
 * for the first file). */
void cg_chain_verifier_next_file(cg_chain_verifier_t *v);

/* One complete line of the current file, newline excluded. Returns false
 * once the chain is broken (keep feeding to classify the break, or stop;
 * cg_chain_verifier_finish says what it was either way). */
bool cg_chain_verifier_line(cg_chain_verifier_t *v, const void *line, size_t len);

/* Whether the verdict is known: a break whose kind needs no more lines. */
bool cg_chain_verifier_decided(const cg_chain_verifier_t *v);

/* The current file ends with len bytes that have no newline. */
void cg_chain_verifier_torn(cg_chain_verifier_t *v, const void *line, size_t len);

/* No more input. Returns the verdict (CG_CHAIN_INTACT, or the first
 * break, with v->why, v->break_file and v->break_line). */
cg_chain_break_t cg_chain_verifier_finish(cg_chain_verifier_t *v);

#endif
