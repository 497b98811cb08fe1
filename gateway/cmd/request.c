/* `certgate request SERVICE --reason TEXT --for DUR [--wait]`: a user asks
 * for just-in-time access (docs/admin-api.md, "Access requests") with the
 * login certificate, over mutual TLS on the catalog's server name with
 * ALPN certgate-jit/1 (core/session_access.c). The gateway takes the
 * requester from the certificate. Prints the request's id; with --wait,
 * asks the gateway every second how it stands until an approver decides
 * or the grant ends, and says which. Exit 0 when recorded (with --wait:
 * approved), 1 when refused, denied or expired (or the gateway cannot be
 * asked), 2 on usage errors. */
#include "cmd/cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cmd/catalog.h"
#include "cmd/client_tls.h"
#include "core/runtime.h"

/* How often --wait asks, and how many failures in a row it sits out (a
 * gateway restarting) before it gives up. */
#define POLL_MS       1000
#define POLL_FAILURES 60

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate request SERVICE --reason TEXT --for DUR [--wait]\n"
	        "                        [--gateway HOST:PORT] [--cert FILE --key FILE] [--ca "
	        "FILE] [--dir DIR]\n"
	        "Asks for just-in-time access to SERVICE (a service whose rule requires\n"
	        "approval) for DUR (\"30m\", \"1h\"; at most 7d), saying why. The gateway records\n"
	        "the request as yours (your login certificate's user) and an approver approves\n"
	        "or denies it (POST /v1/access-requests/ID/approve). Prints the request's id.\n"
	        "  --reason TEXT        why (an approver reads it; up to 500 bytes)\n"
	        "  --for DUR            how long the access is for, once approved\n"
	        "  --wait               wait for the decision: exit 0 once approved, 1 when\n"
	        "                       denied or expired\n"
	        "  --gateway HOST:PORT  the gateway (default: the one certgate login --gateway\n"
	        "                       remembered in DIR/login.json)\n"
	        "Without --cert/--key and --ca: DIR's login-cert.pem, login-key.pem and ca.pem\n"
	        "(--dir DIR, default $XDG_CONFIG_HOME/certgate, else ~/.config/certgate).\n");
}

typedef struct answer {
	json_t *doc;
	json_t *request;   /* in doc, may be NULL */
	const char *error; /* in doc, NULL when none */
} answer_t;

/* One exchange with the gateway: line out, its answer in. 0, or -1 with
 * why in err. */
