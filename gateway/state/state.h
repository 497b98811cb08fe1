/* Run-time state: what admins and users change while the gateway runs
 * (locks, the live trust feed, the device registry, access requests and
 * their grants, the issuer's used-token cache), behind one interface
 * whatever keeps it.
 *
 * The gateway decides from the in-memory model here, never waiting on a
 * disk or a database: reads are plain lookups. Every change is applied to
 * the model at once and then persisted by the backend in the background:
 *   - memory (no "state" block): nothing persists; a restart forgets;
 *   - file (state.dir): one JSON file per kind, rewritten whole and
 *     atomically (cg_file_write_atomic) on the libuv thread pool after each
 *     change, coalesced while a write is in flight; loaded at start, where
 *     an unreadable file refuses the start (a lost lock must not pass
 *     silently);
 *   - postgres (state.dsn): one row per record in a database every gateway
 *     shares (state_pg.c), libpq non-blocking on this loop. Changes go out
 *     as upserts with a NOTIFY; changes of other gateways come in through
 *     LISTEN and are applied here, and those that tighten access reach the
 *     observer (gw_state_set_observer), which re-checks live sessions.
 *     With the store away, the model keeps deciding (known locks and trust
 *     stay enforced), local changes wait to be written, and what needs the
 *     shared truth at once (a token claim) is refused.
 *
 * Everything here runs on the loop the state was opened with (the control
 * loop): changes, the backend's I/O and the observer's calls; only the
 * decision's reads marked "any thread" (a lock's match, a trust level, a
 * device's forget time, a grant) run on the workers. They hold the
 * state's rwlock shared; every change to the model, made here or read
 * from the store, holds it exclusive.
 *
 * Kinds (state_locks.c, state_trust.c, state_tokens.c, state_devices.c,
 * state_requests.c) own their records and their JSON form; state.c owns
 * the backends' common face and health. */
#ifndef GW_STATE_H
#define GW_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "pol_trust.h"
#include "state/state_types.h"

typedef struct gw_state gw_state_t;

/* Opens the state: dir NULL keeps it in memory only; otherwise dir is made
 * (0700) if missing and every kind's file in it is loaded. NULL with the
 * reason in err ("state.dir /x: locks.json: line 3: ..."). */
gw_state_t *gw_state_open(uv_loop_t *loop, const char *dir, char *err, size_t errlen);
/* Opens a state shared through PostgreSQL: dsn is a libpq connection
 * string as policy/ checked it, schema a lowercase identifier. Returns at
 * once, empty; the store is reached on the loop (gw_state_wait_loaded).
 * NULL with the reason in err. */
gw_state_t *gw_state_open_postgres(uv_loop_t *loop, const char *dsn, const char *schema, char *err,
                                   size_t errlen);
/* Runs the loop until the state holds what its store holds (postgres:
 * connected, schema created or migrated, every record loaded; memory and
 * file: at once). 0; or -1 with the reason in err: the store's schema is
 * newer than this binary knows, or the store was not reached within
 * timeout_ms (the last failure named). Before serving: a gateway that
 * does not know the locks must not admit anyone. */
