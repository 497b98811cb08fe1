/* Inside the state room: the PostgreSQL backend, shared by its files.
 *   state_pg.c         the connection on the loop: names resolved off the
 *                      loop, PQconnectStart/Poll, the socket watched by a
 *                      uv_poll_t, one query at a time with a deadline,
 *                      reconnection with backoff, stop;
 *   state_pg_sync.c    the conversation: schema, LISTEN, writing what
 *                      waits, loading, re-reading notified records, token
 *                      claims, heartbeat and pruning; applying records to
 *                      the model and telling the observer;
 *   state_pg_schema.c  the SQL, with the schema written in, and its
 *                      migrations;
 *   state_pg_dsn.c     the connection string made safe for a connect that
 *                      must not block (names resolved by the gateway).
 * Private to gateway/state/. */
#ifndef GW_STATE_PG_H
#define GW_STATE_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "cg_strmap.h"
#include "state/state_model.h"

#define GW_PG_CONNECT_TIMEOUT_MS 10000 /* resolve, TCP, TLS, authentication */
#define GW_PG_QUERY_TIMEOUT_MS   5000  /* any answer; a claim's caller waits this long */
#define GW_PG_SETUP_TIMEOUT_MS   15000 /* the migration may wait for another gateway's */
#define GW_PG_BACKOFF_MIN_MS     100
#define GW_PG_BACKOFF_MAX_MS     5000
#define GW_PG_HEARTBEAT_MS       5000  /* idle this long: ask the store's clock */
#define GW_PG_PRUNE_MS           60000 /* drop lapsed rows and old tombstones */
#define GW_PG_STOP_FLUSH_MS      2000  /* a drain waits this long for pending writes */
#define GW_PG_BATCH_MAX          500   /* records per write or read */
#define GW_PG_KEY_MAX            1024  /* a record key in a NOTIFY payload (max 8000) */
#define GW_PG_NOTIFIED_MAX       10000 /* records to read back; past it: read everything */
#define GW_PG_SCHEMA_VERSION     1     /* what this binary knows (state_pg_schema.c) */

/* --- the connection string (state_pg_dsn.c) ---------------------------------- */

typedef struct gw_pg_host {
	char *host;     /* as written (a name, an IP, a socket folder), or NULL */
	char *hostaddr; /* as written, or NULL */
	char *port;     /* this entry's port, or NULL (libpq's default) */
	bool resolve;   /* a name the gateway looks up before connecting */
} gw_pg_host_t;

typedef struct gw_pg_dsn {
	char **keywords; /* every other option as written, then the defaults */
	char **values;
	size_t n;
	gw_pg_host_t *hosts;
	size_t n_hosts;
} gw_pg_dsn_t;

/* One host entry's addresses, as looked up. */
typedef struct gw_pg_resolved {
	char **addrs;
	size_t n;
	char error[96]; /* why there are none */
} gw_pg_resolved_t;

/* PQconnectStartParams' arrays: NULL-terminated, pointing into dsn and
 * into this struct's own lists. */
typedef struct gw_pg_params {
	const char **keywords;
	const char **values;
	size_t n;
	char *host, *hostaddr, *port;
} gw_pg_params_t;

/* Reads conninfo (checked by policy/ already); env_host is PGHOST, used
 * when the string names no host. false with err when out of memory. */
bool gw_pg_dsn_parse(gw_pg_dsn_t *dsn, const char *conninfo, const char *env_host, char *err,
                     size_t errlen);
void gw_pg_dsn_finish(gw_pg_dsn_t *dsn);
/* The parameters for one attempt: resolved[i] holds the addresses of
 * dsn->hosts[i] where it needed a lookup; a name is paired with each of
 * its addresses in turn, names without any are left out. -1 with err when
 * no entry is left (every lookup failed) or out of memory. */
int gw_pg_params_build(const gw_pg_dsn_t *dsn, const gw_pg_resolved_t *resolved,
                       gw_pg_params_t *out, char *err, size_t errlen);
void gw_pg_params_finish(gw_pg_params_t *p);

