/* Building X509 certificates (see x509_build.c). Every function returns
 * false/NULL on failure with OpenSSL's error queue telling why. */
#ifndef GW_X509_BUILD_H
#define GW_X509_BUILD_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* ECDSA P-256, or RSA of rsa_bits when non-zero. */
EVP_PKEY *gw_x509_key_new(unsigned rsa_bits);
/* A random positive 128-bit serial. */
bool gw_x509_set_random_serial(X509 *x);
/* t = base + offset_s (UTCTime or GeneralizedTime per RFC 5280). */
bool gw_x509_set_time(ASN1_TIME *t, time_t base, int64_t offset_s);
/* notBefore = now + start_offset_s, notAfter = notBefore + ttl_s. */
bool gw_x509_set_validity(X509 *x, time_t now, int64_t start_offset_s, int64_t ttl_s);
/* An extension from its config-file form ("critical,CA:FALSE", ...). */
bool gw_x509_add_ext(X509V3_CTX *ctx, X509 *x, int nid, const char *value);
/* An extension whose value is the DER of a UTF8String. */
bool gw_x509_add_utf8_ext(X509 *x, const ASN1_OBJECT *oid, const char *value, int critical);
bool gw_x509_name_add(X509_NAME *name, int nid, const char *value);
/* SAN entries: an IA5String name (GEN_EMAIL, GEN_DNS, GEN_URI), a URI
 * prefix+value, an IP address in text form. */
bool gw_x509_san_push(GENERAL_NAMES *names, int type, const char *value);
bool gw_x509_san_push_uri(GENERAL_NAMES *names, const char *prefix, const char *value);
bool gw_x509_san_push_ip(GENERAL_NAMES *names, const char *text);
/* Adds the SAN extension (nothing when names is empty). */
bool gw_x509_add_san(X509 *x, GENERAL_NAMES *names);
/* Version 3, subject, issuer (NULL = self-signed), random serial, validity,
 * public key, SKI and AKI; ctx is set up for further gw_x509_add_ext. The
 * caller adds its extensions and signs. */
X509 *gw_x509_cert_new(const X509_NAME *subject, X509 *issuer, EVP_PKEY *pubkey, time_t now,
                       int64_t start_offset_s, int64_t ttl_s, X509V3_CTX *ctx);

#endif
