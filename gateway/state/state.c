/* The state's common face (see state.h): opening and closing whatever
 * backend keeps it, health, where a change goes, the observer of changes
 * other gateways made, and the token claim. The kinds own their records
 * (state_locks.c, ...), the backends their persistence (state_file.c,
 * state_pg*.c). */
#include "state/state.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "cg_utf8.h"
#include "state/state_model.h"
#include "state/state_pg.h"

const gw_state_kind_t *const gw_state_kinds[GW_STATE_KINDS] = {
        [GW_STATE_LOCKS] = &gw_state_locks_kind,     [GW_STATE_TRUST] = &gw_state_trust_kind,
        [GW_STATE_TOKENS] = &gw_state_tokens_kind,   [GW_STATE_REQUESTS] = &gw_state_requests_kind,
        [GW_STATE_DEVICES] = &gw_state_devices_kind,
};

int gw_state_kind_index(const char *name)
{
	for (unsigned k = 0; k < GW_STATE_KINDS; k++)
		if (strcmp(gw_state_kinds[k]->name, name) == 0)
			return (int)k;
	return -1;
}

typedef struct map_save {
	json_t *out;
	json_t *(*encode)(const void *value);
} map_save_t;

static bool save_entry(const char *key, void *value, void *arg)
{
	map_save_t *ms = arg;
	json_t *j = ms->encode(value);
	if (j == NULL || json_object_set_new(ms->out, key, j) != 0) {
		json_decref(ms->out);
		ms->out = NULL;
	}
	return ms->out != NULL;
}

json_t *gw_state_map_save(const cg_strmap_t *map, json_t *(*encode)(const void *value))
{
	map_save_t ms = {json_object(), encode};
	if (ms.out == NULL)
		return NULL;
	cg_strmap_foreach(map, save_entry, &ms);
	return ms.out != NULL ? json_pack("{s:o}", "devices", ms.out) : NULL;
}

bool gw_state_new_id(gw_state_t *st, const char *prefix, uint64_t *counter, char *buf, size_t len)
{
	if (st->backend != GW_STATE_POSTGRES) {
		int n = snprintf(buf, len, "%s-%llu", prefix, (unsigned long long)++*counter);
		return n > 0 && (size_t)n < len;
	}
	unsigned char r[8];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return false;
	int n = snprintf(buf, len, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2],
	                 r[3], r[4], r[5], r[6], r[7]);
	return n > 0 && (size_t)n < len;
}

bool gw_state_id_loaded(const char *prefix, const char *id, uint64_t *counter)
{
	if (id == NULL || !gw_state_text_ok(id, 128))
		return false;
	size_t n = strlen(prefix);
	if (strncmp(id, prefix, n) != 0 || id[n] != '-' || id[n + 1] < '1' || id[n + 1] > '9')
		return true; /* another gateway's random id, or a name: nothing to count */
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(id + n + 1, &end, 10);
	if (*end != '\0')
		return true; /* not a number: not one of ours to count */
	/* the counter is saved as a JSON integer (signed 64 bits) */
	if (errno != 0 || v > (unsigned long long)INT64_MAX - 1)
		return false;
	if (v > *counter)
		*counter = v;
	return true;
}

/* No C0 or C1 control character, no DEL (valid UTF-8 assumed). */
static bool no_controls(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
			return false;
	return true;
}

bool gw_state_text_ok(const char *s, size_t max)
{
	if (s == NULL)
		return true;
	size_t n = strlen(s);
	return n > 0 && n <= max && cg_utf8_valid(s, n) && no_controls(s);
}

/* An empty model on loop, kept in memory. */
static gw_state_t *state_new(uv_loop_t *loop, char *err, size_t errlen)
{
	gw_state_t *st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->loop = loop;
	st->backend = GW_STATE_MEMORY;
	if (uv_rwlock_init(&st->rw) != 0) {
		free(st);
		snprintf(err, errlen, "cannot create a lock");
		return NULL;
	}
	st->trust = cg_strmap_create();
	st->tokens = cg_strmap_create();
	st->grants = cg_strmap_create();
	st->devices = cg_strmap_create();
	if (st->trust == NULL || st->tokens == NULL || st->grants == NULL || st->devices == NULL) {
		snprintf(err, errlen, "out of memory");
		gw_state_close(st);
		return NULL;
	}
	return st;
}

