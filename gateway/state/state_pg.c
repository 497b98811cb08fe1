/* The state store's connection on the loop (see state_pg.h).
 *
 * Nothing here blocks the loop. An attempt looks the DSN's host names up on
 * the thread pool (uv_getaddrinfo), starts libpq's connect with every name
 * paired with its addresses (PQconnectStartParams: no lookup of its own)
 * and drives PQconnectPoll from a uv_poll_t on PQsocket. libpq may move to
 * another socket while it connects (the next address, a retry without
 * TLS), possibly under the same descriptor number, which an epoll set
 * would no longer report; so the watch is made anew after every poll step
 * until the connection is up. Then the connection is non-blocking
 * (PQsetnonblocking): a query is sent with PQsendQueryParams and flushed
 * while the socket takes it, its answer gathered with PQconsumeInput and
 * PQgetResult once PQisBusy says it is in, and notifications read on the
 * way. One query is in flight at a time, each with a deadline.
 *
 * Anything that goes wrong drops the connection (PQfinish once the watch
 * is stopped) and schedules the next attempt: 100 ms, doubling to 5 s,
 * each wait drawn from the upper half of its step so gateways that lost
 * the store together do not come back in step. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cg_log.h"
#include "state/state_pg.h"

static void attempt_start(gw_state_pg_t *pg);
static void on_socket(uv_poll_t *poll, int status, int events);

uint64_t gw_pg_backoff_step(uint64_t prev)
{
	uint64_t step = prev == 0 ? GW_PG_BACKOFF_MIN_MS : prev * 2;
	return step > GW_PG_BACKOFF_MAX_MS ? GW_PG_BACKOFF_MAX_MS : step;
}

uint64_t gw_pg_backoff_wait(uint64_t step, double rnd)
{
	if (rnd < 0 || rnd >= 1)
		rnd = 0;
	return step / 2 + (uint64_t)((double)(step - step / 2) * rnd);
}

static double random_unit(void)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return 0.5;
	return (double)r / 4294967296.0;
}

/* --- the socket watch ------------------------------------------------------- */

static void on_watch_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static void watch_close(gw_state_pg_t *pg)
{
	if (pg->watch == NULL)
		return;
	/* uv_close stops polling at once: the descriptor may be closed after */
	uv_close((uv_handle_t *)&pg->watch->poll, on_watch_closed);
	pg->watch = NULL;
}

/* Watches PQsocket for events; anew while connecting (see the top). */
static bool watch_set(gw_state_pg_t *pg, int events, bool anew)
{
	if (pg->watch != NULL && !anew) {
		if (pg->watch->events != events) {
			pg->watch->events = events;
			uv_poll_start(&pg->watch->poll, events, on_socket);
		}
		return true;
	}
	watch_close(pg);
	int fd = PQsocket(pg->conn);
	gw_pg_watch_t *w = calloc(1, sizeof(*w));
	if (fd < 0 || w == NULL) {
		free(w);
		return false;
	}
	if (uv_poll_init(pg->loop, &w->poll, fd) != 0) {
		free(w);
		return false;
	}
	w->pg = pg;
	w->events = events;
	w->poll.data = w;
	pg->watch = w;
	uv_poll_start(&w->poll, events, on_socket);
	return true;
}

/* --- dropping the connection ------------------------------------------------ */

static void free_resolved(gw_state_pg_t *pg)
{
	if (pg->resolved == NULL)
		return;
	for (size_t i = 0; i < pg->dsn.n_hosts; i++) {
		for (size_t k = 0; k < pg->resolved[i].n; k++)
			free(pg->resolved[i].addrs[k]);
		free(pg->resolved[i].addrs);
	}
	free(pg->resolved);
	pg->resolved = NULL;
	pg->resolving = 0; /* lookups still running belong to an old attempt */
}

static void disconnect(gw_state_pg_t *pg)
{
	free_resolved(pg);
	watch_close(pg);
	if (pg->conn != NULL)
		PQfinish(pg->conn);
	pg->conn = NULL;
	PQclear(pg->result);
	pg->result = NULL;
	pg->busy = false;
	pg->done = NULL;
	uv_timer_stop(&pg->timer);
}

