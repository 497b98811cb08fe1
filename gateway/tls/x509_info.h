/* Reading a certificate for audit lines, listings and timers: its serial
 * in hex, the SHA-256 of its DER, its subject and issuer in RFC 2253 form
 * and its notBefore and notAfter in epoch milliseconds. Pure functions over an X509. */
#ifndef GW_X509_INFO_H
#define GW_X509_INFO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

/* Serial as upper-case hex ("" when unreadable). */
void gw_cert_serial_hex(X509 *cert, char *buf, size_t len);
/* SHA-256 of the DER as lower-case hex ("" when unreadable). */
void gw_cert_sha256_hex(X509 *cert, char buf[65]);
/* Subject in RFC 2253 form, UTF-8 kept as is, cut to at most len - 1
 * bytes on a character boundary. Audit it with cg_json_set_lossy all
 * the same: what OpenSSL makes of a BMPString is not always UTF-8. */
void gw_cert_subject(X509 *cert, char *buf, size_t len);
/* Issuer likewise. */
void gw_cert_issuer(X509 *cert, char *buf, size_t len);
/* notBefore as epoch ms; 0 when unreadable. */
int64_t gw_cert_not_before_ms(X509 *cert);
/* notAfter as epoch ms; 0 when unreadable. */
int64_t gw_cert_not_after_ms(X509 *cert);
/* The first millisecond cert is no longer valid, from its notAfter in ms:
 * RFC 5280 4.1.2.5 makes validity inclusive, so the notAfter second is
 * still valid. What the handshake (chain_verify.c), a live session's
 * expiry cut and the verify cache all go by. */
int64_t gw_valid_until_ms(int64_t not_after_ms);
/* An ASN1_TIME as epoch ms; 0 when unreadable. */
int64_t gw_asn1_time_ms(const ASN1_TIME *t);

#endif
