/* `certgate ca issue`: a short-lived login certificate with the claims in
 * the default places, plus the testing options that make the certificates
 * the gateway must refuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/objects.h>

#include "cmd/ca_common.h"
#include "tls/x509_build.h"
#include "tls/x509_issue.h"

static void help_issue(void)
{
	fputs("usage: certgate ca issue --dir DIR --out PREFIX --user EMAIL [--group G]...\n"
	      "                         [--device-id ID] [--device-trust LEVEL] [--ttl DUR]\n"
	      "\n"
	      "Issues a short-lived login certificate (ECDSA P-256) signed by DIR's CA,\n"
	      "with the claims in the default places: subject CN=EMAIL and one OU per\n"
	      "group, SAN email:EMAIL, SAN URI urn:certgate:device:ID and\n"
	      "urn:certgate:trust:LEVEL. Writes PREFIX.crt and PREFIX.key (0600).\n"
	      "\n"
	      "  --dir DIR             the CA directory (see certgate ca init)\n"
	      "  --out PREFIX          output file prefix\n"
	      "  --user EMAIL          the user claim\n"
	      "  --group G             a group claim (repeatable, kept in order)\n"
	      "  --device-id ID        the device id claim\n"
	      "  --device-trust LEVEL  always_deny, low, medium or high\n"
	      "  --ttl DUR             validity (default " ISSUE_DEFAULT_TTL ")\n"
	      "  --pk8                 also write PREFIX.pk8: the key as DER PKCS#8 (0600),\n"
	      "                        what pgjdbc's sslkey reads\n"
	      "  --help                this text\n"
	      "\n"
	      "testing options (certificates the gateway must refuse, or odd claims):\n"
	      "  --backdate DUR        notBefore = now - DUR (notAfter = notBefore + ttl)\n"
	      "  --postdate DUR        notBefore = now + DUR\n"
	      "  --eku client|server|both|none\n"
	      "                        extendedKeyUsage (default client)\n"
	      "  --ca-true             basicConstraints CA:TRUE on the leaf\n"
	      "  --rsa BITS            an RSA key of BITS (1024..8192) instead of P-256\n"
	      "  --digest sha1|sha256|sha384\n"
	      "                        signature digest (default sha256)\n"
	      "  --critical-ext OID    add an unknown critical extension (UTF8String)\n"
	      "  --ext OID=VALUE       add a non-critical extension holding the UTF8String\n"
	      "                        VALUE (repeatable; for ext:OID claim sources)\n"
	      "  --cn NAME             subject CN instead of EMAIL\n"
	      "  --no-email            leave out the SAN email\n"
	      "  --chain               append DIR/chain.crt (or DIR/ca.crt) to PREFIX.crt\n",
	      stdout);
}

typedef struct issue_opts {
	const char *dir, *out, *user, *device_id, *device_trust, *ttl, *backdate, *postdate;
	const char *eku, *rsa, *digest, *cn;
	list_t groups, critical_exts, exts;
	bool ca_true, no_email, chain, pk8;
} issue_opts_t;

static const char *const trust_levels[] = {"always_deny", "low", "medium", "high"};

static const EVP_MD *digest_by_name(const char *name)
{
	if (strcmp(name, "sha1") == 0)
		return EVP_sha1();
	if (strcmp(name, "sha256") == 0)
		return EVP_sha256();
	if (strcmp(name, "sha384") == 0)
		return EVP_sha384();
	return NULL;
}

static const char *eku_value(const char *name)
{
	if (strcmp(name, "client") == 0)
		return "clientAuth";
	if (strcmp(name, "server") == 0)
		return "serverAuth";
	if (strcmp(name, "both") == 0)
		return "clientAuth,serverAuth";
	if (strcmp(name, "none") == 0)
		return "";
	return NULL;
}

/* Adds --critical-ext OID and --ext OID=VALUE extensions. */
static int add_custom_exts(const issue_opts_t *o, X509 *x)
{
	static const char sub[] = "issue";
	for (int pass = 0; pass < 2; pass++) {
		const list_t *l = pass == 0 ? &o->critical_exts : &o->exts;
		for (int i = 0; i < l->count; i++) {
			const char *arg = l->items[i];
			const char *eq = pass == 0 ? NULL : strchr(arg, '=');
			const char *opt = pass == 0 ? "critical-ext" : "ext";
			if (pass == 1 && !eq)
				return ca_usage_error(sub, "--ext: expected OID=VALUE, got '%s'",
				                      arg);
			size_t oid_len = eq ? (size_t)(eq - arg) : strlen(arg);
			char oid_text[128];
			if (oid_len == 0 || oid_len >= sizeof(oid_text))
				return ca_usage_error(sub, "--%s: bad OID in '%s'", opt, arg);
			memcpy(oid_text, arg, oid_len);
			oid_text[oid_len] = '\0';
			ASN1_OBJECT *oid = OBJ_txt2obj(oid_text, 1);
			if (!oid) {
				ERR_clear_error();
				return ca_usage_error(sub, "--%s: bad OID '%s'", opt, oid_text);
			}
			int dup = X509_get_ext_by_OBJ(x, oid, -1);
			bool ok = dup < 0 &&
			          gw_x509_add_utf8_ext(x, oid, pass == 0 ? "certgate test" : eq + 1,
			                               pass == 0);
			ASN1_OBJECT_free(oid);
			if (dup >= 0)
				return ca_usage_error(sub, "--%s: extension %s given twice", opt,
				                      oid_text);
			if (!ok)
				return ca_refuse_ssl(sub, "--%s '%s'", opt, arg);
		}
	}
	return 0;
}

