/* `certgate services`: the user's catalog (docs/login.md, "The services you
 * may reach") — what the gateway's policy admits the login certificate to
 * now, as a table or as the gateway's JSON document (--json). The files
 * and the gateway default to the login folder's (client_tls.h). Exit 0
 * with the list (empty or not), 1 when the gateway cannot be asked or
 * refuses the certificate itself, 2 on usage errors. */
#include "cmd/cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/catalog.h"
#include "cmd/client_tls.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate services [--gateway HOST:PORT] [--cert FILE --key FILE] [--ca "
	        "FILE]\n"
	        "                         [--dir DIR] [--json]\n"
	        "Lists the services the gateway's policy admits your login certificate to now:\n"
	        "name, mode, the local port certgate connect listens on for it (tunnel mode) or\n"
	        "the gateway's address psql connects to (postgres mode), and the description.\n"
	        "  --gateway HOST:PORT  the gateway (default: the one certgate login --gateway\n"
	        "                       remembered in DIR/login.json)\n"
	        "  --json               the gateway's answer as it is (one JSON document)\n"
	        "Without --cert/--key and --ca: DIR's login-cert.pem, login-key.pem and ca.pem\n"
	        "(--dir DIR, default $XDG_CONFIG_HOME/certgate, else ~/.config/certgate).\n");
}

/* Where to reach an entry: the connector's local port, or the gateway. */
static void address_of(const catalog_entry_t *e, const cg_hostport_t *gw, char *out, size_t len)
{
	bool v6 = strchr(gw->host, ':') != NULL;
	if (e->mode == CATALOG_POSTGRES)
		snprintf(out, len, "%s%s%s:%u (psql)", v6 ? "[" : "", gw->host, v6 ? "]" : "",
		         e->port != 0 ? e->port : gw->port);
	else if (e->client_port != 0)
		snprintf(out, len, "127.0.0.1:%u", e->client_port);
	else
		snprintf(out, len, "-");
}

static void print_table(const catalog_t *cat, const cg_hostport_t *gw)
{
	int w_name = 7, w_addr = 7;
	char addr[300];
	for (size_t i = 0; i < cat->n; i++) {
		int n = (int)strlen(cat->entries[i].name);
		address_of(&cat->entries[i], gw, addr, sizeof(addr));
		w_name = n > w_name ? n : w_name;
		w_addr = (int)strlen(addr) > w_addr ? (int)strlen(addr) : w_addr;
	}
	printf("%s%s%s%s\n", cat->user != NULL ? "services for " : "",
	       cat->user != NULL ? cat->user : "services",
	       cat->device_id != NULL ? " on device " : "",
	       cat->device_id != NULL ? cat->device_id : "");
	if (cat->n == 0) {
		printf("(none: the policy admits this certificate to no service now)\n");
		return;
	}
	printf("%-*s  %-8s  %-*s  %s\n", w_name, "SERVICE", "MODE", w_addr, "ADDRESS",
	       "DESCRIPTION");
	for (size_t i = 0; i < cat->n; i++) {
		const catalog_entry_t *e = &cat->entries[i];
		address_of(e, gw, addr, sizeof(addr));
		if (e->description != NULL)
			printf("%-*s  %-8s  %-*s  %s\n", w_name, e->name,
			       e->mode == CATALOG_POSTGRES ? "postgres" : "tunnel", w_addr, addr,
			       e->description);
		else
			printf("%-*s  %-8s  %s\n", w_name, e->name,
			       e->mode == CATALOG_POSTGRES ? "postgres" : "tunnel", addr);
	}
}

int gw_services_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"gateway", required_argument, NULL, 'g'}, {"cert", required_argument, NULL, 'c'},
	        {"key", required_argument, NULL, 'k'},     {"ca", required_argument, NULL, 'a'},
	        {"dir", required_argument, NULL, 'd'},     {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	client_tls_t tls;
	memset(&tls, 0, sizeof(tls));
	const char *gateway = NULL, *dir = NULL;
	bool as_json = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
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
		case 'j':
			as_json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (tls.cert_path == NULL) != (tls.key_path == NULL)) {
		if (optind != argc)
			fprintf(stderr, "certgate services: unexpected argument \"%s\"\n",
			        argv[optind]);
		else
			fprintf(stderr, "certgate services: --cert goes with --key\n");
		usage(stderr);
		return 2;
	}
	int rc = client_tls_settle(&tls, "certgate services", dir, gateway, true);
	if (rc != 0)
		return rc;
	char err[512];
	if (client_tls_load(&tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "certgate services: %s\n", err);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	catalog_t cat;
	rc = catalog_fetch(tls.ctx, &tls.gateway, CATALOG_TIMEOUT_MS, &cat, err, sizeof(err));
	client_tls_finish(&tls);
	if (rc < 0) {
		fprintf(stderr, "certgate services: %s\n", err);
		return 1;
	}
	if (as_json) {
		char *text = json_dumps(cat.doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (text != NULL)
			puts(text);
		free(text);
	} else if (cat.refused == NULL) {
		print_table(&cat, &tls.gateway);
	}
	if (cat.refused != NULL)
		fprintf(stderr, "certgate services: the gateway refuses this certificate: %s\n",
		        cat.refused);
	rc = cat.refused != NULL ? 1 : 0;
	catalog_finish(&cat);
	return rc;
}
