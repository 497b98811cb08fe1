/* A runtime is one loaded generation of the configuration: the policy
 * snapshot plus everything built from the files it names (the server TLS
 * context with the gateway certificate, client CA store and CRL). Built
 * whole beside the one in force and swapped in one pointer store on reload;
 * refcounted so sessions keep the generation that admitted them. */
#ifndef GW_RUNTIME_H
#define GW_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cg_errors.h"
#include "pol_config.h"
#include "tls/chain_verify.h"

typedef struct gw_minter gw_minter_t;
typedef struct gw_vcache gw_vcache_t;

/* A postgres-mode service's way to its upstream: TLS verify-full against
 * upstream_tls.ca, and the minter of per-db-user client certificates. */
typedef struct gw_pg_upstream {
	SSL_CTX *ctx;
	gw_minter_t *minter;
} gw_pg_upstream_t;

typedef struct gw_runtime {
	atomic_int refs;
	pol_snapshot_t *snap;
	SSL_CTX *server_ctx;       /* client certificate required, SNI routing */
	gw_verify_limits_t limits; /* from snap->gateway */
	gw_pg_upstream_t *pg;      /* per service (index as in snap->services); zero for tunnels */
	/* SHA-256 of what certificate verification depends on: the client CA
	 * and CRL bytes and the verification settings */
	unsigned char trust[32];
	bool trust_known;
	/* chains this generation verified (verify_cache.h); the earliest CRL
	 * nextUpdate bounds how long one is remembered */
	gw_vcache_t *vcache;
	int64_t crl_next_update_ms;
} gw_runtime_t;

/* Per-connection handshake state, reachable from the SSL object, filled by
 * the SNI and verify callbacks. */
typedef struct gw_handshake {
	const gw_runtime_t *rt;
	const pol_service_t *service; /* fixed by the listener, or chosen by SNI */
	bool service_fixed;
	bool catalog;         /* SNI POL_CATALOG_SNI on a shared listener: the user's catalog */
	gw_refusal_t refusal; /* the first refusal: reason (static), detail (ours) */
	X509 *cert;           /* the leaf seen by the verify callback (ref) */
	char sni[256];
} gw_handshake_t;

/* Loads config_path and every file it names. On any error adds every error
 * found to errs ("file:line:col: path: message") and returns NULL. Warnings
 * (e.g. an expired CRL, which refuses every client: fail closed) are logged. */
gw_runtime_t *gw_runtime_load(const char *config_path, cg_errors_t *errs);
gw_runtime_t *gw_runtime_ref(gw_runtime_t *rt);
void gw_runtime_unref(gw_runtime_t *rt); /* accepts NULL */

/* True when a and b verify client certificates identically (same CA and
 * CRL bytes, same lifetime, skew and depth limits, same crl_check). */
bool gw_runtime_same_trust(const gw_runtime_t *a, const gw_runtime_t *b);

/* The upstream side of a postgres-mode service of rt->snap, or NULL. */
gw_pg_upstream_t *gw_runtime_pg(const gw_runtime_t *rt, const pol_service_t *svc);

/* OpenSSL security level of every context: RSA >= 2048, no SHA-1. */
#define GW_TLS_SECURITY_LEVEL 2

/* ALPN protocol PostgreSQL 17 requires with direct TLS. */
#define GW_ALPN_POSTGRESQL "postgresql"
/* ALPN protocol of `certgate connect`: the gateway's first bytes inside the
 * tunnel are one status line (docs/architecture.md, "The connector's status
 * line"): "OK\n" once the session starts, or "REFUSED <reason>\n". */
#define GW_ALPN_CERTGATE "certgate/1"
/* ALPN protocol of `certgate request`, with the server name
 * certgate-catalog: one JSON line each way (core/session_access.c). At
 * most 15 bytes, like every protocol the gateway selects (gw_tls_t.alpn). */
#define GW_ALPN_REQUEST "certgate-jit/1"

/* Attaches hs to a server SSL created from rt->server_ctx. */
void gw_handshake_attach(SSL *ssl, gw_handshake_t *hs);
void gw_handshake_finish(gw_handshake_t *hs);

/* Verifies leaf (with the intermediates the client sent, may be NULL)
 * against rt's client CA and CRL as the handshake does, at the current time
 * or (at_s > 0) at that epoch second. Used to re-check live sessions after
 * a reload, and by `certgate explain`. NULL when fine, else the refusal
 * reason; out (may be NULL) gets the refusal with its detail, for the
 * caller to gw_refusal_finish. */
const char *gw_cert_reverify(const gw_runtime_t *rt, X509 *leaf, STACK_OF(X509) * untrusted,
                             int64_t at_s, gw_refusal_t *out);

#endif
