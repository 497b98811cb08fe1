/* The "services" section of certgate.json, and the checks between listen
 * addresses: a service's own listen against the other services' and against
 * gateway.listen, and gateway.listen against itself (pol_ld_listen_conflict).
 * The name POL_CATALOG_SNI is the user's catalog's (docs/login.md): no
 * service may take it, as a name or an SNI name. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "cg_strmap.h"
#include "pol_claims.h"
#include "pol_loader.h"

/* ---------------------------------------------------------------------- */
/* services                                                                 */

/* ASCII lower case copy (truncated to PATH_BUF) for case-insensitive keys. */
static void ascii_lower(char *dst, const char *src)
{
	size_t i = 0;
	for (; src[i] && i < PATH_BUF - 1; i++)
		dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] - 'A' + 'a') : src[i];
	dst[i] = '\0';
}

/* Service and server names: [A-Za-z0-9._-]+, at most 253 bytes (a DNS name). */
static bool is_service_name(const char *s)
{
	if (!*s || strlen(s) > 253)
		return false;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static void load_upstream_tls(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj,
                              const char *spath, const char *dir, pol_service_t *svc)
{
	static const char *const keys[] = {"ca", "server_name", "client_ca_cert", "client_ca_key",
	                                   NULL};
	char path[PATH_BUF];
	const char *server_name;

	pol_ld_pkey(path, spath, "upstream_tls");
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, path, "expected an object");
		return;
	}
	svc->has_upstream_tls = true;
	pol_ld_check_keys(ld, doc, obj, path, keys);
	pol_ld_get_file(ld, doc, obj, path, "ca", true, dir, &svc->upstream_tls.ca);
	if (pol_ld_get_string(ld, doc, obj, path, "server_name", true, &server_name) &&
	    server_name) {
		char kpath[PATH_BUF];
		if (pol_ld_has_control(server_name) || strchr(server_name, ' '))
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "server_name"),
			           "expected a host name");
		else
			svc->upstream_tls.server_name = pol_ld_xstrdup(ld, server_name);
	}
	pol_ld_get_file(ld, doc, obj, path, "client_ca_cert", true, dir,
	                &svc->upstream_tls.client_ca_cert);
	pol_ld_get_file(ld, doc, obj, path, "client_ca_key", true, dir,
	                &svc->upstream_tls.client_ca_key);
}

