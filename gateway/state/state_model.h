/* Inside the state room: the model every kind keeps its records in, and
 * the contract between a kind and the backends (state_file.c keeps whole
 * documents, state_pg*.c single records). Private to gateway/state/.
 *
 * A kind owns its records and their JSON form at two grains:
 *   - the document (save/load): every record of the kind at once, what
 *     DIR/NAME.json holds;
 *   - the record (get/put/keys): one record by its key, what one row of
 *     the shared store holds. A kind that has them is shared between
 *     gateways; every change to one of its records is reported with
 *     gw_state_record_changed, and records another gateway changed come
 *     back through put, which tells what the change does to access.
 * A new kind is a file with these functions, an entry in the enum and in
 * state.c's table. */
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

typedef struct gw_state_kind {
	const char *name; /* the file is DIR/NAME.json; the store's rows have kind NAME */
	/* --- the document ------------------------------------------------------
	 * load receives the document as saved; entries already lapsed may be
	 * dropped. It fills err ("locks[2].expires: expected a number") and
	 * returns false on anything it cannot read. */
	json_t *(*save)(gw_state_t *st);
	bool (*load)(gw_state_t *st, const json_t *doc, char *err, size_t errlen);
	void (*finish)(gw_state_t *st); /* frees the kind's records */
	/* --- the record (NULL: the kind is not shared record by record) -------
	 * get: the record under key as the store keeps it (a new reference),
	 * and when it lapses (*expires_ms, epoch ms, 0 = never); NULL when
	 * there is none (removed: the store keeps a tombstone).
	 * put: makes the model hold value under key (NULL: no record), as read
	 * from the store, without reporting a change; *change says what that
	 * does to access (tightens = live sessions must be checked again).
	 * False with err when value is not a record of this kind (the model
	 * keeps what it had).
	 * keys: calls fn for every key the model holds now. */
	json_t *(*get)(gw_state_t *st, const char *key, int64_t *expires_ms);
	bool (*put)(gw_state_t *st, const char *key, const json_t *value, gw_state_change_t *change,
	            char *err, size_t errlen);
	void (*keys)(gw_state_t *st, void (*fn)(void *ctx, const char *key), void *ctx);
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

/* Every kind, by its enum value. */
extern const gw_state_kind_t *const gw_state_kinds[GW_STATE_KINDS];
/* The kind named name, or -1. */
int gw_state_kind_index(const char *name);

typedef enum {
	GW_STATE_MEMORY,
	GW_STATE_FILE,
	GW_STATE_POSTGRES,
} gw_state_backend_t;

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

typedef struct gw_state_pg gw_state_pg_t;

struct gw_state {
	uv_loop_t *loop;
	gw_state_backend_t backend;
	/* the decision's reads (state.h, "any thread") hold it shared; every
	 * change to the records, on the control loop (a local change, or a
	 * record read from the shared store), holds it exclusive */
	uv_rwlock_t rw;
	char *dir; /* file: the folder */
	/* locks (state_locks.c) */
	gw_lock_t *locks;
	uint64_t next_lock;
	/* trust feed (state_trust.c): device id -> gw_trust_entry_t* */
	cg_strmap_t *trust;
	/* used ID tokens (state_tokens.c): SHA-256 hex -> int64_t* expiry ms;
	 * memory and file only (the shared store claims them itself) */
	cg_strmap_t *tokens;
	/* access requests (state_requests.c), in creation order, and the
	 * grants they make: "user lower-cased\nservice" -> int64_t* the
	 * latest end of an approved one (what the decision reads) */
	gw_access_request_t *requests;
	uint64_t next_request;
	cg_strmap_t *grants;
	/* the device registry (state_devices.c): device id -> gw_device_t* */
	cg_strmap_t *devices;
	/* persistence */
	gw_state_writer_t writers[GW_STATE_KINDS]; /* file (state_file.c) */
	gw_state_pg_t *pg;                         /* postgres (state_pg.c) */
	char problem[256];
	uint64_t errors;
	/* who hears changes another gateway made */
	gw_state_observer_fn observer;
	void *observer_ctx;
};

/* Exclusive access for a change to the records (the control loop). */
#define GW_STATE_WRITING(st, stmt)                                                                 \
	do {                                                                                       \
		uv_rwlock_wrlock(&(st)->rw);                                                       \
		stmt;                                                                              \
		uv_rwlock_wrunlock(&(st)->rw);                                                     \
	} while (0)

/* A record of kind changed here, now (added, replaced or removed): the
 * backend persists or shares it. */
void gw_state_record_changed(gw_state_t *st, unsigned kind, const char *key);
/* Housekeeping changed a kind's document (a lapsed entry dropped): only
 * whole-document backends write it; a shared store drops lapsed records
 * by itself. */
void gw_state_changed(gw_state_t *st, unsigned kind);
/* A new record's id: "PREFIX-N" with N counting on in *counter when one
 * gateway keeps the state; with a shared store, where every gateway makes
 * records, "PREFIX-" and 16 random hex digits (no two gateways pick the
 * same one, and none has to ask). False when no randomness could be had
 * or buf is too small. */
bool gw_state_new_id(gw_state_t *st, const char *prefix, uint64_t *counter, char *buf, size_t len);
/* An id read back (a state file, the shared store): text the gateway could
 * have written (no control characters), and when it is prefix-N the
 * counter moves past N, so a new id never repeats a loaded one. False for
 * other text, or an N past what the counter can count. */
bool gw_state_id_loaded(const char *prefix, const char *id, uint64_t *counter);
/* Text read back: NULL (an optional field), or what the gateway writes:
 * UTF-8 without control characters, 1 to max bytes. */
bool gw_state_text_ok(const char *s, size_t max);
/* A keyed kind's saved form, {"devices": {KEY: encode(value), ...}}; NULL
 * when memory ran out. */
json_t *gw_state_map_save(const cg_strmap_t *map, json_t *(*encode)(const void *value));
/* Tells the observer about a change another gateway made (no-op without
 * an observer, or when change->tightens is false). */
void gw_state_observe(gw_state_t *st, const gw_state_change_t *change);

/* state_file.c: the file backend */
bool gw_state_file_open(gw_state_t *st, const char *dir, char *err, size_t errlen);
void gw_state_file_changed(gw_state_t *st, unsigned kind);

/* state_tokens.c: the claim as memory and file answer it */
gw_token_claim_t gw_state_token_claim_local(gw_state_t *st, const char *hash, int64_t expires_ms,
                                            int64_t now_ms);

#endif