gw_state_t *gw_state_open(uv_loop_t *loop, const char *dir, char *err, size_t errlen)
{
	gw_state_t *st = state_new(loop, err, errlen);
	if (st == NULL || dir == NULL)
		return st;
	if (!gw_state_file_open(st, dir, err, errlen)) {
		gw_state_close(st);
		return NULL;
	}
	return st;
}

gw_state_t *gw_state_open_postgres(uv_loop_t *loop, const char *dsn, const char *schema, char *err,
                                   size_t errlen)
{
	gw_state_t *st = state_new(loop, err, errlen);
	if (st == NULL)
		return NULL;
	st->backend = GW_STATE_POSTGRES;
	if ((st->pg = gw_state_pg_create(st, dsn, schema, err, errlen)) == NULL) {
		gw_state_close(st);
		return NULL;
	}
	return st;
}

int gw_state_wait_loaded(gw_state_t *st, uint64_t timeout_ms, char *err, size_t errlen)
{
	return st->pg != NULL ? gw_state_pg_wait(st->pg, timeout_ms, err, errlen) : 0;
}

void gw_state_stop(gw_state_t *st)
{
	if (st != NULL && st->pg != NULL)
		gw_state_pg_stop(st->pg);
}

void gw_state_close(gw_state_t *st)
{
	if (st == NULL)
		return;
	gw_state_pg_destroy(st->pg);
	for (unsigned k = 0; k < GW_STATE_KINDS; k++)
		gw_state_kinds[k]->finish(st);
	uv_rwlock_destroy(&st->rw);
	free(st->dir);
	free(st);
}

/* --- health ------------------------------------------------------------------ */

const char *gw_state_backend(const gw_state_t *st)
{
	static const char *const names[] = {
	        [GW_STATE_MEMORY] = "memory",
	        [GW_STATE_FILE] = "file",
	        [GW_STATE_POSTGRES] = "postgres",
	};
	return names[st->backend];
}

bool gw_state_shared(const gw_state_t *st)
{
	return st->backend == GW_STATE_POSTGRES;
}

const char *gw_state_problem(const gw_state_t *st)
{
	return st->problem[0] != '\0' ? st->problem : NULL;
}

uint64_t gw_state_errors(const gw_state_t *st)
{
	return st->errors;
}

bool gw_state_connected(const gw_state_t *st)
{
	return st->pg == NULL || st->pg->phase == GW_PG_READY;
}

size_t gw_state_pending(const gw_state_t *st)
{
	return st->pg != NULL ? cg_strmap_count(st->pg->changes) : 0;
}

/* --- changes ----------------------------------------------------------------- */

void gw_state_record_changed(gw_state_t *st, unsigned kind, const char *key)
{
	if (st->backend == GW_STATE_FILE)
		gw_state_file_changed(st, kind);
	else if (st->backend == GW_STATE_POSTGRES)
		gw_pg_changed(st->pg, kind, key);
}

void gw_state_changed(gw_state_t *st, unsigned kind)
{
	if (st->backend == GW_STATE_FILE)
		gw_state_file_changed(st, kind);
}

void gw_state_set_observer(gw_state_t *st, gw_state_observer_fn fn, void *ctx)
{
	st->observer = fn;
	st->observer_ctx = ctx;
}

void gw_state_observe(gw_state_t *st, const gw_state_change_t *change)
{
	if (st->observer != NULL && change->tightens)
		st->observer(st->observer_ctx, change);
}

bool gw_state_claim_key(const void *data, size_t len, char hash[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return false;
	for (unsigned i = 0; i < 32; i++)
		snprintf(hash + 2 * i, 3, "%02x", md[i]);
	return true;
}

void gw_state_token_claim(gw_state_t *st, const char *hash, int64_t expires_ms, int64_t now_ms,
                          gw_token_claim_fn done, void *ctx)
{
	if (st->pg != NULL)
		gw_pg_claim(st->pg, hash, expires_ms, done, ctx);
	else
		done(ctx, gw_state_token_claim_local(st, hash, expires_ms, now_ms));
}
