/* `certgate login`: single sign-on to a short-lived login certificate
 * (LOGIN.md, "The flow" and "The client").
 *
 *   1. GET {issuer}/v1/login/config: the identity provider, client, scopes
 *   2. OpenID discovery at the provider, then the authorization code flow
 *      with PKCE and a loopback redirect (login_code.c), or with
 *      --headless the device grant (login_device.c): an ID token
 *   3. a fresh ECDSA P-256 key and its CSR; the device key (made once per
 *      machine) proves itself over the CSR (login_issuer.c)
 *   4. POST {issuer}/v1/login/certificate with the ID token as Bearer
 *   5. the files written into the login folder (login_files.c), the key
 *      before the certificate, and who the certificate says you are; with
 *      --gateway, login.json also remembers the gateway that certgate
 *      services and certgate connect use by default
 *
 * Instructions go to stderr (so they show with stdout redirected), the
 * result to stdout. Exit 0, 1 on any refusal or failure (one line), 2 on
 * usage errors. */
#include "cmd/cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cg_addr.h"
#include "cg_duration.h"
#include "cg_time.h"
#include "cmd/login_code.h"
#include "cmd/login_device.h"
#include "cmd/login_files.h"
#include "cmd/login_issuer.h"
#include "tls/pem_io.h"
#include "tls/x509_build.h"
#include "tls/x509_info.h"

#define DEFAULT_TIMEOUT "5m"
#define MAX_URL         2000

typedef struct login_opts {
	const char *issuer, *ca, *dir, *timeout, *gateway;
	bool headless, no_browser;
} login_opts_t;

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate login [--issuer URL] [--ca FILE] [--headless] [--dir DIR]\n"
	        "                      [--timeout DUR] [--no-browser] [--gateway HOST:PORT]\n"
	        "Signs in with your identity provider (OpenID Connect) through certgate's\n"
	        "issuer and writes a short-lived login certificate for a key made here.\n"
	        "\n"
	        "  --issuer URL    the certgate issuer, https://HOST:PORT (default: the one of\n"
	        "                  the last login in DIR)\n"
	        "  --ca FILE       CA certificates trusted besides the system's, for the\n"
	        "                  issuer's and the identity provider's HTTPS (default: the\n"
	        "                  last login's, when the issuer is the same)\n"
	        "  --headless      no browser here: sign in from another device with a code\n"
	        "                  (OAuth device authorization grant)\n"
	        "  --dir DIR       the login folder (default $XDG_CONFIG_HOME/certgate, else\n"
	        "                  ~/.config/certgate)\n"
	        "  --timeout DUR   how long to wait for the sign-in (default " DEFAULT_TIMEOUT ")\n"
	        "  --no-browser    print the sign-in URL without opening a browser\n"
	        "  --gateway HOST:PORT  the gateway certgate services and certgate connect\n"
	        "                  use by default (kept in login.json for the next logins)\n"
	        "Writes DIR/login-cert.pem, login-key.pem, login-key.pk8 (DER, for JDBC),\n"
	        "ca.pem and login.json; the device key DIR/device-key.pem is made once.\n");
}

static int refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "certgate login: %s\n", line);
	return 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "certgate login: %s (certgate login --help)\n", line);
	return 2;
}

static int parse_options(int argc, char **argv, login_opts_t *o)
{
	static const struct option options[] = {
	        {"issuer", required_argument, NULL, 'i'},
	        {"ca", required_argument, NULL, 'a'},
	        {"headless", no_argument, NULL, 'H'},
	        {"dir", required_argument, NULL, 'd'},
	        {"timeout", required_argument, NULL, 't'},
	        {"no-browser", no_argument, NULL, 'n'},
	        {"gateway", required_argument, NULL, 'g'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof(*o));
	o->timeout = DEFAULT_TIMEOUT;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'i':
			o->issuer = optarg;
			break;
		case 'a':
			o->ca = optarg;
			break;
		case 'H':
			o->headless = true;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 't':
			o->timeout = optarg;
			break;
		case 'n':
			o->no_browser = true;
			break;
		case 'g':
			o->gateway = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc)
		return usage_error("unexpected argument \"%s\"", argv[optind]);
	cg_hostport_t hp;
	if (o->gateway != NULL && !cg_hostport_parse(o->gateway, &hp))
		return usage_error("--gateway %s: expected HOST:PORT", o->gateway);
	return -1; /* go on */
}

