/* The conversation with the state store (see state_pg.h), one query at a
 * time on the connection state_pg.c keeps.
 *
 * After every connect (setup): the schema is created or migrated, this
 * gateway LISTENs on the schema's channel, writes what was changed here
 * while the store was away, then loads every shared record and makes the
 * model hold exactly that (what another gateway changed meanwhile comes
 * in, and what it tightens reaches the observer: the same re-check of live
 * sessions as an admin's change here). Then, in turn of urgency: token
 * claims (a login waits), local changes (one upsert statement for up to
 * GW_PG_BATCH_MAX records, each announced with NOTIFY kind:key), records
 * another gateway announced (read back by key: a notification is only a
 * hint, the row is the truth), the store's clock when idle, and the
 * pruning of lapsed rows.
 *
 * Conflicts: every change is stamped with the store's time it was made
 * here (this gateway's clock plus the offset measured against the store's
 * clock at each round trip) and replaces a row only if no later change is
 * there (state_pg_schema.c, WRITE): the last writer wins by the store's
 * clock, however late a change made while the store was away arrives. A
 * change that lost is read back, so this gateway's model follows the
 * winner. While a change of this gateway waits to be written, records read
 * for its key are not applied (the change is newer; if it loses, it is
 * read back after its write). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_log.h"
#include "cg_time.h"
#include "state/state_pg.h"

#define ID_MAX (GW_PG_KEY_MAX + 32)

static void setup_flush(gw_state_pg_t *pg);
static void change_note(gw_state_pg_t *pg, unsigned kind, const char *id);

bool gw_pg_record_id(const char *kind, const char *key, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s:%s", kind, key);
	return n > 0 && (size_t)n < len && strlen(key) <= GW_PG_KEY_MAX;
}

bool gw_pg_record_parse(const char *id, unsigned *kind, const char **key)
{
	const char *colon = strchr(id, ':');
	char name[32];
	if (colon == NULL || (size_t)(colon - id) >= sizeof(name))
		return false;
	memcpy(name, id, (size_t)(colon - id));
	name[colon - id] = '\0';
	int k = gw_state_kind_index(name);
	if (k < 0 || gw_state_kinds[k]->put == NULL)
		return false;
	*kind = (unsigned)k;
	*key = colon + 1;
	return true;
}

/* An answer that is an error drops the connection. */
static bool answer_ok(gw_state_pg_t *pg, PGresult *res, const char *what)
{
	ExecStatusType s = PQresultStatus(res);
	if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
		return true;
	gw_pg_fail(pg, "%s: %s", what, PQresultErrorMessage(res));
	return false;
}

static void batch_clear(gw_state_pg_t *pg)
{
	for (size_t i = 0; i < pg->n_batch; i++)
		free(pg->batch[i]);
	free(pg->batch);
	pg->batch = NULL;
	pg->n_batch = 0;
}

/* --- applying records to the model ----------------------------------------- */

/* A change that tightens access, kept until the batch is applied. */
typedef struct tightened {
	const char *kind, *reason;
	char *key, *user, *device;
} tightened_t;

typedef struct applying {
	gw_state_pg_t *pg;
	tightened_t *list;
	size_t n, cap;
	size_t applied;
} applying_t;

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* Puts one record read from the store into the model (value_text NULL: no
 * record), unless a change of this gateway to it waits to be written. */
static void apply(applying_t *a, const char *id, const char *value_text)
{
	gw_state_pg_t *pg = a->pg;
	unsigned kind;
	const char *key;
	if (!gw_pg_record_parse(id, &kind, &key) || cg_strmap_get(pg->changes, id) != NULL)
		return;
	json_t *value = NULL;
	char err[200] = "";
	if (value_text != NULL) {
		json_error_t jerr;
		value = json_loads(value_text, JSON_REJECT_DUPLICATES, &jerr);
		if (value == NULL)
			snprintf(err, sizeof(err), "%s", jerr.text);
	}
	/* the same record again (every record at each reload): nothing to do */
	int64_t expires;
	json_t *now = err[0] == '\0' ? gw_state_kinds[kind]->get(pg->st, key, &expires) : NULL;
	bool same = err[0] == '\0' && (now == NULL ? value == NULL : json_equal(now, value));
	json_decref(now);
	if (same) {
		json_decref(value);
		return;
	}
	gw_state_change_t change = {0};
	bool put = false;
	if (err[0] == '\0')
		/* the workers read the model meanwhile: they wait for the put */
		GW_STATE_WRITING(pg->st, put = gw_state_kinds[kind]->put(
		                                 pg->st, key, value, &change, err, sizeof(err)));
	if (put) {
		a->applied++;
		/* a kind that keeps what must not go back (a device's forget)
		 * may hold more than the store: that is written back */
		json_t *kept = gw_state_kinds[kind]->get(pg->st, key, &expires);
		if (kept == NULL ? value != NULL : value == NULL || !json_equal(kept, value))
			change_note(pg, kind, id);
		json_decref(kept);
		if (change.tightens && a->n < a->cap) {
			tightened_t *t = &a->list[a->n];
			*t = (tightened_t){.kind = gw_state_kinds[kind]->name,
			                   .reason = change.reason,
			                   .key = strdup(key),
			                   .user = dup_or_null(change.user),
			                   .device = dup_or_null(change.device)};
			a->n++;
		}
	} else {
		/* the model keeps what it had: a lock this gateway knows stays */
		pg->st->errors++;
		cg_log(CG_LOG_ERROR,
		       "state: the store's record %.*s is not one this gateway can "
		       "read (%s): ignored",
		       200, id, err);
	}
	json_decref(value);
}

