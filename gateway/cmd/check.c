/* `certgate check --config FILE`: everything `serve` would load, loaded and
 * validated, every error reported with file:line:column. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "admin/admin.h"
#include "cmd/cli.h"
#include "issuer/issuer.h"
#include "core/runtime.h"

int gw_check_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	static const char usage[] = "usage: certgate check --config FILE\n"
	                            "Validates the configuration and policy and loads every "
	                            "certificate, key, CA and CRL it names.\n";
	const char *config = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (config == NULL || optind != argc) {
		fprintf(stderr, "certgate check: --config FILE is required\n%s", usage);
		return 2;
	}
	cg_errors_t errs;
	cg_errors_init(&errs);
	gw_runtime_t *rt = gw_runtime_load(config, &errs);
	/* what the extensions load beside the runtime: the issuer's files, the
	 * admin token */
	if (rt != NULL && rt->snap->issuer.enabled && !gw_issuer_load(rt->snap, NULL, &errs)) {
		gw_runtime_unref(rt);
		rt = NULL;
	}
	const pol_admin_t *admin = rt != NULL ? &rt->snap->admin : NULL;
	if (admin != NULL && admin->enabled && admin->token_file.path != NULL) {
		char *token = gw_admin_token_load(&admin->token_file, &errs);
		if (token == NULL) {
			gw_runtime_unref(rt);
			rt = NULL;
		}
		if (token != NULL)
			OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.items[i]);
	int code = rt != NULL ? 0 : 1;
	if (rt != NULL)
		printf("%s: ok (%zu services, %zu rules, policy sha256 %s)\n", config,
		       rt->snap->n_services, rt->snap->n_rules, rt->snap->sha256);
	else
		fprintf(stderr, "%s: %zu error%s\n", config, errs.count,
		        errs.count == 1 ? "" : "s");
	cg_errors_finish(&errs);
	gw_runtime_unref(rt);
	return code;
}
