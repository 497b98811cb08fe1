/* `certgate test --config FILE CASES.json`: policy tests as code, like
 * `opa test`. Each case of CASES.json (claims or a certificate, service,
 * database user and name, source, time, trust feed value) goes through
 * pol_decide with the configuration's snapshot, the decision the gateway
 * takes; the case says what it expects (allow or deny, the deciding rule,
 * the permissive rules that would deny). Every failure is printed, then
 * "N passed, N failed". Only the JSON files are read (pol_snapshot_load):
 * a CI job needs no key or certificate the configuration names.
 *
 * Cases file:
 *   {"at": RFC3339 (default for the cases),
 *    "cases": [{"name": ..., "claims": {"user", "groups", "device_id",
 *               "device_trust"} | "cert": PEM file, "service": ...,
 *               "db_user", "db_name", "source": IP, "at": RFC3339,
 *               "feed_trust": level, "grants": [{"service", "until":
 *               RFC3339}], "expect": "allow" | "deny", "rule": name,
 *               "would_deny": [names]}]}
 * "grants" are the approved access requests the user holds (just-in-time
 * access): the case's service's latest "until" is the grant the decision
 * sees, as the gateway looks it up in its run-time state.
 * Every mistake in it is reported as file:line:col before anything runs. */
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "cg_addr.h"
#include "cg_json.h"
#include "cg_time.h"
#include "cmd/cli.h"
#include "pol_config.h"
#include "pol_decide.h"

#define PATH_MAX_LEN 512

/* One case, read and checked; the strings are the document's. */
typedef struct test_case {
	const char *name;
	char path[32]; /* "cases[N]" */
	pol_claims_t claims;
	bool claims_owned; /* read from a certificate: pol_claims_finish */
	char *groups_store[64];
	const pol_service_t *service;
	const char *db_user, *db_name;
	bool has_source;
	struct sockaddr_storage source;
	int64_t at_ms;
	pol_trust_t feed_trust;
	int64_t grant_until_ms; /* for the case's service; 0: none */
	bool expect_allow;
	const char *expect_rule;  /* NULL: any */
	const json_t *would_deny; /* NULL: not checked */
} test_case_t;

typedef struct reader {
	const cg_jdoc_t *doc;
	cg_errors_t *errs;
	const pol_snapshot_t *snap;
	char dir[PATH_MAX]; /* of the cases file: certificates are relative to it */
} reader_t;

static void check_keys(reader_t *r, const json_t *obj, const char *path, const char *const *allowed)
{
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)obj, key, value)
	{
		size_t i = 0;
		while (allowed[i] != NULL && strcmp(allowed[i], key) != 0)
			i++;
		if (allowed[i] == NULL) {
			char kpath[PATH_MAX_LEN];
			snprintf(kpath, sizeof(kpath), "%s%s%s", path, path[0] ? "." : "", key);
			cg_jdoc_error(r->doc, r->errs, kpath, "unknown key");
		}
	}
}

/* obj.key as a non-empty string, NULL when absent (or wrong: reported). */
static const char *get_string(reader_t *r, const json_t *obj, const char *path, const char *key,
                              bool required)
{
	const json_t *v = json_object_get(obj, key);
	char kpath[PATH_MAX_LEN];
	snprintf(kpath, sizeof(kpath), "%s%s%s", path, path[0] ? "." : "", key);
	if (v == NULL) {
		if (required)
			cg_jdoc_error(r->doc, r->errs, path, "missing required key \"%s\"", key);
		return NULL;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		cg_jdoc_error(r->doc, r->errs, kpath, "expected a non-empty string");
		return NULL;
	}
	return json_string_value(v);
}

static bool get_time(reader_t *r, const json_t *obj, const char *path, int64_t *out)
{
	const char *text = get_string(r, obj, path, "at", false);
	char kpath[PATH_MAX_LEN];
	if (text == NULL)
		return false;
	if (!cg_rfc3339_parse(text, out)) {
		snprintf(kpath, sizeof(kpath), "%s%sat", path, path[0] ? "." : "");
		cg_jdoc_error(r->doc, r->errs, kpath,
		              "expected an RFC 3339 time like \"2026-12-07T10:00:00Z\"");
		return false;
	}
	return true;
}

