/* Opening the state and persisting it (see state.h): each kind's document
 * is serialized on the loop, written on the thread pool, one write per kind
 * at a time, the latest document always last. */
#include "state/state.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_file.h"
#include "cg_log.h"
#include "state/state_model.h"

#define STATE_MAX_FILE (64 * 1024 * 1024)

static const gw_state_kind_t *const kinds[GW_STATE_KINDS] = {
        [GW_STATE_LOCKS] = &gw_state_locks_kind,     [GW_STATE_TRUST] = &gw_state_trust_kind,
        [GW_STATE_TOKENS] = &gw_state_tokens_kind,   [GW_STATE_REQUESTS] = &gw_state_requests_kind,
        [GW_STATE_DEVICES] = &gw_state_devices_kind,
};

static bool kind_path(const gw_state_t *st, unsigned kind, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.json", st->dir, kinds[kind]->name);
	return n > 0 && (size_t)n < len;
}

/* --- writing ---------------------------------------------------------------- */

static void write_work(uv_work_t *req)
{
	gw_state_writer_t *w = req->data;
	char path[PATH_MAX];
	w->result = kind_path(w->st, w->kind, path, sizeof(path))
	                    ? cg_file_write_atomic(path, 0600, w->text, w->len)
	                    : -ENAMETOOLONG;
}

static void start_write(gw_state_writer_t *w);

static void write_done(uv_work_t *req, int status)
{
	gw_state_writer_t *w = req->data;
	gw_state_t *st = w->st;
	w->in_flight = false;
	free(w->text);
	w->text = NULL;
	int rc = status < 0 ? status : w->result;
	if (rc < 0) {
		st->errors++;
		char path[PATH_MAX];
		if (!kind_path(st, w->kind, path, sizeof(path)))
			snprintf(path, sizeof(path), "%s", kinds[w->kind]->name);
		snprintf(st->problem, sizeof(st->problem), "cannot write %.180s: %.60s", path,
		         strerror(-rc));
		cg_log(CG_LOG_ERROR, "state: %s (kept in memory; retried with the next change)",
		       st->problem);
	} else if (!w->dirty) {
		st->problem[0] = '\0';
	}
	if (w->dirty)
		start_write(w);
}

static void start_write(gw_state_writer_t *w)
{
	gw_state_t *st = w->st;
	json_t *doc = kinds[w->kind]->save(st);
	char *text = doc != NULL ? json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	json_decref(doc);
	w->dirty = false;
	if (text == NULL) {
		st->errors++;
		snprintf(st->problem, sizeof(st->problem), "cannot save %s: out of memory",
		         kinds[w->kind]->name);
		return;
	}
	w->text = text;
	w->len = strlen(text);
	w->work.data = w;
	if (uv_queue_work(st->loop, &w->work, write_work, write_done) != 0) {
		free(w->text);
		w->text = NULL;
		st->errors++;
		snprintf(st->problem, sizeof(st->problem), "cannot queue a write of %s",
		         kinds[w->kind]->name);
		return;
	}
	w->in_flight = true;
}

void gw_state_changed(gw_state_t *st, unsigned kind)
{
	if (st->dir == NULL)
		return;
	gw_state_writer_t *w = &st->writers[kind];
	if (w->in_flight)
		w->dirty = true;
	else
		start_write(w);
}

/* --- opening ---------------------------------------------------------------- */

/* Loads one kind's file; a missing file is an empty kind. */
static bool load_kind(gw_state_t *st, unsigned kind, char *err, size_t errlen)
{
	char path[PATH_MAX], why[200];
	if (!kind_path(st, kind, path, sizeof(path))) {
		snprintf(err, errlen, "state.dir %s: path too long", st->dir);
		return false;
	}
	char *text;
	size_t len;
	int rc = cg_file_read(path, STATE_MAX_FILE, &text, &len);
	if (rc == -ENOENT)
		return true;
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return false;
	}
	json_error_t jerr;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (doc == NULL) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		return false;
	}
	bool ok = kinds[kind]->load(st, doc, why, sizeof(why));
	json_decref(doc);
	if (!ok)
		snprintf(err, errlen, "%s: %s", path, why);
	return ok;
}

gw_state_t *gw_state_open(uv_loop_t *loop, const char *dir, char *err, size_t errlen)
{
	gw_state_t *st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->loop = loop;
	if (uv_rwlock_init(&st->rw) != 0) {
		free(st);
		snprintf(err, errlen, "cannot create a lock");
		return NULL;
	}
	st->trust = cg_strmap_create();
	st->tokens = cg_strmap_create();
	st->grants = cg_strmap_create();
	st->devices = cg_strmap_create();
	for (unsigned k = 0; k < GW_STATE_KINDS; k++) {
		st->writers[k].st = st;
		st->writers[k].kind = k;
	}
	if (st->trust == NULL || st->tokens == NULL || st->grants == NULL || st->devices == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (dir == NULL)
		return st;
	st->dir = strdup(dir);
	char failed[PATH_MAX];
	int rc = st->dir != NULL ? cg_file_mkdirs(dir, 0700, failed, sizeof(failed)) : -ENOMEM;
	if (rc < 0) {
		snprintf(err, errlen, "state.dir %s: %s", rc == -ENOMEM ? dir : failed,
		         strerror(-rc));
		goto fail;
	}
	for (unsigned k = 0; k < GW_STATE_KINDS; k++)
		if (!load_kind(st, k, err, errlen))
			goto fail;
	return st;
fail:
	gw_state_close(st);
	return NULL;
}

void gw_state_close(gw_state_t *st)
{
	if (st == NULL)
		return;
	for (unsigned k = 0; k < GW_STATE_KINDS; k++)
		kinds[k]->finish(st);
	uv_rwlock_destroy(&st->rw);
	free(st->dir);
	free(st);
}

const char *gw_state_backend(const gw_state_t *st)
{
	return st->dir != NULL ? "file" : "memory";
}

const char *gw_state_problem(const gw_state_t *st)
{
	return st->problem[0] != '\0' ? st->problem : NULL;
}

uint64_t gw_state_errors(const gw_state_t *st)
{
	return st->errors;
}
