/* Postgres mode authenticates to the upstream with a short-lived client
 * certificate minted for the database user (CN = db user) by the CA named in
 * upstream_tls (client_ca_cert / client_ca_key); the upstream's pg_hba says
 * `hostssl ... cert`. Minted certificates live in memory only, cached per
 * db user until shortly before they expire. */
#ifndef GW_MINTER_H
#define GW_MINTER_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define GW_MINT_TTL_S     3600  /* lifetime of a minted certificate */
#define GW_MINT_RENEW_S   600   /* re-mint when fewer seconds than this remain */
#define GW_MINT_CACHE_MAX 10000 /* distinct db users cached at most */

typedef struct gw_minter gw_minter_t;

/* The signing CA's files, and where each problem with them is reported
 * (which: GW_MINTER_CA_CERT or GW_MINTER_CA_KEY; the message names the
 * path, the caller adds where it is configured). */
enum { GW_MINTER_CA_CERT = 0, GW_MINTER_CA_KEY = 1 };
typedef struct gw_minter_files {
	const char *ca_cert;
	const char *ca_key;
	void (*report)(void *ctx, unsigned which, const char *message);
	void *ctx;
} gw_minter_files_t;

/* Loads the signing CA; every problem is reported. NULL on any. */
gw_minter_t *gw_minter_load(const gw_minter_files_t *files);
void gw_minter_free(gw_minter_t *m); /* accepts NULL */

/* A certificate and key for db_user valid for at least GW_MINT_RENEW_S more
 * seconds: cached, or minted now. *cert and *key are new references the
 * caller frees. Returns 0, or -1 on failure (OpenSSL's queue says why). */
int gw_minter_get(gw_minter_t *m, const char *db_user, int64_t now_ms, X509 **cert, EVP_PKEY **key)
        __attribute__((warn_unused_result));

#endif