/* A row of LOAD or READ that holds no record: a tombstone, or lapsed
 * (the store drops it a minute later; the model drops it now). */
static bool row_gone(const PGresult *res, int row, int64_t now)
{
	int64_t expires = strtoll(PQgetvalue(res, row, 4), NULL, 10);
	return PQgetisnull(res, row, 2) || strcmp(PQgetvalue(res, row, 3), "t") == 0 ||
	       (expires != 0 && expires <= now);
}

static bool applying_init(applying_t *a, gw_state_pg_t *pg, size_t cap)
{
	*a = (applying_t){.pg = pg, .cap = cap};
	a->list = cap > 0 ? calloc(cap, sizeof(*a->list)) : NULL;
	return cap == 0 || a->list != NULL;
}

/* The batch is in the model: the observer hears what tightened. */
static void applying_finish(applying_t *a)
{
	for (size_t i = 0; i < a->n; i++) {
		tightened_t *t = &a->list[i];
		if (t->key != NULL) {
			cg_log(CG_LOG_INFO,
			       "state: %s %s changed by another gateway: re-checking "
			       "live sessions%s%s%s%s",
			       t->kind, t->key, t->user != NULL ? " of " : "",
			       t->user != NULL ? t->user : "",
			       t->device != NULL ? " of device " : "",
			       t->device != NULL ? t->device : "");
			gw_state_change_t change = {.kind = t->kind,
			                            .key = t->key,
			                            .tightens = true,
			                            .user = t->user,
			                            .device = t->device,
			                            .reason = t->reason};
			gw_state_observe(a->pg->st, &change);
		}
		free(t->key);
		free(t->user);
		free(t->device);
	}
	free(a->list);
}

/* --- the store's clock --------------------------------------------------------- */

/* The store's time, asked at clock_sent_ms, answered now: the offset is
 * taken at the round trip's middle (a slow round trip says little, unless
 * there is nothing better yet). */
static void clock_answer(gw_state_pg_t *pg, PGresult *res)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0))
		return;
	int64_t store_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	int64_t now = cg_wall_ms();
	if (now - pg->clock_sent_ms <= 1000 || !pg->have_offset)
		pg->offset_ms = store_ms - (pg->clock_sent_ms + now) / 2;
	pg->have_offset = true;
}

static void on_clock(gw_state_pg_t *pg, PGresult *res)
{
	if (answer_ok(pg, res, "reading the store's clock"))
		clock_answer(pg, res);
}

/* --- setup ---------------------------------------------------------------------- */

static const char *kinds_json(void)
{
	static char buf[256];
	if (buf[0] == '\0') {
		size_t at = 0;
		buf[at++] = '[';
		for (unsigned k = 0; k < GW_STATE_KINDS; k++) {
			if (gw_state_kinds[k]->put == NULL)
				continue;
			at += (size_t)snprintf(buf + at, sizeof(buf) - at, "%s\"%s\"",
			                       at > 1 ? "," : "", gw_state_kinds[k]->name);
		}
		snprintf(buf + at, sizeof(buf) - at, "]");
	}
	return buf;
}

typedef struct seen {
	cg_strmap_t *ids;
	gw_state_pg_t *pg;
	unsigned kind;
	char **gone;
	size_t n_gone, cap_gone;
} seen_t;

