/* The issuer's endpoints (LOGIN.md): GET /v1/login/config and POST
 * /v1/login/certificate. A certificate request is checked in the order of
 * trust — the ID token (signature, then claims), who may log in, the CSR,
 * the device proof — and the token is marked used only when everything
 * else passed, just before signing, so a request refused for a bad CSR
 * does not burn the user's login. Every answer is audited (login.issued /
 * login.denied) and counted by reason.
 *
 * A login with a device key registers the device in the run-time state's
 * registry (device.registered) or updates it (last seen, user, platform).
 * The device's trust in the certificate is the lower of issuer.device_trust
 * and the trust an admin set (the live feed, PUT /v1/devices/{id}/trust).
 * A device that was forgotten refuses every certificate issued for it
 * before the forget (core/authz.c), so its new certificate never starts
 * before that time.
 *
 * The claim is asynchronous (a shared state store answers it over the
 * network, atomically for every gateway): the request is deferred
 * (gw_http_defer), and the answer is signed or refused when the claim's
 * answer comes (on_claimed), under the issuer generation in force then.
 * A store that cannot answer refuses the login: "state store
 * unavailable". */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cg_duration.h"
#include "cg_time.h"
#include "issuer/csr.h"
#include "issuer/id_token.h"
#include "issuer/issuer.h"
#include "pol_claims.h"
#include "state/state.h"
#include "tls/device_id.h"
#include "tls/pem_io.h"
#include "tls/x509_info.h"
#include "tls/x509_issue.h"

#define MAX_PLATFORM 128
#define CN_MAX       64 /* RFC 5280 ub-common-name, ub-organizational-unit-name */

typedef struct login {
	gw_issuer_t *issuer;
	gw_issuer_gen_t *gen;
	const gw_http_request_t *req; /* &request while the claim is answered */
	gw_http_request_t request;    /* what of the request outlives the handler */
	gw_http_reply_t *reply;
	gw_http_pending_t *pending; /* the request, deferred for the token claim */
	gw_id_token_t token;
	char *token_text; /* a copy while the claim is answered (a reload re-checks it) */
	uint64_t checked; /* the serial of the generation that checked the token */
	json_t *body;
	EVP_PKEY *key;    /* from the CSR */
	EVP_PKEY *device; /* the device key, when one was sent */
	unsigned char *csr_der;
	size_t csr_der_len;
	char device_id[GW_DEVICE_ID_LEN + 1];
	pol_trust_t device_trust;
	const char *platform;
} login_t;

/* --- answers --------------------------------------------------------------- */

static json_t *groups_of(const login_t *l)
{
	return l->token.groups != NULL ? json_copy(l->token.groups) : json_array();
}

static void deny(login_t *l, unsigned status, const char *error, const char *reason)
{
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	json_t *f = json_pack("{s:s, s:s}", "client", l->req->client, "reason", reason);
	if (l->token.user != NULL)
		json_object_set_new(f, "user", json_string(l->token.user));
	if (l->token.subject != NULL)
		json_object_set_new(f, "idp_subject", json_string(l->token.subject));
	(void)gw_audit(gw, "login.denied", f);
	if (gw->observer.login != NULL)
		gw->observer.login(gw->observer.ctx, reason);
	gw_http_json(l->reply, status, json_pack("{s:s, s:s}", "error", error, "reason", reason));
}

static void bad_request(login_t *l, const char *reason)
{
	deny(l, 400, "bad request", reason);
}

/* --- the steps --------------------------------------------------------------- */

