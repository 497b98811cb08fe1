/* `certgate explain`: the gateway's decision for a certificate, offline.
 * The certificate goes through the same verification (gw_cert_reverify)
 * and the request through the same pol_decide as a live connection; the
 * trace shows each rule considered. Live state (locks, trust feed) is the
 * running gateway's and is not consulted. A postgres-mode service asked
 * about without --db-user and --db-name gets the catalog's question (may
 * some database user and name be used?), so explain and `certgate
 * services` never disagree. --at decides as of another time
 * than now: every time-dependent check (certificate and CRL validity, the
 * clock-skew rule, the rules' time windows) is judged at that instant, and
 * each window says why it holds or not then. Access grants (just-in-time
 * access) are the running gateway's too: --grant-until decides as if the
 * user held an approved one for the service until then, and each rule
 * that requires approval says whether one is held. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "cg_addr.h"
#include "cg_time.h"
#include "cmd/cli.h"
#include "pol_decide.h"
#include "pol_window.h"
#include "core/runtime.h"
#include "tls/x509_info.h"

typedef struct trace {
	json_t *rules;
	int64_t at_ms;
	int64_t grant_until_ms; /* 0: none */
} trace_t;

static json_t *time_or_null(int64_t ms)
{
	char ts[CG_RFC3339_LEN];
	if (ms == INT64_MAX)
		return json_null();
	cg_rfc3339_ms(ms, ts);
	return json_string(ts);
}

static void on_rule(void *arg, const pol_rule_t *rule, const char *why_not)
{
	trace_t *t = arg;
	json_t *r = json_pack("{s:s, s:s, s:b, s:s?}", "name", rule->name, "effect",
	                      rule->allow ? "allow" : "deny", "matched", why_not == NULL, "why_not",
	                      why_not);
	if (rule->permissive)
		json_object_set_new(r, "mode", json_string("permissive"));
	if (rule->when != NULL) {
		/* matched or not, a window says why at that instant, and until when */
		char detail[512];
		bool inside = pol_window_explain(rule->when, t->at_ms, detail, sizeof(detail));
		json_object_set_new(
		        r, "when",
		        json_pack("{s:b, s:s, s:o}", "inside", inside, "detail", detail,
		                  "next_change",
		                  time_or_null(pol_window_next_change(rule->when, t->at_ms))));
	}
	if (rule->requires_approval) {
		/* held: a grant that runs past the decision's instant */
		bool held = t->grant_until_ms > t->at_ms;
		json_object_set_new(r, "requires_approval",
		                    json_pack("{s:b, s:o}", "held", held, "until",
		                              t->grant_until_ms > 0
		                                      ? time_or_null(t->grant_until_ms)
		                                      : json_null()));
	}
	json_array_append_new(t->rules, r);
}

/* The leaf and, after it, the intermediates the client would send (a
 * PEM bundle as psql's sslcert or certgate connect's --cert may be). */
static X509 *read_cert(const char *path, STACK_OF(X509) * *chain)
{
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return NULL;
	X509 *leaf = PEM_read_X509(f, NULL, NULL, NULL);
	*chain = sk_X509_new_null();
	X509 *x;
	while (leaf != NULL && *chain != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(*chain, x))
			X509_free(x);
	ERR_clear_error(); /* the end of the PEM stream reads as an error */
	fclose(f);
	return leaf;
}

static json_t *claims_json(const pol_claims_t *c)
{
	json_t *groups = json_array();
	for (size_t i = 0; i < c->n_groups; i++)
		json_array_append_new(groups, json_string(c->groups[i]));
	return json_pack("{s:s?, s:o, s:s?, s:s}", "user", c->user, "groups", groups, "device_id",
	                 c->device_id, "device_trust", pol_trust_name(c->device_trust));
}

static const char *or_none(json_t *value)
{
	const char *s = json_string_value(value);
	return s != NULL ? s : "(none)";
}