static void on_backoff(uv_timer_t *timer)
{
	attempt_start(timer->data);
}

void gw_pg_fatal(gw_state_pg_t *pg, const char *why)
{
	snprintf(pg->fatal, sizeof(pg->fatal), "%s", why);
	snprintf(pg->st->problem, sizeof(pg->st->problem), "%s", why);
	pg->st->errors++;
	pg->phase = GW_PG_FATAL;
	cg_log(CG_LOG_ERROR, "state: %s", why);
	disconnect(pg);
	gw_pg_sync_lost(pg);
}

void gw_pg_fail(gw_state_pg_t *pg, const char *fmt, ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* libpq's messages end in a newline, some span two lines */
	for (char *p = why; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = p[1] != '\0' ? ' ' : '\0';
	gw_state_t *st = pg->st;
	bool was_up = pg->phase == GW_PG_READY;
	st->errors++;
	snprintf(st->problem, sizeof(st->problem), "state store unavailable: %s", why);
	disconnect(pg);
	gw_pg_sync_lost(pg);
	if (pg->phase == GW_PG_FATAL || pg->phase == GW_PG_STOPPED)
		return;
	pg->phase = GW_PG_IDLE;
	if (pg->stopping) /* no new attempt while draining */
		return;
	pg->backoff_ms = gw_pg_backoff_step(was_up ? 0 : pg->backoff_ms);
	pg->failures = was_up ? 1 : pg->failures + 1;
	uint64_t wait = gw_pg_backoff_wait(pg->backoff_ms, random_unit());
	/* the first failure, then about once a minute (every 12th at 5 s) */
	if (pg->failures == 1 || pg->failures % 12 == 0)
		cg_log(was_up ? CG_LOG_ERROR : CG_LOG_WARN,
		       "state: %s (attempt %llu; known locks and trust stay enforced; trying again "
		       "in %llu ms)",
		       st->problem, (unsigned long long)pg->failures, (unsigned long long)wait);
	uv_timer_start(&pg->timer, on_backoff, wait, 0);
}

/* --- connecting -------------------------------------------------------------- */

static void on_deadline(uv_timer_t *timer)
{
	gw_state_pg_t *pg = timer->data;
	if (pg->phase == GW_PG_RESOLVING || pg->phase == GW_PG_CONNECTING)
		gw_pg_fail(pg, "no connection within %d s", GW_PG_CONNECT_TIMEOUT_MS / 1000);
	else
		gw_pg_fail(pg, "no answer within %llu ms",
		           (unsigned long long)(pg->phase == GW_PG_SETUP ? GW_PG_SETUP_TIMEOUT_MS
		                                                         : GW_PG_QUERY_TIMEOUT_MS));
}

static void connect_step(gw_state_pg_t *pg)
{
	switch (PQconnectPoll(pg->conn)) {
	case PGRES_POLLING_READING:
		if (!watch_set(pg, UV_READABLE, true))
			gw_pg_fail(pg, "cannot watch the connection's socket");
		return;
	case PGRES_POLLING_WRITING:
		if (!watch_set(pg, UV_WRITABLE, true))
			gw_pg_fail(pg, "cannot watch the connection's socket");
		return;
	case PGRES_POLLING_OK:
		break;
	case PGRES_POLLING_FAILED:
	default:
		gw_pg_fail(pg, "%s", PQerrorMessage(pg->conn));
		return;
	}
	uv_timer_stop(&pg->timer);
	if (PQsetnonblocking(pg->conn, 1) != 0 || !watch_set(pg, UV_READABLE, true)) {
		gw_pg_fail(pg, "cannot make the connection non-blocking");
		return;
	}
	pg->phase = GW_PG_SETUP;
	gw_pg_sync_start(pg);
}

static void on_notice(void *arg, const char *message)
{
	(void)arg;
	cg_log(CG_LOG_DEBUG, "state: the store says: %.*s", (int)strcspn(message, "\n"), message);
}

static void connect_start(gw_state_pg_t *pg)
{
	char err[256];
	gw_pg_params_t params;
	int rc = gw_pg_params_build(&pg->dsn, pg->resolved, &params, err, sizeof(err));
	free_resolved(pg);
	if (rc < 0) {
		gw_pg_fail(pg, "%s", err);
		return;
	}
	pg->phase = GW_PG_CONNECTING;
	pg->conn = PQconnectStartParams(params.keywords, params.values, 0);
	gw_pg_params_finish(&params);
	if (pg->conn == NULL) {
		gw_pg_fail(pg, "out of memory");
		return;
	}
	if (PQstatus(pg->conn) == CONNECTION_BAD) {
		gw_pg_fail(pg, "%s", PQerrorMessage(pg->conn));
		return;
	}
	PQsetNoticeProcessor(pg->conn, on_notice, NULL);
	/* before the first PQconnectPoll, libpq waits to write */
	if (!watch_set(pg, UV_WRITABLE, true))
		gw_pg_fail(pg, "cannot watch the connection's socket");
}

typedef struct lookup {
	uv_getaddrinfo_t req;
	gw_state_pg_t *pg;
	uint64_t attempt;
	size_t host;
} lookup_t;

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	lookup_t *lk = req->data;
	gw_state_pg_t *pg = lk->pg;
	bool current = lk->attempt == pg->attempt && pg->phase == GW_PG_RESOLVING;
	if (current) {
		gw_pg_resolved_t *r = &pg->resolved[lk->host];
		if (status < 0)
			snprintf(r->error, sizeof(r->error), "%s", uv_strerror(status));
		size_t n = 0;
		for (struct addrinfo *a = res; a != NULL; a = a->ai_next)
			n++;
		r->addrs = n > 0 ? calloc(n, sizeof(*r->addrs)) : NULL;
		for (struct addrinfo *a = res; r->addrs != NULL && a != NULL; a = a->ai_next) {
			char ip[64] = "";
			if (a->ai_family == AF_INET)
				uv_ip4_name((const struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
			else if (a->ai_family == AF_INET6)
				uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, ip,
				            sizeof(ip));
			bool seen = ip[0] == '\0';
			for (size_t k = 0; k < r->n && !seen; k++)
				seen = strcmp(r->addrs[k], ip) == 0;
			if (!seen && (r->addrs[r->n] = strdup(ip)) != NULL)
				r->n++;
		}
		pg->resolving--;
	}
	uv_freeaddrinfo(res);
	free(lk);
	if (current && pg->resolving == 0)
		connect_start(pg);
}

/* One attempt: look up the names, then connect. */
static void attempt_start(gw_state_pg_t *pg)
{
	if (pg->stopping || pg->phase != GW_PG_IDLE)
		return;
	pg->attempt++;
	pg->phase = GW_PG_RESOLVING;
	pg->resolved = calloc(pg->dsn.n_hosts, sizeof(*pg->resolved));
	if (pg->resolved == NULL) {
		gw_pg_fail(pg, "out of memory");
		return;
	}
	uv_timer_start(&pg->timer, on_deadline, GW_PG_CONNECT_TIMEOUT_MS, 0);
	static const struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
	                                      .ai_flags = AI_ADDRCONFIG};
	for (size_t i = 0; i < pg->dsn.n_hosts; i++) {
		if (!pg->dsn.hosts[i].resolve)
			continue;
		lookup_t *lk = calloc(1, sizeof(*lk));
		if (lk == NULL) {
			snprintf(pg->resolved[i].error, sizeof(pg->resolved[i].error),
			         "out of memory");
			continue;
		}
		*lk = (lookup_t){.pg = pg, .attempt = pg->attempt, .host = i};
		lk->req.data = lk;
		int rc = uv_getaddrinfo(pg->loop, &lk->req, on_resolved, pg->dsn.hosts[i].host,
		                        NULL, &hints);
		if (rc < 0) {
			snprintf(pg->resolved[i].error, sizeof(pg->resolved[i].error), "%s",
			         uv_strerror(rc));
			free(lk);
			continue;
		}
		pg->resolving++;
	}
	if (pg->resolving == 0)
		connect_start(pg);
}

