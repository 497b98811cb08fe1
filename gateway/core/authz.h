/* Authorization as the gateway applies it, for new connections and for the
 * re-authorization of live ones alike: locks first, then the policy decision
 * (pol_decide) with the device's live trust-feed value. */
#ifndef GW_AUTHZ_H
#define GW_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cg_strmap.h"
#include "pol_decide.h"
#include "core/runtime.h"

/* The live trust feed: device id -> level, optionally until a deadline. */
typedef struct gw_trust_entry {
	pol_trust_t level;
	int64_t set_ms;
	int64_t expires_ms; /* 0 = no ttl */
	char by[64];
} gw_trust_entry_t;

/* A lock on a user or a device: refuses new sessions, ends live ones. */
typedef struct gw_lock {
	struct gw_lock *next;
	char id[24];
	char *user; /* exactly one of user/device is set */
	char *device;
	char *reason; /* may be NULL */
	int64_t created_ms;
	int64_t expires_ms; /* 0 = until lifted */
	char by[64];
} gw_lock_t;

typedef struct gw_authz_state {
	cg_strmap_t *trust_feed; /* device id -> gw_trust_entry_t* */
	gw_lock_t *locks;
	uint64_t next_lock;
} gw_authz_state_t;

void gw_authz_state_init(gw_authz_state_t *st);
void gw_authz_state_finish(gw_authz_state_t *st);

/* The feed's level for device (POL_TRUST_NONE if none or lapsed). */
pol_trust_t gw_trust_feed_level(gw_authz_state_t *st, const char *device_id, int64_t now_ms);
/* The first unexpired lock that applies to user or device, or NULL. */
const gw_lock_t *gw_lock_find(gw_authz_state_t *st, const char *user, const char *device_id,
                              int64_t now_ms);

/* Sets (replaces) the feed value of device; expires_ms 0 = no ttl. */
int gw_trust_set(gw_authz_state_t *st, const char *device_id, pol_trust_t level, int64_t now_ms,
                 int64_t expires_ms, const char *by) __attribute__((warn_unused_result));
/* The entry of device if set and not lapsed, else NULL. */
const gw_trust_entry_t *gw_trust_get(gw_authz_state_t *st, const char *device_id, int64_t now_ms);
/* Clears device's entry; false if there was none. */
bool gw_trust_clear(gw_authz_state_t *st, const char *device_id);

/* Adds a lock on user or device (one of them NULL); NULL on allocation
 * failure. The lock stays owned by st. */
const gw_lock_t *gw_lock_add(gw_authz_state_t *st, const char *user, const char *device_id,
                             const char *reason, int64_t now_ms, int64_t expires_ms,
                             const char *by);
/* The unexpired lock with this id, or NULL. */
const gw_lock_t *gw_lock_get(gw_authz_state_t *st, const char *id, int64_t now_ms);
/* Lifts the lock with this id; false if there is none. */
bool gw_lock_remove(gw_authz_state_t *st, const char *id);
/* Drops lapsed locks (so listings show only those in force). */
void gw_locks_prune(gw_authz_state_t *st, int64_t now_ms);

typedef struct gw_authz_request {
	const pol_service_t *service;
	const pol_claims_t *claims;
	const struct sockaddr *source;
	const char *db_user; /* postgres mode */
	const char *db_name;
} gw_authz_request_t;

/* Decides req under rt's policy and the live state st (locks, trust feed). A lock
 * refuses with rule "lock". Returns out->allow. */
bool gw_authorize(gw_authz_state_t *st, const gw_runtime_t *rt, const gw_authz_request_t *req,
                  pol_decision_t *out);

/* The session.end reason for a live session refused by d: "revoked: lock"
 * for a lock, else the trigger's reason (e.g. "revoked: policy"). */
const char *gw_authz_revocation_reason(const pol_decision_t *d, const char *trigger_reason);

#endif
