/* What GET /v1/policy (and `certgate explain`) show of a snapshot: the
 * effective configuration as JSON, every default filled in, durations as
 * text ("30s"), file paths absolute. Only paths are shown, never what the
 * files hold, so no key material can leak through the admin API.
 *
 * Built once by pol_snapshot_load from the compiled snapshot (not from the
 * input JSON), so it shows what is actually in force. */
#include "pol_show.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "cg_duration.h"
#include "cg_time.h"
#include "cg_tz.h"

typedef struct shower {
	bool ok;
} shower_t;

/* keys are this file's own ASCII literals: no UTF-8 check needed */
static void put(shower_t *sh, json_t *obj, const char *key, json_t *value)
{
	if (!value || json_object_set_new_nocheck(obj, key, value) != 0)
		sh->ok = false;
}

static void push(shower_t *sh, json_t *arr, json_t *value)
{
	if (!value || json_array_append_new(arr, value) != 0)
		sh->ok = false;
}

static json_t *show_duration(uint64_t ms)
{
	char buf[32];
	cg_duration_format(ms, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *show_hostport(const cg_hostport_t *hp)
{
	char buf[CG_HOST_MAX + 16];
	if (strchr(hp->host, ':'))
		snprintf(buf, sizeof(buf), "[%s]:%u", hp->host, (unsigned)hp->port);
	else
		snprintf(buf, sizeof(buf), "%s:%u", hp->host, (unsigned)hp->port);
	return json_string(buf);
}

static json_t *show_cidr(const cg_cidr_t *c)
{
	char ip[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];
	if (!inet_ntop(c->family, c->addr, ip, sizeof(ip)))
		return NULL;
	snprintf(buf, sizeof(buf), "%s/%u", ip, c->prefix);
	return json_string(buf);
}

/* v holds strings the loader copied from jansson, which only hands out
 * valid UTF-8 without NUL: checking them again is wasted on 10,000 rules. */
static json_t *show_strings(shower_t *sh, char *const *v, size_t n)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++)
		push(sh, arr, json_string_nocheck(v[i]));
	return arr;
}

static json_t *show_cidrs(shower_t *sh, const cg_cidr_t *v, size_t n)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++)
		push(sh, arr, show_cidr(&v[i]));
	return arr;
}

static json_t *show_sources(shower_t *sh, const pol_sources_t *list)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < list->count; i++)
		push(sh, arr, json_string(list->items[i].text));
	return arr;
}

static void put_file(shower_t *sh, json_t *obj, const char *key, const pol_file_t *file)
{
	if (file->path)
		put(sh, obj, key, json_string(file->path));
}

static json_t *show_gateway(shower_t *sh, const pol_gateway_t *g)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	put(sh, o, "listen", show_strings(sh, g->listen, g->n_listen));
	put_file(sh, o, "cert", &g->cert);
	put_file(sh, o, "key", &g->key);
	put_file(sh, o, "client_ca", &g->client_ca);
	put_file(sh, o, "crl", &g->crl);
	put(sh, o, "crl_check",
	    json_string(g->crl_check == POL_CRL_CHECK_LEAF  ? "leaf"
	                : g->crl_check == POL_CRL_CHECK_ALL ? "all"
	                                                    : "chain"));
	put(sh, o, "max_cert_lifetime", show_duration(g->max_cert_lifetime_ms));
	put(sh, o, "clock_skew", show_duration(g->clock_skew_ms));
	put(sh, o, "handshake_timeout", show_duration(g->handshake_timeout_ms));
	put(sh, o, "idle_timeout", show_duration(g->idle_timeout_ms));
	put(sh, o, "max_connections", json_integer(g->max_connections));
	put(sh, o, "max_sessions_per_user", json_integer(g->max_sessions_per_user));
	put(sh, o, "max_handshakes_per_source", json_integer(g->max_handshakes_per_source));
	put(sh, o, "proxy_protocol_from",
	    show_cidrs(sh, g->proxy_protocol_from, g->n_proxy_protocol_from));
	put(sh, o, "verify_depth", json_integer(g->verify_depth));
	put(sh, o, "verify_cache", json_boolean(g->verify_cache));
	put(sh, o, "workers", json_integer(g->workers));
	return o;
}