/* --- queries ------------------------------------------------------------------ */

/* Everything libpq has read: notifications, and the answer once it is
 * all in. */
static void read_input(gw_state_pg_t *pg)
{
	if (PQconsumeInput(pg->conn) != 1) {
		gw_pg_fail(pg, "%s", PQerrorMessage(pg->conn));
		return;
	}
	PGnotify *n;
	int self = PQbackendPID(pg->conn);
	bool heard = false;
	while (pg->conn != NULL && (n = PQnotifies(pg->conn)) != NULL) {
		if (n->be_pid != self) { /* this gateway's own changes are in the model */
			gw_pg_sync_notified(pg, n->extra);
			heard = true;
		}
		PQfreemem(n);
	}
	if (heard && !pg->busy)
		gw_pg_sync_next(pg); /* read them back now, not at the next tick */
	while (pg->conn != NULL && pg->busy && !PQisBusy(pg->conn)) {
		PGresult *r = PQgetResult(pg->conn);
		if (r != NULL) {
			/* keep the first error, else the latest result */
			if (pg->result != NULL && PQresultStatus(pg->result) == PGRES_FATAL_ERROR) {
				PQclear(r);
			} else {
				PQclear(pg->result);
				pg->result = r;
			}
			continue;
		}
		/* the answer is complete */
		PGresult *res = pg->result;
		gw_pg_done_fn done = pg->done;
		pg->result = NULL;
		pg->done = NULL;
		pg->busy = false;
		pg->last_answer = uv_now(pg->loop);
		uv_timer_stop(&pg->timer);
		if (res == NULL) {
			gw_pg_fail(pg, "an empty answer");
			return;
		}
		done(pg, res);
		PQclear(res);
		if (pg->conn != NULL && !pg->busy)
			gw_pg_sync_next(pg);
	}
}

