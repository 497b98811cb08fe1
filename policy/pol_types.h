/* The data types of the configuration in force: gateway, admin, audit,
 * services, claims and rules as a snapshot holds them. Types only: loading,
 * reference counting and lookups are pol_config.h's. */
#ifndef POL_TYPES_H
#define POL_TYPES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cg_addr.h"
#include "cg_audit.h"
#include "cg_json.h"
#include "cg_strmap.h"
#include "pol_claims.h"
#include "pol_trust.h"
#include "pol_window.h"

/* A file named by the configuration: absolute (relative paths resolve against
 * the folder of the file naming them) plus where it was named, so loaders of
 * certificates and keys can report "certgate.json:5:13: gateway.cert: ...".
 * The position is worked out only when asked for (pol_file_where). */
typedef struct pol_file {
	char *path;           /* NULL when the key is absent */
	char *key;            /* where it was named: "gateway.cert" */
	const cg_jdoc_t *doc; /* in which document (kept by the snapshot) */
} pol_file_t;

typedef enum { POL_MODE_TUNNEL = 0, POL_MODE_POSTGRES } pol_mode_t;

/* The TLS server name of the user's catalog on the shared listeners
 * (certgate services, docs/login.md): reserved, no service may take it. */
#define POL_CATALOG_SNI "certgate-catalog"
/* Longest services[].description, in bytes. */
#define POL_DESCRIPTION_MAX 256

/* gateway.crl_check: which certificates of a client's path are checked
 * against gateway.crl. chain: each one whose issuer has a CRL there; leaf:
 * the login certificate only (its issuer must have one); all: every one
 * (every CA of the path must have one). */
typedef enum { POL_CRL_CHECK_CHAIN = 0, POL_CRL_CHECK_LEAF, POL_CRL_CHECK_ALL } pol_crl_check_t;

typedef struct pol_upstream_tls {
	pol_file_t ca;             /* verifies the upstream server certificate */
	char *server_name;         /* verify-full host name (and SNI) */
	pol_file_t client_ca_cert; /* signs the minted per-db-user certificates */
	pol_file_t client_ca_key;
} pol_upstream_tls_t;

/* What a postgres-mode service does with FunctionCall ('F') messages,
 * which run a function by OID with no SQL text. */
typedef enum {
	POL_FCALL_AUDIT = 0, /* a query event (kind function_call) when audit_queries */
	POL_FCALL_REFUSE,    /* end the session with a FATAL */
} pol_fcall_t;

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
	pol_fcall_t function_calls;  /* postgres mode; default audit */
	bool has_upstream_tls;
	pol_upstream_tls_t upstream_tls; /* postgres mode */
	/* what the user's catalog shows (certgate services) */
	char *description;    /* NULL when not given */
	uint32_t client_port; /* the connector's local port; 0 = not given */
} pol_service_t;

typedef struct pol_gateway {
	char **listen; /* as written */
	cg_hostport_t *listen_addr;
	size_t n_listen;
	pol_file_t cert, key, client_ca, crl;
	pol_crl_check_t crl_check;      /* default chain */
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
	/* connections from one source still in their handshake; default
	 * max(16, max_connections / 8); 0 = no limit */
	uint32_t max_handshakes_per_source;
	/* event loops (threads) that run sessions; default: the CPUs this
	 * process may run on (at most POL_MAX_WORKERS) */
	uint32_t workers;
} pol_gateway_t;

#define POL_MAX_WORKERS 256

/* The CPUs this process may run on (its affinity mask), 1 to
 * POL_MAX_WORKERS: gateway.workers' default. */
uint32_t pol_cpu_count(void);

typedef struct pol_admin {
	bool enabled; /* the "admin" object is present */
	char *listen; /* default "127.0.0.1:9090" */
	cg_hostport_t listen_addr;
	pol_file_t token_file;
} pol_admin_t;

/* audit.syslog: a copy of every audit line to a syslog receiver. */
typedef enum {
	POL_SYSLOG_NONE = 0, /* no "syslog" key */
	POL_SYSLOG_UNIX,     /* a unix datagram socket ("unix:/dev/log") */
	POL_SYSLOG_UDP,
	POL_SYSLOG_TCP, /* octet-counted framing (RFC 6587) */
} pol_syslog_transport_t;

typedef struct pol_syslog_cfg {
	pol_syslog_transport_t transport;
	char *address;             /* as configured: "udp:10.0.0.9:514" */
	char *unix_path;           /* POL_SYSLOG_UNIX */
	cg_hostport_t host;        /* POL_SYSLOG_UDP, POL_SYSLOG_TCP */
	int facility;              /* 0-23 (RFC 5424 6.2.1); default 4, auth */
	const char *facility_name; /* static */
} pol_syslog_cfg_t;