static void collect_gone(void *ctx, const char *key)
{
	seen_t *s = ctx;
	char id[ID_MAX];
	if (!gw_pg_record_id(gw_state_kinds[s->kind]->name, key, id, sizeof(id)))
		return;
	if (cg_strmap_get(s->ids, id) != NULL)
		return;
	if (s->n_gone == s->cap_gone) {
		size_t cap = s->cap_gone != 0 ? s->cap_gone * 2 : 64;
		char **grown = realloc(s->gone, cap * sizeof(*grown));
		if (grown == NULL)
			return;
		s->gone = grown;
		s->cap_gone = cap;
	}
	if ((s->gone[s->n_gone] = strdup(id)) != NULL)
		s->n_gone++;
}

/* Every shared record: the model holds exactly what the store holds (and
 * this gateway's changes waiting to be written). */
static void on_loaded(gw_state_pg_t *pg, PGresult *res)
{
	if (!answer_ok(pg, res, "loading the state"))
		return;
	int rows = PQntuples(res);
	int64_t now = cg_wall_ms();
	seen_t s = {.ids = cg_strmap_create(), .pg = pg};
	applying_t a;
	if (s.ids == NULL || !applying_init(&a, pg, (size_t)rows + 64)) {
		cg_strmap_destroy(s.ids, NULL);
		gw_pg_fail(pg, "loading the state: out of memory");
		return;
	}
	for (int i = 0; i < rows; i++) {
		char id[ID_MAX];
		if (!gw_pg_record_id(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), id, sizeof(id)))
			continue;
		cg_strmap_put(s.ids, id, (void *)1);
		bool gone = row_gone(res, i, now);
		apply(&a, id, gone ? NULL : PQgetvalue(res, i, 2));
	}
	/* what the model holds and the store does not: removed and pruned */
	for (unsigned k = 0; k < GW_STATE_KINDS; k++) {
		if (gw_state_kinds[k]->keys == NULL)
			continue;
		s.kind = k;
		gw_state_kinds[k]->keys(pg->st, collect_gone, &s);
	}
	for (size_t i = 0; i < s.n_gone; i++) {
		apply(&a, s.gone[i], NULL);
		free(s.gone[i]);
	}
	free(s.gone);
	cg_strmap_destroy(s.ids, NULL);
	bool first = !pg->loaded;
	pg->loaded = true;
	pg->phase = GW_PG_READY;
	pg->backoff_ms = 0;
	pg->st->problem[0] = '\0';
	pg->last_prune = pg->last_answer;
	cg_log(first ? CG_LOG_INFO : CG_LOG_WARN,
	       "state: in sync with the store (schema %s): %d record(s)%s", pg->schema, rows,
	       first             ? ""
	       : pg->reconnected ? " after the connection was lost"
	                         : " read again whole (too many changes announced at once)");
	pg->reconnected = false;
	applying_finish(&a);
}

static void load(gw_state_pg_t *pg)
{
	/* the load reads everything: what was announced before it is in it */
	cg_strmap_destroy(pg->notified, NULL);
	pg->notified = cg_strmap_create();
	const char *params[1] = {kinds_json()};
	if (pg->notified == NULL)
		gw_pg_fail(pg, "out of memory");
	else
		(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_LOAD], 1, params, GW_PG_SETUP_TIMEOUT_MS,
		                 on_loaded);
}

static void on_listening(gw_state_pg_t *pg, PGresult *res)
{
	if (!answer_ok(pg, res, "LISTEN"))
		return;
	clock_answer(pg, res);
	setup_flush(pg);
}

static void on_migrated(gw_state_pg_t *pg, PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state != NULL && strcmp(state, GW_PG_SQLSTATE_TOO_NEW) == 0) {
		const char *found = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
		char why[256];
		snprintf(why, sizeof(why),
		         "the state store's schema \"%s\" is version %s, this certgate knows up to "
		         "version %d: upgrade certgate (or use another state.schema)",
		         pg->schema, found != NULL ? found : "?", GW_PG_SCHEMA_VERSION);
		gw_pg_fatal(pg, why);
		return;
	}
	if (!answer_ok(pg, res, "creating or migrating the schema"))
		return;
	pg->clock_sent_ms = cg_wall_ms();
	(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_LISTEN], 0, NULL, GW_PG_QUERY_TIMEOUT_MS,
	                 on_listening);
}

void gw_pg_sync_start(gw_state_pg_t *pg)
{
	pg->reconnected = pg->loaded;
	(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_MIGRATE], 0, NULL, GW_PG_SETUP_TIMEOUT_MS,
	                 on_migrated);
}

