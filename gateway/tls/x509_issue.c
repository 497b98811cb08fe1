/* Certificates from a spec (see x509_issue.h). */
#include "tls/x509_issue.h"

#include <stdio.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/x509_build.h"

static X509 *fail(char *err, size_t errlen, const char *what, X509 *x)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
	snprintf(err, errlen, "%s%s%s", what, reason != NULL ? ": " : "",
	         reason != NULL ? reason : "");
	ERR_clear_error();
	X509_free(x);
	return NULL;
}

static X509_NAME *subject_of(const gw_cert_spec_t *spec)
{
	X509_NAME *name = X509_NAME_new();
	bool ok = name != NULL && gw_x509_name_add(name, NID_commonName, spec->cn);
	for (size_t i = 0; ok && i < spec->n_groups; i++)
		ok = gw_x509_name_add(name, NID_organizationalUnitName, spec->groups[i]);
	if (!ok) {
		X509_NAME_free(name);
		return NULL;
	}
	return name;
}

static bool add_names(const gw_cert_spec_t *spec, X509 *x)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	bool ok = names != NULL;
	if (ok && spec->email != NULL)
		ok = gw_x509_san_push(names, GEN_EMAIL, spec->email);
	if (ok && spec->device_id != NULL)
		ok = gw_x509_san_push_uri(names, GW_URI_DEVICE, spec->device_id);
	if (ok && spec->device_trust != NULL)
		ok = gw_x509_san_push_uri(names, GW_URI_TRUST, spec->device_trust);
	for (size_t i = 0; ok && i < spec->n_dns; i++)
		ok = gw_x509_san_push(names, GEN_DNS, spec->dns[i]);
	for (size_t i = 0; ok && i < spec->n_ips; i++)
		ok = gw_x509_san_push_ip(names, spec->ips[i]);
	ok = ok && gw_x509_add_san(x, names);
	GENERAL_NAMES_free(names);
	return ok;
}

/* keyUsage and extendedKeyUsage of the profile. */
static void usages(const gw_cert_spec_t *spec, const char **ku, const char **eku)
{
	switch (spec->profile) {
	case GW_CERT_CA:
		*ku = "critical,keyCertSign,cRLSign";
		*eku = "";
		return;
	case GW_CERT_SERVER:
		/* RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment */
		*ku = EVP_PKEY_get_base_id(spec->key) == EVP_PKEY_RSA
		              ? "critical,digitalSignature,keyEncipherment"
		              : "critical,digitalSignature";
		*eku = "serverAuth";
		return;
	case GW_CERT_LOGIN:
	case GW_CERT_CLIENT:
		*ku = "critical,digitalSignature";
		*eku = "clientAuth";
		return;
	}
}

X509 *gw_x509_issue(const gw_cert_spec_t *spec, char *err, size_t errlen)
{
	X509_NAME *subject = subject_of(spec);
	if (subject == NULL)
		return fail(err, errlen, "subject", NULL);
	X509V3_CTX ctx;
	time_t now = spec->now != 0 ? spec->now : time(NULL);
	X509 *x = gw_x509_cert_new(subject, spec->issuer, spec->key, now, spec->start_offset_s,
	                           spec->ttl_s, &ctx);
	X509_NAME_free(subject);
	if (x == NULL)
		return fail(err, errlen, "cannot make the certificate", NULL);
	if (!add_names(spec, x))
		return fail(err, errlen, "subjectAltName", x);
	const char *ku, *eku;
	usages(spec, &ku, &eku);
	if (spec->eku != NULL)
		eku = spec->eku;
	bool ca = spec->profile == GW_CERT_CA || spec->ca_true;
	if (!gw_x509_add_ext(&ctx, x, NID_basic_constraints,
	                     ca ? "critical,CA:TRUE" : "critical,CA:FALSE") ||
	    !gw_x509_add_ext(&ctx, x, NID_key_usage, ku) ||
	    (*eku != '\0' && !gw_x509_add_ext(&ctx, x, NID_ext_key_usage, eku)))
		return fail(err, errlen, "cannot make the certificate", x);
	if (spec->extend != NULL && !spec->extend(x, spec->extend_ctx))
		return fail(err, errlen, "extensions", x);
	const EVP_MD *md = spec->digest != NULL ? spec->digest : EVP_sha256();
	if (X509_sign(x, spec->issuer_key, md) <= 0)
		return fail(err, errlen, "cannot sign the certificate", x);
	return x;
}
