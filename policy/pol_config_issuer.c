/* The "issuer" section (LOGIN.md): the login issuer's listener, the login
 * CA that signs, the identity provider it trusts, and who may log in. The
 * files are only named here; the issuer loads them (and `certgate check`
 * verifies the login CA is one of gateway.client_ca). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_loader.h"

static bool is_https_url(const char *s)
{
	if (strncmp(s, "https://", 8) != 0 || s[8] == '\0')
		return false;
	for (const char *p = s; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '#' || *p == '?')
			return false;
	return true;
}

static bool is_algorithm(const char *s)
{
	/* asymmetric signatures only: "none" and HMAC never (no key confusion) */
	static const char *const known[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
	                                    "PS512", "ES256", "ES384", "EdDSA", NULL};
	for (const char *const *k = known; *k != NULL; k++)
		if (strcmp(s, *k) == 0)
			return true;
	return false;
}

static bool is_claim_name(const char *s)
{
	for (const char *p = s; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == ':' ||
		      *p == '/' || *p == '-'))
			return false;
	return *s != '\0';
}

/* A default list of strings, owned by the snapshot. */
static void default_list(loader_t *ld, char ***out, size_t *n, const char *const *items)
{
	size_t count = 0;
	while (items[count] != NULL)
		count++;
	if (!(*out = pol_ld_xcalloc(ld, count, sizeof(**out))))
		return;
	for (size_t i = 0; i < count; i++)
		if (((*out)[i] = pol_ld_xstrdup(ld, items[i])) != NULL)
			(*n)++;
}

static void copy_file(loader_t *ld, const pol_file_t *from, pol_file_t *to)
{
	if (from->path == NULL)
		return;
	to->path = strdup(from->path);
	to->key = from->key != NULL ? strdup(from->key) : NULL;
	to->doc = from->doc;
	if (to->path == NULL || (from->key != NULL && to->key == NULL)) {
		pol_ld_file_finish(to);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	}
}

static void load_oidc(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *dir)
{
	static const char *const keys[] = {"issuer",
	                                   "client_id",
	                                   "ca_file",
	                                   "scopes",
	                                   "user_claim",
	                                   "groups_claim",
	                                   "require_email_verified",
	                                   "algorithms",
	                                   "leeway",
	                                   NULL};
	static const char *const scopes[] = {"openid", "email", "profile", "groups", NULL};
	static const char *const algorithms[] = {"RS256", "ES256", "EdDSA", NULL};
	pol_oidc_t *o = &ld->snap->issuer.oidc;
	const char *text;

	o->require_email_verified = true;
	o->leeway_ms = 60 * 1000;
	if (!obj) {
		pol_ld_err(ld, doc, "issuer.oidc", "required: the identity provider");
		return;
	}
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, "issuer.oidc", "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, "issuer.oidc", keys);
	if (pol_ld_get_string(ld, doc, obj, "issuer.oidc", "issuer", true, &text) && text) {
		if (!is_https_url(text))
			pol_ld_err(ld, doc, "issuer.oidc.issuer",
			           "expected an https:// URL without query or fragment");
		else
			o->issuer = pol_ld_xstrdup(ld, text);
	}
	if (pol_ld_get_string(ld, doc, obj, "issuer.oidc", "client_id", true, &text) && text) {
		if (*text == '\0' || pol_ld_has_control(text))
			pol_ld_err(ld, doc, "issuer.oidc.client_id", "expected a client id");
		else
			o->client_id = pol_ld_xstrdup(ld, text);
	}
	pol_ld_get_file(ld, doc, obj, "issuer.oidc", "ca_file", false, dir, &o->ca_file);
	pol_ld_get_string_list(ld, doc, obj, "issuer.oidc", "scopes", is_claim_name,
	                       "expected a scope name", &o->scopes, &o->n_scopes);
	if (o->n_scopes == 0 && !json_object_get(obj, "scopes"))
		default_list(ld, &o->scopes, &o->n_scopes, scopes);
	pol_ld_get_string_list(ld, doc, obj, "issuer.oidc", "algorithms", is_algorithm,
	                       "expected an asymmetric JWS algorithm (RS256, ES256, EdDSA, ...); "
	                       "none and HMAC are never accepted",
	                       &o->algorithms, &o->n_algorithms);
	if (o->n_algorithms == 0 && !json_object_get(obj, "algorithms"))
		default_list(ld, &o->algorithms, &o->n_algorithms, algorithms);
	o->user_claim = pol_ld_xstrdup(ld, "email");
	if (pol_ld_get_string(ld, doc, obj, "issuer.oidc", "user_claim", false, &text) && text) {
		if (!is_claim_name(text)) {
			pol_ld_err(ld, doc, "issuer.oidc.user_claim", "expected a claim name");
		} else {
			free(o->user_claim);
			o->user_claim = pol_ld_xstrdup(ld, text);
		}
	}
	o->groups_claim = pol_ld_xstrdup(ld, "groups");
	if (pol_ld_get_string(ld, doc, obj, "issuer.oidc", "groups_claim", false, &text) && text) {
		if (!is_claim_name(text)) {
			pol_ld_err(ld, doc, "issuer.oidc.groups_claim", "expected a claim name");
		} else {
			free(o->groups_claim);
			o->groups_claim = pol_ld_xstrdup(ld, text);
		}
	}
	pol_ld_get_bool(ld, doc, obj, "issuer.oidc", "require_email_verified", true,
	                &o->require_email_verified);
	pol_ld_get_duration(ld, doc, obj, "issuer.oidc", "leeway", true, &o->leeway_ms);
	if (o->leeway_ms > POL_OIDC_LEEWAY_MAX_MS)
		pol_ld_err(ld, doc, "issuer.oidc.leeway", "at most 10m");
}