static pol_trust_t get_trust(reader_t *r, const json_t *obj, const char *path, const char *key)
{
	const char *text = get_string(r, obj, path, key, false);
	pol_trust_t t = POL_TRUST_NONE;
	if (text != NULL && !pol_trust_parse(text, &t)) {
		char kpath[PATH_MAX_LEN];
		/* a path longer than any file of cases has: cut, still an error */
		if (snprintf(kpath, sizeof(kpath), "%s.%s", path, key) >= (int)sizeof(kpath))
			kpath[sizeof(kpath) - 1] = '\0';
		cg_jdoc_error(r->doc, r->errs, kpath,
		              "expected one of \"always_deny\", \"low\", \"medium\", \"high\"");
	}
	return t;
}

static bool string_list(const json_t *v)
{
	size_t i;
	json_t *item;
	if (!json_is_array(v))
		return false;
	json_array_foreach(v, i, item) if (!json_is_string(item)) return false;
	return true;
}

static void read_claims(reader_t *r, const json_t *obj, test_case_t *c)
{
	static const char *const keys[] = {"user", "groups", "device_id", "device_trust", NULL};
	char path[PATH_MAX_LEN];
	snprintf(path, sizeof(path), "%s.claims", c->path);
	if (!json_is_object(obj)) {
		cg_jdoc_error(r->doc, r->errs, path,
		              "expected an object with \"user\", \"groups\", \"device_id\", "
		              "\"device_trust\"");
		return;
	}
	check_keys(r, obj, path, keys);
	c->claims.user = (char *)get_string(r, obj, path, "user", false);
	c->claims.device_id = (char *)get_string(r, obj, path, "device_id", false);
	c->claims.device_trust = get_trust(r, obj, path, "device_trust");
	const json_t *groups = json_object_get(obj, "groups");
	if (groups == NULL)
		return;
	if (!string_list(groups) || json_array_size(groups) > 64) {
		char gpath[PATH_MAX_LEN + 16];
		snprintf(gpath, sizeof(gpath), "%s.groups", path);
		cg_jdoc_error(r->doc, r->errs, gpath, "expected a list of at most 64 strings");
		return;
	}
	for (size_t i = 0; i < json_array_size(groups); i++)
		c->groups_store[i] = (char *)json_string_value(json_array_get(groups, i));
	c->claims.groups = c->groups_store;
	c->claims.n_groups = json_array_size(groups);
}

/* The claims of a PEM certificate file, as the gateway reads them. */
static void read_cert(reader_t *r, const char *file, test_case_t *c)
{
	char full[PATH_MAX * 2], path[PATH_MAX_LEN];
	snprintf(path, sizeof(path), "%s.cert", c->path);
	snprintf(full, sizeof(full), "%s%s%s", file[0] == '/' ? "" : r->dir,
	         file[0] == '/' ? "" : "/", file);
	FILE *f = fopen(full, "re");
	X509 *cert = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f != NULL)
		fclose(f);
	ERR_clear_error();
	if (cert == NULL) {
		cg_jdoc_error(r->doc, r->errs, path, "%s: not a readable PEM certificate", full);
		return;
	}
	if (!pol_claims_extract(&r->snap->claims, cert, &c->claims))
		cg_jdoc_error(r->doc, r->errs, path, "out of memory");
	else
		c->claims_owned = true;
	X509_free(cert);
}

static void read_source(reader_t *r, const char *text, test_case_t *c)
{
	cg_cidr_t net;
	cg_hostport_t hp = {.port = 1};
	if (!cg_cidr_parse(text, &net) || strchr(text, '/') != NULL ||
	    snprintf(hp.host, sizeof(hp.host), "%s", text) >= (int)sizeof(hp.host) ||
	    !cg_hostport_to_sockaddr(&hp, &c->source)) {
		char path[PATH_MAX_LEN];
		snprintf(path, sizeof(path), "%s.source", c->path);
		cg_jdoc_error(r->doc, r->errs, path, "expected an IP address");
		return;
	}
	c->has_source = true;
}

