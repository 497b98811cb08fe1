/* Refused admin requests (a missing or wrong bearer token, a request made
 * by a web page, a rebound Host): every one is
 * counted in /metrics and audited as admin.denied, at most one line a
 * second for each source address so a caller hammering the API cannot
 * flood the audit log. A line's "suppressed" is the number of refusals from
 * that address since its previous line that were not written one by one;
 * a count still pending when its second is over is written then, as the
 * latest of those requests with the count of the others. Nothing is lost:
 * lines plus their "suppressed" add up to the refusals. */
#ifndef GW_ADMIN_DENIED_H
#define GW_ADMIN_DENIED_H

#include <stdbool.h>
#include <stdint.h>

#include "admin/metrics.h"
#include "core/gateway.h"
#include "http/http_server.h"

/* Addresses tracked at once; beyond, the others share one slot. */
#define ADM_DENIED_SOURCES 1024

typedef struct adm_denied adm_denied_t;

/* NULL when out of memory. adm_denied_destroy frees (accepts NULL). */
adm_denied_t *adm_denied_create(gw_gateway_t *gw, gw_metrics_t *metrics);
void adm_denied_destroy(adm_denied_t *d);

/* One refused request, and why. */
void adm_denied_record(adm_denied_t *d, const gw_http_request_t *req, gw_admin_denial_t why);

/* Writes the counts whose second is over and forgets quiet addresses.
 * Called at least once a second (the HTTP server's tick). */
void adm_denied_tick(adm_denied_t *d);

#endif
