/* Client certificate verification as certgate applies it: OpenSSL's chain
 * check (against the client CA store and its CRLs) in strict mode, plus
 * what OpenSSL does not check, with one precise reason for the audit line
 * when it refuses and the certificate that reason is about.
 *
 * The order of refusals: OpenSSL's own (structure, revocation, signatures
 * and validity, name constraints) and certgate's structural rules
 * (x509_strict.h) on each certificate first; certgate's policy on the leaf
 * (max_cert_lifetime, not a CA, clientAuth) only once the whole chain is
 * sound, so the reason names the most fundamental defect.
 *
 * Used inside the TLS handshake (the caller's verify callback and its
 * certificate-verify callback) and outside it (re-checking a live session's
 * certificate after a reload, `certgate explain`): the same rules either
 * way. */
#ifndef GW_CHAIN_VERIFY_H
#define GW_CHAIN_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/x509.h>

/* Which certificates of a path are checked against the CRLs. */
typedef enum {
	GW_CRL_OFF,   /* no CRL configured: none */
	GW_CRL_LEAF,  /* the leaf only; its issuer must have a CRL */
	GW_CRL_CHAIN, /* every certificate whose issuer has a CRL */
	GW_CRL_ALL,   /* every certificate; every CA of the path must have a CRL */
} gw_crl_check_t;

/* The limits a generation verifies client certificates under. */
typedef struct gw_verify_limits {
	uint64_t max_lifetime_ms; /* notAfter - notBefore at most this */
	uint64_t clock_skew_ms;   /* notBefore may be this far in the future */
	unsigned depth;           /* OpenSSL's verify depth: intermediates */
	int security_level;       /* OpenSSL's auth level (key sizes, digests) */
	gw_crl_check_t crl_check;
} gw_verify_limits_t;

/* Why a chain was refused: reason is a static string (a bounded set:
 * metrics count refusals by it); detail names the certificate it is about
 * (its subject; for `unknown ca` and the CRL refusals, the CA: the
 * certificate's issuer), malloc'd, NULL when none. */
typedef struct gw_refusal {
	const char *reason;
	char *detail;
} gw_refusal_t;

/* Frees the detail and empties r. */
void gw_refusal_finish(gw_refusal_t *r);

/* The audit reason for an X509_V_ERR_* code (a static string). */
const char *gw_verify_reason(int x509_error);

/* The leaf rules OpenSSL does not have: total lifetime within
 * max_lifetime_ms, not a CA, usable for client authentication. NULL when
 * fine, else the refusal reason. */
const char *gw_cert_check_leaf(const gw_verify_limits_t *lim, X509 *leaf);

/* Sets up ctx (initialised for the leaf) to verify under lim: purpose
 * sslclient, depth, security level, X509_V_FLAG_X509_STRICT, the CRL
 * flags of lim->crl_check. at_s > 0: judge at that epoch second (the
 * certificates', the CRLs' validity and the clock skew) instead of now. */
void gw_verify_prepare(X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, int64_t at_s);

/* One call of OpenSSL's verify callback, judged under lim: returns the new
 * `ok` and keeps the first refusal in *r. */
int gw_verify_step(int ok, X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, gw_refusal_t *r);

/* After X509_verify_cert accepted ctx's chain: certgate's leaf rules.
 * 1 when fine; 0 with the refusal in *r (if none yet) and ctx's error set. */
int gw_verify_finish(X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, gw_refusal_t *r);

/* Verifies leaf (with the intermediates the client sent, may be NULL)
 * against store as a handshake would, now or (at_s > 0) at that epoch
 * second. NULL when fine, else the refusal reason; out (may be NULL) gets
 * the refusal, the caller finishes it. */
const char *gw_chain_verify(X509_STORE *store, const gw_verify_limits_t *lim, X509 *leaf,
                            STACK_OF(X509) * untrusted, int64_t at_s, gw_refusal_t *out);

#endif
