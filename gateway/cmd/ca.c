/* `certgate ca ...`: the development CA.
 *
 * A CA is a directory: ca.crt + ca.key (ECDSA P-256, PKCS#8), optionally
 * chain.crt (an intermediate followed by its parents), revoked.txt (one
 * "SERIALHEX YYYYMMDDHHMMSSZ" line per revoked certificate), crlnumber and
 * ca.crl. Subcommands load what they need from the directory, build one
 * X509 or X509_CRL in memory (tls/x509_issue.c: the one way certgate makes
 * a certificate), and write every output file atomically (cg_file.h)
 * because `certgate connect` watches renewed cert/key files and must never
 * read half of one.
 *
 * This file: init, server and the dispatch; ca_issue.c: issue;
 * ca_crl.c: revoke and crl; ca_common.c: what they share.
 *
 * Not for production: it exists so demos and tests can mint short-lived login
 * certificates with the claims in the default places (CONFIG.md "claims"),
 * plus the odd certificates the gateway must refuse (testing options). */
#include "cmd/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include "cg_file.h"
#include "cmd/ca_common.h"
#include "tls/pem_io.h"
#include "tls/x509_build.h"
#include "tls/x509_issue.h"

/* ---- ca init ---------------------------------------------------------- */

static void help_init(void)
{
	fputs("usage: certgate ca init --dir DIR [--name CN] [--ttl DUR] [--parent PARENT_DIR] "
	      "[--force]\n"
	      "\n"
	      "Creates a development CA (ECDSA P-256) in DIR (made 0700 if missing):\n"
	      "DIR/ca.crt (0644) and DIR/ca.key (0600, PKCS#8). Not for production.\n"
	      "\n"
	      "  --dir DIR            the CA directory\n"
	      "  --name CN            subject common name (default \"" CA_DEFAULT_NAME "\")\n"
	      "  --ttl DUR            validity (default " CA_DEFAULT_TTL ")\n"
	      "  --parent PARENT_DIR  make an intermediate CA signed by PARENT_DIR's CA;\n"
	      "                       DIR/chain.crt then holds it followed by its parents\n"
	      "  --force              replace an existing DIR/ca.key (also forgets the old\n"
	      "                       CA's chain.crt, revoked.txt, crlnumber and ca.crl)\n"
	      "  --help               this text\n",
	      stdout);
}