/* --- writing local changes ------------------------------------------------------- */

typedef struct building {
	gw_state_pg_t *pg;
	json_t *rows;
	bool failed;
} building_t;

json_t *gw_pg_change_row(gw_state_pg_t *pg, const char *id, const gw_pg_change_t *c)
{
	unsigned kind;
	const char *key;
	if (!gw_pg_record_parse(id, &kind, &key))
		return NULL;
	int64_t expires = 0;
	json_t *record = gw_state_kinds[kind]->get(pg->st, key, &expires);
	return json_pack("{s:s, s:s, s:o, s:b, s:I, s:I}", "kind", gw_state_kinds[kind]->name,
	                 "key", key, "value", record != NULL ? record : json_null(), "deleted",
	                 record == NULL, "stamp", (json_int_t)(c->changed_ms + pg->offset_ms),
	                 "expires", (json_int_t)expires);
}

static bool add_change(const char *id, void *value, void *arg)
{
	building_t *b = arg;
	gw_state_pg_t *pg = b->pg;
	gw_pg_change_t *c = value;
	if (c->in_flight)
		return true;
	json_t *row = gw_pg_change_row(pg, id, c);
	char *copy = strdup(id);
	if (row == NULL || copy == NULL || json_array_append_new(b->rows, row) != 0) {
		free(copy);
		b->failed = true;
		return false;
	}
	pg->batch[pg->n_batch++] = copy;
	c->in_flight = true;
	c->again = false;
	return pg->n_batch < GW_PG_BATCH_MAX;
}

static void on_written(gw_state_pg_t *pg, PGresult *res)
{
	if (!answer_ok(pg, res, "writing changes"))
		return;
	cg_strmap_t *written = cg_strmap_create();
	for (int i = 0; written != NULL && i < PQntuples(res); i++) {
		char id[ID_MAX];
		if (gw_pg_record_id(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), id, sizeof(id)))
			cg_strmap_put(written, id, (void *)1);
	}
	for (size_t i = 0; i < pg->n_batch; i++) {
		const char *id = pg->batch[i];
		gw_pg_change_t *c = cg_strmap_get(pg->changes, id);
		if (c != NULL && c->again) {
			c->in_flight = false; /* the newer change goes with the next write */
			continue;
		}
		free(cg_strmap_remove(pg->changes, id));
		/* a later change is in the store: read it back */
		if (written == NULL || cg_strmap_get(written, id) == NULL)
			cg_strmap_put(pg->notified, id, (void *)1);
	}
	cg_strmap_destroy(written, NULL);
	batch_clear(pg);
	if (pg->phase == GW_PG_SETUP)
		setup_flush(pg);
}

/* Sends one write of what waits; false when nothing does. */
static bool send_write(gw_state_pg_t *pg)
{
	size_t waiting = cg_strmap_count(pg->changes);
	if (waiting == 0)
		return false;
	building_t b = {.pg = pg, .rows = json_array()};
	pg->batch = calloc(GW_PG_BATCH_MAX, sizeof(*pg->batch));
	if (b.rows == NULL || pg->batch == NULL) {
		json_decref(b.rows);
		gw_pg_fail(pg, "writing changes: out of memory");
		return true;
	}
	cg_strmap_foreach(pg->changes, add_change, &b);
	char *text = b.failed ? NULL : json_dumps(b.rows, JSON_COMPACT);
	json_decref(b.rows);
	if (text == NULL) {
		gw_pg_fail(pg, "writing changes: out of memory");
		return true;
	}
	if (pg->n_batch == 0) { /* every change is in flight already */
		free(text);
		batch_clear(pg);
		return false;
	}
	const char *params[1] = {text};
	(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_WRITE], 1, params, GW_PG_QUERY_TIMEOUT_MS,
	                 on_written);
	free(text);
	return true;
}

/* Setup: what was changed here while away is written first (the store
 * decides each conflict), then everything is loaded. */
static void setup_flush(gw_state_pg_t *pg)
{
	if (!send_write(pg))
		load(pg);
}

/* Notes that the record id (of kind) changed here, to be written with the
 * next write; the caller schedules it. */
static void change_note(gw_state_pg_t *pg, unsigned kind, const char *id)
{
	gw_pg_change_t *c = cg_strmap_get(pg->changes, id);
	if (c == NULL) {
		c = calloc(1, sizeof(*c));
		if (c == NULL || cg_strmap_put(pg->changes, id, c) != NULL) {
			free(c);
			pg->st->errors++;
			return;
		}
		c->kind = kind;
	}
	c->changed_ms = cg_wall_ms();
	if (c->in_flight)
		c->again = true;
}