static void print_text(json_t *out)
{
	json_t *cert = json_object_get(out, "certificate");
	printf("certificate: %s\n", json_string_value(json_object_get(cert, "subject")));
	printf("  serial %s, not after %s\n", json_string_value(json_object_get(cert, "serial")),
	       json_string_value(json_object_get(cert, "not_after")));
	const char *refused = json_string_value(json_object_get(cert, "refused"));
	const char *detail = json_string_value(json_object_get(cert, "detail"));
	printf("  verification: %s%s%s%s%s\n", refused != NULL ? "refused: " : "ok",
	       refused != NULL ? refused : "", detail != NULL ? " (" : "",
	       detail != NULL ? detail : "", detail != NULL ? ")" : "");
	json_t *request = json_object_get(out, "request");
	const char *at = json_string_value(json_object_get(request, "at"));
	if (at != NULL)
		printf("  as of: %s\n", at);
	if (json_is_true(json_object_get(request, "db_any")))
		printf("  as: any database user and name (postgres mode; --db-user and "
		       "--db-name ask about one)\n");
	json_t *claims = json_object_get(out, "claims");
	printf("claims:\n  user: %s\n  groups:", or_none(json_object_get(claims, "user")));
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(claims, "groups"), i, v)
	        printf(" %s", json_string_value(v));
	printf("%s\n", json_array_size(json_object_get(claims, "groups")) ? "" : " (none)");
	printf("  device_id: %s\n  device_trust: %s\n",
	       or_none(json_object_get(claims, "device_id")),
	       json_string_value(json_object_get(claims, "device_trust")));
	printf("rules:\n");
	json_array_foreach(json_object_get(out, "rules"), i, v)
	{
		const char *why = json_string_value(json_object_get(v, "why_not"));
		bool permissive = json_object_get(v, "mode") != NULL;
		printf("  %-20s %-5s %s%s\n", json_string_value(json_object_get(v, "name")),
		       json_string_value(json_object_get(v, "effect")),
		       why != NULL ? why : "matched",
		       permissive ? why != NULL ? " (permissive)"
		                                : " (permissive: would deny, does not refuse)"
		                  : "");
		json_t *when = json_object_get(v, "when");
		if (when != NULL) {
			const char *next = json_string_value(json_object_get(when, "next_change"));
			printf("      when: %s: %s%s%s\n",
			       json_is_true(json_object_get(when, "inside")) ? "inside" : "outside",
			       json_string_value(json_object_get(when, "detail")),
			       next != NULL ? "; changes at " : "", next != NULL ? next : "");
		}
		json_t *approval = json_object_get(v, "requires_approval");
		if (approval != NULL) {
			const char *until = json_string_value(json_object_get(approval, "until"));
			bool held = json_is_true(json_object_get(approval, "held"));
			printf("      requires approval: %s%s%s\n",
			       held            ? "a grant is held until "
			       : until != NULL ? "the grant ended at "
			                       : "no approved access request is held",
			       until != NULL ? until : "",
			       held || until != NULL ? "" : " (certgate request; --grant-until)");
		}
	}
	json_t *d = json_object_get(out, "decision");
	printf("decision: %s (rule %s): %s\n",
	       json_is_true(json_object_get(d, "allow")) ? "allow" : "deny",
	       json_string_value(json_object_get(d, "rule")),
	       json_string_value(json_object_get(d, "reason")));
	json_t *wd = json_object_get(d, "would_deny");
	if (json_array_size(wd) > 0) {
		printf("  would deny (permissive rules, not enforced):");
		json_array_foreach(wd, i, v) printf(" %s", json_string_value(v));
		printf("\n");
	}
	const char *until = json_string_value(json_object_get(d, "valid_until"));
	if (until != NULL)
		printf("  valid until: %s (a time window or an access grant; a live session is "
		       "decided again then)\n",
		       until);
}