static int cmd_init(int argc, char **argv)
{
	static const char sub[] = "init";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"name", required_argument, NULL, OPT_NAME},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"parent", required_argument, NULL, OPT_PARENT},
	        {"force", no_argument, NULL, OPT_FORCE},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *name = NULL, *ttl_text = NULL, *parent_dir = NULL;
	bool force = false;
	int rc = 0, c;

	while ((c = ca_next_option(sub, argc, argv, opts, help_init, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = ca_set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_NAME:
			ok = ca_set_once(sub, &name, "name", &rc);
			break;
		case OPT_TTL:
			ok = ca_set_once(sub, &ttl_text, "ttl", &rc);
			break;
		case OPT_PARENT:
			ok = ca_set_once(sub, &parent_dir, "parent", &rc);
			break;
		case OPT_FORCE:
			force = true;
			break;
		}
		if (!ok)
			return rc;
	}
	if (c == 0)
		return rc;
	if (!dir)
		return ca_usage_error(sub, "--dir is required");
	if (!name)
		name = parent_dir ? CA_DEFAULT_INTERMEDIATE_NAME : CA_DEFAULT_NAME;
	if (!*name)
		return ca_usage_error(sub, "--name must not be empty");
	int64_t ttl_s;
	if (!ca_parse_seconds(sub, "ttl", ttl_text ? ttl_text : CA_DEFAULT_TTL, 1, &ttl_s, &rc))
		return rc;

	char key_path[PATH_MAX], chain_path[PATH_MAX];
	if (!ca_join_path(key_path, sizeof(key_path), dir, "ca.key") ||
	    !ca_join_path(chain_path, sizeof(chain_path), dir, "chain.crt"))
		return ca_refuse(sub, "%s: path too long", dir);
	struct stat st;
	if (lstat(key_path, &st) == 0) {
		if (!force)
			return ca_refuse(sub, "%s: already exists (use --force to replace the CA)",
			                 key_path);
	} else if (errno != ENOENT && errno != ENOTDIR) {
		return ca_refuse(sub, "%s: %s", key_path, strerror(errno));
	}

	ca_t parent = {0};
	STACK_OF(X509) *parent_chain = NULL, *chain = NULL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	char why[256], failed[PATH_MAX];
	if (parent_dir) {
		rc = ca_load(sub, parent_dir, &parent);
		if (rc != 0)
			return rc;
		rc = ca_load_chain(sub, parent_dir, &parent_chain);
		if (rc != 0)
			goto done;
	}
	int mk = cg_file_mkdirs(dir, 0700, failed, sizeof(failed));
	if (mk < 0) {
		rc = ca_refuse(sub, "%s: %s", mk == -ENAMETOOLONG ? dir : failed, strerror(-mk));
		goto done;
	}
	key = gw_x509_key_new(0);
	if (!key) {
		rc = ca_refuse_ssl(sub, "cannot generate the CA key");
		goto done;
	}
	gw_cert_spec_t spec = {
	        .profile = GW_CERT_CA,
	        .cn = name,
	        .key = key,
	        .issuer = parent_dir ? parent.cert : NULL,
	        .issuer_key = parent_dir ? parent.key : key,
	        .start_offset_s = -CLOCK_SLACK_S,
	        .ttl_s = ttl_s + CLOCK_SLACK_S,
	};
	cert = gw_x509_issue(&spec, why, sizeof(why));
	if (!cert) {
		rc = ca_refuse(sub, "cannot make the CA certificate: %s", why);
		goto done;
	}

	/* A replaced CA starts from scratch: the old CRL is signed by the old
	 * key and the old chain names other parents. */
	if (force) {
		static const char *const stale[] = {"chain.crt", "ca.crl", "revoked.txt",
		                                    "crlnumber"};
		for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
			char path[PATH_MAX];
			if (!ca_join_path(path, sizeof(path), dir, stale[i])) {
				rc = ca_refuse(sub, "%s: path too long", dir);
				goto done;
			}
			if (unlink(path) < 0 && errno != ENOENT) {
				rc = ca_refuse(sub, "%s: %s", path, strerror(errno));
				goto done;
			}
		}
	}
	chain = sk_X509_new_null();
	if (!chain || !sk_X509_push(chain, cert)) {
		rc = ca_refuse_ssl(sub, "out of memory");
		goto done;
	}
	char prefix[PATH_MAX];
	if (!ca_join_path(prefix, sizeof(prefix), dir, "ca")) {
		rc = ca_refuse(sub, "%s: path too long", dir);
		goto done;
	}
	rc = ca_write_leaf(sub, dir, prefix, cert, key, false, false);
	if (rc == 0 && parent_dir) {
		for (int i = 0; i < sk_X509_num(parent_chain) && rc == 0; i++)
			if (!sk_X509_push(chain, sk_X509_value(parent_chain, i)))
				rc = ca_refuse_ssl(sub, "out of memory");
		size_t len;
		char *pem = rc == 0 ? gw_pem_certs(chain, &len) : NULL;
		if (rc == 0 && pem == NULL)
			rc = ca_refuse_ssl(sub, "%s", chain_path);
		if (rc == 0)
			rc = ca_write(sub, chain_path, 0644, pem, len);
		free(pem);
	}

done:
	sk_X509_free(chain); /* borrowed pointers only */
	X509_free(cert);
	EVP_PKEY_free(key);
	sk_X509_pop_free(parent_chain, X509_free);
	ca_finish(&parent);
	return rc;
}

/* ---- ca server -------------------------------------------------------- */

static void help_server(void)
{
	fputs("usage: certgate ca server --dir DIR --out PREFIX --dns NAME... [--ip ADDR]...\n"
	      "                          [--ttl DUR] [--rsa BITS]\n"
	      "\n"
	      "Issues a TLS server certificate (for the gateway or for PostgreSQL) signed\n"
	      "by DIR's CA: CN = the first name, SAN DNS/IP entries, EKU serverAuth.\n"
	      "Writes PREFIX.crt and PREFIX.key (0600).\n"
	      "\n"
	      "  --dir DIR      the CA directory (see certgate ca init)\n"
	      "  --out PREFIX   output file prefix\n"
	      "  --dns NAME     a DNS name (repeatable)\n"
	      "  --ip ADDR      an IPv4 or IPv6 address (repeatable)\n"
	      "                 at least one --dns or --ip is required\n"
	      "  --ttl DUR      validity (default " SERVER_DEFAULT_TTL ")\n"
	      "  --rsa BITS     an RSA key of BITS (1024..8192) instead of P-256\n"
	      "  --help         this text\n",
	      stdout);
}