void gw_pg_changed(gw_state_pg_t *pg, unsigned kind, const char *key)
{
	char id[ID_MAX];
	if (gw_state_kinds[kind]->put == NULL)
		return; /* not shared record by record */
	if (!gw_pg_record_id(gw_state_kinds[kind]->name, key, id, sizeof(id))) {
		pg->st->errors++;
		cg_log(CG_LOG_ERROR,
		       "state: a %s key of %zu bytes is too long to share (over %d): "
		       "kept on this gateway only",
		       gw_state_kinds[kind]->name, strlen(key), GW_PG_KEY_MAX);
		return;
	}
	change_note(pg, kind, id);
	gw_pg_sync_next(pg);
}

/* --- records announced by other gateways ----------------------------------------- */

void gw_pg_sync_notified(gw_state_pg_t *pg, const char *payload)
{
	unsigned kind;
	const char *key;
	/* anyone who may connect can NOTIFY: a payload is only a key to read,
	 * and past a bound everything is read again instead (memory stays
	 * bounded, no change is missed) */
	if (strlen(payload) >= ID_MAX || !gw_pg_record_parse(payload, &kind, &key))
		return;
	if (cg_strmap_count(pg->notified) >= GW_PG_NOTIFIED_MAX)
		pg->reload = true;
	else
		cg_strmap_put(pg->notified, payload, (void *)1);
}

static void on_read(gw_state_pg_t *pg, PGresult *res)
{
	if (!answer_ok(pg, res, "reading changed records"))
		return;
	applying_t a;
	int rows = PQntuples(res);
	int64_t now = cg_wall_ms();
	cg_strmap_t *found = cg_strmap_create();
	if (found == NULL || !applying_init(&a, pg, (size_t)rows + pg->n_batch)) {
		cg_strmap_destroy(found, NULL);
		gw_pg_fail(pg, "reading changed records: out of memory");
		return;
	}
	for (int i = 0; i < rows; i++) {
		char id[ID_MAX];
		if (!gw_pg_record_id(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), id, sizeof(id)))
			continue;
		cg_strmap_put(found, id, (void *)1);
		bool gone = row_gone(res, i, now);
		apply(&a, id, gone ? NULL : PQgetvalue(res, i, 2));
	}
	for (size_t i = 0; i < pg->n_batch; i++) /* no row any more: pruned */
		if (cg_strmap_get(found, pg->batch[i]) == NULL)
			apply(&a, pg->batch[i], NULL);
	cg_strmap_destroy(found, NULL);
	batch_clear(pg);
	applying_finish(&a);
}

typedef struct reading {
	gw_state_pg_t *pg;
	json_t *keys;
	bool failed;
} reading_t;

static bool add_read(const char *id, void *value, void *arg)
{
	reading_t *r = arg;
	gw_state_pg_t *pg = r->pg;
	unsigned kind;
	const char *key;
	(void)value;
	char *copy = strdup(id);
	if (copy == NULL || !gw_pg_record_parse(id, &kind, &key) ||
	    json_array_append_new(r->keys, json_pack("{s:s, s:s}", "kind",
	                                             gw_state_kinds[kind]->name, "key", key)) !=
	            0) {
		free(copy);
		r->failed = true;
		return false;
	}
	pg->batch[pg->n_batch++] = copy;
	return pg->n_batch < GW_PG_BATCH_MAX;
}

static bool send_read(gw_state_pg_t *pg)
{
	if (cg_strmap_count(pg->notified) == 0)
		return false;
	reading_t r = {.pg = pg, .keys = json_array()};
	pg->batch = calloc(GW_PG_BATCH_MAX, sizeof(*pg->batch));
	if (r.keys == NULL || pg->batch == NULL) {
		json_decref(r.keys);
		gw_pg_fail(pg, "reading changed records: out of memory");
		return true;
	}
	cg_strmap_foreach(pg->notified, add_read, &r);
	char *text = r.failed ? NULL : json_dumps(r.keys, JSON_COMPACT);
	json_decref(r.keys);
	if (text == NULL) {
		gw_pg_fail(pg, "reading changed records: out of memory");
		return true;
	}
	for (size_t i = 0; i < pg->n_batch; i++) /* a new announcement reads again */
		cg_strmap_remove(pg->notified, pg->batch[i]);
	const char *params[1] = {text};
	(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_READ], 1, params, GW_PG_QUERY_TIMEOUT_MS, on_read);
	free(text);
	return true;
}