static void load_service(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, size_t idx,
                         const char *dir, pol_service_t *svc)
{
	static const char *const keys[] = {"name",
	                                   "sni",
	                                   "listen",
	                                   "upstream",
	                                   "mode",
	                                   "require_inner_tls",
	                                   "connect_timeout",
	                                   "audit_queries",
	                                   "function_calls",
	                                   "upstream_tls",
	                                   "description",
	                                   "client_port",
	                                   NULL};
	char path[PATH_BUF], kpath[PATH_BUF], ipath[PATH_BUF];
	const char *name, *mode, *fcalls = NULL;
	const json_t *value, *up;
	bool mode_ok = true;

	svc->connect_timeout_ms = 5000;
	pol_ld_pidx(path, "services", idx);
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, path, "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, path, keys);

	if (pol_ld_get_string(ld, doc, obj, path, "name", true, &name) && name) {
		if (!is_service_name(name))
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "name"),
			           "expected letters, digits, '.', '_' or '-' (at most 253 bytes)");
		else
			svc->name = pol_ld_xstrdup(ld, name);
	}
	value = json_object_get(obj, "sni");
	if (!(json_is_array(value) && json_array_size(value) == 0)) /* [] = none */
		pol_ld_get_string_list(ld, doc, obj, path, "sni", is_service_name,
		                       "expected a server name", &svc->sni, &svc->n_sni);

	if ((value = json_object_get(obj, "listen")) != NULL) {
		ld->svc_listen_given[idx] = true;
		pol_ld_pkey(kpath, path, "listen");
		if (pol_ld_parse_listen(ld, doc, value, kpath, &svc->listen_addr,
		                        &ld->svc_listen_ss[idx])) {
			ld->svc_listen_ok[idx] = true;
			svc->listen = pol_ld_xstrdup(ld, json_string_value(value));
		}
	}

	up = json_object_get(obj, "upstream");
	pol_ld_pkey(kpath, path, "upstream");
	if (!up) {
		pol_ld_err(ld, doc, path, "missing required key \"upstream\"");
	} else if (json_is_string(up)) {
		svc->upstream = pol_ld_xcalloc(ld, 1, sizeof(*svc->upstream));
		if (svc->upstream) {
			if (cg_hostport_parse(json_string_value(up), &svc->upstream[0]))
				svc->n_upstream = 1;
			else
				pol_ld_err(ld, doc, kpath, "%s", pol_ld_expect_hostport);
		}
	} else if (json_is_array(up) && json_array_size(up) > 0) {
		svc->upstream = pol_ld_xcalloc(ld, json_array_size(up), sizeof(*svc->upstream));
		for (size_t i = 0; svc->upstream && i < json_array_size(up); i++) {
			const json_t *item = json_array_get(up, i);
			if (json_is_string(item) &&
			    cg_hostport_parse(json_string_value(item),
			                      &svc->upstream[svc->n_upstream]))
				svc->n_upstream++;
			else
				pol_ld_err(ld, doc, pol_ld_pidx(ipath, kpath, i), "%s",
				           pol_ld_expect_hostport);
		}
	} else {
		pol_ld_err(ld, doc, kpath, "expected \"host:port\" or a non-empty array of them");
	}

	svc->mode = POL_MODE_TUNNEL;
	if (pol_ld_get_string(ld, doc, obj, path, "mode", false, &mode) && mode) {
		if (strcmp(mode, "tunnel") == 0)
			svc->mode = POL_MODE_TUNNEL;
		else if (strcmp(mode, "postgres") == 0)
			svc->mode = POL_MODE_POSTGRES;
		else
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "mode"),
			           "expected \"tunnel\" or \"postgres\"");
		mode_ok = svc->mode == POL_MODE_POSTGRES || strcmp(mode, "tunnel") == 0;
	} else if (json_object_get(obj, "mode")) {
		mode_ok = false;
	}
	const char *description = NULL;
	if (pol_ld_get_string(ld, doc, obj, path, "description", false, &description) &&
	    description) {
		if (*description == '\0' || strlen(description) > POL_DESCRIPTION_MAX ||
		    !pol_claims_text_ok(description, strlen(description)))
			pol_ld_err(
			        ld, doc, pol_ld_pkey(kpath, path, "description"),
			        "expected 1 to %d bytes of UTF-8 text without control characters",
			        POL_DESCRIPTION_MAX);
		else
			svc->description = pol_ld_xstrdup(ld, description);
	}
	pol_ld_get_uint(ld, doc, obj, path, "client_port", 1, 65535,
	                "expected a port number from 1 to 65535", &svc->client_port);
	pol_ld_get_bool(ld, doc, obj, path, "require_inner_tls", false, &svc->require_inner_tls);
	pol_ld_get_duration(ld, doc, obj, path, "connect_timeout", false, &svc->connect_timeout_ms);
	pol_ld_get_bool(ld, doc, obj, path, "audit_queries", false, &svc->audit_queries);
	if (pol_ld_get_string(ld, doc, obj, path, "function_calls", false, &fcalls) && fcalls) {
		if (strcmp(fcalls, "audit") == 0)
			svc->function_calls = POL_FCALL_AUDIT;
		else if (strcmp(fcalls, "refuse") == 0)
			svc->function_calls = POL_FCALL_REFUSE;
		else
			pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "function_calls"),
			           "expected \"audit\" or \"refuse\"");
	}
	if (!mode_ok)
		return; /* the mode-dependent checks below would only add noise */

	/* settings that would be silently ignored in the other mode are errors:
	 * an operator who wrote them expects them to take effect */
	if (svc->mode == POL_MODE_POSTGRES && svc->require_inner_tls)
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "require_inner_tls"),
		           "require_inner_tls applies only to tunnel-mode services");
	if (svc->mode == POL_MODE_TUNNEL && svc->audit_queries)
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "audit_queries"),
		           "audit_queries applies only to postgres-mode services");
	if (svc->mode == POL_MODE_TUNNEL && fcalls != NULL)
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "function_calls"),
		           "function_calls applies only to postgres-mode services");

	value = json_object_get(obj, "upstream_tls");
	if (value && svc->mode != POL_MODE_POSTGRES)
		pol_ld_err(ld, doc, pol_ld_pkey(kpath, path, "upstream_tls"),
		           "upstream_tls applies only to postgres-mode services");
	else if (value)
		load_upstream_tls(ld, doc, value, path, dir, svc);
	else if (svc->mode == POL_MODE_POSTGRES)
		pol_ld_err(ld, doc, path, "missing required key \"upstream_tls\" (postgres mode)");
}