static int cmd_server(int argc, char **argv)
{
	static const char sub[] = "server";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"out", required_argument, NULL, OPT_OUT},
	        {"dns", required_argument, NULL, OPT_DNS},
	        {"ip", required_argument, NULL, OPT_IP},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"rsa", required_argument, NULL, OPT_RSA},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *out = NULL, *ttl_text = NULL, *rsa_text = NULL;
	list_t dns = {0}, ips = {0};
	int rc = 0, c;
	ca_t ca = {0};
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;

	if (!ca_list_init(&dns, argc) || !ca_list_init(&ips, argc)) {
		rc = ca_refuse(sub, "out of memory");
		goto done;
	}
	while ((c = ca_next_option(sub, argc, argv, opts, help_server, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = ca_set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_OUT:
			ok = ca_set_once(sub, &out, "out", &rc);
			break;
		case OPT_DNS:
			dns.items[dns.count++] = optarg;
			break;
		case OPT_IP:
			ips.items[ips.count++] = optarg;
			break;
		case OPT_TTL:
			ok = ca_set_once(sub, &ttl_text, "ttl", &rc);
			break;
		case OPT_RSA:
			ok = ca_set_once(sub, &rsa_text, "rsa", &rc);
			break;
		}
		if (!ok)
			goto done;
	}
	if (c == 0)
		goto done;
	if (!dir) {
		rc = ca_usage_error(sub, "--dir is required");
		goto done;
	}
	if (!out) {
		rc = ca_usage_error(sub, "--out is required");
		goto done;
	}
	if (dns.count + ips.count == 0) {
		rc = ca_usage_error(sub, "at least one --dns or --ip is required");
		goto done;
	}
	for (int i = 0; i < dns.count; i++) {
		if (!ca_is_token(dns.items[i])) {
			rc = ca_usage_error(sub, "--dns: bad name '%s'", dns.items[i]);
			goto done;
		}
	}
	for (int i = 0; i < ips.count; i++) {
		unsigned char buf[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, ips.items[i], buf) != 1 &&
		    inet_pton(AF_INET6, ips.items[i], buf) != 1) {
			rc = ca_usage_error(sub, "--ip: bad address '%s'", ips.items[i]);
			goto done;
		}
	}
	int64_t ttl_s;
	unsigned rsa_bits = 0;
	if (!ca_parse_seconds(sub, "ttl", ttl_text ? ttl_text : SERVER_DEFAULT_TTL, 1, &ttl_s,
	                      &rc) ||
	    (rsa_text && !ca_parse_rsa_bits(sub, rsa_text, &rsa_bits, &rc)))
		goto done;

	if ((rc = ca_load(sub, dir, &ca)) != 0)
		goto done;
	key = gw_x509_key_new(rsa_bits);
	if (!key) {
		rc = ca_refuse_ssl(sub, "cannot generate a key");
		goto done;
	}
	char why[256];
	gw_cert_spec_t spec = {
	        .profile = GW_CERT_SERVER,
	        .cn = dns.count ? dns.items[0] : ips.items[0],
	        .dns = dns.items,
	        .n_dns = (size_t)dns.count,
	        .ips = ips.items,
	        .n_ips = (size_t)ips.count,
	        .key = key,
	        .issuer = ca.cert,
	        .issuer_key = ca.key,
	        .start_offset_s = -CLOCK_SLACK_S,
	        .ttl_s = ttl_s + CLOCK_SLACK_S,
	};
	cert = gw_x509_issue(&spec, why, sizeof(why));
	if (!cert) {
		rc = ca_refuse(sub, "cannot make the certificate: %s", why);
		goto done;
	}
	rc = ca_write_leaf(sub, dir, out, cert, key, false, false);
done:
	X509_free(cert);
	EVP_PKEY_free(key);
	ca_finish(&ca);
	free(dns.items);
	free(ips.items);
	return rc;
}

/* ---- dispatch --------------------------------------------------------- */

static void help_ca(void)
{
	fputs("usage: certgate ca <init|issue|server|revoke|crl> [options]\n"
	      "\n"
	      "A development/test CA (ECDSA P-256). Not for production.\n"
	      "\n"
	      "  init    create a CA (or an intermediate with --parent)\n"
	      "  issue   a short-lived login certificate with claims\n"
	      "  server  a TLS server certificate\n"
	      "  revoke  revoke certificates and rewrite the CRL\n"
	      "  crl     rewrite the CRL\n"
	      "\n"
	      "'certgate ca COMMAND --help' describes each command.\n",
	      stdout);
}

int gw_ca_main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} commands[] = {
	        {"init", cmd_init},        {"issue", ca_cmd_issue}, {"server", cmd_server},
	        {"revoke", ca_cmd_revoke}, {"crl", ca_cmd_crl},
	};
	if (argc < 2) {
		fprintf(stderr, "certgate: ca: missing command (see 'certgate ca --help')\n");
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		help_ca();
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		/* gw_ca_main may run many times in one process (the tests):
		 * optind = 0 makes glibc's getopt start over. */
		optind = 0;
		opterr = 0;
		int rc = commands[i].run(argc - 1, argv + 1);
		ERR_clear_error();
		return rc;
	}
	fprintf(stderr, "certgate: ca: unknown command '%s' (see 'certgate ca --help')\n", argv[1]);
	return 2;
}
