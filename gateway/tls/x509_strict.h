/* The RFC 5280 rules certgate checks on a client chain beyond OpenSSL 3.0
 * with X509_V_FLAG_X509_STRICT: the serial number (positive, at most 20
 * octets), every extension OpenSSL knows decodes completely (a malformed
 * authorityInfoAccess, ...), no extension twice, and the login
 * certificate's email and DNS subjectAltNames well-formed (the email is the
 * user claim by default). Pure functions over an X509; each refusal is one
 * static reason string "certificate malformed: ...". */
#ifndef GW_X509_STRICT_H
#define GW_X509_STRICT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

/* NULL when cert passes, else the reason. leaf: also the SAN syntax. */
const char *gw_x509_strict_check(X509 *cert, bool leaf);

/* An rfc822Name as certgate accepts it: dot-atom local part (at most 64
 * octets) "@" a host name (gw_host_name_valid). No quoted local part, no
 * address literal: the address becomes a user claim and `{user.local}`. */
bool gw_rfc822_name_valid(const char *s, size_t len);

/* A host name in RFC 1034/1123 preferred syntax: labels of letters, digits
 * and inner hyphens, 1..63 octets each, at most 253 in all; no leading or
 * trailing dot, no underscore. */
bool gw_host_name_valid(const char *s, size_t len);

/* A dNSName: a host name, or "*." followed by one (a leftmost wildcard
 * label, as server certificates carry). */
bool gw_dns_name_valid(const char *s, size_t len);

#endif
