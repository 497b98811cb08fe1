/* Certificate facts for audit and timers (see x509_info.h). */
#include "tls/x509_info.h"

#include <stdio.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/evp.h>

#include "cg_utf8.h"

void gw_cert_serial_hex(X509 *cert, char *buf, size_t len)
{
	buf[0] = '\0';
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	if (hex != NULL)
		snprintf(buf, len, "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
}

void gw_cert_sha256_hex(X509 *cert, char buf[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	buf[0] = '\0';
	if (X509_digest(cert, EVP_sha256(), md, &n) != 1)
		return;
	for (unsigned i = 0; i < n && i < 32; i++)
		snprintf(buf + 2 * i, 3, "%02x", md[i]);
}

static void name_text(const X509_NAME *name, char *buf, size_t len)
{
	buf[0] = '\0';
	if (len < 2)
		return;
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return;
	/* OpenSSL parses no name whose strings it cannot turn into UTF-8 */
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
		BIO_free(bio);
		return;
	}
	int n = BIO_read(bio, buf, (int)len - 1);
	size_t got = n > 0 ? (size_t)n : 0;
	if (BIO_pending(bio) > 0)
		got = cg_utf8_complete(buf, got); /* cut: not inside a character */
	buf[got] = '\0';
	BIO_free(bio);
}

void gw_cert_subject(X509 *cert, char *buf, size_t len)
{
	name_text(X509_get_subject_name(cert), buf, len);
}

void gw_cert_issuer(X509 *cert, char *buf, size_t len)
{
	name_text(X509_get_issuer_name(cert), buf, len);
}

int64_t gw_asn1_time_ms(const ASN1_TIME *t)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm) * 1000;
}

int64_t gw_cert_not_before_ms(X509 *cert)
{
	return gw_asn1_time_ms(X509_get0_notBefore(cert));
}

int64_t gw_cert_not_after_ms(X509 *cert)
{
	return gw_asn1_time_ms(X509_get0_notAfter(cert));
}

int64_t gw_valid_until_ms(int64_t not_after_ms)
{
	return not_after_ms + 1000;
}
