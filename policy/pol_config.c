/* Loading certgate.json (and its policy_file) into an immutable, refcounted
 * pol_snapshot_t: the orchestration and the gateway and admin sections
 * (audit: pol_config_audit.c, services: pol_config_services.c, rules:
 * pol_config_rules.c),
 * then the snapshot's life and its service lookups. */
#include "pol_config.h"

#include <arpa/inet.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "cg_json.h"
#include "cg_strmap.h"
#include "pol_index.h"
#include "pol_loader.h"
#include "pol_show.h"

void pol_file_where(const pol_file_t *file, char *buf, size_t len)
{
	char pos[PATH_BUF];
	if (file->doc == NULL || file->key == NULL) {
		snprintf(buf, len, "%s", file->key != NULL ? file->key : "(configuration)");
		return;
	}
	cg_jdoc_where(file->doc, file->key, pos, sizeof(pos));
	snprintf(buf, len, "%s: %s", pos, file->key);
}

/* ---------------------------------------------------------------------- */
/* gateway, admin                                                          */

/* gateway.listen: an array of numeric "host:port" (one plain string is
 * accepted too). */
static void load_gateway_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *listen)
{
	pol_gateway_t *g = &ld->snap->gateway;
	bool is_array = json_is_array(listen);
	size_t n = is_array ? json_array_size(listen) : 1;

	if (!is_array && !json_is_string(listen)) {
		pol_ld_err(ld, doc, "gateway.listen", "expected an array of \"host:port\"");
		return;
	}
	if (n == 0)
		return; /* allowed when every service listens on its own */
	g->listen = pol_ld_xcalloc(ld, n, sizeof(*g->listen));
	g->listen_addr = pol_ld_xcalloc(ld, n, sizeof(*g->listen_addr));
	ld->gw_listen_ss = pol_ld_xcalloc(ld, n, sizeof(*ld->gw_listen_ss));
	ld->gw_listen_ok = pol_ld_xcalloc(ld, n, sizeof(*ld->gw_listen_ok));
	if (!g->listen || !g->listen_addr || !ld->gw_listen_ss || !ld->gw_listen_ok)
		return;
	for (size_t i = 0; i < n; i++) {
		const json_t *item = is_array ? json_array_get(listen, i) : listen;
		char ipath[PATH_BUF];

		if (is_array)
			pol_ld_pidx(ipath, "gateway.listen", i);
		else
			pol_ld_pcat(ipath, "gateway.listen", "");
		if (!pol_ld_parse_listen(ld, doc, item, ipath, &g->listen_addr[g->n_listen],
		                         &ld->gw_listen_ss[i]))
			continue;
		ld->gw_listen_ok[i] = true;
		if (!(g->listen[g->n_listen] = pol_ld_xstrdup(ld, json_string_value(item))))
			return;
		g->n_listen++;
	}
}

uint32_t pol_cpu_count(void)
{
	cpu_set_t set;
	int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
	return n < 1 ? 1 : n > POL_MAX_WORKERS ? POL_MAX_WORKERS : (uint32_t)n;
}

static void load_crl_check(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw, pol_gateway_t *g)
{
	const char *text = NULL;
	g->crl_check = POL_CRL_CHECK_CHAIN;
	if (!pol_ld_get_string(ld, doc, gw, "gateway", "crl_check", false, &text) || !text)
		return;
	if (strcmp(text, "chain") == 0)
		return;
	if (strcmp(text, "leaf") == 0)
		g->crl_check = POL_CRL_CHECK_LEAF;
	else if (strcmp(text, "all") == 0)
		g->crl_check = POL_CRL_CHECK_ALL;
	else
		pol_ld_err(ld, doc, "gateway.crl_check", "expected \"leaf\", \"chain\" or \"all\"");
	/* "chain" checks where a CRL is; these two demand one */
	if (g->crl_check != POL_CRL_CHECK_CHAIN && !json_object_get(gw, "crl"))
		pol_ld_err(ld, doc, "gateway.crl_check",
		           "\"%s\" checks certificates against gateway.crl, which is not set",
		           text);
}