/* --- the SQL (state_pg_schema.c) ------------------------------------------------ */

typedef enum {
	GW_PG_SQL_MIGRATE, /* script: search_path, lock, create or migrate */
	GW_PG_SQL_LISTEN,  /* script: LISTEN, then the store's clock */
	GW_PG_SQL_LOAD,    /* $1 kinds (JSON array) -> kind, key, value, deleted */
	GW_PG_SQL_READ,    /* $1 [{kind, key}] -> kind, key, value, deleted */
	GW_PG_SQL_WRITE,   /* $1 [{kind, key, value, deleted, stamp, expires}] -> kind, key */
	GW_PG_SQL_CLAIM,   /* $1 hash, $2 expires -> one row when fresh */
	GW_PG_SQL_CLOCK,   /* -> the store's clock, epoch ms */
	GW_PG_SQL_PRUNE,
	GW_PG_SQL_COUNT,
} gw_pg_sql_id_t;

/* The SQL text of id for schema (a checked identifier), malloc'd. */
char *gw_pg_sql(gw_pg_sql_id_t id, const char *schema);
/* The SQLSTATE the migration raises when the schema is newer than this
 * binary; its DETAIL is the version found. */
#define GW_PG_SQLSTATE_TOO_NEW "CGV01"

/* --- the backend ---------------------------------------------------------------- */

typedef enum {
	GW_PG_IDLE,       /* waiting for the next attempt (backoff) */
	GW_PG_RESOLVING,  /* host names being looked up */
	GW_PG_CONNECTING, /* PQconnectPoll */
	GW_PG_SETUP,      /* schema, LISTEN, writing what waited, loading */
	GW_PG_READY,      /* in sync, listening */
	GW_PG_FATAL,      /* the schema is newer than this binary: no more attempts */
	GW_PG_STOPPED,
} gw_pg_phase_t;

typedef struct gw_state_pg gw_state_pg_t;
typedef void (*gw_pg_done_fn)(gw_state_pg_t *pg, PGresult *res);

/* The socket being watched; freed in its close callback. */
typedef struct gw_pg_watch {
	uv_poll_t poll;
	gw_state_pg_t *pg;
	int events;
} gw_pg_watch_t;

/* A token claim waiting for the store. */
typedef struct gw_pg_claim {
	struct gw_pg_claim *next;
	char hash[65];
	int64_t expires_ms;
	gw_token_claim_fn done;
	void *ctx;
} gw_pg_claim_t;

/* A local change not yet in the store, by "kind:key". */
typedef struct gw_pg_change {
	unsigned kind;
	int64_t changed_ms; /* when it was made, on this gateway's clock */
	bool in_flight;     /* in the write being answered */
	bool again;         /* changed again since that write was sent */
} gw_pg_change_t;

struct gw_state_pg {
	gw_state_t *st;
	uv_loop_t *loop;
	char *schema;
	gw_pg_dsn_t dsn;
	char *sql[GW_PG_SQL_COUNT];
	gw_pg_phase_t phase;
	/* an attempt */
	uint64_t attempt; /* counts attempts: a lookup of an older one is dropped */
	gw_pg_resolved_t *resolved;
	size_t resolving; /* lookups outstanding */
	PGconn *conn;
	gw_pg_watch_t *watch;
	uv_timer_t timer; /* backoff, or the deadline of the connect or query */
	uv_timer_t tick;  /* every second: heartbeat, pruning, the end of a stop */
	int open_handles;
	uint64_t backoff_ms; /* the current step */
	uint64_t failures;   /* attempts failed in a row */
	/* the query in flight */
	bool busy;
	gw_pg_done_fn done;
	PGresult *result;     /* the answer so far: the first error, else the last */
	uint64_t last_answer; /* uv_now() when the last answer came */
	uint64_t last_prune;
	/* what the store does not have yet, and what to read again */
	cg_strmap_t *changes;  /* "kind:key" -> gw_pg_change_t* */
	cg_strmap_t *notified; /* "kind:key" -> (void *)1 */
	char **batch;          /* the keys of the write or read in flight */
	size_t n_batch;
	gw_pg_claim_t *claims; /* waiting, oldest first */
	gw_pg_claim_t **claims_tail;
	gw_pg_claim_t *claiming; /* the one in flight */
	/* the store's clock: store = ours + offset_ms, measured at every
	 * heartbeat; a change is stamped with the store's time it was made */
	int64_t offset_ms;
	bool have_offset;
	int64_t clock_sent_ms; /* our clock when the clock query went out */
	bool loaded;           /* the first full load is in the model */
	bool reconnected;      /* the load under way follows a lost connection */
	bool reload;           /* too many announcements: read everything again */
	bool stopping;
	uint64_t stop_deadline;
	char fatal[256]; /* why no attempt is made any more */
};

