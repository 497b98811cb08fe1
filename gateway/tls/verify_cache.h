/* Remembered chain verifications: a client that reconnects with the login
 * certificate it used a moment ago (psql per command, pools, pgbench -C)
 * does not pay for the same chain check again.
 *
 * Only successes are kept, keyed by SHA-256 over every certificate the
 * client sent, and each until the end of the verified chain's validity
 * (its earliest notAfter second included, RFC 5280 4.1.2.5),
 * the CRL's nextUpdate, or a fixed horizon, whichever comes first. A cache
 * belongs to one runtime: a reload (new CA, CRL or limits) starts empty.
 * The handshake's proof of possession (CertificateVerify) is never skipped;
 * nor are locks, trust and policy, which are decided per connection. */
#ifndef GW_VERIFY_CACHE_H
#define GW_VERIFY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#define GW_VCACHE_SLOTS      1024
#define GW_VCACHE_HORIZON_MS (300 * 1000)

typedef struct gw_vcache gw_vcache_t;

gw_vcache_t *gw_vcache_new(void);    /* NULL when out of memory */
void gw_vcache_free(gw_vcache_t *c); /* accepts NULL */

/* The key of the chain a client sent: leaf first, then its intermediates
 * (untrusted may include the leaf again, as libssl passes it). */
bool gw_vcache_key(X509 *leaf, STACK_OF(X509) * untrusted, unsigned char key[32]);

/* True when key was verified and is still good at now_ms. */
bool gw_vcache_hit(gw_vcache_t *c, const unsigned char key[32], int64_t now_ms);

/* Remembers a success until until_ms (capped at now_ms + the horizon). */
void gw_vcache_put(gw_vcache_t *c, const unsigned char key[32], int64_t now_ms, int64_t until_ms);

/* When the first certificate of a verified chain stops being valid, in
 * epoch ms (gw_valid_until_ms: one second after its notAfter); INT64_MAX
 * if none. */
int64_t gw_vcache_chain_expiry_ms(STACK_OF(X509) * chain);

#endif
