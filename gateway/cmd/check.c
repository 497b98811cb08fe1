/* `certgate check --config FILE [--strict]`: everything `serve` would load,
 * loaded and validated, every error reported with file:line:column; then
 * the warnings about dangerous settings of a valid configuration (policy's
 * pol_lint, and here the modes of the files holding secrets), each with
 * its position too. --strict makes a warning fail the check. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "admin/admin.h"
#include "cg_json.h"
#include "cmd/cli.h"
#include "issuer/issuer.h"
#include "core/runtime.h"
#include "pol_lint.h"

/* A file holding a secret (a private key, the admin token) must not be
 * readable by others, nor by its group unless root owns it (PostgreSQL's
 * rule for its key file: root:ssl-cert 0640, or a Kubernetes secret
 * mounted root:fsGroup 0440, gives the group to the service on purpose). */
static void check_secret(const pol_file_t *file, const char *holds, cg_errors_t *warnings)
{
	struct stat st;
	if (file->path == NULL || stat(file->path, &st) != 0)
		return; /* a missing file is the loader's error */
	bool others = (st.st_mode & S_IROTH) != 0;
	bool group = (st.st_mode & S_IRGRP) != 0 && st.st_uid != 0;
	if (!others && !group)
		return;
	char where[512];
	if (file->doc != NULL && file->key != NULL)
		cg_jdoc_where(file->doc, file->key, where, sizeof(where));
	else
		snprintf(where, sizeof(where), "%s", file->path);
	cg_errors_add(warnings,
	              "%s: warning: %s: %s holds %s and is readable by %s (mode %04o): "
	              "chmod 600 it (or 640 owned by root, for a group that needs it)",
	              where, file->key != NULL ? file->key : "file", file->path, holds,
	              others ? "every user" : "its group, and not owned by root",
	              (unsigned)(st.st_mode & 07777));
}

/* Every file the configuration names that holds a secret. (When the
 * issuer's ca_key exists, it goes here too.) */
static void check_secrets(const pol_snapshot_t *snap, cg_errors_t *warnings)
{
	check_secret(&snap->gateway.key, "the gateway's private key", warnings);
	for (size_t i = 0; i < snap->n_services; i++) {
		const pol_service_t *svc = &snap->services[i];
		if (svc->has_upstream_tls)
			check_secret(&svc->upstream_tls.client_ca_key,
			             "the private key of the CA that mints database client "
			             "certificates",
			             warnings);
	}
	if (snap->admin.enabled)
		check_secret(&snap->admin.token_file, "the admin API's bearer token", warnings);
}

int gw_check_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"strict", no_argument, NULL, 's'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	static const char usage[] =
	        "usage: certgate check --config FILE [--strict]\n"
	        "Validates the configuration and policy and loads every certificate, key, CA and "
	        "CRL it names;\n"
	        "then warns about dangerous settings (secrets readable by others, PROXY headers "
	        "trusted from\n"
	        "anywhere, long certificate lifetimes or clock skew, rules that admit everyone, "
	        "{user.local}\n"
	        "patterns that let users collide).\n"
	        "  --strict   a warning fails the check (exit 1)\n";
	const char *config = NULL;
	bool strict = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 's':
			strict = true;
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
	/* warnings only for a configuration that loads: errors come first */
	cg_errors_t warnings;
	cg_errors_init(&warnings);
	if (rt != NULL) {
		check_secrets(rt->snap, &warnings);
		pol_lint(rt->snap, &warnings);
	}
	for (size_t i = 0; i < warnings.count; i++)
		fprintf(stderr, "%s\n", warnings.items[i]);
	int code = 0;
	if (rt == NULL) {
		code = 1;
		fprintf(stderr, "%s: %zu error%s\n", config, errs.count,
		        errs.count == 1 ? "" : "s");
	} else if (strict && warnings.count > 0) {
		code = 1;
		fprintf(stderr, "%s: %zu warning%s, refused by --strict\n", config, warnings.count,
		        warnings.count == 1 ? "" : "s");
	} else {
		printf("%s: ok (%zu services, %zu rules, policy sha256 %s)\n", config,
		       rt->snap->n_services, rt->snap->n_rules, rt->snap->sha256);
		if (warnings.count > 0)
			fprintf(stderr, "%s: %zu warning%s\n", config, warnings.count,
			        warnings.count == 1 ? "" : "s");
	}
	cg_errors_finish(&warnings);
	cg_errors_finish(&errs);
	gw_runtime_unref(rt);
	return code;
}