static int ask(client_tls_t *tls, json_t *msg, answer_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char *line = json_dumps(msg, JSON_COMPACT);
	char *text = NULL;
	size_t len = 0;
	if (line == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t n = strlen(line);
	char *sent = realloc(line, n + 2);
	if (sent == NULL) {
		free(line);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(sent + n, "\n", 2);
	int rc = catalog_exchange(tls->ctx, &tls->gateway, CATALOG_TIMEOUT_MS, GW_ALPN_REQUEST,
	                          sent, &text, &len, err, errlen);
	free(sent);
	if (rc < 0)
		return -1;
	json_error_t jerr;
	out->doc = json_loadb(text, len, 0, &jerr);
	free(text);
	out->request = json_object_get(out->doc, "request");
	out->error = json_string_value(json_object_get(out->doc, "error"));
	const char *id = json_string_value(json_object_get(out->request, "id"));
	const char *state = json_string_value(json_object_get(out->request, "state"));
	if (!json_is_object(out->doc) || (out->error == NULL && (id == NULL || state == NULL))) {
		snprintf(err, errlen, "the gateway's answer is not an access request");
		json_decref(out->doc);
		out->doc = NULL;
		return -1;
	}
	return 0;
}

static const char *field(const json_t *req, const char *key)
{
	const char *v = json_string_value(json_object_get(req, key));
	return v != NULL ? v : "?";
}

/* Says how a decided request went; its exit code. */
static int decided(const json_t *req)
{
	const char *state = field(req, "state");
	const char *why = json_string_value(json_object_get(req, "decided_reason"));
	if (strcmp(state, "approved") == 0) {
		printf("%s approved by %s until %s\n", field(req, "id"), field(req, "decided_by"),
		       field(req, "until"));
		return 0;
	}
	if (strcmp(state, "denied") == 0)
		printf("%s denied by %s%s%s\n", field(req, "id"), field(req, "decided_by"),
		       why != NULL ? ": " : "", why != NULL ? why : "");
	else
		printf("%s expired: the grant ended at %s\n", field(req, "id"),
		       field(req, "until"));
	return 1;
}

static void pause_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* --wait: asks how id stands until it is decided. */
static int wait_for_decision(client_tls_t *tls, const char *id)
{
	char err[512], last[512] = "";
	int failures = 0;
	json_t *msg = json_pack("{s:s, s:s}", "op", "status", "id", id);
	for (;;) {
		pause_ms(POLL_MS);
		(void)client_tls_refresh(tls); /* a renewed login certificate */
		answer_t a;
		if (ask(tls, msg, &a, err, sizeof(err)) < 0) {
			if (strcmp(err, last) != 0)
				fprintf(stderr,
				        "certgate request: asking about %s: %s (trying again)\n",
				        id, err);
			snprintf(last, sizeof(last), "%s", err);
			if (++failures >= POLL_FAILURES) {
				fprintf(stderr, "certgate request: giving up on %s\n", id);
				json_decref(msg);
				return 1;
			}
			continue;
		}
		failures = 0;
		last[0] = '\0';
		if (a.error != NULL) {
			fprintf(stderr, "certgate request: %s\n", a.error);
			json_decref(a.doc);
			json_decref(msg);
			return 1;
		}
		if (strcmp(field(a.request, "state"), "pending") != 0) {
			int rc = decided(a.request);
			json_decref(a.doc);
			json_decref(msg);
			return rc;
		}
		json_decref(a.doc);
	}
}

int gw_request_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"reason", required_argument, NULL, 'r'}, {"for", required_argument, NULL, 'f'},
	        {"wait", no_argument, NULL, 'w'},         {"gateway", required_argument, NULL, 'g'},
	        {"cert", required_argument, NULL, 'c'},   {"key", required_argument, NULL, 'k'},
	        {"ca", required_argument, NULL, 'a'},     {"dir", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	client_tls_t tls;
	memset(&tls, 0, sizeof(tls));
	const char *gateway = NULL, *dir = NULL, *reason = NULL, *duration = NULL;
	bool wait = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'r':
			reason = optarg;
			break;
		case 'f':
			duration = optarg;
			break;
		case 'w':
			wait = true;
			break;
		case 'g':
			gateway = optarg;
			break;
		case 'c':
			tls.cert_path = optarg;
			break;
		case 'k':
			tls.key_path = optarg;
			break;
		case 'a':
			tls.ca_path = optarg;
			break;
		case 'd':
			dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	const char *problem = NULL;
	if (optind + 1 != argc)
		problem = optind == argc ? "which SERVICE?" : "one SERVICE at a time";
	else if (reason == NULL)
		problem = "--reason TEXT is required: say why (an approver reads it)";
	else if (duration == NULL)
		problem = "--for DUR is required: how long (\"1h\")";
	else if ((tls.cert_path == NULL) != (tls.key_path == NULL))
		problem = "--cert goes with --key";
	if (problem != NULL) {
		fprintf(stderr, "certgate request: %s\n", problem);
		usage(stderr);
		return 2;
	}
	const char *service = argv[optind];
	int rc = client_tls_settle(&tls, "certgate request", dir, gateway, true);
	if (rc != 0)
		return rc;
	char err[512];
	if (client_tls_load(&tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "certgate request: %s\n", err);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	json_t *msg = json_pack("{s:s, s:s, s:s, s:s}", "op", "request", "service", service,
	                        "reason", reason, "duration", duration);
	answer_t a;
	snprintf(err, sizeof(err), "out of memory");
	rc = msg != NULL ? ask(&tls, msg, &a, err, sizeof(err)) : -1;
	json_decref(msg);
	if (rc < 0) {
		fprintf(stderr, "certgate request: %s\n", err);
		client_tls_finish(&tls);
		return 1;
	}
	const char *id = json_string_value(json_object_get(a.request, "id"));
	const char *state = json_string_value(json_object_get(a.request, "state"));
	if (a.error != NULL) {
		fprintf(stderr, "certgate request: refused: %s\n", a.error);
		/* one pending already for the service: --wait waits on that one */
		rc = 1;
		if (wait && id != NULL && state != NULL && strcmp(state, "pending") == 0) {
			printf("%s\n", id);
			fflush(stdout);
			rc = wait_for_decision(&tls, id);
		}
	} else {
		printf("%s\n", id);
		fflush(stdout);
		fprintf(stderr,
		        "certgate request: %s is pending: an approver decides (POST "
		        "/v1/access-requests/%s/approve)%s\n",
		        id, id, wait ? "; waiting" : "");
		rc = wait ? wait_for_decision(&tls, id) : 0;
	}
	json_decref(a.doc);
	client_tls_finish(&tls);
	return rc;
}