/* spec.extend: the testing options' extensions; rc keeps the exit code
 * of a bad --ext or --critical-ext (already reported). */
typedef struct extension_job {
	const issue_opts_t *o;
	int rc;
} extension_job_t;

static bool extend(X509 *x, void *ctx)
{
	extension_job_t *job = ctx;
	job->rc = add_custom_exts(job->o, x);
	return job->rc == 0;
}

/* Builds and signs the login certificate for key. */
static int build_login_cert(const char *sub, const issue_opts_t *o, const ca_t *ca, EVP_PKEY *key,
                            int64_t ttl_s, int64_t start_s, X509 **out)
{
	char why[256];
	extension_job_t job = {.o = o, .rc = 0};
	gw_cert_spec_t spec = {
	        .profile = GW_CERT_LOGIN,
	        .cn = o->cn ? o->cn : o->user,
	        .groups = o->groups.items,
	        .n_groups = (size_t)o->groups.count,
	        .email = o->no_email ? NULL : o->user,
	        .device_id = o->device_id,
	        .device_trust = o->device_trust,
	        .key = key,
	        .issuer = ca->cert,
	        .issuer_key = ca->key,
	        .start_offset_s = start_s,
	        .ttl_s = ttl_s,
	        .eku = eku_value(o->eku ? o->eku : "client"),
	        .ca_true = o->ca_true,
	        .digest = digest_by_name(o->digest ? o->digest : "sha256"),
	        .extend = extend,
	        .extend_ctx = &job,
	};
	*out = gw_x509_issue(&spec, why, sizeof(why));
	if (*out != NULL)
		return 0;
	return job.rc != 0 ? job.rc : ca_refuse(sub, "cannot make the certificate: %s", why);
}

static int issue_validate(const char *sub, const issue_opts_t *o)
{
	if (!o->dir)
		return ca_usage_error(sub, "--dir is required");
	if (!o->out)
		return ca_usage_error(sub, "--out is required");
	if (!o->user)
		return ca_usage_error(sub, "--user is required");
	if (!ca_is_token(o->user) || (!o->no_email && !strchr(o->user, '@')))
		return ca_usage_error(sub, "--user: expected an email address, got '%s'", o->user);
	if (o->cn && !*o->cn)
		return ca_usage_error(sub, "--cn must not be empty");
	for (int i = 0; i < o->groups.count; i++)
		if (!*o->groups.items[i])
			return ca_usage_error(sub, "--group must not be empty");
	if (o->device_id && !ca_is_token(o->device_id))
		return ca_usage_error(sub, "--device-id: '%s' is empty or has spaces or non-ASCII",
		                      o->device_id);
	if (o->device_trust) {
		bool known = false;
		for (size_t i = 0; i < sizeof(trust_levels) / sizeof(trust_levels[0]); i++)
			known = known || strcmp(o->device_trust, trust_levels[i]) == 0;
		if (!known)
			return ca_usage_error(
			        sub,
			        "--device-trust: expected always_deny, low, medium or "
			        "high, got '%s'",
			        o->device_trust);
	}
	if (o->backdate && o->postdate)
		return ca_usage_error(sub, "--backdate and --postdate exclude each other");
	if (o->eku && !eku_value(o->eku))
		return ca_usage_error(sub, "--eku: expected client, server, both or none, got '%s'",
		                      o->eku);
	if (o->digest && !digest_by_name(o->digest))
		return ca_usage_error(sub, "--digest: expected sha1, sha256 or sha384, got '%s'",
		                      o->digest);
	return 0;
}