static const char *bearer(const gw_http_request_t *req)
{
	const char *h = gw_http_header(req, "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h != '\0' ? h : NULL;
}

static bool check_token(login_t *l, const char *token)
{
	const pol_oidc_t *o = &l->gen->cfg->oidc;
	const gw_jwks_t *keys = gw_idp_keys(l->gen->idp);
	if (keys == NULL) {
		deny(l, 503, "the identity provider's keys are not available",
		     "identity provider unavailable");
		return false;
	}
	gw_id_token_rules_t rules = {
	        .issuer = o->issuer,
	        .client_id = o->client_id,
	        .algorithms = o->algorithms,
	        .n_algorithms = o->n_algorithms,
	        .user_claim = o->user_claim,
	        .groups_claim = o->groups_claim,
	        .require_email_verified = o->require_email_verified,
	        .leeway_ms = (int64_t)o->leeway_ms,
	};
	const char *reason = NULL;
	gw_id_token_result_t r =
	        gw_id_token_verify(token, keys, &rules, cg_wall_ms(), &l->token, &reason);
	if (r == GW_ID_TOKEN_UNKNOWN_KEY)
		gw_idp_refetch(l->gen->idp); /* keys may have rotated: the next try knows */
	if (r != GW_ID_TOKEN_OK) {
		deny(l, 401, "the ID token was refused", reason);
		return false;
	}
	return true;
}

static bool user_allowed(const login_t *l)
{
	const pol_issuer_t *cfg = l->gen->cfg;
	if (cfg->n_allow_users == 0 && cfg->n_allow_groups == 0)
		return true;
	for (size_t i = 0; i < cfg->n_allow_users; i++)
		if (fnmatch(cfg->allow_users[i], l->token.user, FNM_CASEFOLD) == 0)
			return true;
	size_t i;
	json_t *g;
	json_array_foreach(l->token.groups, i, g)
	{
		for (size_t k = 0; k < cfg->n_allow_groups; k++)
			if (strcmp(cfg->allow_groups[k], json_string_value(g)) == 0)
				return true;
	}
	return false;
}

/* Characters of UTF-8 text (jansson checked the encoding): the bytes that
 * do not continue a sequence. */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		n += (*p & 0xc0) != 0x80;
	return n;
}

/* What a certificate can carry: CN and OU hold at most 64 characters. A
 * group that does not fit is refused, never dropped (a deny rule may name
 * it). */
static const char *fits_certificate(const login_t *l)
{
	if (utf8_chars(l->token.user) > CN_MAX)
		return "user claim longer than 64 characters";
	size_t i;
	json_t *g;
	json_array_foreach(l->token.groups, i, g)
	{
		if (utf8_chars(json_string_value(g)) > CN_MAX)
			return "group name longer than 64 characters";
	}
	return NULL;
}

static bool check_request(login_t *l)
{
	static const char *const allowed[] = {"csr", "device_key", "device_proof", "platform",
	                                      NULL};
	l->body = gw_http_body_object(l->req, l->reply, allowed);
	if (l->body == NULL) {
		/* what was wrong (bad JSON at line:col, an unknown field) is the
		 * error; the reason stays one of a fixed set */
		char detail[300];
		snprintf(detail, sizeof(detail), "%s",
		         json_string_value(json_object_get(l->reply->json, "error")));
		deny(l, 400, detail, "malformed request body");
		return false;
	}
	const char *csr = json_string_value(json_object_get(l->body, "csr"));
	json_t *dk = json_object_get(l->body, "device_key");
	json_t *dp = json_object_get(l->body, "device_proof");
	json_t *pf = json_object_get(l->body, "platform");
	if (csr == NULL) {
		bad_request(l, "no csr");
		return false;
	}
	const char *why = NULL;
	l->key = gw_csr_check(csr, strlen(csr), &l->csr_der, &l->csr_der_len, &why);
	if (l->key == NULL) {
		bad_request(l, why);
		return false;
	}
	if ((dk == NULL) != (dp == NULL) || (dk != NULL && !json_is_string(dk)) ||
	    (dp != NULL && !json_is_string(dp))) {
		bad_request(l, "device_key and device_proof go together");
		return false;
	}
	if (dk != NULL) {
		BIO *bio = BIO_new_mem_buf(json_string_value(dk), (int)json_string_length(dk));
		l->device = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
		if (l->device == NULL ||
		    !gw_device_proof_ok(l->device, l->csr_der, l->csr_der_len,
		                        json_string_value(dp)) ||
		    !gw_device_id(l->device, l->device_id)) {
			deny(l, 401, "the device proof was refused", "bad device proof");
			return false;
		}
	}
	if (pf != NULL) {
		if (!json_is_string(pf) || json_string_length(pf) > MAX_PLATFORM ||
		    !pol_claims_text_ok(json_string_value(pf), strlen(json_string_value(pf)))) {
			bad_request(l, "bad platform");
			return false;
		}
		l->platform = json_string_value(pf);
	}
	return true;
}

