/* RFC 5280 rules beyond OpenSSL's strict mode (see x509_strict.h). Called
 * by chain_verify.c for every certificate of a chain but the trust anchor,
 * after OpenSSL's own structural checks: what is left is what OpenSSL 3.0
 * does not look at. */
#include "tls/x509_strict.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#define MAX_SERIAL_OCTETS 20 /* RFC 5280 4.1.2.2 */
#define MAX_LOCAL_PART    64 /* RFC 5321 4.5.3.1.1 */
#define MAX_HOST_NAME     253
#define MAX_LABEL         63

static const char *check_serial(X509 *cert)
{
	const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
	const unsigned char *d = ASN1_STRING_get0_data(sn);
	int len = ASN1_STRING_length(sn);
	while (len > 0 && d[0] == 0) { /* the magnitude, without leading zeros */
		d++;
		len--;
	}
	if (len == 0)
		return "certificate malformed: serial number zero";
	if (ASN1_STRING_type(sn) == V_ASN1_NEG_INTEGER)
		return "certificate malformed: serial number negative";
	/* DER content octets: the magnitude, and a 0x00 before a top bit set */
	if (len + ((d[0] & 0x80) != 0) > MAX_SERIAL_OCTETS)
		return "certificate malformed: serial number longer than 20 octets";
	return NULL;
}

/* True unless OpenSSL knows the extension and its value does not decode,
 * completely, as that extension's type. */
static bool decodes(X509_EXTENSION *ext)
{
	const X509V3_EXT_METHOD *m = X509V3_EXT_get(ext);
	if (m == NULL)
		return true; /* unknown: OpenSSL refuses it when critical */
	const ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(ext);
	const unsigned char *p = ASN1_STRING_get0_data(value);
	long len = ASN1_STRING_length(value);
	const unsigned char *end = p + len;
	void *decoded;
	if (m->it != NULL) {
		decoded = ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_ptr(m->it));
		ASN1_item_free(decoded, ASN1_ITEM_ptr(m->it));
	} else if (m->d2i != NULL && m->ext_free != NULL) {
		decoded = m->d2i(NULL, &p, len);
		if (decoded != NULL)
			m->ext_free(decoded);
	} else {
		return true;
	}
	return decoded != NULL && p == end;
}

static int cmp_obj(const void *a, const void *b)
{
	return OBJ_cmp(*(const ASN1_OBJECT *const *)a, *(const ASN1_OBJECT *const *)b);
}

/* RFC 5280 4.2: at most one instance of an extension. OpenSSL notices a
 * second one only of the extensions it caches (basicConstraints, SAN,
 * ...). Sorted, so that a certificate with thousands of extensions costs
 * n log n, not n squared. */
static const char *check_duplicates(X509 *cert)
{
	int n = X509_get_ext_count(cert);
	if (n < 2)
		return NULL;
	const ASN1_OBJECT **oids = malloc((size_t)n * sizeof(*oids));
	if (oids == NULL)
		return "out of memory";
	for (int i = 0; i < n; i++)
		oids[i] = X509_EXTENSION_get_object(X509_get_ext(cert, i));
	qsort(oids, (size_t)n, sizeof(*oids), cmp_obj);
	const char *why = NULL;
	for (int i = 1; i < n && why == NULL; i++)
		if (OBJ_cmp(oids[i - 1], oids[i]) == 0)
			why = "certificate malformed: duplicate extension";
	free(oids);
	return why;
}

static const char *check_extensions(X509 *cert)
{
	const char *why = check_duplicates(cert);
	if (why != NULL)
		return why;
	for (int i = 0; i < X509_get_ext_count(cert); i++) {
		X509_EXTENSION *ext = X509_get_ext(cert, i);
		if (decodes(ext))
			continue;
		if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == NID_info_access)
			return "certificate malformed: invalid authority information access";
		return "certificate malformed: invalid extension";
	}
	return NULL;
}

static const char *check_san(X509 *cert)
{
	int crit = -1;
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (names == NULL)
		/* absent; twice or undecodable is OpenSSL's refusal already, and
		 * ours (check_extensions) */
		return crit == -1 ? NULL : "certificate malformed: invalid extension";
	const char *why = NULL;
	for (int i = 0; i < sk_GENERAL_NAME_num(names) && why == NULL; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type == GEN_EMAIL &&
		    !gw_rfc822_name_valid((const char *)ASN1_STRING_get0_data(gn->d.rfc822Name),
		                          (size_t)ASN1_STRING_length(gn->d.rfc822Name)))
			why = "certificate malformed: invalid email address in subjectAltName";
		else if (gn->type == GEN_DNS &&
		         !gw_dns_name_valid((const char *)ASN1_STRING_get0_data(gn->d.dNSName),
		                            (size_t)ASN1_STRING_length(gn->d.dNSName)))
			why = "certificate malformed: invalid dns name in subjectAltName";
	}
	GENERAL_NAMES_free(names);
	return why;
}

const char *gw_x509_strict_check(X509 *cert, bool leaf)
{
	const char *why = check_serial(cert);
	if (why == NULL)
		why = check_extensions(cert);
	if (why == NULL && leaf)
		why = check_san(cert);
	return why;
}

/* --- name syntax ---------------------------------------------------------- */

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5322 atext */
static bool is_atext(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

bool gw_host_name_valid(const char *s, size_t len)
{
	if (s == NULL || len == 0 || len > MAX_HOST_NAME)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!is_alnum(c) && !(c == '-' && label > 0))
			return false;
		if (++label > MAX_LABEL)
			return false;
	}
	return label > 0 && s[len - 1] != '-';
}

bool gw_dns_name_valid(const char *s, size_t len)
{
	if (s != NULL && len > 2 && s[0] == '*' && s[1] == '.')
		return gw_host_name_valid(s + 2, len - 2);
	return gw_host_name_valid(s, len);
}

bool gw_rfc822_name_valid(const char *s, size_t len)
{
	if (s == NULL)
		return false;
	const char *at = memchr(s, '@', len);
	if (at == NULL)
		return false;
	size_t local = (size_t)(at - s);
	if (local == 0 || local > MAX_LOCAL_PART)
		return false;
	/* dot-atom: atext runs joined by single dots */
	for (size_t i = 0; i < local; i++) {
		if (s[i] == '.') {
			if (i == 0 || i + 1 == local || s[i - 1] == '.')
				return false;
		} else if (!is_atext((unsigned char)s[i])) {
			return false;
		}
	}
	return gw_host_name_valid(at + 1, len - local - 1); /* a second '@' fails here */
}
