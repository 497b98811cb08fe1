/* The login issuer inside `certgate serve` (LOGIN.md): users log in with
 * the company's OpenID Connect provider and get a short-lived login
 * certificate for a key that never left their machine.
 *
 *   its own HTTPS listener (issuer.listen; certgate's OpenSSL, no client
 *   certificate asked) -> issuer_conn.c relays the plaintext of each TLS
 *   connection over a socketpair to libmicrohttpd (http/, no listener of
 *   its own) -> issuer_api.c: GET /v1/login/config, POST
 *   /v1/login/certificate -> ID token (id_token.c with the IdP's keys,
 *   idp.c), CSR (csr.c), device proof (tls/device_id.c), the run-time
 *   state's replay cache -> a certificate from tls/x509_issue.c, the
 *   device registered (or updated) in the run-time state's registry.
 *
 * A gateway extension: each reload's prepare loads the next generation
 * (TLS context, login CA, the IdP when its URL changes, a moved listener)
 * and refuses the reload on any error; commit swaps it in. */
#ifndef GW_ISSUER_H
#define GW_ISSUER_H

#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cg_errors.h"
#include "core/gateway.h"
#include "http/http_server.h"
#include "issuer/idp.h"
#include "pol_config.h"

typedef struct gw_issuer gw_issuer_t;

/* What one generation of the issuer serves with. */
typedef struct gw_issuer_gen {
	const pol_snapshot_t *snap; /* the snapshot it was built from (ref held) */
	const pol_issuer_t *cfg;    /* &snap->issuer */
	SSL_CTX *server_ctx;        /* the listener's TLS: no client certificate */
	X509 *ca_cert;              /* the login CA */
	EVP_PKEY *ca_key;
	char *ca_pem;    /* what a login's reply gives as "ca": server_ca, or the login CA */
	gw_idp_t *idp;   /* shared with the generation before when the IdP is the same */
	uint64_t serial; /* 1, 2, ...: which generation (a pointer may be reused) */
} gw_issuer_gen_t;

/* The issuer of gw: registers itself as an extension; serves once a
 * generation with an issuer block is committed. Freed by the extension's
 * destroy. NULL when out of memory. */
gw_issuer_t *gw_issuer_create(gw_gateway_t *gw);
/* The address served now, or NULL. */
const char *gw_issuer_listening(const gw_issuer_t *issuer);

/* Loads and checks what snap's issuer block names (TLS certificate and
 * key, the login CA and its key, the CA being one of gateway.client_ca):
 * every problem to errs with file:line:column. Used by prepare and by
 * `certgate check`. A NULL gen only checks. */
bool gw_issuer_load(const pol_snapshot_t *snap, gw_issuer_gen_t *gen, cg_errors_t *errs);
void gw_issuer_gen_finish(gw_issuer_gen_t *gen); /* not the idp */

/* --- for the connections and the endpoints ------------------------------------ */

/* The generation in force (NULL while there is no issuer block). */
gw_issuer_gen_t *gw_issuer_current(gw_issuer_t *issuer);
gw_gateway_t *gw_issuer_gateway(gw_issuer_t *issuer);
/* issuer_api.c: the endpoints. */
void gw_issuer_handle(void *issuer, const gw_http_request_t *req, gw_http_reply_t *reply);

#endif
