/* Client certificate verification as certgate applies it: OpenSSL's chain
 * check (against the client CA store and its CRLs) plus what OpenSSL does
 * not check, with one precise reason for the audit line when it refuses.
 * Used inside the TLS handshake (through the caller's verify callback) and
 * outside it (re-checking a live session's certificate after a reload,
 * `certgate explain`): the same rules either way. */
#ifndef GW_CHAIN_VERIFY_H
#define GW_CHAIN_VERIFY_H

#include <stdint.h>

#include <openssl/x509.h>

/* The limits a generation verifies client certificates under. */
typedef struct gw_verify_limits {
	uint64_t max_lifetime_ms; /* notAfter - notBefore at most this */
	uint64_t clock_skew_ms;   /* notBefore may be this far in the future */
	unsigned depth;           /* OpenSSL's verify depth */
	int security_level;       /* OpenSSL's auth level (key sizes, digests) */
} gw_verify_limits_t;

/* The audit reason for an X509_V_ERR_* code (a static string). */
const char *gw_verify_reason(int x509_error);

/* The leaf checks OpenSSL does not make: total lifetime within
 * max_lifetime_ms, not a CA, usable for client authentication. NULL when
 * fine, else the refusal reason. */
const char *gw_cert_check_leaf(const gw_verify_limits_t *lim, X509 *leaf);

/* One call of OpenSSL's verify callback, judged under lim: returns the new
 * `ok` and keeps the first refusal reason in *reason. */
int gw_verify_step(int ok, X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, const char **reason);

/* Verifies leaf (with the intermediates the client sent, may be NULL)
 * against store at the current time, as a handshake would. NULL when fine,
 * else the refusal reason. */
const char *gw_chain_verify(X509_STORE *store, const gw_verify_limits_t *lim, X509 *leaf,
                            STACK_OF(X509) * untrusted);

#endif
