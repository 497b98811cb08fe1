/* The file backend (state.dir): one JSON document per kind, DIR/KIND.json,
 * loaded at open; after a change the kind's document is serialized on the
 * loop and written on the thread pool, whole and atomically, one write per
 * kind at a time, the latest document always last. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_file.h"
#include "cg_log.h"
#include "state/state_model.h"

#define STATE_MAX_FILE (64 * 1024 * 1024)

static bool kind_path(const gw_state_t *st, unsigned kind, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.json", st->dir, gw_state_kinds[kind]->name);
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
			snprintf(path, sizeof(path), "%s", gw_state_kinds[w->kind]->name);
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
	json_t *doc = gw_state_kinds[w->kind]->save(st);
	char *text = doc != NULL ? json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	json_decref(doc);
	w->dirty = false;
	if (text == NULL) {
		st->errors++;
		snprintf(st->problem, sizeof(st->problem), "cannot save %s: out of memory",
		         gw_state_kinds[w->kind]->name);
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
		         gw_state_kinds[w->kind]->name);
		return;
	}
	w->in_flight = true;
}

void gw_state_file_changed(gw_state_t *st, unsigned kind)
{
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
	bool ok = gw_state_kinds[kind]->load(st, doc, why, sizeof(why));
	json_decref(doc);
	if (!ok)
		snprintf(err, errlen, "%s: %s", path, why);
	return ok;
}

bool gw_state_file_open(gw_state_t *st, const char *dir, char *err, size_t errlen)
{
	st->backend = GW_STATE_FILE;
	for (unsigned k = 0; k < GW_STATE_KINDS; k++) {
		st->writers[k].st = st;
		st->writers[k].kind = k;
	}
	st->dir = strdup(dir);
	char failed[PATH_MAX];
	int rc = st->dir != NULL ? cg_file_mkdirs(dir, 0700, failed, sizeof(failed)) : -ENOMEM;
	if (rc < 0) {
		snprintf(err, errlen, "state.dir %s: %s", rc == -ENOMEM ? dir : failed,
		         strerror(-rc));
		return false;
	}
	for (unsigned k = 0; k < GW_STATE_KINDS; k++)
		if (!load_kind(st, k, err, errlen))
			return false;
	return true;
}
