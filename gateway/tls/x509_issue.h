/* The one way certgate makes a certificate: a spec (profile, names,
 * claims, key, issuer, validity) turned into a signed X509. The
 * development CA (`certgate ca`), the postgres-mode minter and the login
 * issuer all come through here, so every certificate certgate writes has
 * the same shape: version 3, a random positive 128-bit serial, SKI and AKI,
 * critical basicConstraints and keyUsage, and the claims in the default
 * places (CONFIG.md "claims"). */
#ifndef GW_X509_ISSUE_H
#define GW_X509_ISSUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Where certgate writes a device id and trust claim (SAN URIs). */
#define GW_URI_DEVICE "urn:certgate:device:"
#define GW_URI_TRUST  "urn:certgate:trust:"

typedef enum {
	GW_CERT_CA,     /* keyCertSign + cRLSign, CA:TRUE */
	GW_CERT_LOGIN,  /* a user's login certificate: clientAuth, claims */
	GW_CERT_SERVER, /* a TLS server: serverAuth, DNS and IP SANs */
	GW_CERT_CLIENT, /* a plain client (CN only): clientAuth */
} gw_cert_profile_t;

typedef struct gw_cert_spec {
	gw_cert_profile_t profile;
	const char *cn;
	const char *const *groups; /* one OU each (login) */
	size_t n_groups;
	const char *email;        /* SAN email (login), NULL for none */
	const char *device_id;    /* SAN URI GW_URI_DEVICE + id, NULL for none */
	const char *device_trust; /* SAN URI GW_URI_TRUST + level, NULL for none */
	const char *const *dns;   /* SAN DNS names (server) */
	size_t n_dns;
	const char *const *ips; /* SAN IP addresses in text form (server) */
	size_t n_ips;
	EVP_PKEY *key;          /* the subject's key (only its public half is used) */
	X509 *issuer;           /* NULL: self-signed with issuer_key */
	EVP_PKEY *issuer_key;   /* signs */
	time_t now;             /* 0: the current time */
	int64_t start_offset_s; /* notBefore = now + this */
	int64_t ttl_s;          /* notAfter = notBefore + this */
	/* variations a test CA needs (certificates the gateway must refuse) */
	const char *eku;      /* extendedKeyUsage in config form instead of the
	                       * profile's ("" = none) */
	bool ca_true;         /* CA:TRUE on a leaf profile */
	const EVP_MD *digest; /* NULL: SHA-256 */
	/* called before signing, to add extensions of the caller's own; false
	 * refuses the certificate */
	bool (*extend)(X509 *x, void *ctx);
	void *extend_ctx;
} gw_cert_spec_t;

/* Builds and signs the certificate of spec. NULL on failure, with why in
 * err (OpenSSL's reason when it has one). */
X509 *gw_x509_issue(const gw_cert_spec_t *spec, char *err, size_t errlen);

#endif