static json_t *show_service(shower_t *sh, const pol_service_t *svc)
{
	json_t *o = json_object(), *up;
	if (!o)
		return NULL;
	put(sh, o, "name", json_string(svc->name));
	put(sh, o, "sni", show_strings(sh, svc->sni, svc->n_sni));
	if (svc->listen)
		put(sh, o, "listen", json_string(svc->listen));
	if ((up = json_array()) != NULL)
		for (size_t i = 0; i < svc->n_upstream; i++)
			push(sh, up, show_hostport(&svc->upstream[i]));
	put(sh, o, "upstream", up);
	put(sh, o, "mode", json_string(svc->mode == POL_MODE_POSTGRES ? "postgres" : "tunnel"));
	if (svc->description)
		put(sh, o, "description", json_string(svc->description));
	if (svc->client_port)
		put(sh, o, "client_port", json_integer(svc->client_port));
	put(sh, o, "require_inner_tls", json_boolean(svc->require_inner_tls));
	put(sh, o, "connect_timeout", show_duration(svc->connect_timeout_ms));
	put(sh, o, "audit_queries", json_boolean(svc->audit_queries));
	if (svc->mode == POL_MODE_POSTGRES)
		put(sh, o, "function_calls",
		    json_string(svc->function_calls == POL_FCALL_REFUSE ? "refuse" : "audit"));
	if (svc->has_upstream_tls) {
		json_t *t = json_object();
		if (t) {
			put_file(sh, t, "ca", &svc->upstream_tls.ca);
			put(sh, t, "server_name", json_string(svc->upstream_tls.server_name));
			put_file(sh, t, "client_ca_cert", &svc->upstream_tls.client_ca_cert);
			put_file(sh, t, "client_ca_key", &svc->upstream_tls.client_ca_key);
		}
		put(sh, o, "upstream_tls", t);
	}
	return o;
}

static json_t *show_when(shower_t *sh, const pol_window_t *w)
{
	json_t *o = json_object();
	char buf[CG_RFC3339_LEN];
	if (!o)
		return NULL;
	if (w->has_days) {
		const char *names[7];
		size_t n = pol_window_day_names(w, names);
		json_t *days = json_array();
		for (size_t i = 0; days && i < n; i++)
			push(sh, days, json_string_nocheck(names[i]));
		put(sh, o, "days", days);
	}
	if (w->has_hours) {
		char hours[12];
		pol_window_hours(w, hours);
		put(sh, o, "hours", json_string_nocheck(hours));
	}
	if (w->tz != NULL)
		put(sh, o, "tz", json_string_nocheck(cg_tz_name(w->tz)));
	if (w->has_from) {
		cg_rfc3339_ms(w->from_ms, buf);
		put(sh, o, "from", json_string_nocheck(buf));
	}
	if (w->has_until) {
		cg_rfc3339_ms(w->until_ms, buf);
		put(sh, o, "until", json_string_nocheck(buf));
	}
	return o;
}

