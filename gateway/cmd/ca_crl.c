/* `certgate ca revoke` and `certgate ca crl`: DIR/revoked.txt (one
 * "SERIALHEX YYYYMMDDHHMMSSZ" line per revoked certificate) and the v2 CRL
 * made from it, DIR/ca.crl, numbered by DIR/crlnumber. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cmd/ca_common.h"
#include "tls/pem_io.h"
#include "tls/x509_build.h"

/* One revoked.txt line: uppercase hex serial, space, YYYYMMDDHHMMSSZ. */
#define REVOKED_TIME_LEN 15

/* Checks revoked.txt's syntax line by line; text may be NULL (no file). */
static int revoked_check(const char *sub, const char *path, const char *text)
{
	int line = 1;
	for (const char *p = text; p && *p; line++) {
		const char *start = p;
		while (*p && ((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F')))
			p++;
		bool ok = p > start && *p == ' ';
		if (ok) {
			p++;
			for (int i = 0; ok && i < REVOKED_TIME_LEN - 1; i++, p++)
				ok = *p >= '0' && *p <= '9';
			ok = ok && p[0] == 'Z' && p[1] == '\n';
			p += 2;
		}
		if (!ok)
			return ca_refuse(sub, "%s:%d: expected \"SERIALHEX YYYYMMDDHHMMSSZ\"", path,
			                 line);
	}
	return 0;
}

/* Whether serial_hex is listed in the (already checked) revoked.txt text. */
static bool revoked_contains(const char *text, const char *serial_hex)
{
	size_t n = strlen(serial_hex);
	for (const char *p = text; p && *p;) {
		if (strncmp(p, serial_hex, n) == 0 && p[n] == ' ')
			return true;
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	return false;
}

/* Builds the X509_CRL from revoked.txt's text and signs it. */
static int crl_build(const char *sub, const ca_t *ca, const char *revoked, uint64_t number,
                     int64_t last_offset_s, int64_t ttl_s, X509_CRL **out)
{
	int rc = 1;
	time_t now = time(NULL);
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *last = ASN1_TIME_new(), *next = ASN1_TIME_new();
	ASN1_INTEGER *crl_number = ASN1_INTEGER_new();
	BIGNUM *bn = NULL;
	X509V3_CTX ctx;

	if (!crl || !last || !next || !crl_number || !gw_x509_set_time(last, now, last_offset_s) ||
	    !gw_x509_set_time(next, now, last_offset_s + ttl_s) ||
	    X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) != 1 ||
	    X509_CRL_set1_lastUpdate(crl, last) != 1 || X509_CRL_set1_nextUpdate(crl, next) != 1)
		goto fail_ssl;

	for (const char *p = revoked; p && *p;) {
		char hex[128], when[REVOKED_TIME_LEN + 1];
		const char *space = strchr(p, ' ');
		size_t n = (size_t)(space - p);
		if (n >= sizeof(hex)) {
			rc = ca_refuse(sub, "%s/revoked.txt: serial too long", ca->dir);
			goto done;
		}
		memcpy(hex, p, n);
		hex[n] = '\0';
		memcpy(when, space + 1, REVOKED_TIME_LEN);
		when[REVOKED_TIME_LEN] = '\0';
		p = space + 1 + REVOKED_TIME_LEN + 1;

		X509_REVOKED *entry = X509_REVOKED_new();
		ASN1_TIME *date = ASN1_TIME_new();
		ASN1_INTEGER *serial = NULL;
		bool ok = entry && date && BN_hex2bn(&bn, hex) > 0 &&
		          (serial = BN_to_ASN1_INTEGER(bn, NULL)) != NULL &&
		          ASN1_TIME_set_string_X509(date, when) == 1 &&
		          X509_REVOKED_set_serialNumber(entry, serial) == 1 &&
		          X509_REVOKED_set_revocationDate(entry, date) == 1 &&
		          X509_CRL_add0_revoked(crl, entry) == 1;
		ASN1_INTEGER_free(serial);
		ASN1_TIME_free(date);
		if (!ok) {
			X509_REVOKED_free(entry);
			rc = ca_refuse_ssl(sub, "%s/revoked.txt: entry %s", ca->dir, hex);
			goto done;
		}
	}
	X509_CRL_sort(crl);

	if (!ASN1_INTEGER_set_uint64(crl_number, number) ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, crl_number, 0, X509V3_ADD_DEFAULT) != 1)
		goto fail_ssl;
	X509V3_set_ctx(&ctx, ca->cert, NULL, NULL, crl, 0);
	X509_EXTENSION *aki =
	        X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	int added = aki ? X509_CRL_add_ext(crl, aki, -1) : 0;
	X509_EXTENSION_free(aki);
	if (added != 1 || !X509_CRL_sign(crl, ca->key, EVP_sha256()))
		goto fail_ssl;
	*out = crl;
	crl = NULL;
	rc = 0;
	goto done;

fail_ssl:
	rc = ca_refuse_ssl(sub, "cannot make the CRL");
done:
	BN_free(bn);
	ASN1_INTEGER_free(crl_number);
	ASN1_TIME_free(next);
	ASN1_TIME_free(last);
	X509_CRL_free(crl);
	return rc;
}

/* Rewrites DIR/ca.crl from DIR/revoked.txt with the next CRL number. The
 * number is stored before the CRL so that a failure can skip a number but
 * never reuse one. */
static int crl_write(const char *sub, const ca_t *ca, int64_t last_offset_s, int64_t ttl_s)
{
	char revoked_path[PATH_MAX], number_path[PATH_MAX], crl_path[PATH_MAX];
	if (!ca_join_path(revoked_path, sizeof(revoked_path), ca->dir, "revoked.txt") ||
	    !ca_join_path(number_path, sizeof(number_path), ca->dir, "crlnumber") ||
	    !ca_join_path(crl_path, sizeof(crl_path), ca->dir, "ca.crl"))
		return ca_refuse(sub, "%s: path too long", ca->dir);

	char *revoked = NULL, *number_text = NULL;
	X509_CRL *crl = NULL;
	int rc = ca_read_text(sub, revoked_path, &revoked);
	if (rc == 0)
		rc = revoked_check(sub, revoked_path, revoked);
	if (rc == 0)
		rc = ca_read_text(sub, number_path, &number_text);
	if (rc != 0)
		goto done;

	uint64_t number = 0;
	if (number_text) {
		const char *p = number_text;
		bool ok = *p >= '0' && *p <= '9';
		for (; ok && *p >= '0' && *p <= '9'; p++) {
			ok = number <= (UINT64_MAX - 9) / 10;
			number = number * 10 + (uint64_t)(*p - '0');
		}
		if (!ok || (*p && strcmp(p, "\n") != 0)) {
			rc = ca_refuse(sub, "%s:1: expected a decimal number", number_path);
			goto done;
		}
	}
	number++;
	char next_text[32];
	snprintf(next_text, sizeof(next_text), "%llu\n", (unsigned long long)number);
	if ((rc = ca_write(sub, number_path, 0644, next_text, strlen(next_text))) != 0)
		goto done;
	if ((rc = crl_build(sub, ca, revoked, number, last_offset_s, ttl_s, &crl)) != 0)
		goto done;
	size_t len;
	char *pem = gw_pem_crl(crl, &len);
	rc = pem != NULL ? ca_write(sub, crl_path, 0644, pem, len)
	                 : ca_refuse_ssl(sub, "%s", crl_path);
	free(pem);
done:
	X509_CRL_free(crl);
	free(number_text);
	free(revoked);
	return rc;
}

/* ---- ca revoke / ca crl ------------------------------------------------- */

static void help_revoke(void)
{
	fputs("usage: certgate ca revoke --dir DIR --cert FILE... [--crl-ttl DUR]\n"
	      "\n"
	      "Adds each certificate (issued by DIR's CA) to DIR/revoked.txt, then\n"
	      "rewrites DIR/ca.crl.\n"
	      "\n"
	      "  --dir DIR      the CA directory (see certgate ca init)\n"
	      "  --cert FILE    a PEM certificate to revoke (repeatable)\n"
	      "  --crl-ttl DUR  nextUpdate - lastUpdate of the new CRL (default " CRL_DEFAULT_TTL
	      ")\n"
	      "  --help         this text\n",
	      stdout);
}

static void help_crl(void)
{
	fputs("usage: certgate ca crl --dir DIR [--crl-ttl DUR] [--backdate DUR]\n"
	      "\n"
	      "Rewrites DIR/ca.crl (a v2 CRL signed by the CA) from DIR/revoked.txt;\n"
	      "no revoked.txt gives an empty CRL.\n"
	      "\n"
	      "  --dir DIR       the CA directory (see certgate ca init)\n"
	      "  --crl-ttl DUR   nextUpdate - lastUpdate (default " CRL_DEFAULT_TTL ")\n"
	      "  --backdate DUR  lastUpdate = now - DUR (testing: an expired CRL)\n"
	      "  --help          this text\n",
	      stdout);
}

int ca_cmd_revoke(int argc, char **argv)
{
	static const char sub[] = "revoke";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"cert", required_argument, NULL, OPT_CERT},
	        {"crl-ttl", required_argument, NULL, OPT_CRL_TTL},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *ttl_text = NULL;
	list_t certs = {0};
	int rc = 0, c;
	ca_t ca = {0};
	char *revoked = NULL, *updated = NULL;
	char revoked_path[PATH_MAX];

	if (!ca_list_init(&certs, argc)) {
		rc = ca_refuse(sub, "out of memory");
		goto done;
	}
	while ((c = ca_next_option(sub, argc, argv, opts, help_revoke, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = ca_set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_CERT:
			certs.items[certs.count++] = optarg;
			break;
		case OPT_CRL_TTL:
			ok = ca_set_once(sub, &ttl_text, "crl-ttl", &rc);
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
	if (certs.count == 0) {
		rc = ca_usage_error(sub, "at least one --cert is required");
		goto done;
	}
	int64_t ttl_s;
	if (!ca_parse_seconds(sub, "crl-ttl", ttl_text ? ttl_text : CRL_DEFAULT_TTL, 1, &ttl_s,
	                      &rc))
		goto done;
	if ((rc = ca_load(sub, dir, &ca)) != 0)
		goto done;
	if (!ca_join_path(revoked_path, sizeof(revoked_path), dir, "revoked.txt")) {
		rc = ca_refuse(sub, "%s: path too long", dir);
		goto done;
	}
	if ((rc = ca_read_text(sub, revoked_path, &revoked)) != 0 ||
	    (rc = revoked_check(sub, revoked_path, revoked)) != 0)
		goto done;

	size_t len = revoked ? strlen(revoked) : 0;
	/* Each new line: up to 2 * 20 serial digits (RFC 5280), time, space, \n. */
	size_t cap = len + (size_t)certs.count * (64 + REVOKED_TIME_LEN + 2) + 1;
	updated = malloc(cap);
	if (!updated) {
		rc = ca_refuse(sub, "out of memory");
		goto done;
	}
	memcpy(updated, revoked ? revoked : "", len + 1);

	char when[REVOKED_TIME_LEN + 1];
	time_t now = time(NULL);
	struct tm tm;
	if (!gmtime_r(&now, &tm) || strftime(when, sizeof(when), "%Y%m%d%H%M%SZ", &tm) == 0) {
		rc = ca_refuse(sub, "cannot format the revocation time");
		goto done;
	}
	for (int i = 0; i < certs.count; i++) {
		X509 *x = NULL;
		if ((rc = ca_load_cert(sub, certs.items[i], &x)) != 0)
			goto done;
		char *hex = NULL;
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		int issued = X509_check_issued(ca.cert, x);
		X509_free(x);
		if (bn && !BN_is_negative(bn))
			hex = BN_bn2hex(bn);
		BN_free(bn);
		if (issued != X509_V_OK) {
			OPENSSL_free(hex);
			rc = ca_refuse(sub, "%s: not issued by %s/ca.crt", certs.items[i], dir);
			goto done;
		}
		if (!hex || strlen(hex) > 64) {
			OPENSSL_free(hex);
			rc = ca_refuse_ssl(sub, "%s: bad serial number", certs.items[i]);
			goto done;
		}
		/* Revoking twice is not an error; listing twice would be. */
		if (!revoked_contains(updated, hex)) {
			size_t used = strlen(updated);
			snprintf(updated + used, cap - used, "%s %s\n", hex, when);
		}
		OPENSSL_free(hex);
	}
	if ((rc = ca_write(sub, revoked_path, 0644, updated, strlen(updated))) != 0)
		goto done;
	rc = crl_write(sub, &ca, 0, ttl_s);
done:
	free(updated);
	free(revoked);
	ca_finish(&ca);
	free(certs.items);
	return rc;
}

int ca_cmd_crl(int argc, char **argv)
{
	static const char sub[] = "crl";
	static const struct option opts[] = {
	        {"dir", required_argument, NULL, OPT_DIR},
	        {"crl-ttl", required_argument, NULL, OPT_CRL_TTL},
	        {"backdate", required_argument, NULL, OPT_BACKDATE},
	        {"help", no_argument, NULL, OPT_HELP},
	        {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *ttl_text = NULL, *backdate_text = NULL;
	int rc = 0, c;

	while ((c = ca_next_option(sub, argc, argv, opts, help_crl, &rc)) > 0) {
		bool ok = true;
		switch (c) {
		case OPT_DIR:
			ok = ca_set_once(sub, &dir, "dir", &rc);
			break;
		case OPT_CRL_TTL:
			ok = ca_set_once(sub, &ttl_text, "crl-ttl", &rc);
			break;
		case OPT_BACKDATE:
			ok = ca_set_once(sub, &backdate_text, "backdate", &rc);
			break;
		}
		if (!ok)
			return rc;
	}
	if (c == 0)
		return rc;
	if (!dir)
		return ca_usage_error(sub, "--dir is required");
	int64_t ttl_s, backdate_s = 0;
	if (!ca_parse_seconds(sub, "crl-ttl", ttl_text ? ttl_text : CRL_DEFAULT_TTL, 1, &ttl_s,
	                      &rc) ||
	    (backdate_text &&
	     !ca_parse_seconds(sub, "backdate", backdate_text, 0, &backdate_s, &rc)))
		return rc;
	ca_t ca;
	if ((rc = ca_load(sub, dir, &ca)) != 0)
		return rc;
	rc = crl_write(sub, &ca, -backdate_s, ttl_s);
	ca_finish(&ca);
	return rc;
}