int ca_cmd_issue(int argc, char **argv)
{
	static const char sub[] = "issue";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"out", required_argument, NULL, OPT_OUT},
	        {"user", required_argument, NULL, OPT_USER},
	        {"group", required_argument, NULL, OPT_GROUP},
	        {"device-id", required_argument, NULL, OPT_DEVICE_ID},
	        {"device-trust", required_argument, NULL, OPT_DEVICE_TRUST},
	        {"ttl", required_argument, NULL, OPT_TTL},
	        {"backdate", required_argument, NULL, OPT_BACKDATE},
	        {"postdate", required_argument, NULL, OPT_POSTDATE},
	        {"eku", required_argument, NULL, OPT_EKU},
	        {"ca-true", no_argument, NULL, OPT_CA_TRUE},
	        {"rsa", required_argument, NULL, OPT_RSA},
	        {"digest", required_argument, NULL, OPT_DIGEST},
	        {"critical-ext", required_argument, NULL, OPT_CRITICAL_EXT},
	        {"ext", required_argument, NULL, OPT_EXT},
	        {"cn", required_argument, NULL, OPT_CN},
	        {"no-email", no_argument, NULL, OPT_NO_EMAIL},
	        {"chain", no_argument, NULL, OPT_CHAIN},
	        {"pk8", no_argument, NULL, OPT_PK8},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	issue_opts_t o = {0};
	int rc = 0, c;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	ca_t ca = {0};

	if (!ca_list_init(&o.groups, argc) || !ca_list_init(&o.critical_exts, argc) ||
	    !ca_list_init(&o.exts, argc)) {
		rc = ca_refuse(sub, "out of memory");
		goto done;
	}
	while ((c = ca_next_option(sub, argc, argv, opts, help_issue, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = ca_set_once(sub, &o.dir, "dir", &rc);
			break;
		case OPT_OUT:
			ok = ca_set_once(sub, &o.out, "out", &rc);
			break;
		case OPT_USER:
			ok = ca_set_once(sub, &o.user, "user", &rc);
			break;
		case OPT_GROUP:
			o.groups.items[o.groups.count++] = optarg;
			break;
		case OPT_DEVICE_ID:
			ok = ca_set_once(sub, &o.device_id, "device-id", &rc);
			break;
		case OPT_DEVICE_TRUST:
			ok = ca_set_once(sub, &o.device_trust, "device-trust", &rc);
			break;
		case OPT_TTL:
			ok = ca_set_once(sub, &o.ttl, "ttl", &rc);
			break;
		case OPT_BACKDATE:
			ok = ca_set_once(sub, &o.backdate, "backdate", &rc);
			break;
		case OPT_POSTDATE:
			ok = ca_set_once(sub, &o.postdate, "postdate", &rc);
			break;
		case OPT_EKU:
			ok = ca_set_once(sub, &o.eku, "eku", &rc);
			break;
		case OPT_CA_TRUE:
			o.ca_true = true;
			break;
		case OPT_RSA:
			ok = ca_set_once(sub, &o.rsa, "rsa", &rc);
			break;
		case OPT_DIGEST:
			ok = ca_set_once(sub, &o.digest, "digest", &rc);
			break;
		case OPT_CRITICAL_EXT:
			o.critical_exts.items[o.critical_exts.count++] = optarg;
			break;
		case OPT_EXT:
			o.exts.items[o.exts.count++] = optarg;
			break;
		case OPT_CN:
			ok = ca_set_once(sub, &o.cn, "cn", &rc);
			break;
		case OPT_NO_EMAIL:
			o.no_email = true;
			break;
		case OPT_CHAIN:
			o.chain = true;
			break;
		case OPT_PK8:
			o.pk8 = true;
			break;
		}
		if (!ok)
			goto done;
	}
	if (c == 0)
		goto done;
	if ((rc = issue_validate(sub, &o)) != 0)
		goto done;
	int64_t ttl_s, start_s = 0, shift_s = 0;
	unsigned rsa_bits = 0;
	if (!ca_parse_seconds(sub, "ttl", o.ttl ? o.ttl : ISSUE_DEFAULT_TTL, 1, &ttl_s, &rc) ||
	    (o.backdate && !ca_parse_seconds(sub, "backdate", o.backdate, 0, &shift_s, &rc)) ||
	    (o.postdate && !ca_parse_seconds(sub, "postdate", o.postdate, 0, &shift_s, &rc)) ||
	    (o.rsa && !ca_parse_rsa_bits(sub, o.rsa, &rsa_bits, &rc)))
		goto done;
	if (o.backdate)
		start_s = -shift_s;
	if (o.postdate)
		start_s = shift_s;

	if ((rc = ca_load(sub, o.dir, &ca)) != 0)
		goto done;
	key = gw_x509_key_new(rsa_bits);
	if (!key) {
		rc = ca_refuse_ssl(sub, "cannot generate a key");
		goto done;
	}
	if ((rc = build_login_cert(sub, &o, &ca, key, ttl_s, start_s, &cert)) != 0)
		goto done;
	rc = ca_write_leaf(sub, o.dir, o.out, cert, key, o.chain, o.pk8);
done:
	X509_free(cert);
	EVP_PKEY_free(key);
	ca_finish(&ca);
	free(o.groups.items);
	free(o.critical_exts.items);
	free(o.exts.items);
	return rc;
}
