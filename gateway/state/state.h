/* Run-time state: what admins and users change while the gateway runs
 * (locks, the live trust feed, the device registry and the issuer's
 * used-token cache; access requests join them), behind one interface
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
 *     silently).
 *
 * Kinds (state_locks.c, state_trust.c, state_tokens.c, state_devices.c) own their records and their
 * JSON form; state.c owns the backend, the scheduling and health. */
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
/* Frees the model; writes still in flight finish first (the loop must run
 * them: call after uv_run returned, which waits for them). Accepts NULL. */
void gw_state_close(gw_state_t *st);

/* "memory" or "file", for /v1/status and /readyz. */
const char *gw_state_backend(const gw_state_t *st);
/* NULL while every change so far was persisted, else the last failure
 * ("cannot write /var/lib/certgate/locks.json: No space left on device"). */
const char *gw_state_problem(const gw_state_t *st);
/* Persist failures since start (metrics). */
uint64_t gw_state_errors(const gw_state_t *st);

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

/* --- the issuer's used-token cache ----------------------------------------- */

#define GW_STATE_TOKENS_MAX 100000

typedef enum {
	GW_TOKEN_FRESH,    /* first use: remembered until it expires */
	GW_TOKEN_REPLAYED, /* seen before and not yet expired */
	GW_TOKEN_FULL,     /* too many live tokens remembered: refuse, don't forget */
} gw_token_claim_t;

/* Claims the token whose SHA-256 (hex) is hash, valid until expires_ms. */
gw_token_claim_t gw_state_token_claim(gw_state_t *st, const char *hash, int64_t expires_ms,
                                      int64_t now_ms);

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
