/* The identity provider's keys (see idp.h): discovery, then the JWKS it
 * names, each a bounded HTTPS GET; the result replaces the cached set only
 * when it parses. */
#include "issuer/idp.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cg_log.h"

#define FETCH_TIMEOUT_MS 10000
#define MAX_DOCUMENT     (256 * 1024)

struct gw_idp {
	uv_timer_t timer; /* the next refresh */
	gw_http_client_t *http;
	char *issuer, *ca_file;
	gw_jwks_t *keys;
	char problem[256];
	bool fetching;
	bool destroyed;
	uint64_t last_try_ms; /* uv_now of the last fetch started */
	uint64_t fetches;
};

static void fetch(gw_idp_t *idp);

static void fail(gw_idp_t *idp, const char *step, const char *why)
{
	idp->fetching = false;
	snprintf(idp->problem, sizeof(idp->problem), "%s: %s", step, why);
	cg_log(CG_LOG_WARN, "issuer: identity provider %s: %s%s", idp->issuer, idp->problem,
	       idp->keys != NULL ? " (the keys fetched before stay in use)" : "");
}

static void on_jwks(void *ctx, const gw_http_response_t *res)
{
	gw_idp_t *idp = ctx;
	if (idp->destroyed) {
		idp->fetching = false;
		return;
	}
	char why[200];
	if (res->error != NULL) {
		fail(idp, "jwks", res->error);
		return;
	}
	if (res->status != 200) {
		snprintf(why, sizeof(why), "HTTP %ld", res->status);
		fail(idp, "jwks", why);
		return;
	}
	gw_jwks_t *keys = gw_jwks_parse(res->body, res->body_len, why, sizeof(why));
	if (keys == NULL) {
		fail(idp, "jwks", why);
		return;
	}
	gw_jwks_free(idp->keys);
	idp->keys = keys;
	idp->fetching = false;
	idp->problem[0] = '\0';
	cg_log(CG_LOG_INFO, "issuer: %zu signing key(s) of %s", gw_jwks_count(keys), idp->issuer);
}

static void on_discovery(void *ctx, const gw_http_response_t *res)
{
	gw_idp_t *idp = ctx;
	if (idp->destroyed) {
		idp->fetching = false;
		return;
	}
	char why[200];
	if (res->error != NULL) {
		fail(idp, "discovery", res->error);
		return;
	}
	if (res->status != 200) {
		snprintf(why, sizeof(why), "HTTP %ld", res->status);
		fail(idp, "discovery", why);
		return;
	}
	json_t *doc = json_loadb(res->body, res->body_len, 0, NULL);
	const char *issuer = json_string_value(json_object_get(doc, "issuer"));
	const char *jwks_uri = json_string_value(json_object_get(doc, "jwks_uri"));
	if (issuer == NULL || strcmp(issuer, idp->issuer) != 0) {
		/* OpenID Discovery 4.3: the document must name the issuer asked */
		fail(idp, "discovery", "the document names another issuer");
	} else if (jwks_uri == NULL || strncmp(jwks_uri, "https://", 8) != 0) {
		fail(idp, "discovery", "no https jwks_uri");
	} else if (gw_http_get(idp->http, jwks_uri, idp->ca_file, MAX_DOCUMENT, FETCH_TIMEOUT_MS,
	                       on_jwks, idp) != 0) {
		fail(idp, "jwks", "cannot start the request");
	}
	json_decref(doc);
}

static void fetch(gw_idp_t *idp)
{
	if (idp->fetching || idp->destroyed)
		return;
	char url[1024];
	/* an issuer ending in '/' gets no second one (OpenID Discovery 4) */
	bool slash = idp->issuer[strlen(idp->issuer) - 1] == '/';
	int n = snprintf(url, sizeof(url), "%s%s.well-known/openid-configuration", idp->issuer,
	                 slash ? "" : "/");
	if (n < 0 || (size_t)n >= sizeof(url)) {
		fail(idp, "discovery", "issuer URL too long");
		return;
	}
	idp->fetching = true;
	idp->fetches++;
	idp->last_try_ms = uv_now(idp->timer.loop);
	if (gw_http_get(idp->http, url, idp->ca_file, MAX_DOCUMENT, FETCH_TIMEOUT_MS, on_discovery,
	                idp) != 0)
		fail(idp, "discovery", "cannot start the request");
}

static void on_timer(uv_timer_t *timer)
{
	gw_idp_t *idp = timer->data;
	/* no keys yet: try again soon; else refresh hourly */
	fetch(idp);
	uv_timer_start(&idp->timer, on_timer,
	               idp->keys == NULL ? GW_IDP_MIN_REFETCH_MS : GW_IDP_REFRESH_MS, 0);
}

gw_idp_t *gw_idp_create(uv_loop_t *loop, const char *issuer, const char *ca_file)
{
	gw_idp_t *idp = calloc(1, sizeof(*idp));
	if (idp == NULL)
		return NULL;
	idp->http = gw_http_client_create(loop);
	idp->issuer = strdup(issuer);
	idp->ca_file = ca_file != NULL ? strdup(ca_file) : NULL;
	if (idp->http == NULL || idp->issuer == NULL || (ca_file != NULL && idp->ca_file == NULL)) {
		gw_http_client_destroy(idp->http);
		free(idp->issuer);
		free(idp->ca_file);
		free(idp);
		return NULL;
	}
	snprintf(idp->problem, sizeof(idp->problem), "not fetched yet");
	uv_timer_init(loop, &idp->timer);
	idp->timer.data = idp;
	uv_timer_start(&idp->timer, on_timer, 0, 0);
	return idp;
}

static void on_closed(uv_handle_t *handle)
{
	gw_idp_t *idp = handle->data;
	gw_jwks_free(idp->keys);
	free(idp->issuer);
	free(idp->ca_file);
	free(idp);
}

void gw_idp_destroy(gw_idp_t *idp)
{
	if (idp == NULL)
		return;
	idp->destroyed = true;
	gw_http_client_destroy(idp->http); /* no callback comes after this */
	uv_close((uv_handle_t *)&idp->timer, on_closed);
}

const gw_jwks_t *gw_idp_keys(const gw_idp_t *idp)
{
	return idp->keys;
}

const char *gw_idp_problem(const gw_idp_t *idp)
{
	return idp->problem[0] != '\0' ? idp->problem : NULL;
}

const char *gw_idp_issuer(const gw_idp_t *idp)
{
	return idp->issuer;
}

void gw_idp_refetch(gw_idp_t *idp)
{
	uint64_t now = uv_now(idp->timer.loop);
	if (idp->fetches > 0 && now - idp->last_try_ms < GW_IDP_MIN_REFETCH_MS)
		return;
	fetch(idp);
}

uint64_t gw_idp_fetches(const gw_idp_t *idp)
{
	return idp->fetches;
}
