/* Building X509 certificates: keys, serials, validity, extensions, SANs —
 * what the development CA (ca.c) and the postgres-mode minter (pg_mint.c)
 * both need. */
#include "tls/x509_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#define SERIAL_BYTES    16
#define SECONDS_PER_DAY 86400

EVP_PKEY *gw_x509_key_new(unsigned rsa_bits)
{
	if (rsa_bits)
		return EVP_RSA_gen(rsa_bits);
	return EVP_EC_gen("P-256");
}

/* A random positive serial of SERIAL_BYTES bytes. */
bool gw_x509_set_random_serial(X509 *x)
{
	unsigned char raw[SERIAL_BYTES];
	BIGNUM *bn = NULL;
	bool ok = false;
	do {
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return false;
		BN_free(bn);
		bn = BN_bin2bn(raw, sizeof(raw), NULL);
		if (!bn)
			return false;
	} while (BN_is_zero(bn));
	ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
	if (serial) {
		ok = X509_set_serialNumber(x, serial) == 1;
		ASN1_INTEGER_free(serial);
	}
	BN_free(bn);
	return ok;
}

/* t = base + offset_s, as UTCTime or GeneralizedTime per RFC 5280. */
bool gw_x509_set_time(ASN1_TIME *t, time_t base, int64_t offset_s)
{
	time_t b = base;
	return X509_time_adj_ex(t, (int)(offset_s / SECONDS_PER_DAY),
	                        (long)(offset_s % SECONDS_PER_DAY), &b) != NULL;
}

bool gw_x509_set_validity(X509 *x, time_t now, int64_t start_offset_s, int64_t ttl_s)
{
	return gw_x509_set_time(X509_getm_notBefore(x), now, start_offset_s) &&
	       gw_x509_set_time(X509_getm_notAfter(x), now, start_offset_s + ttl_s);
}

bool gw_x509_add_ext(X509V3_CTX *ctx, X509 *x, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	if (!ext)
		return false;
	bool ok = X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

/* An extension OID whose value is the DER of a UTF8String. */
bool gw_x509_add_utf8_ext(X509 *x, const ASN1_OBJECT *oid, const char *value, int critical)
{
	bool ok = false;
	ASN1_STRING *utf8 = NULL;
	unsigned char *der = NULL;
	ASN1_OCTET_STRING *octets = NULL;
	X509_EXTENSION *ext = NULL;

	/* ASN1_mbstring_copy also rejects malformed UTF-8. */
	if (ASN1_mbstring_copy(&utf8, (const unsigned char *)value, (int)strlen(value),
	                       MBSTRING_UTF8, B_ASN1_UTF8STRING) < 0)
		goto done;
	int n = i2d_ASN1_UTF8STRING(utf8, &der);
	if (n <= 0)
		goto done;
	octets = ASN1_OCTET_STRING_new();
	if (!octets || ASN1_OCTET_STRING_set(octets, der, n) != 1)
		goto done;
	ext = X509_EXTENSION_create_by_OBJ(NULL, oid, critical, octets);
	if (!ext)
		goto done;
	ok = X509_add_ext(x, ext, -1) == 1;
done:
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(octets);
	OPENSSL_free(der);
	ASN1_STRING_free(utf8);
	return ok;
}

bool gw_x509_name_add(X509_NAME *name, int nid, const char *value)
{
	return X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8, (const unsigned char *)value,
	                                  -1, -1, 0) == 1;
}

/* Appends an IA5String general name (email, DNS, URI). */
bool gw_x509_san_push(GENERAL_NAMES *names, int type, const char *value)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	if (!gn || !s || ASN1_STRING_set(s, value, (int)strlen(value)) != 1)
		goto fail;
	GENERAL_NAME_set0_value(gn, type, s);
	if (!sk_GENERAL_NAME_push(names, gn)) {
		GENERAL_NAME_free(gn);
		return false;
	}
	return true;
fail:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(gn);
	return false;
}

bool gw_x509_san_push_uri(GENERAL_NAMES *names, const char *prefix, const char *value)
{
	size_t n = strlen(prefix) + strlen(value) + 1;
	char *uri = malloc(n);
	if (!uri)
		return false;
	snprintf(uri, n, "%s%s", prefix, value);
	bool ok = gw_x509_san_push(names, GEN_URI, uri);
	free(uri);
	return ok;
}

bool gw_x509_san_push_ip(GENERAL_NAMES *names, const char *text)
{
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(text);
	GENERAL_NAME *gn = GENERAL_NAME_new();
	if (!ip || !gn) {
		ASN1_OCTET_STRING_free(ip);
		GENERAL_NAME_free(gn);
		return false;
	}
	GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
	if (!sk_GENERAL_NAME_push(names, gn)) {
		GENERAL_NAME_free(gn);
		return false;
	}
	return true;
}

bool gw_x509_add_san(X509 *x, GENERAL_NAMES *names)
{
	if (sk_GENERAL_NAME_num(names) == 0)
		return true; /* an empty SAN is invalid: leave it out */
	return X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
}

/* Subject/issuer, serial, validity, public key and SKI/AKI: what every
 * certificate we make shares. issuer == NULL means self-signed. */
X509 *gw_x509_cert_new(const X509_NAME *subject, X509 *issuer, EVP_PKEY *pubkey, time_t now,
                       int64_t start_offset_s, int64_t ttl_s, X509V3_CTX *ctx)
{
	X509 *x = X509_new();
	if (!x)
		return NULL;
	if (X509_set_version(x, X509_VERSION_3) != 1 || !gw_x509_set_random_serial(x) ||
	    X509_set_subject_name(x, subject) != 1 ||
	    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) != 1 ||
	    !gw_x509_set_validity(x, now, start_offset_s, ttl_s) || X509_set_pubkey(x, pubkey) != 1)
		goto fail;
	X509V3_set_ctx(ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	/* SKI before AKI: a self-signed AKI copies the cert's own SKI. */
	if (!gw_x509_add_ext(ctx, x, NID_subject_key_identifier, "hash") ||
	    !gw_x509_add_ext(ctx, x, NID_authority_key_identifier, "keyid:always"))
		goto fail;
	return x;
fail:
	X509_free(x);
	return NULL;
}