/* The lower of the issuer's device_trust and the level an admin set (the
 * live feed): what GET /v1/devices shows as effective. */
static pol_trust_t device_trust(const login_t *l)
{
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	pol_trust_t level = l->gen->cfg->device_trust;
	pol_trust_t feed = gw_state_trust_level(gw->state, l->device_id, cg_wall_ms());
	return feed != POL_TRUST_NONE && feed < level ? feed : level;
}

static void login_free(login_t *l)
{
	gw_id_token_finish(&l->token);
	free(l->token_text);
	json_decref(l->body);
	EVP_PKEY_free(l->key);
	EVP_PKEY_free(l->device);
	OPENSSL_free(l->csr_der);
	free(l);
}

static void issue(login_t *l);

/* The token again, under the generation in force now (a reload came
 * between the check and the store's answer: another provider, client,
 * algorithms or claims). The same checks as the first time, so the same
 * reasons. */
static bool recheck_token(login_t *l)
{
	gw_id_token_finish(&l->token);
	return check_token(l, l->token_text) && fits_certificate(l) == NULL;
}

/* The store's answer to the token claim: sign, or refuse. The generation
 * the request was checked under may have been replaced meanwhile (a
 * reload): the one in force now checks the token again and signs, after
 * its own user check. */
static void on_claimed(void *ctx, gw_token_claim_t result)
{
	login_t *l = ctx;
	gw_http_reply_t reply = {0};
	l->reply = &reply;
	l->req = &l->request;
	l->gen = gw_issuer_current(l->issuer);
	switch (result) {
	case GW_TOKEN_FRESH:
		if (l->gen == NULL) {
			deny(l, 503, "the issuer is not serving", "issuer stopped");
		} else if (l->gen->serial != l->checked && !recheck_token(l)) {
			if (l->reply->json == NULL) /* it fit the old generation only */
				deny(l, 403, "this identity does not fit a certificate",
				     fits_certificate(l));
		} else if (!user_allowed(l)) {
			deny(l, 403, "this user may not log in here", "user not allowed");
		} else {
			l->device_trust = device_trust(l);
			issue(l);
		}
		break;
	case GW_TOKEN_REPLAYED:
		deny(l, 401, "the ID token was refused", "token replayed");
		break;
	case GW_TOKEN_UNAVAILABLE:
		deny(l, 503, "the state store is unavailable, try again later",
		     "state store unavailable");
		break;
	case GW_TOKEN_FULL:
	default:
		deny(l, 503, "too many logins in flight, try again later", "replay cache full");
		break;
	}
	gw_http_resume(l->pending, &reply);
	login_free(l);
}

/* Marks the token used and signs when the store says it was fresh; l and
 * the request are the claim's from here on (false: refused now, l is
 * still the caller's). */
static bool claim_token(login_t *l, const char *token)
{
	char hash[65];
	l->token_text = strdup(token);
	if (l->token_text == NULL || !gw_state_claim_key(token, l->token.signed_len, hash)) {
		deny(l, 500, "internal error", "internal error");
		return false;
	}
	l->pending = gw_http_defer(l->req);
	if (l->pending == NULL) {
		deny(l, 500, "internal error", "internal error");
		return false;
	}
	/* what deny and issue read of the request, past the handler's return */
	l->request = *l->req;
	l->request.method = l->request.path = l->request.raw_path = l->request.body = NULL;
	l->request.body_len = 0;
	l->checked = l->gen->serial;
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	gw_state_token_claim(gw->state, hash, l->token.replay_until_ms, cg_wall_ms(), on_claimed,
	                     l);
	return true;
}