/* The issuer URL without trailing slashes, https only. */
static int issuer_url(const char *given, char *out, size_t len)
{
	if (!login_is_https_url(given) || strlen(given) >= len || strlen(given) > MAX_URL)
		return usage_error("--issuer %s: expected an https:// URL", given);
	snprintf(out, len, "%s", given);
	for (size_t n = strlen(out); n > 8 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	return -1;
}

static void print_result(const char *issuer, const char *dir, const login_record_t *r, X509 *cert)
{
	printf("Logged in at %s.\n", issuer);
	login_record_print(stdout, r, gw_cert_not_after_ms(cert), cg_wall_ms());
	printf("files:   %s (" LOGIN_CERT_FILE ", " LOGIN_KEY_FILE ", " LOGIN_PK8_FILE
	       ", " LOGIN_CA_FILE ")\n",
	       dir);
	fflush(stdout);
}

typedef struct login_run {
	login_opts_t o;
	char dir[PATH_MAX], issuer[MAX_URL + 1], ca[PATH_MAX];
	login_record_t prev;
	EVP_PKEY *device_key, *key;
	login_config_t config;
	login_idp_t idp;
	char *id_token;
	login_issued_t issued;
	login_record_t rec;
} login_run_t;

static void run_finish(login_run_t *run)
{
	login_record_finish(&run->prev);
	login_record_finish(&run->rec);
	EVP_PKEY_free(run->device_key);
	EVP_PKEY_free(run->key);
	login_config_finish(&run->config);
	login_idp_finish(&run->idp);
	if (run->id_token != NULL)
		OPENSSL_clear_free(run->id_token, strlen(run->id_token));
	login_issued_finish(&run->issued);
}

/* Where to log in, and with what trust: the options, else the last login's. */
static int settle_targets(login_run_t *run)
{
	char err[512];
	if (!login_dir_default(run->o.dir, run->dir, sizeof(run->dir)))
		return refuse("no folder for the login files (HOME unset?): give --dir");
	int rc = login_record_load(run->dir, &run->prev, err, sizeof(err));
	if (rc < 0 && run->o.issuer == NULL)
		return refuse("%s", err);
	if (rc < 0)
		fprintf(stderr, "certgate login: ignoring the last login's record: %s\n", err);
	const char *given = run->o.issuer != NULL ? run->o.issuer : run->prev.issuer;
	if (given == NULL)
		return usage_error("--issuer is required (no earlier login in %s)", run->dir);
	if ((rc = issuer_url(given, run->issuer, sizeof(run->issuer))) >= 0)
		return rc;
	const char *ca = run->o.ca;
	if (ca == NULL && run->prev.issuer != NULL && strcmp(run->prev.issuer, run->issuer) == 0)
		ca = run->prev.issuer_ca;
	if (ca != NULL) {
		STACK_OF(X509) *certs = gw_pem_read_certs(ca, err, sizeof(err));
		if (certs == NULL)
			return refuse("--ca %s: %s", ca, err);
		sk_X509_pop_free(certs, X509_free);
		if (realpath(ca, run->ca) == NULL)
			snprintf(run->ca, sizeof(run->ca), "%s", ca);
	}
	return -1;
}

static int sign_in(login_run_t *run, const login_http_t *http, int64_t deadline_ms)
{
	char err[1024];
	if (login_config_fetch(http, run->issuer, &run->config, err, sizeof(err)) < 0)
		return refuse("%s", err);
	if (login_idp_discover(http, run->config.idp_issuer, &run->idp, err, sizeof(err)) < 0)
		return refuse("%s", err);
	login_client_t client = {
	        .http = http,
	        .idp = &run->idp,
	        .client_id = run->config.client_id,
	        .scope = run->config.scope,
	        .deadline_ms = deadline_ms,
	        .open_browser = !run->o.no_browser,
	};
	int rc = run->o.headless ? login_device_flow(&client, &run->id_token, err, sizeof(err))
	                         : login_code_flow(&client, &run->id_token, err, sizeof(err));
	if (rc < 0)
		return refuse("%s", err);
	return -1;
}

static int get_certificate(login_run_t *run, const login_http_t *http)
{
	char err[1024], platform[LOGIN_PLATFORM_MAX + 1];
	login_platform_here(platform);
	run->key = gw_x509_key_new(0);
	if (run->key == NULL)
		return refuse("cannot make a key pair");
	if (login_certificate_request(http, run->issuer, run->id_token, run->key, run->device_key,
	                              platform, &run->issued, err, sizeof(err)) < 0)
		return refuse("%s", err);
	run->rec.issuer = strdup(run->issuer);
	run->rec.issuer_ca = run->ca[0] ? strdup(run->ca) : NULL;
	run->rec.extra = run->prev.extra != NULL ? json_deep_copy(run->prev.extra) : json_object();
	if (run->rec.extra != NULL && run->o.gateway != NULL &&
	    json_object_set_new(run->rec.extra, LOGIN_GATEWAY_KEY, json_string(run->o.gateway)) !=
	            0)
		return refuse("out of memory");
	if (run->rec.issuer == NULL || run->rec.extra == NULL ||
	    (run->ca[0] && run->rec.issuer_ca == NULL) ||
	    !login_record_from_cert(&run->rec, run->issued.cert))
		return refuse("out of memory");
	if (login_files_write(run->dir, run->key, run->issued.cert_pem, run->issued.ca_pem,
	                      &run->rec, err, sizeof(err)) < 0)
		return refuse("%s", err);
	return -1;
}

int gw_login_main(int argc, char **argv)
{
	login_run_t *run = calloc(1, sizeof(*run));
	if (run == NULL)
		return refuse("out of memory");
	int rc = parse_options(argc, argv, &run->o);
	uint64_t timeout_ms = 0;
	char err[1024];
	bool created = false, curl_up = false;
	if (rc >= 0)
		goto done;
	if (!cg_duration_parse(run->o.timeout, &timeout_ms) || timeout_ms < 1000) {
		rc = usage_error("--timeout %s: expected a duration of 1s or more", run->o.timeout);
		goto done;
	}
	if ((rc = settle_targets(run)) >= 0)
		goto done;
	int64_t deadline_ms = login_now_ms() + (int64_t)timeout_ms;
	if (login_dir_make(run->dir, err, sizeof(err)) < 0 ||
	    (run->device_key = login_device_key(run->dir, &created, err, sizeof(err))) == NULL) {
		rc = refuse("%s", err);
		goto done;
	}
	if (created)
		fprintf(stderr, "certgate login: made this machine's device key %s/%s\n", run->dir,
		        LOGIN_DEVICE_KEY_FILE);
	if (!(curl_up = login_http_global_init())) {
		rc = refuse("cannot start libcurl");
		goto done;
	}
	login_http_t http = {.ca_file = run->ca[0] ? run->ca : NULL};
	if ((rc = sign_in(run, &http, deadline_ms)) >= 0 || (rc = get_certificate(run, &http)) >= 0)
		goto done;
	print_result(run->issuer, run->dir, &run->rec, run->issued.cert);
	rc = 0;
done:
	if (curl_up)
		login_http_global_finish();
	run_finish(run);
	free(run);
	return rc;
}