static void flush_output(gw_state_pg_t *pg)
{
	int rc = PQflush(pg->conn);
	if (rc < 0)
		gw_pg_fail(pg, "%s", PQerrorMessage(pg->conn));
	else
		watch_set(pg, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE, false);
}

static void on_socket(uv_poll_t *poll, int status, int events)
{
	gw_state_pg_t *pg = ((gw_pg_watch_t *)poll->data)->pg;
	if (pg->conn == NULL)
		return;
	if (pg->phase == GW_PG_CONNECTING) {
		connect_step(pg);
		return;
	}
	if (status < 0) {
		gw_pg_fail(pg, "the connection's socket: %s", uv_strerror(status));
		return;
	}
	if (events & UV_WRITABLE)
		flush_output(pg);
	if (pg->conn != NULL && (events & UV_READABLE))
		read_input(pg);
}

bool gw_pg_send(gw_state_pg_t *pg, const char *sql, int n, const char *const *params,
                uint64_t timeout_ms, gw_pg_done_fn done)
{
	if (pg->conn == NULL || pg->busy)
		return false;
	int ok = params != NULL ? PQsendQueryParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0)
	                        : PQsendQuery(pg->conn, sql);
	if (ok != 1) {
		gw_pg_fail(pg, "%s", PQerrorMessage(pg->conn));
		return false;
	}
	pg->busy = true;
	pg->done = done;
	uv_timer_start(&pg->timer, on_deadline, timeout_ms, 0);
	flush_output(pg);
	return pg->conn != NULL;
}

/* --- life --------------------------------------------------------------------- */

static void on_tick(uv_timer_t *timer)
{
	gw_pg_sync_tick(timer->data);
}

