/* admin.denied: refused admin requests, audited at most once a second per
 * source address and counted (see denied.h).
 *
 * Data flow: adm_denied_record counts the refusal, then either writes it at
 * once (the address's last line is a second old or more) or keeps it as
 * the address's pending line, counting the ones it replaces. The tick
 * writes pending lines whose second is over and drops addresses that have
 * been quiet for a second. Times are the loop's monotonic milliseconds. */
#include "admin/denied.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_strmap.h"

#define WINDOW_MS    1000
#define SHOWN_PATH   256 /* bytes of the path in the audit line */
#define SHOWN_METHOD 16
#define OTHERS       "(other addresses)"

typedef struct source {
	uint64_t last_ms; /* when this address's last line was written */
	uint64_t pending; /* refusals since, not written */
	json_t *latest;   /* the latest of those, ready to write; NULL when none */
} source_t;

struct adm_denied {
	gw_gateway_t *gw;
	gw_metrics_t *metrics;
	cg_strmap_t *sources; /* source address -> source_t */
};

adm_denied_t *adm_denied_create(gw_gateway_t *gw, gw_metrics_t *metrics)
{
	adm_denied_t *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->gw = gw;
	d->metrics = metrics;
	d->sources = cg_strmap_create();
	if (d->sources == NULL) {
		free(d);
		return NULL;
	}
	return d;
}

static void source_free(void *value)
{
	source_t *s = value;
	json_decref(s->latest);
	free(s);
}

void adm_denied_destroy(adm_denied_t *d)
{
	if (d == NULL)
		return;
	cg_strmap_destroy(d->sources, source_free);
	free(d);
}

/* What the caller sent, fit for a log line whatever it was: printable ASCII
 * as is, every other byte as %XX (what it means in a URL anyway), cut with
 * "..." to fit len. The path is the one sent, escapes intact, so it reads
 * as it was written. */
static void shown(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
		bool plain = *p > ' ' && *p < 0x7f;
		size_t need = plain ? 1 : 3;
		if (o + need + 4 > len) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
}

static json_t *fields(const gw_http_request_t *req, gw_admin_denial_t why)
{
	char path[SHOWN_PATH], method[SHOWN_METHOD];
	shown(req->raw_path != NULL ? req->raw_path : req->path, path, sizeof(path));
	shown(req->method, method, sizeof(method));
	return json_pack("{s:s, s:s, s:s, s:s}", "by", req->client, "method", method, "path", path,
	                 "reason", gw_admin_denial_name(why));
}

static void write_line(adm_denied_t *d, json_t *f, uint64_t suppressed)
{
	if (f == NULL)
		return;
	json_object_set_new(f, "suppressed", json_integer((json_int_t)suppressed));
	(void)gw_audit(d->gw, "admin.denied", f);
}

void adm_denied_record(adm_denied_t *d, const gw_http_request_t *req, gw_admin_denial_t why)
{
	uint64_t now = uv_now(d->gw->loop);
	gw_metrics_admin_denied(d->metrics, why);
	const char *key = req->source;
	source_t *s = cg_strmap_get(d->sources, key);
	if (s == NULL && cg_strmap_count(d->sources) >= ADM_DENIED_SOURCES) {
		key = OTHERS;
		s = cg_strmap_get(d->sources, key);
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL) {
			write_line(d, fields(req, why), 0); /* unthrottled, not lost */
			return;
		}
		cg_strmap_put(d->sources, key, s);
	} else if (now - s->last_ms < WINDOW_MS) {
		json_decref(s->latest);
		s->latest = fields(req, why);
		s->pending++;
		return;
	}
	/* this address's second is over: this request goes out now, with the
	 * count of those not written since its previous line */
	json_decref(s->latest);
	s->latest = NULL;
	write_line(d, fields(req, why), s->pending);
	s->pending = 0;
	s->last_ms = now;
}

typedef struct sweep {
	adm_denied_t *d;
	uint64_t now;
	char **quiet; /* addresses to forget */
	size_t n_quiet;
} sweep_t;

static bool sweep_one(const char *key, void *value, void *arg)
{
	sweep_t *sw = arg;
	source_t *s = value;
	if (sw->now - s->last_ms < WINDOW_MS)
		return true;
	if (s->pending > 0) {
		/* the latest refusal stands for the others */
		write_line(sw->d, s->latest, s->pending - 1);
		s->latest = NULL;
		s->pending = 0;
		s->last_ms = sw->now;
		return true;
	}
	char *copy = strdup(key);
	if (copy != NULL)
		sw->quiet[sw->n_quiet++] = copy;
	return true;
}

void adm_denied_tick(adm_denied_t *d)
{
	size_t n = cg_strmap_count(d->sources);
	if (n == 0)
		return;
	sweep_t sw = {.d = d, .now = uv_now(d->gw->loop)};
	sw.quiet = calloc(n, sizeof(*sw.quiet));
	if (sw.quiet == NULL)
		return; /* next tick */
	cg_strmap_foreach(d->sources, sweep_one, &sw);
	for (size_t i = 0; i < sw.n_quiet; i++) {
		source_free(cg_strmap_remove(d->sources, sw.quiet[i]));
		free(sw.quiet[i]);
	}
	free(sw.quiet);
}
