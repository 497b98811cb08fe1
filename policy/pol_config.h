/* The configuration in force: gateway, admin, audit, services, claims and
 * rules, compiled from JSON into an immutable, refcounted snapshot. A reload
 * builds a new snapshot beside the old one; nothing here changes after load. */
#ifndef POL_CONFIG_H
#define POL_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cg_addr.h"
#include "cg_audit.h"
#include "cg_errors.h"
#include "cg_json.h"
#include "pol_claims.h"
#include "pol_trust.h"

/* A file named by the configuration: absolute (relative paths resolve against
 * the folder of the file naming them) plus where it was named, so loaders of
 * certificates and keys can report "certgate.json:5:13: gateway.cert: ...".
 * The position is worked out only when asked for (pol_file_where). */
typedef struct pol_file {
	char *path;           /* NULL when the key is absent */
	char *key;            /* where it was named: "gateway.cert" */
	const cg_jdoc_t *doc; /* in which document (kept by the snapshot) */
} pol_file_t;

/* "certgate.json:5:13: gateway.cert", for error messages about the file. */
void pol_file_where(const pol_file_t *file, char *buf, size_t len);

typedef enum { POL_MODE_TUNNEL = 0, POL_MODE_POSTGRES } pol_mode_t;

typedef struct pol_upstream_tls {
	pol_file_t ca;             /* verifies the upstream server certificate */
	char *server_name;         /* verify-full host name (and SNI) */
	pol_file_t client_ca_cert; /* signs the minted per-db-user certificates */
	pol_file_t client_ca_key;
} pol_upstream_tls_t;

typedef struct pol_service {
	char *name;
	char **sni; /* extra SNI names */
	size_t n_sni;
	char *listen; /* own listener "host:port" or NULL */
	cg_hostport_t listen_addr;
	cg_hostport_t *upstream;
	size_t n_upstream;
	pol_mode_t mode;
	bool require_inner_tls;
	uint64_t connect_timeout_ms; /* default 5s */
	bool audit_queries;          /* postgres mode */
	bool has_upstream_tls;
	pol_upstream_tls_t upstream_tls; /* postgres mode */
} pol_service_t;

typedef struct pol_gateway {
	char **listen; /* as written */
	cg_hostport_t *listen_addr;
	size_t n_listen;
	pol_file_t cert, key, client_ca, crl;
	uint64_t max_cert_lifetime_ms;  /* default 24h */
	uint64_t clock_skew_ms;         /* default 30s */
	uint64_t handshake_timeout_ms;  /* default 10s */
	uint64_t idle_timeout_ms;       /* default 1h; 0 = none */
	uint32_t max_connections;       /* default 10000 */
	uint32_t max_sessions_per_user; /* default 0 = no limit */
	uint32_t verify_depth;          /* default 4: longest accepted client chain */
	bool verify_cache;              /* default true: remember verified chains */
	cg_cidr_t *proxy_protocol_from;
	size_t n_proxy_protocol_from;
} pol_gateway_t;

typedef struct pol_admin {
	bool enabled; /* the "admin" object is present */
	char *listen; /* default "127.0.0.1:9090" */
	cg_hostport_t listen_addr;
	pol_file_t token_file;
} pol_admin_t;

typedef struct pol_audit_cfg {
	char *path; /* default "-" (stdout); absolute otherwise */
	cg_audit_on_failure_t on_failure;
} pol_audit_cfg_t;

/* glob lists: NULL/0 means "condition not named" (matches anything). */
typedef struct pol_rule {
	char *name;
	bool allow; /* effect */
	char **services;
	size_t n_services; /* "*" allowed */
	char **users;
	size_t n_users; /* fnmatch globs, case-insensitive */
	char **groups;
	size_t n_groups; /* exact, any of */
	char **devices;
	size_t n_devices;      /* exact device ids */
	pol_trust_t min_trust; /* POL_TRUST_NONE = not named */
	cg_cidr_t *sources;
	size_t n_sources;
	char **db_users;
	size_t n_db_users; /* globs with {user} / {user.local} */
	char **db_names;
	size_t n_db_names;
} pol_rule_t;

typedef struct pol_snapshot {
	atomic_int refs;
	char *config_path; /* absolute */
	char *policy_path; /* absolute, NULL when claims/rules are inline */
	char sha256[65];   /* hex of config bytes followed by policy bytes */
	pol_gateway_t gateway;
	pol_admin_t admin;
	pol_audit_cfg_t audit;
	pol_claims_map_t claims;
	pol_service_t *services;
	size_t n_services;
	pol_rule_t *rules;
	size_t n_rules;
	json_t *shown;         /* the configuration as GET /v1/policy shows it (no key material) */
	void *index;           /* private to policy.c (decision index) */
	cg_jdoc_t *doc_config; /* the texts, for positions in later error messages */
	cg_jdoc_t *doc_policy; /* NULL without policy_file */
} pol_snapshot_t;

/* Loads and validates config_path (and its policy_file). Every error found is
 * added to errs as "file:line:col: path: message"; returns NULL if any. Only
 * reads JSON: certificates and keys are loaded by the gateway. */
pol_snapshot_t *pol_snapshot_load(const char *config_path, cg_errors_t *errs);

/* Like pol_snapshot_load, but when the document parses and only some values
 * are wrong, returns what could be read with *complete = false: enough for
 * `certgate check` to go on and load every file the configuration names, so
 * it reports every error at once. Never put such a snapshot in service. */
pol_snapshot_t *pol_snapshot_load_partial(const char *config_path, cg_errors_t *errs,
                                          bool *complete);

pol_snapshot_t *pol_snapshot_ref(pol_snapshot_t *snap);
void pol_snapshot_unref(pol_snapshot_t *snap); /* accepts NULL */

const pol_service_t *pol_snapshot_service(const pol_snapshot_t *snap, const char *name);
/* By TLS server name: a service name or one of its sni names, ASCII
 * case-insensitive. */
const pol_service_t *pol_snapshot_service_by_sni(const pol_snapshot_t *snap, const char *sni);

#endif