/* --- token claims ---------------------------------------------------------------- */

static void on_claim(gw_state_pg_t *pg, PGresult *res)
{
	gw_pg_claim_t *c = pg->claiming;
	pg->claiming = NULL;
	if (!answer_ok(pg, res, "claiming a token")) {
		if (c != NULL)
			c->done(c->ctx, GW_TOKEN_UNAVAILABLE);
		free(c);
		return;
	}
	if (c != NULL)
		c->done(c->ctx, PQntuples(res) == 1 ? GW_TOKEN_FRESH : GW_TOKEN_REPLAYED);
	free(c);
}

static bool send_claim(gw_state_pg_t *pg)
{
	gw_pg_claim_t *c = pg->claims;
	if (c == NULL)
		return false;
	pg->claims = c->next;
	if (pg->claims == NULL)
		pg->claims_tail = &pg->claims;
	pg->claiming = c;
	char expires[24];
	snprintf(expires, sizeof(expires), "%" PRId64, c->expires_ms);
	const char *params[2] = {c->hash, expires};
	(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_CLAIM], 2, params, GW_PG_QUERY_TIMEOUT_MS, on_claim);
	return true;
}

void gw_pg_claim(gw_state_pg_t *pg, const char *hash, int64_t expires_ms, gw_token_claim_fn done,
                 void *ctx)
{
	gw_pg_claim_t *c = NULL;
	/* nothing new is granted without the shared truth */
	if (pg->phase != GW_PG_READY || pg->stopping || strlen(hash) >= sizeof(c->hash) ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		done(ctx, GW_TOKEN_UNAVAILABLE);
		return;
	}
	snprintf(c->hash, sizeof(c->hash), "%s", hash);
	c->expires_ms = expires_ms;
	c->done = done;
	c->ctx = ctx;
	*pg->claims_tail = c;
	pg->claims_tail = &c->next;
	gw_pg_sync_next(pg);
}

void gw_pg_claims_fail(gw_state_pg_t *pg)
{
	gw_pg_claim_t *c = pg->claiming;
	pg->claiming = NULL;
	if (c != NULL) {
		c->done(c->ctx, GW_TOKEN_UNAVAILABLE);
		free(c);
	}
	while ((c = pg->claims) != NULL) {
		pg->claims = c->next;
		c->done(c->ctx, GW_TOKEN_UNAVAILABLE);
		free(c);
	}
	pg->claims_tail = &pg->claims;
}

/* --- the schedule ------------------------------------------------------------------ */

static void on_pruned(gw_state_pg_t *pg, PGresult *res)
{
	(void)answer_ok(pg, res, "pruning lapsed records");
}

static bool clear_in_flight(const char *id, void *value, void *arg)
{
	gw_pg_change_t *c = value;
	(void)id;
	(void)arg;
	c->in_flight = false;
	return true;
}

void gw_pg_sync_lost(gw_state_pg_t *pg)
{
	gw_pg_claims_fail(pg); /* fail closed: no claim without the store's answer */
	cg_strmap_foreach(pg->changes, clear_in_flight, NULL);
	batch_clear(pg);
}

void gw_pg_sync_next(gw_state_pg_t *pg)
{
	if (pg->busy || pg->phase != GW_PG_READY || pg->conn == NULL)
		return;
	if (send_claim(pg) || send_write(pg))
		return;
	if (pg->stopping) { /* everything made here is written: done */
		gw_pg_stop_check(pg);
		return;
	}
	if (pg->reload) {
		pg->reload = false;
		load(pg);
		return;
	}
	if (send_read(pg))
		return;
	uint64_t now = uv_now(pg->loop);
	if (now - pg->last_answer >= GW_PG_HEARTBEAT_MS) {
		pg->clock_sent_ms = cg_wall_ms();
		(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_CLOCK], 0, NULL, GW_PG_QUERY_TIMEOUT_MS,
		                 on_clock);
	} else if (now - pg->last_prune >= GW_PG_PRUNE_MS) {
		pg->last_prune = now;
		(void)gw_pg_send(pg, pg->sql[GW_PG_SQL_PRUNE], 0, NULL, GW_PG_QUERY_TIMEOUT_MS,
		                 on_pruned);
	}
}

void gw_pg_sync_tick(gw_state_pg_t *pg)
{
	if (pg->stopping)
		gw_pg_stop_check(pg);
	else
		gw_pg_sync_next(pg);
}