typedef struct pol_audit_cfg {
	char *path; /* default "-" (stdout); absolute otherwise */
	cg_audit_on_failure_t on_failure;
	bool chain;  /* seq and prev on every line; default true */
	char *state; /* the chain's state file, absolute; default PATH.state,
	              * NULL for "-" unless given (or without the chain) */
	pol_syslog_cfg_t syslog;
} pol_audit_cfg_t;

/* Where run-time state lives (locks, trust feed, devices, requests, used
 * tokens). Absent: in memory only, gone at restart. */
typedef struct pol_state_cfg {
	bool enabled;  /* the "state" object is present */
	char *backend; /* "file" or "postgres" */
	char *dir;     /* file: absolute */
	/* postgres: the libpq connection string as written (it may hold a
	 * password: never shown, never logged), what GET /v1/policy shows of
	 * it (keyword=value, the password masked), and the schema (a
	 * lowercase SQL identifier, default "certgate") */
	char *dsn;
	char *dsn_shown;
	char *schema;
	bool dsn_has_password; /* for pol_lint: a secret in the configuration file */
	bool dsn_unverified;   /* a TCP host with an sslmode short of verify-ca */
	char *dsn_sslmode;     /* as given, or NULL (libpq's default "prefer") */
} pol_state_cfg_t;

/* The login issuer inside `certgate serve` (LOGIN.md): who may log in with
 * which identity provider, and how their certificates are signed. */
typedef struct pol_oidc {
	char *issuer;       /* the IdP's issuer URL (https) */
	char *client_id;    /* the public client; the audience of ID tokens */
	pol_file_t ca_file; /* CA bundle for the IdP's HTTPS; path NULL = system store */
	char **scopes;      /* default openid email profile groups */
	size_t n_scopes;
	char *user_claim;            /* default "email" */
	char *groups_claim;          /* default "groups" */
	bool require_email_verified; /* default true */
	char **algorithms;           /* default RS256 ES256 EdDSA */
	size_t n_algorithms;
	uint64_t leeway_ms; /* default 60s, at most POL_OIDC_LEEWAY_MAX_MS */
} pol_oidc_t;

/* The longest clock leeway issuer.oidc.leeway may set: a used ID token is
 * remembered this long past its exp, whatever a reload sets. */
#define POL_OIDC_LEEWAY_MAX_MS (10 * 60 * 1000)

typedef struct pol_issuer {
	bool enabled; /* the "issuer" object is present */
	char *listen; /* host:port */
	cg_hostport_t listen_addr;
	pol_file_t cert, key;       /* default gateway.cert / gateway.key */
	pol_file_t ca_cert, ca_key; /* the login CA that signs */
	pol_file_t server_ca;       /* what clients verify the gateway with; default ca_cert */
	uint64_t cert_lifetime_ms;  /* default 8h */
	pol_oidc_t oidc;
	char **allow_users; /* globs; NULL/0 with no allow_groups = everyone */
	size_t n_allow_users;
	char **allow_groups;
	size_t n_allow_groups;
	pol_trust_t device_trust; /* default low */
} pol_issuer_t;

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
	pol_window_t *when; /* NULL: at any time */
	bool permissive;    /* mode "permissive" (deny rules only): reports, never refuses */
	/* allow rules only: matches only while the user holds an approved,
	 * unexpired access grant for the service (just-in-time access) */
	bool requires_approval;
} pol_rule_t;

typedef struct pol_snapshot {
	atomic_int refs;
	char *config_path; /* absolute */
	char *policy_path; /* absolute, NULL when claims/rules are inline */
	char sha256[65];   /* hex of config bytes followed by policy bytes */
	pol_gateway_t gateway;
	pol_admin_t admin;
	pol_audit_cfg_t audit;
	pol_state_cfg_t state;
	pol_issuer_t issuer;
	pol_claims_map_t claims;
	pol_service_t *services;
	size_t n_services;
	pol_rule_t *rules;
	size_t n_rules;
	json_t *shown;         /* the configuration as GET /v1/policy shows it (no key material) */
	void *index;           /* private to pol_index.c (decision index) */
	cg_strmap_t *zones;    /* zone name -> cg_tz_t, shared by the rules' windows */
	bool has_windows;      /* some rule has a time window */
	bool has_approvals;    /* some rule requires an approval (access grants) */
	cg_jdoc_t *doc_config; /* the texts, for positions in later error messages */
	cg_jdoc_t *doc_policy; /* NULL without policy_file */
} pol_snapshot_t;

#endif