/* The login of a device: registered (device.registered) or updated. False
 * when it could not be recorded (refused and audited). */
static bool record_device(login_t *l)
{
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	bool registered = false;
	int rc = gw_state_device_seen(gw->state, l->device_id, l->token.user, l->platform,
	                              cg_wall_ms(), &registered);
	if (rc == -2) {
		deny(l, 503, "the device registry is full", "device registry full");
		return false;
	}
	if (rc < 0) {
		deny(l, 500, "internal error", "internal error");
		return false;
	}
	if (registered)
		(void)gw_audit(gw, "device.registered",
		               json_pack("{s:s, s:s, s:s, s:s?}", "client", l->req->client,
		                         "device_id", l->device_id, "user", l->token.user,
		                         "platform", l->platform));
	return true;
}

/* notBefore is a minute back (clocks differ), but never before the second
 * the device's forget cuts at: such a certificate would be refused at the
 * door. That second is now's or earlier, so the certificate works at once;
 * only after a second forget within one second does it start at the next. */
static int64_t start_offset_s(const login_t *l, int64_t now_s)
{
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	int64_t forgotten_ms =
	        l->device != NULL ? gw_state_device_forgotten_at(gw->state, l->device_id) : 0;
	int64_t cut_s = forgotten_ms / 1000;
	return forgotten_ms != 0 && cut_s - now_s > -60 ? cut_s - now_s : -60;
}

static void issue(login_t *l)
{
	gw_gateway_t *gw = gw_issuer_gateway(l->issuer);
	const pol_issuer_t *cfg = l->gen->cfg;
	int64_t now_s = cg_wall_ms() / 1000;
	size_t n_groups = l->token.groups != NULL ? json_array_size(l->token.groups) : 0;
	const char **groups = calloc(n_groups + 1, sizeof(*groups));
	if (groups == NULL) {
		deny(l, 500, "internal error", "internal error");
		return;
	}
	for (size_t i = 0; i < n_groups; i++)
		groups[i] = json_string_value(json_array_get(l->token.groups, i));
	bool email = strchr(l->token.user, '@') != NULL;
	for (const char *p = l->token.user; email && *p != '\0'; p++)
		email = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f; /* IA5String */
	char why[256];
	gw_cert_spec_t spec = {
	        .profile = GW_CERT_LOGIN,
	        .cn = l->token.user,
	        .groups = groups,
	        .n_groups = n_groups,
	        .email = email ? l->token.user : NULL,
	        .device_id = l->device != NULL ? l->device_id : NULL,
	        .device_trust = l->device != NULL ? pol_trust_name(l->device_trust) : NULL,
	        .key = l->key,
	        .issuer = l->gen->ca_cert,
	        .issuer_key = l->gen->ca_key,
	        .now = (time_t)now_s,
	        .start_offset_s = start_offset_s(l, now_s),
	        .ttl_s = (int64_t)(cfg->cert_lifetime_ms / 1000),
	};
	X509 *cert = gw_x509_issue(&spec, why, sizeof(why));
	free(groups);
	STACK_OF(X509) *one = sk_X509_new_null();
	size_t cert_len = 0;
	char *cert_pem = NULL;
	if (cert != NULL && one != NULL && sk_X509_push(one, cert) > 0)
		cert_pem = gw_pem_certs(one, &cert_len);
	sk_X509_free(one);
	if (cert_pem == NULL) {
		X509_free(cert);
		deny(l, 500, "cannot sign the certificate", "internal error");
		return;
	}
	char serial[128], not_after[CG_RFC3339_LEN];
	gw_cert_serial_hex(cert, serial, sizeof(serial));
	cg_rfc3339_ms(gw_cert_not_after_ms(cert), not_after);
	X509_free(cert);
	if (l->device != NULL && !record_device(l)) {
		free(cert_pem);
		return;
	}
	json_t *f = json_pack("{s:s, s:s, s:o, s:s?, s:s?, s:s, s:s, s:s?}", "client",
	                      l->req->client, "user", l->token.user, "groups", groups_of(l),
	                      "device_id", l->device != NULL ? l->device_id : NULL, "device_trust",
	                      l->device != NULL ? pol_trust_name(l->device_trust) : NULL, "serial",
	                      serial, "not_after", not_after, "idp_subject", l->token.subject);
	(void)gw_audit(gw, "login.issued", f);
	if (gw->observer.login != NULL)
		gw->observer.login(gw->observer.ctx, NULL);
	gw_http_json(l->reply, 201,
	             json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?, s:s?}", "certificate", cert_pem,
	                       "ca", l->gen->ca_pem, "not_after", not_after, "user", l->token.user,
	                       "groups", groups_of(l), "device_id",
	                       l->device != NULL ? l->device_id : NULL, "device_trust",
	                       l->device != NULL ? pol_trust_name(l->device_trust) : NULL));
	free(cert_pem);
}