int gw_explain_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"cert", required_argument, NULL, 'C'},
	        {"service", required_argument, NULL, 's'},
	        {"db-user", required_argument, NULL, 'u'},
	        {"db-name", required_argument, NULL, 'd'},
	        {"source", required_argument, NULL, 'S'},
	        {"at", required_argument, NULL, 'a'},
	        {"grant-until", required_argument, NULL, 'g'},
	        {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	static const char usage[] =
	        "usage: certgate explain --config FILE --cert FILE --service NAME\n"
	        "                        [--db-user U] [--db-name D] [--source IP] [--at TIME]\n"
	        "                        [--grant-until TIME] [--json]\n"
	        "Shows the claims read from the certificate, each rule considered and the "
	        "decision.\n"
	        "  --at TIME  decide as of TIME (RFC 3339, e.g. 2026-12-04T23:29:08Z) instead "
	        "of now:\n"
	        "             certificate and CRL validity, the clock-skew rule and the rules'\n"
	        "             time windows are judged then\n"
	        "  --grant-until TIME  decide as if the user held an approved access request\n"
	        "             for the service until TIME (RFC 3339): the rules that require\n"
	        "             approval match before then (the gateway's grants are its own)\n"
	        "Exit 0 if the gateway would admit it, 1 if not.\n";
	const char *config = NULL, *cert_path = NULL, *service = NULL, *source = NULL;
	const char *db_user = NULL, *db_name = NULL, *at_text = NULL, *grant_text = NULL;
	bool as_json = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'C':
			cert_path = optarg;
			break;
		case 's':
			service = optarg;
			break;
		case 'u':
			db_user = optarg;
			break;
		case 'd':
			db_name = optarg;
			break;
		case 'S':
			source = optarg;
			break;
		case 'a':
			at_text = optarg;
			break;
		case 'g':
			grant_text = optarg;
			break;
		case 'j':
			as_json = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (config == NULL || cert_path == NULL || service == NULL || optind != argc) {
		fprintf(stderr, "certgate explain: --config, --cert and --service are required\n%s",
		        usage);
		return 2;
	}
	int64_t at_s = 0; /* 0: now */
	char at[CG_RFC3339_LEN] = "";
	int64_t decide_ms = cg_wall_ms(); /* the time windows' instant */
	if (at_text != NULL) {
		int64_t at_ms = 0;
		if (!cg_rfc3339_parse(at_text, &at_ms) || at_ms < 1000) {
			fprintf(stderr,
			        "certgate explain: --at %s: expected an RFC 3339 time after 1970, "
			        "like 2026-12-04T23:29:08Z\n",
			        at_text);
			return 2;
		}
		at_s = at_ms / 1000;
		cg_rfc3339_ms(at_s * 1000, at);
		decide_ms = at_s * 1000;
	}
	int64_t grant_ms = 0;
	if (grant_text != NULL && (!cg_rfc3339_parse(grant_text, &grant_ms) || grant_ms <= 0)) {
		fprintf(stderr,
		        "certgate explain: --grant-until %s: expected an RFC 3339 time after 1970, "
		        "like 2026-12-04T23:29:08Z\n",
		        grant_text);
		return 2;
	}
	struct sockaddr_storage src;
	if (source != NULL) {
		cg_cidr_t net;
		cg_hostport_t hp = {.port = 1};
		if (!cg_cidr_parse(source, &net) || strchr(source, '/') != NULL ||
		    snprintf(hp.host, sizeof(hp.host), "%s", source) >= (int)sizeof(hp.host) ||
		    !cg_hostport_to_sockaddr(&hp, &src)) {
			fprintf(stderr, "certgate explain: --source %s: expected an IP address\n",
			        source);
			return 2;
		}
	}
	cg_errors_t errs;
	cg_errors_init(&errs);
	gw_runtime_t *rt = gw_runtime_load(config, &errs);
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.items[i]);
	cg_errors_finish(&errs);
	if (rt == NULL)
		return 1;
	int code = 1;
	STACK_OF(X509) *chain = NULL;
	X509 *cert = read_cert(cert_path, &chain);
	const pol_service_t *svc = pol_snapshot_service(rt->snap, service);
	if (cert == NULL) {
		fprintf(stderr, "certgate explain: --cert %s: not a readable PEM certificate\n",
		        cert_path);
		goto done;
	}
	if (svc == NULL) {
		fprintf(stderr, "certgate explain: --service %s: no such service in %s\n", service,
		        config);
		goto done;
	}
	if (svc->mode != POL_MODE_POSTGRES && (db_user != NULL || db_name != NULL)) {
		/* a tunnel never sees the database user or name: neither may explain */
		fprintf(stderr,
		        "certgate explain: --db-user/--db-name apply only to postgres-mode "
		        "services; "
		        "%s is a tunnel\n",
		        svc->name);
		code = 2;
		goto done;
	}
	pol_claims_t claims;
	if (!pol_claims_extract(&rt->snap->claims, cert, &claims))
		goto done;
	trace_t trace = {.rules = json_array(), .at_ms = decide_ms, .grant_until_ms = grant_ms};
	pol_request_t req = {
	        .service = svc->name,
	        .claims = &claims,
	        .feed_trust = POL_TRUST_NONE,
	        .source = source != NULL ? (struct sockaddr *)&src : NULL,
	        .db_user = db_user,
	        .db_name = db_name,
	        .at_ms = decide_ms,
	        .grant_until_ms = grant_ms,
	        .db_any = svc->mode == POL_MODE_POSTGRES && db_user == NULL && db_name == NULL,
	};
	pol_decision_t d;
	pol_decide(rt->snap, &req, &d, on_rule, &trace);
	gw_refusal_t refusal = {0};
	const char *refused = gw_cert_reverify(rt, cert, chain, at_s, &refusal);

	char subject[512], serial[128], not_after[CG_RFC3339_LEN];
	gw_cert_subject(cert, subject, sizeof(subject));
	gw_cert_serial_hex(cert, serial, sizeof(serial));
	cg_rfc3339_ms(gw_cert_not_after_ms(cert), not_after);
	bool admitted = d.allow && refused == NULL;
	json_t *would_deny = json_array();
	for (size_t i = 0; i < d.n_would_deny; i++)
		json_array_append_new(would_deny, json_string(d.would_deny[i]));
	json_t *out = json_pack(
	        "{s:{s:s, s:s, s:s, s:s?, s:s?}, s:o, s:{s:s, s:s?, s:s?, s:s?, s:s?, s:b}, s:o, "
	        "s:{s:b, s:s, s:s, s:s, s:o, s:o}, s:b}",
	        "certificate", "subject", subject, "serial", serial, "not_after", not_after,
	        "refused", refused, "detail", refusal.detail, "claims", claims_json(&claims),
	        "request", "service", svc->name, "source", source, "db_user", db_user, "db_name",
	        db_name, "at", at_s > 0 ? at : NULL, "db_any", req.db_any, "rules", trace.rules,
	        "decision", "allow", d.allow, "rule", d.rule, "reason", d.reason, "device_trust",
	        pol_trust_name(d.effective_trust), "would_deny", would_deny, "valid_until",
	        time_or_null(d.valid_until_ms), "admitted", admitted);
	gw_refusal_finish(&refusal);
	if (as_json) {
		char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (text != NULL)
			puts(text);
		free(text);
	} else {
		print_text(out);
		if (refused != NULL)
			printf("note: the TLS handshake would refuse this certificate: %s\n",
			       refused);
	}
	json_decref(out);
	pol_claims_finish(&claims);
	code = admitted ? 0 : 1;
done:
	X509_free(cert);
	sk_X509_pop_free(chain, X509_free);
	gw_runtime_unref(rt);
	return code;
}
