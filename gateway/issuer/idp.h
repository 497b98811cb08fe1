/* The identity provider as the issuer knows it: its discovery document
 * ({issuer}/.well-known/openid-configuration) and its signing keys
 * (jwks_uri), fetched over verified HTTPS from the loop without blocking
 * it (http/http_client.h) and cached.
 *
 * Fetched when created, again every hour, and on demand when a token names
 * a key the cache does not have (keys rotate) — at most once every 30 s, so
 * tokens with made-up kids cannot make the gateway hammer its IdP. Until
 * the first fetch succeeds there are no keys: logins are refused with
 * "identity provider unavailable", the data path is not affected. A failed
 * refresh keeps the keys fetched before. */
#ifndef GW_IDP_H
#define GW_IDP_H

#include <stdint.h>

#include <uv.h>

#include "http/http_client.h"
#include "issuer/jwks.h"

#define GW_IDP_REFRESH_MS     (3600 * 1000)
#define GW_IDP_MIN_REFETCH_MS (30 * 1000)

typedef struct gw_idp gw_idp_t;

/* Starts fetching issuer's keys (ca_file NULL: the system store) with an
 * HTTP client of its own. NULL when out of memory. */
gw_idp_t *gw_idp_create(uv_loop_t *loop, const char *issuer, const char *ca_file);
/* Stops (a fetch in flight is abandoned, no callback follows); freed once
 * its handles close. Accepts NULL. */
void gw_idp_destroy(gw_idp_t *idp);

/* The keys fetched last, or NULL before the first success. */
const gw_jwks_t *gw_idp_keys(const gw_idp_t *idp);
/* Why there are no fresh keys ("discovery: HTTP 404", "jwks: timeout"), or
 * NULL after a success. */
const char *gw_idp_problem(const gw_idp_t *idp);
/* The issuer URL it fetches from. */
const char *gw_idp_issuer(const gw_idp_t *idp);
/* Fetches the keys again now unless one was fetched or tried in the last
 * GW_IDP_MIN_REFETCH_MS (a token named an unknown kid). */
void gw_idp_refetch(gw_idp_t *idp);
/* Fetches attempted since start (for the tests' and the metrics' eyes). */
uint64_t gw_idp_fetches(const gw_idp_t *idp);

#endif