gw_state_pg_t *gw_state_pg_create(gw_state_t *st, const char *dsn, const char *schema, char *err,
                                  size_t errlen)
{
	gw_state_pg_t *pg = calloc(1, sizeof(*pg));
	if (pg == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pg->st = st;
	pg->loop = st->loop;
	pg->phase = GW_PG_IDLE;
	pg->claims_tail = &pg->claims;
	pg->schema = strdup(schema);
	pg->changes = cg_strmap_create();
	pg->notified = cg_strmap_create();
	bool ok = pg->schema != NULL && pg->changes != NULL && pg->notified != NULL;
	for (unsigned i = 0; ok && i < GW_PG_SQL_COUNT; i++)
		ok = (pg->sql[i] = gw_pg_sql((gw_pg_sql_id_t)i, schema)) != NULL;
	if (!ok) {
		snprintf(err, errlen, "out of memory");
		gw_state_pg_destroy(pg);
		return NULL;
	}
	if (!gw_pg_dsn_parse(&pg->dsn, dsn, getenv("PGHOST"), err, errlen)) {
		gw_state_pg_destroy(pg);
		return NULL;
	}
	uv_timer_init(pg->loop, &pg->timer);
	uv_timer_init(pg->loop, &pg->tick);
	pg->timer.data = pg->tick.data = pg;
	pg->open_handles = 2;
	uv_timer_start(&pg->tick, on_tick, 1000, 1000);
	snprintf(st->problem, sizeof(st->problem), "state store unavailable: connecting");
	attempt_start(pg);
	return pg;
}

int gw_state_pg_wait(gw_state_pg_t *pg, uint64_t timeout_ms, char *err, size_t errlen)
{
	uint64_t deadline = uv_now(pg->loop) + timeout_ms;
	while (!pg->loaded && pg->phase != GW_PG_FATAL && uv_now(pg->loop) < deadline)
		uv_run(pg->loop, UV_RUN_ONCE); /* the tick wakes it every second */
	if (pg->phase == GW_PG_FATAL) {
		snprintf(err, errlen, "%s", pg->fatal);
		return -1;
	}
	if (!pg->loaded) {
		snprintf(err, errlen, "the state store was not reached within %llu s: %s",
		         (unsigned long long)(timeout_ms / 1000),
		         pg->st->problem[0] != '\0' ? pg->st->problem : "no answer");
		return -1;
	}
	return 0;
}

static void on_timer_closed(uv_handle_t *handle)
{
	gw_state_pg_t *pg = handle->data;
	pg->open_handles--;
}

/* Closes everything on the loop; the struct goes in destroy. */
static void close_all(gw_state_pg_t *pg)
{
	if (pg->phase == GW_PG_STOPPED)
		return;
	disconnect(pg);
	gw_pg_sync_lost(pg);
	pg->phase = GW_PG_STOPPED;
	uv_close((uv_handle_t *)&pg->timer, on_timer_closed);
	uv_close((uv_handle_t *)&pg->tick, on_timer_closed);
	size_t left = cg_strmap_count(pg->changes);
	if (left > 0)
		cg_log(CG_LOG_WARN, "state: %zu change(s) made here were not written to the store",
		       left);
}

void gw_state_pg_stop(gw_state_pg_t *pg)
{
	if (pg->stopping)
		return;
	pg->stopping = true;
	pg->stop_deadline = uv_now(pg->loop) + GW_PG_STOP_FLUSH_MS;
	gw_pg_claims_fail(pg);
	/* connected: what waits is written first (gw_pg_sync_tick ends it) */
	if (pg->phase != GW_PG_READY || (cg_strmap_count(pg->changes) == 0 && !pg->busy))
		close_all(pg);
}

void gw_pg_stop_check(gw_state_pg_t *pg)
{
	if (pg->stopping && (pg->phase != GW_PG_READY || uv_now(pg->loop) >= pg->stop_deadline ||
	                     (cg_strmap_count(pg->changes) == 0 && !pg->busy)))
		close_all(pg);
}

void gw_state_pg_destroy(gw_state_pg_t *pg)
{
	if (pg == NULL)
		return;
	if (pg->conn != NULL)
		PQfinish(pg->conn);
	PQclear(pg->result);
	for (unsigned i = 0; i < GW_PG_SQL_COUNT; i++)
		free(pg->sql[i]);
	cg_strmap_destroy(pg->changes, free);
	cg_strmap_destroy(pg->notified, NULL);
	for (size_t i = 0; i < pg->n_batch; i++)
		free(pg->batch[i]);
	free(pg->batch);
	free_resolved(pg);
	gw_pg_dsn_finish(&pg->dsn);
	free(pg->schema);
	free(pg);
}
