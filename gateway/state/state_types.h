/* The records of run-time state (see state.h), types only: what the
 * model holds and listings return. */
#ifndef GW_STATE_TYPES_H
#define GW_STATE_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#include "pol_trust.h"

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

/* A live trust-feed value for a device. */
typedef struct gw_trust_entry {
	pol_trust_t level;
	int64_t set_ms;
	int64_t expires_ms; /* 0 = no ttl */
	char by[64];
} gw_trust_entry_t;

/* Where an access request stands: pending until an approver decides;
 * approved, it is a grant until until_ms, then expired. */
typedef enum {
	GW_ACCESS_PENDING = 0,
	GW_ACCESS_APPROVED,
	GW_ACCESS_DENIED,
	GW_ACCESS_EXPIRED,
	GW_ACCESS_STATES
} gw_access_state_t;

/* An access request (just-in-time access): a user asks for a service, for
 * a while, and says why; an approver decides. */
typedef struct gw_access_request {
	struct gw_access_request *next;
	char id[24]; /* "req-N" */
	char *user;
	char *service;
	char *reason;        /* the user's */
	int64_t duration_ms; /* asked for */
	gw_access_state_t state;
	int64_t created_ms;
	char *requested_by;   /* the user (over mTLS) or the admin API caller's address */
	char *decided_by;     /* NULL while pending; "gateway" for an expiry */
	char *decided_reason; /* the approver's, may be NULL */
	int64_t decided_ms;   /* 0 while pending */
	int64_t until_ms;     /* approved (and expired): the grant's end; else 0 */
} gw_access_request_t;

/* A device in the registry (the issuer's logins, keyed by device id). A
 * forgotten device keeps only when it was forgotten: certificates issued
 * for it before then are refused, also after it registers again. */
typedef struct gw_device {
	char *user;            /* the last login's user; NULL while forgotten */
	char *platform;        /* as the last login that said reported it; may be NULL */
	int64_t first_seen_ms; /* its (latest) registration; 0 while forgotten */
	int64_t last_seen_ms;  /* its latest login; 0 while forgotten */
	int64_t forgotten_ms;  /* the latest forget, 0 = never forgotten */
} gw_device_t;

/* One registered device in a listing. */
typedef struct gw_device_view {
	const char *id;
	const gw_device_t *device;
} gw_device_view_t;

/* A record another gateway changed, as applied to this gateway's model.
 * The strings are valid during the observer's call only. */
typedef struct gw_state_change {
	const char *kind;   /* "locks", "trust", ... */
	const char *key;    /* the record: a lock id, a device id, ... */
	bool tightens;      /* may refuse what was allowed: re-check live sessions */
	const char *user;   /* whose sessions it touches (NULL: by device only) */
	const char *device; /* which device's sessions it touches (NULL: by user only) */
	const char *reason; /* what ending such a session is called: "revoked: lock" */
} gw_state_change_t;

typedef void (*gw_state_observer_fn)(void *ctx, const gw_state_change_t *change);

/* The answer to a token claim (gw_state_token_claim). */
typedef enum {
	GW_TOKEN_FRESH,       /* first use: remembered until it expires */
	GW_TOKEN_REPLAYED,    /* seen before and not yet expired */
	GW_TOKEN_FULL,        /* too many live tokens remembered: refuse, don't forget */
	GW_TOKEN_UNAVAILABLE, /* the shared store cannot answer now: refuse */
} gw_token_claim_t;

typedef void (*gw_token_claim_fn)(void *ctx, gw_token_claim_t result);

#endif