/* "grants": [{"service": NAME, "until": RFC3339}]: the latest end of those
 * for the case's service. */
static void read_grants(reader_t *r, const json_t *list, test_case_t *c)
{
	static const char *const keys[] = {"service", "until", NULL};
	char path[PATH_MAX_LEN], gpath[PATH_MAX_LEN + 64];
	snprintf(path, sizeof(path), "%s.grants", c->path);
	if (!json_is_array(list)) {
		cg_jdoc_error(r->doc, r->errs, path,
		              "expected a list of {\"service\": ..., \"until\": RFC 3339 time}");
		return;
	}
	size_t i;
	json_t *g;
	json_array_foreach(list, i, g)
	{
		snprintf(gpath, sizeof(gpath), "%s[%zu]", path, i);
		if (!json_is_object(g)) {
			cg_jdoc_error(r->doc, r->errs, gpath,
			              "expected {\"service\": ..., \"until\": RFC 3339 time}");
			continue;
		}
		check_keys(r, g, gpath, keys);
		const char *service = get_string(r, g, gpath, "service", true);
		const char *until = get_string(r, g, gpath, "until", true);
		int64_t ms = 0;
		if (service != NULL && pol_snapshot_service(r->snap, service) == NULL)
			cg_jdoc_error(r->doc, r->errs, gpath, "no service \"%s\" in %s", service,
			              r->snap->config_path);
		if (until != NULL && (!cg_rfc3339_parse(until, &ms) || ms <= 0)) {
			char upath[PATH_MAX_LEN + 96];
			snprintf(upath, sizeof(upath), "%s.until", gpath);
			cg_jdoc_error(r->doc, r->errs, upath,
			              "expected an RFC 3339 time like \"2026-12-07T10:00:00Z\"");
			continue;
		}
		if (service != NULL && c->service != NULL &&
		    strcmp(service, c->service->name) == 0 && ms > c->grant_until_ms)
			c->grant_until_ms = ms;
	}
}

static void read_case(reader_t *r, const json_t *obj, size_t i, int64_t default_at, test_case_t *c)
{
	static const char *const keys[] = {
	        "name", "claims",     "cert",   "service", "db_user", "db_name",    "source",
	        "at",   "feed_trust", "grants", "expect",  "rule",    "would_deny", NULL};
	char path[PATH_MAX_LEN];
	snprintf(c->path, sizeof(c->path), "cases[%zu]", i);
	if (!json_is_object(obj)) {
		cg_jdoc_error(r->doc, r->errs, c->path, "expected an object");
		return;
	}
	check_keys(r, obj, c->path, keys);
	c->name = get_string(r, obj, c->path, "name", true);
	const json_t *claims = json_object_get(obj, "claims");
	const char *cert = get_string(r, obj, c->path, "cert", false);
	if ((claims != NULL) == (json_object_get(obj, "cert") != NULL))
		cg_jdoc_error(r->doc, r->errs, c->path,
		              "expected exactly one of \"claims\" and \"cert\"");
	else if (claims != NULL)
		read_claims(r, claims, c);
	else if (cert != NULL)
		read_cert(r, cert, c);

	const char *service = get_string(r, obj, c->path, "service", true);
	snprintf(path, sizeof(path), "%s.service", c->path);
	if (service != NULL && (c->service = pol_snapshot_service(r->snap, service)) == NULL)
		cg_jdoc_error(r->doc, r->errs, path, "no service \"%s\" in %s", service,
		              r->snap->config_path);
	c->db_user = get_string(r, obj, c->path, "db_user", false);
	c->db_name = get_string(r, obj, c->path, "db_name", false);
	if (c->service != NULL && c->service->mode != POL_MODE_POSTGRES &&
	    (c->db_user != NULL || c->db_name != NULL))
		cg_jdoc_error(r->doc, r->errs, c->path,
		              "db_user and db_name apply only to postgres-mode services; %s is a "
		              "tunnel",
		              c->service->name);
	const char *source = get_string(r, obj, c->path, "source", false);
	if (source != NULL)
		read_source(r, source, c);
	c->at_ms = default_at;
	(void)get_time(r, obj, c->path, &c->at_ms);
	c->feed_trust = get_trust(r, obj, c->path, "feed_trust");
	if (json_object_get(obj, "grants") != NULL)
		read_grants(r, json_object_get(obj, "grants"), c);

	const char *expect = get_string(r, obj, c->path, "expect", true);
	snprintf(path, sizeof(path), "%s.expect", c->path);
	if (expect != NULL && strcmp(expect, "allow") != 0 && strcmp(expect, "deny") != 0)
		cg_jdoc_error(r->doc, r->errs, path, "expected \"allow\" or \"deny\"");
	c->expect_allow = expect != NULL && strcmp(expect, "allow") == 0;
	c->expect_rule = get_string(r, obj, c->path, "rule", false);
	c->would_deny = json_object_get(obj, "would_deny");
	snprintf(path, sizeof(path), "%s.would_deny", c->path);
	if (c->would_deny != NULL && !string_list(c->would_deny))
		cg_jdoc_error(r->doc, r->errs, path, "expected a list of rule names");
}