/* Two listen addresses that cannot both be bound: equal, or the same port
 * with the wildcard address of the same family. */
bool pol_ld_listen_conflict(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
		                                      x->sin_addr.s_addr == htonl(INADDR_ANY) ||
		                                      y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		       (memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 ||
		        IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
		        IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
	}
	return false;
}

void pol_ld_load_services(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr, const char *dir)
{
	pol_snapshot_t *snap = ld->snap;
	char path[PATH_BUF], other[PATH_BUF];
	cg_strmap_t *names;
	size_t n;

	if (!arr) {
		pol_ld_err(ld, doc, "", "missing required key \"services\"");
		return;
	}
	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		pol_ld_err(ld, doc, "services", "expected a non-empty array of services");
		return;
	}
	n = json_array_size(arr);
	snap->services = pol_ld_xcalloc(ld, n, sizeof(*snap->services));
	ld->svc_listen_ss = pol_ld_xcalloc(ld, n, sizeof(*ld->svc_listen_ss));
	ld->svc_listen_ok = pol_ld_xcalloc(ld, n, sizeof(*ld->svc_listen_ok));
	ld->svc_listen_given = pol_ld_xcalloc(ld, n, sizeof(*ld->svc_listen_given));
	if (!snap->services || !ld->svc_listen_ss || !ld->svc_listen_ok || !ld->svc_listen_given)
		return;
	snap->n_services = n;
	for (size_t i = 0; i < n; i++)
		load_service(ld, doc, json_array_get(arr, i), i, dir, &snap->services[i]);

	/* Names and SNI names share one case-insensitive namespace: a TLS
	 * server name must lead to exactly one service. */
	if (!(names = cg_strmap_create()) || !(ld->svc_by_name = cg_strmap_create())) {
		cg_strmap_destroy(names, NULL);
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const pol_service_t *svc = &snap->services[i];
		char key[PATH_BUF];
		uintptr_t j;

		if (!svc->name)
			continue;
		ascii_lower(key, svc->name);
		if (strcmp(key, POL_CATALOG_SNI) == 0) {
			pol_ld_pidx(path, "services", i);
			pol_ld_err(ld, doc, pol_ld_pkey(other, path, "name"),
			           "\"%s\" is reserved for the user's catalog (certgate services)",
			           svc->name);
			continue;
		}
		if ((j = (uintptr_t)cg_strmap_get(names, key)) != 0) {
			pol_ld_pidx(path, "services", i);
			pol_ld_err(ld, doc, pol_ld_pkey(other, path, "name"),
			           "duplicate service name \"%s\" (also services[%zu])", svc->name,
			           (size_t)(j - 1));
			continue;
		}
		cg_strmap_put(names, key, (void *)(uintptr_t)(i + 1));
		cg_strmap_put(ld->svc_by_name, svc->name, (void *)(uintptr_t)(i + 1));
	}
	for (size_t i = 0; i < n; i++) {
		const pol_service_t *svc = &snap->services[i];
		for (size_t k = 0; k < svc->n_sni; k++) {
			char key[PATH_BUF], spath[PATH_BUF];
			uintptr_t j;

			ascii_lower(key, svc->sni[k]);
			if (strcmp(key, POL_CATALOG_SNI) == 0) {
				pol_ld_pidx(path, "services", i);
				pol_ld_pkey(spath, path, "sni");
				pol_ld_err(ld, doc, pol_ld_pidx(other, spath, k),
				           "\"%s\" is reserved for the user's catalog (certgate "
				           "services)",
				           svc->sni[k]);
				continue;
			}
			if ((j = (uintptr_t)cg_strmap_get(names, key)) == 0) {
				cg_strmap_put(names, key, (void *)(uintptr_t)(i + 1));
				continue;
			}
			pol_ld_pidx(path, "services", i);
			pol_ld_pkey(spath, path, "sni");
			pol_ld_err(ld, doc, pol_ld_pidx(other, spath, k),
			           "server name \"%s\" already leads to service \"%s\"",
			           svc->sni[k], snap->services[j - 1].name);
		}
	}
	cg_strmap_destroy(names, NULL);

	/* one connector listens on every client_port: no two services share one */
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < i && snap->services[i].client_port != 0; j++) {
			if (snap->services[j].client_port == snap->services[i].client_port) {
				pol_ld_pidx(path, "services", i);
				pol_ld_err(ld, doc, pol_ld_pkey(other, path, "client_port"),
				           "port %u is also the client_port of services[%zu]",
				           (unsigned)snap->services[i].client_port, j);
				break;
			}
		}
	}

	/* own listeners: distinct from each other and from gateway.listen */
	for (size_t i = 0; i < n; i++) {
		bool reported = false;
		if (!ld->svc_listen_ok[i])
			continue;
		pol_ld_pidx(path, "services", i);
		pol_ld_pkey(other, path, "listen");
		for (size_t j = 0; j < i && !reported; j++) {
			if (ld->svc_listen_ok[j] &&
			    pol_ld_listen_conflict(&ld->svc_listen_ss[i], &ld->svc_listen_ss[j])) {
				pol_ld_err(ld, doc, other,
				           "conflicts with the listen of services[%zu]", j);
				reported = true;
			}
		}
	}
}