int gw_state_wait_loaded(gw_state_t *st, uint64_t timeout_ms, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* The gateway drains: a shared store gets what is still waiting to be
 * written (up to 2 s), then its connection and timers close, so the loop
 * can run dry. Pending token claims are answered (unavailable). */
void gw_state_stop(gw_state_t *st);
/* Frees the model; writes still in flight finish first (the loop must run
 * them: call after uv_run returned, which waits for them; a shared store
 * after gw_state_stop, whose handles close on that run). Accepts NULL. */
void gw_state_close(gw_state_t *st);

/* "memory", "file" or "postgres", for /v1/status and /readyz. */
const char *gw_state_backend(const gw_state_t *st);
/* Other gateways share this model (a store): what must happen once across
 * them all is claimed first (gw_state_token_claim). */
bool gw_state_shared(const gw_state_t *st);
/* NULL while every change so far was persisted and the store (if any) is
 * reachable, else the last failure ("cannot write
 * /var/lib/certgate/locks.json: No space left on device", "state store
 * unavailable: connection refused"). */
const char *gw_state_problem(const gw_state_t *st);
/* Persist and store failures since start (metrics). */
uint64_t gw_state_errors(const gw_state_t *st);
/* A shared store: connected and in sync (memory and file: always true). */
bool gw_state_connected(const gw_state_t *st);
/* Local changes not yet in the shared store (0 for memory and file). */
size_t gw_state_pending(const gw_state_t *st);

/* --- changes other gateways made ------------------------------------------ */

/* fn hears every change that tightens access, on the state's loop, after
 * it is in the model (and with no lock of the state's held: it may read
 * the state). NULL stops it. */
void gw_state_set_observer(gw_state_t *st, gw_state_observer_fn fn, void *ctx);

/* --- locks: refuse new sessions, end live ones ---------------------------- */

/* Adds a lock on user or device (the other NULL); NULL when out of memory.
 * The lock stays owned by st. */
const gw_lock_t *gw_state_lock_add(gw_state_t *st, const char *user, const char *device_id,
                                   const char *reason, int64_t now_ms, int64_t expires_ms,
                                   const char *by);
/* What the decision needs of a lock, copied out. */
typedef struct gw_lock_match {
	char id[24];
	char reason[256]; /* "" when none was given */
} gw_lock_match_t;

/* Whether an unexpired lock holds user (case-insensitive) or device; the
 * first one found is copied to out. Any thread (the workers decide). */
bool gw_state_lock_match(gw_state_t *st, const char *user, const char *device_id, int64_t now_ms,
                         gw_lock_match_t *out);
/* The unexpired lock with this id, or NULL. */
const gw_lock_t *gw_state_lock_get(gw_state_t *st, const char *id, int64_t now_ms);
/* Lifts the lock with this id; false if there is none. */
bool gw_state_lock_remove(gw_state_t *st, const char *id);
/* The unexpired locks in creation order (follow ->next). */
const gw_lock_t *gw_state_locks(gw_state_t *st, int64_t now_ms);

/* --- the live trust feed: device id -> level ------------------------------ */

/* Sets (replaces) the level of device; expires_ms 0 = no ttl. 0 or -1 (out
 * of memory). */
int gw_state_trust_set(gw_state_t *st, const char *device_id, pol_trust_t level, int64_t now_ms,
                       int64_t expires_ms, const char *by) __attribute__((warn_unused_result));
/* The entry of device if set and not lapsed, else NULL. */
const gw_trust_entry_t *gw_state_trust_get(gw_state_t *st, const char *device_id, int64_t now_ms);
/* The feed's level for device (POL_TRUST_NONE if none, lapsed or NULL).
 * Any thread. Everything else here: the control loop only. */
pol_trust_t gw_state_trust_level(gw_state_t *st, const char *device_id, int64_t now_ms);
/* Clears device's entry; false if there was none. */
bool gw_state_trust_clear(gw_state_t *st, const char *device_id);

/* --- access requests and grants (just-in-time access) ---------------------- */

/* Bounds: a user may have GW_ACCESS_PENDING_PER_USER requests waiting, all
 * users together GW_ACCESS_PENDING_MAX; decided requests (denied, expired)
 * past GW_ACCESS_HISTORY_MAX are forgotten, the oldest first. */
#define GW_ACCESS_PENDING_PER_USER 5
#define GW_ACCESS_PENDING_MAX      1000
#define GW_ACCESS_HISTORY_MAX      1000

typedef enum {
	GW_ACCESS_OK = 0,
	GW_ACCESS_NOT_FOUND,
	GW_ACCESS_NOT_PENDING, /* decided already */
	GW_ACCESS_DUPLICATE,   /* the user has a pending request for that service */
	GW_ACCESS_LIMIT_USER,  /* the user has GW_ACCESS_PENDING_PER_USER pending */
	GW_ACCESS_LIMIT_TOTAL, /* GW_ACCESS_PENDING_MAX pending in all */
	GW_ACCESS_NO_MEMORY,
} gw_access_result_t;

/* "pending", "approved", "denied", "expired". */
const char *gw_access_state_name(gw_access_state_t state);
/* The state named text; false when none is. */
bool gw_access_state_parse(const char *text, gw_access_state_t *out);

/* Records a pending request of user for service (ids "req-N", counting on
 * across restarts). *out: the new request; for GW_ACCESS_DUPLICATE the one
 * already pending. The arguments are the caller's to check. */
gw_access_result_t gw_state_access_ask(gw_state_t *st, const char *user, const char *service,
                                       const char *reason, int64_t duration_ms, int64_t now_ms,
                                       const char *requested_by, const gw_access_request_t **out);
/* Approves (a grant until now + its duration) or denies the pending
 * request id, by whom and why (reason may be NULL). *out: the request
 * (also for GW_ACCESS_NOT_PENDING), NULL for GW_ACCESS_NOT_FOUND. */
gw_access_result_t gw_state_access_decide(gw_state_t *st, const char *id, bool approve,
                                          const char *by, const char *reason, int64_t now_ms,
                                          const gw_access_request_t **out);
/* The request with this id, or NULL. */
const gw_access_request_t *gw_state_access_get(gw_state_t *st, const char *id);
/* Every request kept, in creation order (follow ->next). */
const gw_access_request_t *gw_state_access_list(gw_state_t *st);
/* How many requests are in each state. */
void gw_state_access_counts(gw_state_t *st, size_t counts[GW_ACCESS_STATES]);
/* The earliest end of an approved grant (it expires then), INT64_MAX when
 * none is approved. */
int64_t gw_state_access_next_expiry(gw_state_t *st);
/* Approved requests whose grant ended at or before now_ms become expired;
 * fn hears each (in creation order) once it is, with no lock of the state
 * held: it may read the state (decide again) but not change it. Returns
 * how many. */
size_t gw_state_access_expire(gw_state_t *st, int64_t now_ms,
                              void (*fn)(void *arg, const gw_access_request_t *req), void *arg);

/* Whether user (case-insensitive) holds an approved grant for service that
 * runs past now_ms; *until_ms is its end (the latest, when several). A pure
 * read under the read lock that copies the answer out: the decision's
 * path, any thread. The other access functions: the control loop only. */
bool gw_state_grant_until(gw_state_t *st, const char *user, const char *service, int64_t now_ms,
                          int64_t *until_ms);

/* --- the issuer's used-token cache ----------------------------------------- */

#define GW_STATE_TOKENS_MAX 100000

/* The key a claim goes by: the SHA-256 of data as lower-case hex (an ID
 * token's, or "access.expired:ID"). False only if OpenSSL fails. */
bool gw_state_claim_key(const void *data, size_t len, char hash[65]);

/* Claims the token whose SHA-256 (hex) is hash, valid until expires_ms
 * (or anything else that must happen once across gateways: access.expired),
 * atomically across every gateway sharing the store: done is called
 * exactly once with the answer, on the loop — before this returns for
 * memory and file, when the store answered (or could not, within 5 s) for
 * postgres. */
void gw_state_token_claim(gw_state_t *st, const char *hash, int64_t expires_ms, int64_t now_ms,
                          gw_token_claim_fn done, void *ctx);

/* --- the device registry: the devices the issuer saw log in ------------------ */

#define GW_STATE_DEVICES_MAX 100000

/* A login of device_id by user from platform (NULL: not reported, the one
 * known stays): registers the device (first and last seen now) or updates
 * it (last seen now, user, platform). A forgotten device registers anew.
 * *registered tells whether this login registered it. 0; -1 out of
 * memory; -2 the registry is full (GW_STATE_DEVICES_MAX entries). */
int gw_state_device_seen(gw_state_t *st, const char *device_id, const char *user,
                         const char *platform, int64_t now_ms, bool *registered)
        __attribute__((warn_unused_result));
/* Whether a login of device_id can be recorded: known already, or room
 * for one more. */
bool gw_state_device_room(gw_state_t *st, const char *device_id);
/* The registered device, or NULL (unknown, forgotten, or NULL id). Owned
 * by st; valid until the next change. */
const gw_device_t *gw_state_device_get(gw_state_t *st, const char *device_id);
/* Forgets a registered device (user, platform, first/last seen) and notes
 * now as its forget time; false if it is not registered. */
bool gw_state_device_forget(gw_state_t *st, const char *device_id, int64_t now_ms);
/* When device_id was last forgotten (epoch ms), 0 if never (or NULL):
 * certificates for it with an earlier notBefore are refused. Any thread (the decision). */
int64_t gw_state_device_forgotten_at(gw_state_t *st, const char *device_id);
/* The registered devices, oldest registration first: *out is the
 * caller's to free (the views point into st: valid until the next
 * change). 0, or -1 out of memory. */
int gw_state_devices_list(gw_state_t *st, gw_device_view_t **out, size_t *n)
        __attribute__((warn_unused_result));

#endif