/* --- running ------------------------------------------------------------- */

static void list_text(char *buf, size_t len, const pol_decision_t *d)
{
	size_t used = (size_t)snprintf(buf, len, "[");
	for (size_t i = 0; i < d->n_would_deny && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
		                         d->would_deny[i]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

/* The permissive rules named by d are exactly those of want (any order). */
static bool same_would_deny(const json_t *want, const pol_decision_t *d)
{
	if (json_array_size(want) != d->n_would_deny)
		return false;
	for (size_t i = 0; i < d->n_would_deny; i++) {
		bool found = false;
		for (size_t k = 0; k < json_array_size(want) && !found; k++)
			found = strcmp(json_string_value(json_array_get(want, k)),
			               d->would_deny[i]) == 0;
		if (!found)
			return false;
	}
	return true;
}

/* Decides c; prints a failure (or, verbose, a pass). True when it passed. */
static bool run_case(const pol_snapshot_t *snap, const cg_jdoc_t *doc, const test_case_t *c,
                     bool verbose)
{
	pol_request_t req = {
	        .service = c->service->name,
	        .claims = &c->claims,
	        .feed_trust = c->feed_trust,
	        .source = c->has_source ? (const struct sockaddr *)&c->source : NULL,
	        .db_user = c->db_user,
	        .db_name = c->db_name,
	        .at_ms = c->at_ms,
	        .grant_until_ms = c->grant_until_ms,
	};
	pol_decision_t d;
	pol_decide(snap, &req, &d, NULL, NULL);
	bool ok = d.allow == c->expect_allow &&
	          (c->expect_rule == NULL || strcmp(c->expect_rule, d.rule) == 0) &&
	          (c->would_deny == NULL || same_would_deny(c->would_deny, &d));
	char when[CG_RFC3339_LEN], got_wd[512];
	cg_rfc3339_ms(c->at_ms, when);
	list_text(got_wd, sizeof(got_wd), &d);
	if (ok) {
		if (verbose)
			printf("ok   %s: %s (rule %s) at %s\n", c->name, d.allow ? "allow" : "deny",
			       d.rule, when);
		return true;
	}
	char where[PATH_MAX_LEN], want_wd[512] = "";
	cg_jdoc_where(doc, c->path, where, sizeof(where));
	if (c->would_deny != NULL) {
		char *text = json_dumps(c->would_deny, JSON_COMPACT);
		snprintf(want_wd, sizeof(want_wd), ", would deny %s", text != NULL ? text : "?");
		free(text);
	}
	printf("FAIL %s (%s): expected %s%s%s%s%s, got %s (rule %s)%s%s at %s: %s\n", c->name,
	       where, c->expect_allow ? "allow" : "deny", c->expect_rule ? " (rule " : "",
	       c->expect_rule ? c->expect_rule : "", c->expect_rule ? ")" : "", want_wd,
	       d.allow ? "allow" : "deny", d.rule, c->would_deny ? ", would deny " : "",
	       c->would_deny ? got_wd : "", when, d.reason);
	return false;
}

static const char usage[] =
        "usage: certgate test --config FILE [--verbose] CASES.json\n"
        "Runs each case of CASES.json through the policy of FILE (the gateway's own\n"
        "decision) and prints every failure, then \"N passed, N failed\".\n"
        "  --verbose  print the passing cases too\n"
        "A case gives \"claims\" (user, groups, device_id, device_trust) or \"cert\" (a PEM\n"
        "file), \"service\", optionally \"db_user\", \"db_name\", \"source\", \"at\" (RFC 3339;\n"
        "default: the file's \"at\", else now), \"feed_trust\" and \"grants\" (the approved\n"
        "access requests the user holds: [{\"service\": ..., \"until\": RFC 3339}]), and\n"
        "what it expects:\n"
        "\"expect\" (\"allow\" or \"deny\"), optionally \"rule\" and \"would_deny\".\n"
        "Exit 0 if every case passes, 1 if one fails or a file cannot be read, 2 on "
        "usage.\n";

int gw_test_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"verbose", no_argument, NULL, 'v'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	bool verbose = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (config == NULL || optind != argc - 1) {
		fprintf(stderr, "certgate test: --config and one cases file are required\n%s",
		        usage);
		return 2;
	}
	const char *cases_path = argv[optind];
	cg_errors_t errs;
	cg_errors_init(&errs);
	pol_snapshot_t *snap = pol_snapshot_load(config, &errs);
	cg_jdoc_t *doc = snap != NULL ? cg_jdoc_load(cases_path, &errs) : NULL;
	test_case_t *cases = NULL;
	size_t n = 0;
	if (doc != NULL) {
		reader_t r = {.doc = doc, .errs = &errs, .snap = snap};
		char copy[PATH_MAX];
		snprintf(copy, sizeof(copy), "%s", cases_path);
		snprintf(r.dir, sizeof(r.dir), "%s", dirname(copy));
		const json_t *root = cg_jdoc_root(doc);
		static const char *const keys[] = {"at", "cases", NULL};
		const json_t *list = json_object_get(root, "cases");
		int64_t default_at = cg_wall_ms();
		if (!json_is_object(root) || !json_is_array(list) || json_array_size(list) == 0) {
			cg_jdoc_error(doc, &errs, "",
			              "expected an object with a non-empty array \"cases\"");
		} else {
			check_keys(&r, root, "", keys);
			(void)get_time(&r, root, "", &default_at);
			n = json_array_size(list);
			cases = calloc(n, sizeof(*cases));
			for (size_t i = 0; cases != NULL && i < n; i++)
				read_case(&r, json_array_get(list, i), i, default_at, &cases[i]);
			if (cases == NULL)
				cg_errors_add(&errs, "out of memory");
		}
	}
	int code = 1;
	if (errs.count > 0) {
		for (size_t i = 0; i < errs.count; i++)
			fprintf(stderr, "%s\n", errs.items[i]);
		goto done;
	}
	size_t passed = 0;
	for (size_t i = 0; i < n; i++)
		passed += run_case(snap, doc, &cases[i], verbose);
	printf("%zu passed, %zu failed\n", passed, n - passed);
	code = passed == n ? 0 : 1;
done:
	for (size_t i = 0; cases != NULL && i < n; i++)
		if (cases[i].claims_owned)
			pol_claims_finish(&cases[i].claims);
	free(cases);
	cg_jdoc_destroy(doc);
	pol_snapshot_unref(snap);
	cg_errors_finish(&errs);
	return code;
}