static void load_allow(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj)
{
	static const char *const keys[] = {"users", "groups", NULL};
	pol_issuer_t *is = &ld->snap->issuer;
	if (!obj)
		return;
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, "issuer.allow", "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, "issuer.allow", keys);
	pol_ld_get_string_list(ld, doc, obj, "issuer.allow", "users", NULL, NULL, &is->allow_users,
	                       &is->n_allow_users);
	pol_ld_get_string_list(ld, doc, obj, "issuer.allow", "groups", NULL, NULL,
	                       &is->allow_groups, &is->n_allow_groups);
	if (is->n_allow_users + is->n_allow_groups == 0)
		pol_ld_err(ld, doc, "issuer.allow",
		           "name \"users\" or \"groups\" (leave out \"allow\" to let everyone the "
		           "identity provider vouches for log in)");
}

void pol_ld_load_issuer(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *dir)
{
	static const char *const keys[] = {
	        "listen",        "cert", "key",   "ca_cert",      "ca_key",
	        "cert_lifetime", "oidc", "allow", "device_trust", NULL};
	pol_issuer_t *is = &ld->snap->issuer;
	const char *text;

	if (!obj)
		return;
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, "issuer", "expected an object");
		return;
	}
	is->enabled = true;
	is->cert_lifetime_ms = 8ull * 3600 * 1000;
	is->device_trust = POL_TRUST_LOW;
	pol_ld_check_keys(ld, doc, obj, "issuer", keys);
	const json_t *listen = json_object_get(obj, "listen");
	struct sockaddr_storage ss;
	if (!listen)
		pol_ld_err(ld, doc, "issuer", "listen: required (host:port of the issuer's HTTPS)");
	else if (pol_ld_parse_listen(ld, doc, listen, "issuer.listen", &is->listen_addr, &ss))
		is->listen = pol_ld_xstrdup(ld, json_string_value(listen));
	pol_ld_get_file(ld, doc, obj, "issuer", "cert", false, dir, &is->cert);
	pol_ld_get_file(ld, doc, obj, "issuer", "key", false, dir, &is->key);
	if (is->cert.path == NULL && is->key.path == NULL) {
		copy_file(ld, &ld->snap->gateway.cert, &is->cert);
		copy_file(ld, &ld->snap->gateway.key, &is->key);
	} else if (is->cert.path == NULL || is->key.path == NULL) {
		pol_ld_err(ld, doc, "issuer", "give both cert and key, or neither (the gateway's)");
	}
	pol_ld_get_file(ld, doc, obj, "issuer", "ca_cert", true, dir, &is->ca_cert);
	pol_ld_get_file(ld, doc, obj, "issuer", "ca_key", true, dir, &is->ca_key);
	pol_ld_get_file(ld, doc, obj, "issuer", "server_ca", false, dir, &is->server_ca);
	pol_ld_get_duration(ld, doc, obj, "issuer", "cert_lifetime", false, &is->cert_lifetime_ms);
	if (json_object_get(obj, "cert_lifetime") &&
	    is->cert_lifetime_ms > ld->snap->gateway.max_cert_lifetime_ms)
		pol_ld_err(ld, doc, "issuer.cert_lifetime",
		           "longer than gateway.max_cert_lifetime: the gateway would refuse "
		           "every certificate issued");
	if (pol_ld_get_string(ld, doc, obj, "issuer", "device_trust", false, &text) && text &&
	    (!pol_trust_parse(text, &is->device_trust) || is->device_trust == POL_TRUST_NONE))
		pol_ld_err(ld, doc, "issuer.device_trust",
		           "expected \"always_deny\", \"low\", \"medium\" or \"high\"");
	load_oidc(ld, doc, json_object_get(obj, "oidc"), dir);
	load_allow(ld, doc, json_object_get(obj, "allow"));
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void pol_ld_issuer_finish(pol_issuer_t *is)
{
	free(is->listen);
	pol_ld_file_finish(&is->cert);
	pol_ld_file_finish(&is->key);
	pol_ld_file_finish(&is->ca_cert);
	pol_ld_file_finish(&is->ca_key);
	pol_ld_file_finish(&is->server_ca);
	free(is->oidc.issuer);
	free(is->oidc.client_id);
	pol_ld_file_finish(&is->oidc.ca_file);
	free_list(is->oidc.scopes, is->oidc.n_scopes);
	free(is->oidc.user_claim);
	free(is->oidc.groups_claim);
	free_list(is->oidc.algorithms, is->oidc.n_algorithms);
	free_list(is->allow_users, is->n_allow_users);
	free_list(is->allow_groups, is->n_allow_groups);
}