static json_t *show_rule(shower_t *sh, const pol_rule_t *r)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	put(sh, o, "name", json_string_nocheck(r->name)); /* from jansson too */
	put(sh, o, "effect", json_string(r->allow ? "allow" : "deny"));
	if (r->permissive)
		put(sh, o, "mode", json_string("permissive"));
	if (r->requires_approval)
		put(sh, o, "requires_approval", json_true());
	put(sh, o, "services", show_strings(sh, r->services, r->n_services));
	if (r->n_users)
		put(sh, o, "users", show_strings(sh, r->users, r->n_users));
	if (r->n_groups)
		put(sh, o, "groups", show_strings(sh, r->groups, r->n_groups));
	if (r->n_devices)
		put(sh, o, "devices", show_strings(sh, r->devices, r->n_devices));
	if (r->min_trust != POL_TRUST_NONE)
		put(sh, o, "min_trust", json_string(pol_trust_name(r->min_trust)));
	if (r->n_sources)
		put(sh, o, "sources", show_cidrs(sh, r->sources, r->n_sources));
	if (r->n_db_users)
		put(sh, o, "db_users", show_strings(sh, r->db_users, r->n_db_users));
	if (r->n_db_names)
		put(sh, o, "db_names", show_strings(sh, r->db_names, r->n_db_names));
	if (r->when)
		put(sh, o, "when", show_when(sh, r->when));
	return o;
}

json_t *pol_show_snapshot(const pol_snapshot_t *snap)
{
	shower_t sh = {.ok = true};
	json_t *root = json_object(), *arr, *claims;

	if (!root)
		return NULL;
	put(&sh, root, "gateway", show_gateway(&sh, &snap->gateway));
	if (snap->admin.enabled) {
		json_t *a = json_object();
		if (a) {
			put(&sh, a, "listen", json_string(snap->admin.listen));
			put_file(&sh, a, "token_file", &snap->admin.token_file);
		}
		put(&sh, root, "admin", a);
	}
	{
		json_t *a = json_object();
		if (a) {
			put(&sh, a, "path", json_string(snap->audit.path));
			put(&sh, a, "on_failure",
			    json_string(snap->audit.on_failure == CG_AUDIT_CONTINUE ? "continue"
			                                                            : "refuse"));
			put(&sh, a, "chain", json_boolean(snap->audit.chain));
			if (snap->audit.state != NULL)
				put(&sh, a, "state", json_string(snap->audit.state));
			const pol_syslog_cfg_t *sl = &snap->audit.syslog;
			if (sl->transport != POL_SYSLOG_NONE)
				put(&sh, a, "syslog",
				    json_pack("{s:s, s:s, s:s}", "address", sl->address, "facility",
				              sl->facility_name, "format", "rfc5424"));
		}
		put(&sh, root, "audit", a);
	}
	if (snap->state.enabled) {
		json_t *a = json_object();
		if (a) {
			put(&sh, a, "backend", json_string(snap->state.backend));
			if (snap->state.dir != NULL)
				put(&sh, a, "dir", json_string(snap->state.dir));
			/* the connection string as libpq reads it, its password masked */
			if (snap->state.dsn_shown != NULL)
				put(&sh, a, "dsn", json_string(snap->state.dsn_shown));
			if (snap->state.schema != NULL)
				put(&sh, a, "schema", json_string(snap->state.schema));
		}
		put(&sh, root, "state", a);
	}
	if ((claims = json_object()) != NULL) {
		put(&sh, claims, "user", show_sources(&sh, &snap->claims.user));
		put(&sh, claims, "groups", show_sources(&sh, &snap->claims.groups));
		put(&sh, claims, "device_id", show_sources(&sh, &snap->claims.device_id));
		put(&sh, claims, "device_trust", show_sources(&sh, &snap->claims.device_trust));
	}
	put(&sh, root, "claims", claims);
	if ((arr = json_array()) != NULL)
		for (size_t i = 0; i < snap->n_services; i++)
			push(&sh, arr, show_service(&sh, &snap->services[i]));
	put(&sh, root, "services", arr);
	if ((arr = json_array()) != NULL)
		for (size_t i = 0; i < snap->n_rules; i++)
			push(&sh, arr, show_rule(&sh, &snap->rules[i]));
	put(&sh, root, "rules", arr);
	if (snap->policy_path)
		put(&sh, root, "policy_file", json_string(snap->policy_path));
	if (!sh.ok) {
		json_decref(root);
		return NULL;
	}
	return root;
}