static void post_certificate(gw_issuer_t *issuer, gw_issuer_gen_t *gen,
                             const gw_http_request_t *req, gw_http_reply_t *reply)
{
	login_t *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		gw_http_error(reply, 500, "out of memory");
		return;
	}
	*l = (login_t){.issuer = issuer, .gen = gen, .req = req, .reply = reply};
	const char *token = bearer(req);
	if (token == NULL) {
		deny(l, 401, "an ID token is required (Authorization: Bearer ...)", "no token");
		goto done;
	}
	if (!check_token(l, token))
		goto done;
	if (!user_allowed(l)) {
		deny(l, 403, "this user may not log in here", "user not allowed");
		goto done;
	}
	const char *why = fits_certificate(l);
	if (why != NULL) {
		deny(l, 403, "this identity does not fit a certificate", why);
		goto done;
	}
	if (!check_request(l))
		goto done;
	if (l->device != NULL &&
	    !gw_state_device_room(gw_issuer_gateway(issuer)->state, l->device_id)) {
		/* before the token is burned */
		deny(l, 503, "the device registry is full", "device registry full");
		goto done;
	}
	if (claim_token(l, token))
		return; /* on_claimed answers and frees l */
done:
	login_free(l);
}

static void get_config(const gw_issuer_gen_t *gen, gw_http_reply_t *reply)
{
	const pol_oidc_t *o = &gen->cfg->oidc;
	json_t *scopes = json_array();
	for (size_t i = 0; i < o->n_scopes; i++)
		json_array_append_new(scopes, json_string(o->scopes[i]));
	char lifetime[32];
	cg_duration_format(gen->cfg->cert_lifetime_ms, lifetime, sizeof(lifetime));
	gw_http_json(reply, 200,
	             json_pack("{s:s, s:s, s:o, s:s}", "issuer", o->issuer, "client_id",
	                       o->client_id, "scopes", scopes, "cert_lifetime", lifetime));
}

void gw_issuer_handle(void *ctx, const gw_http_request_t *req, gw_http_reply_t *reply)
{
	gw_issuer_t *issuer = ctx;
	gw_issuer_gen_t *gen = gw_issuer_current(issuer);
	if (gen == NULL) {
		gw_http_error(reply, 503, "the issuer is not serving");
		return;
	}
	bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	if (strcmp(req->path, "/v1/login/config") == 0) {
		if (get)
			get_config(gen, reply);
		else {
			gw_http_error(reply, 405, "%s is not allowed on %s (allowed: GET)",
			              req->method, req->path);
			reply->allow = "GET";
		}
		return;
	}
	if (strcmp(req->path, "/v1/login/certificate") == 0) {
		if (strcmp(req->method, "POST") == 0)
			post_certificate(issuer, gen, req, reply);
		else {
			gw_http_error(reply, 405, "%s is not allowed on %s (allowed: POST)",
			              req->method, req->path);
			reply->allow = "POST";
		}
		return;
	}
	gw_http_error(reply, 404, "no such endpoint: %s", req->path);
}
