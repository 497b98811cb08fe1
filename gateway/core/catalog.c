/* The user's catalog (see catalog.h): every service of the generation in
 * force decided for the certificate with gw_authorize, the admitted ones
 * listed with what the user needs to reach them. */
#include "core/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/authz.h"

/* A refusal of the certificate itself: every service would say the same. */
bool gw_catalog_refuses_all(const pol_decision_t *d)
{
	return d->why == POL_WHY_NO_USER || strcmp(d->rule, "lock") == 0 ||
	       strcmp(d->rule, GW_AUTHZ_FORGOTTEN_RULE) == 0 ||
	       (d->why == POL_WHY_TRUST && d->effective_trust == POL_TRUST_ALWAYS_DENY);
}

static json_t *entry_json(const pol_service_t *svc)
{
	bool pg = svc->mode == POL_MODE_POSTGRES;
	json_t *j = json_pack("{s:s, s:s, s:s?, s:o}", "name", svc->name, "mode",
	                      pg ? "postgres" : "tunnel", "description", svc->description,
	                      "client_port",
	                      svc->client_port != 0 ? json_integer(svc->client_port) : json_null());
	/* postgres mode: psql connects to the gateway itself, at the service's
	 * own port (null: the shared port, by SNI with direct TLS) */
	if (j != NULL && pg)
		json_object_set_new(j, "port",
		                    svc->listen != NULL ? json_integer(svc->listen_addr.port)
		                                        : json_null());
	return j;
}

json_t *gw_catalog_build(gw_state_t *st, const gw_runtime_t *rt, const pol_claims_t *claims,
                         const struct sockaddr *source, int64_t not_before_ms, json_t **names)
{
	const pol_snapshot_t *snap = rt->snap;
	json_t *services = json_array(), *groups = json_array();
	*names = json_array();
	pol_decision_t d = {.effective_trust = POL_TRUST_NONE};
	const char *refused = NULL;
	char why[sizeof(d.reason)];
	for (size_t i = 0; i < snap->n_services && services != NULL && *names != NULL; i++) {
		const pol_service_t *svc = &snap->services[i];
		gw_authz_request_t req = {
		        .service = svc,
		        .claims = claims,
		        .source = source,
		        .db_any = svc->mode == POL_MODE_POSTGRES,
		        .cert_not_before_ms = not_before_ms,
		};
		if (gw_authorize(st, rt, &req, &d)) {
			json_array_append_new(services, entry_json(svc));
			json_array_append_new(*names, json_string(svc->name));
		} else if (gw_catalog_refuses_all(&d)) {
			snprintf(why, sizeof(why), "%s", d.reason);
			refused = why;
			json_array_clear(services);
			json_array_clear(*names);
			break;
		}
	}
	for (size_t i = 0; groups != NULL && i < claims->n_groups; i++)
		json_array_append_new(groups, json_string(claims->groups[i]));
	json_t *doc =
	        services != NULL && groups != NULL && *names != NULL
	                ? json_pack("{s:s?, s:o, s:s?, s:s?, s:o}", "user", claims->user, "groups",
	                            groups, "device_id", claims->device_id, "device_trust",
	                            d.effective_trust != POL_TRUST_NONE
	                                    ? pol_trust_name(d.effective_trust)
	                                    : NULL,
	                            "services", services)
	                : NULL;
	if (doc == NULL) {
		json_decref(services);
		json_decref(groups);
		json_decref(*names);
		*names = NULL;
		return NULL;
	}
	if (refused != NULL)
		json_object_set_new(doc, "refused", json_string(refused));
	return doc;
}