static void load_gateway(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw, const char *dir)
{
	static const char *const keys[] = {"listen",
	                                   "cert",
	                                   "key",
	                                   "client_ca",
	                                   "crl",
	                                   "crl_check",
	                                   "max_cert_lifetime",
	                                   "clock_skew",
	                                   "handshake_timeout",
	                                   "idle_timeout",
	                                   "max_connections",
	                                   "max_sessions_per_user",
	                                   "max_handshakes_per_source",
	                                   "proxy_protocol_from",
	                                   "verify_depth",
	                                   "verify_cache",
	                                   "workers",
	                                   NULL};
	pol_gateway_t *g = &ld->snap->gateway;
	const char *path = "gateway";

	/* CONFIG.md defaults */
	g->max_cert_lifetime_ms = 24 * 3600 * 1000ULL;
	g->clock_skew_ms = 30 * 1000ULL;
	g->handshake_timeout_ms = 10 * 1000ULL;
	g->idle_timeout_ms = 3600 * 1000ULL;
	g->max_connections = 10000;
	g->max_sessions_per_user = 0;
	g->verify_depth = 4;
	g->verify_cache = true;
	if (!gw) {
		pol_ld_err(ld, doc, "", "missing required key \"gateway\"");
		return;
	}
	if (!json_is_object(gw)) {
		pol_ld_err(ld, doc, path, "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, gw, path, keys);
	if (json_object_get(gw, "listen"))
		load_gateway_listen(ld, doc, json_object_get(gw, "listen"));
	pol_ld_get_file(ld, doc, gw, path, "cert", true, dir, &g->cert);
	pol_ld_get_file(ld, doc, gw, path, "key", true, dir, &g->key);
	pol_ld_get_file(ld, doc, gw, path, "client_ca", true, dir, &g->client_ca);
	pol_ld_get_file(ld, doc, gw, path, "crl", false, dir, &g->crl);
	load_crl_check(ld, doc, gw, g);
	pol_ld_get_duration(ld, doc, gw, path, "max_cert_lifetime", false,
	                    &g->max_cert_lifetime_ms);
	pol_ld_get_duration(ld, doc, gw, path, "clock_skew", true, &g->clock_skew_ms);
	pol_ld_get_duration(ld, doc, gw, path, "handshake_timeout", false,
	                    &g->handshake_timeout_ms);
	pol_ld_get_duration(ld, doc, gw, path, "idle_timeout", true, &g->idle_timeout_ms);
	pol_ld_get_uint(ld, doc, gw, path, "max_connections", 1, UINT32_MAX,
	                "expected a positive integer", &g->max_connections);
	pol_ld_get_uint(ld, doc, gw, path, "max_sessions_per_user", 0, UINT32_MAX,
	                "expected a non-negative integer", &g->max_sessions_per_user);
	/* one source may hold an eighth of the connections in handshake: it
	 * takes eight addresses, not one, to fill max_connections that way */
	g->max_handshakes_per_source = g->max_connections / 8 > 16 ? g->max_connections / 8 : 16;
	pol_ld_get_uint(ld, doc, gw, path, "max_handshakes_per_source", 0, UINT32_MAX,
	                "expected a non-negative integer", &g->max_handshakes_per_source);
	pol_ld_get_uint(ld, doc, gw, path, "verify_depth", 1, 10,
	                "expected an integer from 1 to 10", &g->verify_depth);
	pol_ld_get_bool(ld, doc, gw, path, "verify_cache", true, &g->verify_cache);
	g->workers = pol_cpu_count();
	pol_ld_get_uint(ld, doc, gw, path, "workers", 1, POL_MAX_WORKERS,
	                "expected an integer from 1 to 256", &g->workers);
	pol_ld_get_cidr_list(ld, doc, gw, path, "proxy_protocol_from", true,
	                     &g->proxy_protocol_from, &g->n_proxy_protocol_from);
}

static void load_admin(loader_t *ld, const cg_jdoc_t *doc, const json_t *adm, const char *dir)
{
	static const char *const keys[] = {"listen", "token_file", NULL};
	pol_admin_t *a = &ld->snap->admin;
	const json_t *listen;
	struct sockaddr_storage ss;
	bool listen_ok = false;

	if (!adm)
		return;
	if (!json_is_object(adm)) {
		pol_ld_err(ld, doc, "admin", "expected an object");
		return;
	}
	a->enabled = true;
	pol_ld_check_keys(ld, doc, adm, "admin", keys);
	listen = json_object_get(adm, "listen");
	if (listen) {
		listen_ok =
		        pol_ld_parse_listen(ld, doc, listen, "admin.listen", &a->listen_addr, &ss);
		if (listen_ok)
			a->listen = pol_ld_xstrdup(ld, json_string_value(listen));
	} else {
		a->listen = pol_ld_xstrdup(ld, "127.0.0.1:9090");
		listen_ok = a->listen && cg_hostport_parse(a->listen, &a->listen_addr) &&
		            cg_hostport_to_sockaddr(&a->listen_addr, &ss);
	}
	pol_ld_get_file(ld, doc, adm, "admin", "token_file", false, dir, &a->token_file);
	/* ADMIN_API.md: no admin listener beyond loopback without a token */
	if (listen_ok && !a->token_file.path &&
	    !cg_sockaddr_is_loopback((const struct sockaddr *)&ss))
		pol_ld_err(ld, doc, "admin.listen",
		           "a non-loopback admin listener needs a token_file");
}

/* ---------------------------------------------------------------------- */
/* Snapshot life                                                            */

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void service_finish(pol_service_t *svc)
{
	free(svc->name);
	free(svc->description);
	free_strings(svc->sni, svc->n_sni);
	free(svc->listen);
	free(svc->upstream);
	pol_ld_file_finish(&svc->upstream_tls.ca);
	free(svc->upstream_tls.server_name);
	pol_ld_file_finish(&svc->upstream_tls.client_ca_cert);
	pol_ld_file_finish(&svc->upstream_tls.client_ca_key);
}

static void rule_finish(pol_rule_t *r)
{
	free(r->name);
	free_strings(r->services, r->n_services);
	free_strings(r->users, r->n_users);
	free_strings(r->groups, r->n_groups);
	free_strings(r->devices, r->n_devices);
	free(r->sources);
	free_strings(r->db_users, r->n_db_users);
	free_strings(r->db_names, r->n_db_names);
	free(r->when);
}

static void snapshot_free(pol_snapshot_t *snap)
{
	pol_gateway_t *g = &snap->gateway;

	pol_index_destroy(snap->index);
	json_decref(snap->shown);
	cg_jdoc_destroy(snap->doc_config);
	cg_jdoc_destroy(snap->doc_policy);
	free(snap->config_path);
	free(snap->policy_path);
	/* gateway.listen may hold fewer strings than addresses were parsed */
	free_strings(g->listen, g->n_listen);
	free(g->listen_addr);
	pol_ld_file_finish(&g->cert);
	pol_ld_file_finish(&g->key);
	pol_ld_file_finish(&g->client_ca);
	pol_ld_file_finish(&g->crl);
	free(g->proxy_protocol_from);
	free(snap->admin.listen);
	pol_ld_file_finish(&snap->admin.token_file);
	free(snap->audit.path);
	free(snap->audit.state);
	free(snap->audit.syslog.address);
	free(snap->audit.syslog.unix_path);
	pol_ld_state_finish(&snap->state);
	pol_ld_issuer_finish(&snap->issuer);
	pol_claims_map_finish(&snap->claims);
	for (size_t i = 0; i < snap->n_services; i++)
		service_finish(&snap->services[i]);
	free(snap->services);
	for (size_t i = 0; i < snap->n_rules; i++)
		rule_finish(&snap->rules[i]);
	free(snap->rules);
	cg_strmap_destroy(snap->zones, cg_tz_free_cb);
	free(snap);
}

static bool hash_docs(const cg_jdoc_t *cfg, const cg_jdoc_t *pol, char out[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	const char *text;
	size_t len;
	bool ok;

	if (!ctx)
		return false;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
	text = cg_jdoc_text(cfg, &len);
	ok = ok && EVP_DigestUpdate(ctx, text, len) == 1;
	if (pol) {
		text = cg_jdoc_text(pol, &len);
		ok = ok && EVP_DigestUpdate(ctx, text, len) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return false;
	for (unsigned i = 0; i < md_len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return true;
}

/* Loads the policy_file named by the config: claims and rules only. */
static cg_jdoc_t *load_policy_file(loader_t *ld, const cg_jdoc_t *cfg, const json_t *root,
                                   const char *config_path, const char *cfg_dir)
{
	static const char *const keys[] = {"claims", "rules", NULL};
	const json_t *value = json_object_get(root, "policy_file");
	const char *text;
	char *shown_dir, *display;
	cg_jdoc_t *pol;

	if (!value)
		return NULL;
	if (!pol_ld_get_string(ld, cfg, root, "", "policy_file", false, &text) || !text)
		return NULL;
	if (pol_ld_has_control(text)) {
		pol_ld_err(ld, cfg, "policy_file", "expected a file path");
		return NULL;
	}
	/* errors name the policy file the way the config's own name was given */
	shown_dir = pol_ld_path_dir(config_path);
	display = shown_dir ? pol_ld_path_join(shown_dir, text) : NULL;
	free(shown_dir);
	ld->snap->policy_path = pol_ld_path_join(cfg_dir, text);
	if (!display || !ld->snap->policy_path) {
		free(display);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return NULL;
	}
	pol = cg_jdoc_load(display, ld->errs);
	free(display);
	if (!pol) {
		ld->failed = true;
		return NULL;
	}
	if (!json_is_object(cg_jdoc_root(pol))) {
		pol_ld_err(ld, pol, "", "expected an object with \"claims\" and \"rules\"");
		return pol;
	}
	pol_ld_check_keys(ld, pol, cg_jdoc_root(pol), "", keys);
	if (json_object_get(root, "claims"))
		pol_ld_err(ld, cfg, "claims",
		           "not allowed here when policy_file is set (it holds the claims)");
	if (json_object_get(root, "rules"))
		pol_ld_err(ld, cfg, "rules",
		           "not allowed here when policy_file is set (it holds the rules)");
	return pol;
}

/* Data flow: cg_jdoc_load parses each file and remembers where every value
 * starts; the load_* functions walk the JSON, fill the snapshot and
 * report every problem as "file:line:col: path: message" without stopping at
 * the first one (`certgate check` and a failed reload show them all). Only a
 * snapshot without a single error is returned; then the decision index
 * (pol_index.c) and the JSON shown by GET /v1/policy are built from it.
 * Nothing here reads certificates or keys: the gateway loads those from the
 * absolute paths recorded in pol_file_t, quoting pol_file_where. */
static pol_snapshot_t *load(const char *config_path, cg_errors_t *errs, bool *complete)
{
	static const char *const keys[] = {"gateway", "admin",    "audit", "state",       "issuer",
	                                   "claims",  "services", "rules", "policy_file", NULL};
	loader_t ld = {.errs = errs};
	cg_jdoc_t *cfg = NULL, *pol = NULL;
	const cg_jdoc_t *pdoc;
	const json_t *root, *proot, *gw;
	char *cfg_dir = NULL;
	size_t n_gw_listen = 0;

	if (!(ld.snap = calloc(1, sizeof(*ld.snap)))) {
		cg_errors_add(errs, "%s: out of memory", config_path);
		return NULL;
	}
	atomic_init(&ld.snap->refs, 1);
	ld.snap->audit.on_failure = CG_AUDIT_REFUSE;
	ld.snap->audit.chain = true;

	if (!(cfg = cg_jdoc_load(config_path, errs))) {
		ld.failed = true;
		goto done;
	}
	root = cg_jdoc_root(cfg);
	if (!json_is_object(root)) {
		pol_ld_err(&ld, cfg, "", "expected a JSON object");
		goto done;
	}
	ld.snap->config_path = pol_ld_path_absolute(config_path);
	cfg_dir = ld.snap->config_path ? pol_ld_path_dir(ld.snap->config_path) : NULL;
	if (!cfg_dir) {
		cg_errors_add(errs, "%s: cannot make the path absolute", config_path);
		ld.failed = true;
		goto done;
	}
	pol_ld_check_keys(&ld, cfg, root, "", keys);
	pol = load_policy_file(&ld, cfg, root, config_path, cfg_dir);

	gw = json_object_get(root, "gateway");
	load_gateway(&ld, cfg, gw, cfg_dir);
	if (json_is_object(gw)) {
		const json_t *listen = json_object_get(gw, "listen");
		n_gw_listen = json_is_array(listen) ? json_array_size(listen) : listen ? 1 : 0;
	}
	load_admin(&ld, cfg, json_object_get(root, "admin"), cfg_dir);
	pol_ld_load_audit(&ld, cfg, json_object_get(root, "audit"), cfg_dir);
	pol_ld_load_state(&ld, cfg, json_object_get(root, "state"), cfg_dir);
	pol_ld_load_issuer(&ld, cfg, json_object_get(root, "issuer"), cfg_dir);

	/* claims and rules come from the policy file when there is one */
	if (json_object_get(root, "policy_file")) {
		pdoc = pol;
		proot = pol && json_is_object(cg_jdoc_root(pol)) ? cg_jdoc_root(pol) : NULL;
	} else {
		pdoc = cfg;
		proot = root;
	}
	if (pdoc && proot &&
	    !pol_claims_map_compile(&ld.snap->claims, pdoc, json_object_get(proot, "claims"), errs))
		ld.failed = true;

	pol_ld_load_services(&ld, cfg, json_object_get(root, "services"), cfg_dir);
	if (ld.snap->n_services > 0 && ld.svc_listen_given) {
		pol_ld_check_gateway_listen(&ld, cfg, gw);
		pol_ld_check_listen_overlap(&ld, cfg, n_gw_listen);
	}
	/* gateway.listen entries must not repeat */
	for (size_t i = 0; ld.gw_listen_ok && i < n_gw_listen; i++) {
		for (size_t j = 0; ld.gw_listen_ok[i] && j < i; j++) {
			if (ld.gw_listen_ok[j] &&
			    pol_ld_listen_conflict(&ld.gw_listen_ss[i], &ld.gw_listen_ss[j])) {
				char path[PATH_BUF];
				pol_ld_err(&ld, cfg, pol_ld_pidx(path, "gateway.listen", i),
				           "conflicts with gateway.listen[%zu]", j);
				break;
			}
		}
	}

	if (pdoc && proot)
		pol_ld_load_rules(&ld, pdoc, json_object_get(proot, "rules"));
	/* Nothing below reads the parsed trees (the index and the shown JSON
	 * are built from the snapshot; the hash from the texts): free them
	 * now, so what follows reuses their memory instead of growing the
	 * heap. The texts stay with the snapshot for positions in later
	 * errors. */
	if (pol != NULL)
		cg_jdoc_drop_root(pol);
	cg_jdoc_drop_root(cfg);

	if (ld.failed)
		goto done;
	if (!hash_docs(cfg, pol, ld.snap->sha256)) {
		cg_errors_add(errs, "%s: cannot compute sha256", config_path);
		ld.failed = true;
		goto done;
	}
	if (!(ld.snap->index = pol_index_create(ld.snap)) ||
	    !(ld.snap->shown = pol_show_snapshot(ld.snap))) {
		cg_errors_add(errs, "%s: out of memory", config_path);
		ld.failed = true;
	}

done:
	free(cfg_dir);
	free(ld.gw_listen_ss);
	free(ld.gw_listen_ok);
	free(ld.svc_listen_ss);
	free(ld.svc_listen_ok);
	free(ld.svc_listen_given);
	cg_strmap_destroy(ld.svc_by_name, NULL);
	/* the texts stay with the snapshot (file positions for later errors),
	 * the parsed trees do not (already dropped unless a step above failed;
	 * dropping twice is harmless) */
	if (pol != NULL)
		cg_jdoc_drop_root(pol);
	if (cfg != NULL)
		cg_jdoc_drop_root(cfg);
	ld.snap->doc_policy = pol;
	ld.snap->doc_config = cfg;
	*complete = !ld.failed;
	if (ld.failed && ld.snap->config_path == NULL) { /* not even a JSON object */
		snapshot_free(ld.snap);
		return NULL;
	}
	return ld.snap;
}

pol_snapshot_t *pol_snapshot_load(const char *config_path, cg_errors_t *errs)
{
	bool complete;
	pol_snapshot_t *snap = load(config_path, errs, &complete);
	if (snap != NULL && !complete) {
		snapshot_free(snap);
		return NULL;
	}
	return snap;
}

pol_snapshot_t *pol_snapshot_load_partial(const char *config_path, cg_errors_t *errs,
                                          bool *complete)
{
	return load(config_path, errs, complete);
}

pol_snapshot_t *pol_snapshot_ref(pol_snapshot_t *snap)
{
	if (snap)
		atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
	return snap;
}

void pol_snapshot_unref(pol_snapshot_t *snap)
{
	if (snap && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
		snapshot_free(snap);
}

const pol_service_t *pol_snapshot_service(const pol_snapshot_t *snap, const char *name)
{
	if (!snap || !name)
		return NULL;
	if (snap->index)
		return pol_index_service(snap->index, snap, name);
	for (size_t i = 0; i < snap->n_services; i++)
		if (strcasecmp(snap->services[i].name, name) == 0)
			return &snap->services[i];
	return NULL;
}

const pol_service_t *pol_snapshot_service_by_sni(const pol_snapshot_t *snap, const char *sni)
{
	if (!snap || !sni)
		return NULL;
	for (size_t i = 0; i < snap->n_services; i++) {
		const pol_service_t *svc = &snap->services[i];
		if (strcasecmp(svc->name, sni) == 0)
			return svc;
		for (size_t k = 0; k < svc->n_sni; k++)
			if (strcasecmp(svc->sni[k], sni) == 0)
				return svc;
	}
	return NULL;
}
