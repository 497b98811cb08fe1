/* certgate: one binary, subcommands (CLI.md). */
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "certgate_config.h"
#include "cmd/cli.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate <command> [options]  (certgate <command> --help for more)\n"
	        "  serve    --config FILE            run the gateway\n"
	        "  connect  --gateway HOST:PORT ...  client-side connector (mTLS tunnel)\n"
	        "  check    --config FILE            validate configuration and policy\n"
	        "  explain  --config FILE --cert FILE --service NAME   offline decision\n"
	        "  login    --issuer URL [--headless]   single sign-on: a login certificate\n"
	        "  status   [--dir DIR]              the login certificate: who, until when\n"
	        "  test     --config FILE CASES.json  policy tests: expected decisions\n"
	        "  services [--gateway HOST:PORT]    the services you may reach now\n"
	        "  request  SERVICE --reason TEXT --for DUR [--wait]   just-in-time access\n"
	        "  ca       init|issue|server|revoke|crl   development CA\n"
	        "  health   [--admin ADDR:PORT]      exit 0 if the gateway is ready\n"
	        "  audit    verify FILE...           check the audit log's hash chain\n"
	        "  version                           versions of certgate and its libraries\n");
}

static int version(void)
{
	printf("certgate %s\nOpenSSL %s\nlibuv %s\njansson %s\nlibmicrohttpd %s\n",
	       CERTGATE_VERSION, OpenSSL_version(OPENSSL_FULL_VERSION_STRING), uv_version_string(),
	       jansson_version_str(), MHD_get_version());
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} commands[] = {
	        {"serve", gw_serve_main},
	        {"connect", gw_connect_main},
	        {"check", gw_check_main},
	        {"explain", gw_explain_main},
	        {"ca", gw_ca_main},
	        {"health", gw_health_main},
	        {"login", gw_login_main},
	        {"status", gw_status_main},
	        {"test", gw_test_main},
	        {"audit", gw_audit_main},
	        {"services", gw_services_main},
	        {"request", gw_request_main},
	};
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
		return version();
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "certgate: unknown command \"%s\"\n", cmd);
	usage(stderr);
	return 2;
}
