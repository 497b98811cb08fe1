/* Inside the state room: the model every kind keeps its records in, and
 * the contract between a kind and the persistence in state.c. Private to
 * gateway/state/. */
#ifndef GW_STATE_MODEL_H
#define GW_STATE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "cg_strmap.h"
#include "state/state_types.h"

typedef struct gw_state gw_state_t;

/* A kind of record and its JSON form (one document per kind). load
 * receives the document as saved; entries already lapsed may be dropped.
 * It fills err ("locks[2].expires: expected a number") and returns false
 * on anything it cannot read. */
typedef struct gw_state_kind {
	const char *name; /* the file is DIR/NAME.json */
	json_t *(*save)(gw_state_t *st);
	bool (*load)(gw_state_t *st, const json_t *doc, char *err, size_t errlen);
	void (*finish)(gw_state_t *st); /* frees the kind's records */
} gw_state_kind_t;

enum {
	GW_STATE_LOCKS,
	GW_STATE_TRUST,
	GW_STATE_TOKENS,
	GW_STATE_REQUESTS,
	GW_STATE_DEVICES,
	GW_STATE_KINDS
};

extern const gw_state_kind_t gw_state_locks_kind;
extern const gw_state_kind_t gw_state_trust_kind;
extern const gw_state_kind_t gw_state_tokens_kind;
extern const gw_state_kind_t gw_state_requests_kind;
extern const gw_state_kind_t gw_state_devices_kind;

/* One kind's file: written on the thread pool, one write at a time; a
 * change meanwhile marks it dirty and the latest document follows. */
typedef struct gw_state_writer {
	uv_work_t work;
	gw_state_t *st;
	unsigned kind;
	bool in_flight;
	bool dirty;
	char *text; /* what the write in flight writes */
	size_t len;
	int result; /* 0 or a negative errno, from the worker */
} gw_state_writer_t;

struct gw_state {
	uv_loop_t *loop;
	/* the decision's reads (state.h, "any thread") hold it shared; every
	 * change to the records, on the control loop, holds it exclusive */
	uv_rwlock_t rw;
	char *dir; /* NULL: memory only */
	/* locks (state_locks.c) */
	gw_lock_t *locks;
	uint64_t next_lock;
	/* trust feed (state_trust.c): device id -> gw_trust_entry_t* */
	cg_strmap_t *trust;
	/* used ID tokens (state_tokens.c): SHA-256 hex -> int64_t* expiry ms */
	cg_strmap_t *tokens;
	/* access requests (state_requests.c), in creation order, and the
	 * grants they make: "user lower-cased\nservice" -> int64_t* the
	 * latest end of an approved one (what the decision reads) */
	gw_access_request_t *requests;
	uint64_t next_request;
	cg_strmap_t *grants;
	/* the device registry (state_devices.c): device id -> gw_device_t* */
	cg_strmap_t *devices;
	/* persistence (state.c) */
	gw_state_writer_t writers[GW_STATE_KINDS];
	char problem[256];
	uint64_t errors;
};

/* Exclusive access for a change to the records (the control loop). */
#define GW_STATE_WRITING(st, stmt)                                                                 \
	do {                                                                                       \
		uv_rwlock_wrlock(&(st)->rw);                                                       \
		stmt;                                                                              \
		uv_rwlock_wrunlock(&(st)->rw);                                                     \
	} while (0)

/* A kind's records changed: persist them (no-op in memory). */
void gw_state_changed(gw_state_t *st, unsigned kind);

#endif
