/* `certgate audit verify FILE...`: checks the hash chain of audit log
 * files (CONFIG.md audit.chain) given in order, oldest first. Reads each
 * file line by line (bounded: a line longer than an audit line can be is
 * reported, not buffered) and feeds the verifier of common/cg_audit_chain.c,
 * the same definition the writer uses. Exit 0 with the count of lines
 * verified, 1 with the first line where the chain breaks and why (or a
 * file that cannot be read), 2 on a usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_audit_chain.h"
#include "cmd/cli.h"

#define READ_CHUNK 65536

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate audit verify [--quiet] FILE...\n"
	        "Checks the hash chain (audit.chain) of audit log files, given in order, oldest\n"
	        "first: a rotated series is audit.jsonl.2 audit.jsonl.1 audit.jsonl. \"-\" reads\n"
	        "standard input (compressed files: zcat -f FILE... | certgate audit verify -).\n"
	        "Exit 0: every line verified (the count, the seq range and the last hash are\n"
	        "printed). Exit 1: the chain breaks (FILE:LINE: edited, removed, inserted,\n"
	        "reordered, torn, not json, unchained, malformed or restarted, and why), or a\n"
	        "file cannot be read. Exit 2: usage.\n"
	        "  --quiet   print nothing when the chain verifies\n");
}

typedef struct reader {
	char *buf;
	size_t len, cap;
	bool skipping; /* inside a line too long to keep: drop until its newline */
} reader_t;

/* Feeds every complete line in r->buf to v; keeps the incomplete rest. */
static void feed_lines(reader_t *r, cg_chain_verifier_t *v)
{
	size_t start = 0;
	for (;;) {
		char *nl = memchr(r->buf + start, '\n', r->len - start);
		if (nl == NULL)
			break;
		size_t end = (size_t)(nl - r->buf);
		if (r->skipping)
			r->skipping = false; /* the end of a line already reported */
		else
			(void)cg_chain_verifier_line(v, r->buf + start, end - start);
		start = end + 1;
	}
	memmove(r->buf, r->buf + start, r->len - start);
	r->len -= start;
	if (r->len > CG_CHAIN_MAX_LINE && !r->skipping) {
		/* over the limit: judged on its first bytes, the rest skipped */
		(void)cg_chain_verifier_line(v, r->buf, CG_CHAIN_MAX_LINE + 1);
		r->skipping = true;
	}
	if (r->skipping)
		r->len = 0;
}

/* One file through the verifier. 0, or -1 when it cannot be read. */
static int verify_file(const char *path, cg_chain_verifier_t *v, reader_t *r)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	if (f == NULL) {
		fprintf(stderr, "certgate audit verify: %s: %s\n", path, strerror(errno));
		return -1;
	}
	cg_chain_verifier_next_file(v);
	r->len = 0;
	r->skipping = false;
	int rc = 0;
	for (;;) {
		if (r->cap - r->len < READ_CHUNK) {
			size_t cap = r->cap ? r->cap * 2 : 4 * READ_CHUNK;
			char *grown = realloc(r->buf, cap);
			if (grown == NULL) {
				fprintf(stderr, "certgate audit verify: out of memory\n");
				rc = -1;
				break;
			}
			r->buf = grown;
			r->cap = cap;
		}
		size_t got = fread(r->buf + r->len, 1, READ_CHUNK, f);
		r->len += got;
		feed_lines(r, v);
		if (got == 0)
			break;
		/* the first break is known and needs nothing after it */
		if (cg_chain_verifier_decided(v))
			break;
	}
	if (rc == 0 && ferror(f)) {
		fprintf(stderr, "certgate audit verify: %s: %s\n", path,
		        strerror(errno ? errno : EIO));
		rc = -1;
	}
	if (rc == 0 && r->len > 0 && !r->skipping)
		cg_chain_verifier_torn(v, r->buf, r->len);
	if (f != stdin)
		fclose(f);
	return rc;
}

static int verify(int argc, char **argv)
{
	static const struct option options[] = {
	        {"quiet", no_argument, NULL, 'q'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	bool quiet = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "q", options, NULL)) != -1) {
		switch (opt) {
		case 'q':
			quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "certgate audit verify: name at least one FILE\n");
		usage(stderr);
		return 2;
	}
	cg_chain_verifier_t v;
	cg_chain_verifier_init(&v);
	reader_t r = {0};
	int code = 0;
	for (int i = optind; i < argc && code == 0; i++) {
		if (verify_file(argv[i], &v, &r) < 0)
			code = 1;
		if (cg_chain_verifier_decided(&v))
			break;
	}
	free(r.buf);
	cg_chain_break_t kind = cg_chain_verifier_finish(&v);
	if (code != 0)
		return code;
	int nfiles = argc - optind;
	if (kind != CG_CHAIN_INTACT) {
		const char *file = argv[optind + (int)v.break_file];
		fprintf(stderr, "%s:%" PRIu64 ": %s: %s\n",
		        strcmp(file, "-") == 0 ? "<stdin>" : file, v.break_line,
		        cg_chain_break_name(kind), v.why);
		fprintf(stderr,
		        "certgate audit verify: the chain breaks there; %" PRIu64
		        " line(s) before it verified\n",
		        v.verified);
		return 1;
	}
	if (!quiet) {
		if (v.verified == 0)
			printf("0 lines verified in %d file(s): nothing to check (empty)\n",
			       nfiles);
		else
			printf("%" PRIu64 " lines verified in %d file(s): seq %" PRIu64
			       " to %" PRIu64 ", last hash %s\n",
			       v.verified, nfiles, v.first_seq, v.last_seq, v.last_hash);
	}
	return 0;
}

int gw_audit_main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "verify") == 0)
		return verify(argc - 1, argv + 1);
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "certgate audit: %s\n",
	        argc < 2 ? "expected a subcommand: verify"
	                 : "unknown subcommand (expected verify)");
	usage(stderr);
	return 2;
}