/* state_pg.c: the connection */
gw_state_pg_t *gw_state_pg_create(gw_state_t *st, const char *dsn, const char *schema, char *err,
                                  size_t errlen);
int gw_state_pg_wait(gw_state_pg_t *pg, uint64_t timeout_ms, char *err, size_t errlen);
void gw_state_pg_stop(gw_state_pg_t *pg);
void gw_state_pg_destroy(gw_state_pg_t *pg);
/* Sends a query (params NULL and n 0: a script of several statements);
 * done gets the answer once it is all in: the first error result if any,
 * else the last result (done must not PQclear it). A lost connection or
 * a deadline passed drops the connection instead (gw_pg_fail), and done
 * is not called. False when it could not be sent (dropped already). */
bool gw_pg_send(gw_state_pg_t *pg, const char *sql, int n, const char *const *params,
                uint64_t timeout_ms, gw_pg_done_fn done);
/* Drops the connection (counted, the problem set to "state store
 * unavailable: WHY"), and tries again after the backoff. */
void gw_pg_fail(gw_state_pg_t *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* No more attempts: the store cannot be used by this binary (its schema
 * is newer). why is the one line gw_state_wait_loaded and /readyz say. */
void gw_pg_fatal(gw_state_pg_t *pg, const char *why);
/* While stopping (the tick): closes everything once nothing waits to be
 * written, or GW_PG_STOP_FLUSH_MS passed. */
void gw_pg_stop_check(gw_state_pg_t *pg);
/* Reconnection backoff: the step after prev (0: the first) is 100 ms
 * doubling to 5 s; the wait for a step is drawn by rnd in [0, 1) from its
 * upper half, so gateways that lost the store together come back apart. */
uint64_t gw_pg_backoff_step(uint64_t prev);
uint64_t gw_pg_backoff_wait(uint64_t step, double rnd);

/* state_pg_sync.c: the conversation */
void gw_pg_sync_start(gw_state_pg_t *pg); /* connected: schema, LISTEN, ... */
void gw_pg_sync_next(gw_state_pg_t *pg);  /* idle: send what waits */
void gw_pg_sync_notified(gw_state_pg_t *pg, const char *payload);
void gw_pg_sync_lost(gw_state_pg_t *pg); /* the connection went */
void gw_pg_sync_tick(gw_state_pg_t *pg); /* once a second */
void gw_pg_changed(gw_state_pg_t *pg, unsigned kind, const char *key);
void gw_pg_claim(gw_state_pg_t *pg, const char *hash, int64_t expires_ms, gw_token_claim_fn done,
                 void *ctx);
/* Answers every waiting claim with GW_TOKEN_UNAVAILABLE. */
void gw_pg_claims_fail(gw_state_pg_t *pg);
/* The row a write sends for the change c of the record id: {kind, key,
 * value (null: removed), deleted, stamp (the store's time of the change,
 * epoch ms), expires}. NULL when id names no shared kind or out of memory. */
json_t *gw_pg_change_row(gw_state_pg_t *pg, const char *id, const gw_pg_change_t *c);
/* "kind:key" for a change or notification; false when it does not fit. */
bool gw_pg_record_id(const char *kind, const char *key, char *buf, size_t len);
/* Splits "kind:key" into a shared kind's index and its key; false when
 * it names no shared kind. */
bool gw_pg_record_parse(const char *id, unsigned *kind, const char **key);

#endif