/* service listen vs gateway.listen; needs the count of gateway.listen as
 * written (entries may be invalid). */
void pol_ld_check_listen_overlap(loader_t *ld, const cg_jdoc_t *doc, size_t n_gw)
{
	pol_snapshot_t *snap = ld->snap;
	char path[PATH_BUF], lpath[PATH_BUF];

	if (!ld->svc_listen_ok || !ld->gw_listen_ok)
		return;
	for (size_t i = 0; i < snap->n_services; i++) {
		if (!ld->svc_listen_ok[i])
			continue;
		for (size_t j = 0; j < n_gw; j++) {
			if (ld->gw_listen_ok[j] &&
			    pol_ld_listen_conflict(&ld->svc_listen_ss[i], &ld->gw_listen_ss[j])) {
				pol_ld_pidx(path, "services", i);
				pol_ld_err(ld, doc, pol_ld_pkey(lpath, path, "listen"),
				           "conflicts with gateway.listen[%zu]", j);
				break;
			}
		}
	}
}

/* gateway.listen may be empty or absent only when every service listens on
 * its own address. */
void pol_ld_check_gateway_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw)
{
	pol_snapshot_t *snap = ld->snap;
	const json_t *listen = gw ? json_object_get(gw, "listen") : NULL;
	const char *lonely = NULL;

	if (!json_is_object(gw))
		return;
	if (listen && !(json_is_array(listen) && json_array_size(listen) == 0))
		return; /* non-empty (or a type error already reported) */
	for (size_t i = 0; i < snap->n_services && !lonely; i++)
		if (!ld->svc_listen_given[i])
			lonely = snap->services[i].name ? snap->services[i].name : "?";
	if (!lonely)
		return;
	if (listen)
		pol_ld_err(ld, doc, "gateway.listen",
		           "may be empty only when every service has its own listen (service "
		           "\"%s\" has "
		           "none)",
		           lonely);
	else
		pol_ld_err(
		        ld, doc, "gateway",
		        "missing required key \"listen\" (service \"%s\" has no listen of its own)",
		        lonely);
}
