/* `certgate check --config FILE`: everything `serve` would load, loaded and
 * validated, every error reported with file:line:column. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "runtime.h"

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
