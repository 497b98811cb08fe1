/* Just-in-time access (see access.h): the checks around the state's
 * requests kind, the audit of every step, the re-authorization of the
 * user's live sessions, and the one expiry timer. */
#include "core/access.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_duration.h"
#include "cg_time.h"
#include "cg_utf8.h"
#include "core/control.h"
#include "pol_claims.h"
#include "pol_config.h"

/* The longest approver name kept. */
#define BY_MAX 256

static json_t *time_json(int64_t ms)
{
	char ts[CG_RFC3339_LEN];
	if (ms == 0)
		return json_null();
	cg_rfc3339_ms(ms, ts);
	return json_string(ts);
}

json_t *gw_access_request_json(const gw_access_request_t *r)
{
	char duration[32];
	cg_duration_format((uint64_t)r->duration_ms, duration, sizeof(duration));
	return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s, s:o, s:s?, s:s?, s:s?, s:o, s:o}", "id",
	                 r->id, "user", r->user, "service", r->service, "reason", r->reason,
	                 "duration", duration, "state", gw_access_state_name(r->state), "created",
	                 time_json(r->created_ms), "requested_by", r->requested_by, "decided_by",
	                 r->decided_by, "decided_reason", r->decided_reason, "decided",
	                 time_json(r->decided_ms), "until", time_json(r->until_ms));
}

/* The fields every access.* event has (AUDIT.md): id, user, service, by,
 * reason, until. */
static json_t *event_fields(const gw_access_request_t *r, const char *by, const char *reason)
{
	return json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:o}", "id", r->id, "user", r->user,
	                 "service", r->service, "by", by, "reason", reason, "until",
	                 time_json(r->until_ms));
}

static void refuse(gw_access_outcome_t *out, gw_access_verdict_t verdict, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void refuse(gw_access_outcome_t *out, gw_access_verdict_t verdict, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	out->verdict = verdict;
	int n = vsnprintf(out->why, sizeof(out->why), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(out->why)) /* cut: never inside a character */
		out->why[cg_utf8_complete(out->why, sizeof(out->why) - 1)] = '\0';
}

/* "%.*s" arguments: at most 128 bytes of s, cut between characters */
#define CUT128(s) (int)cg_utf8_cut((s), strlen(s), 128), (s)

/* Text an operator will read in the audit log and the listing: UTF-8
 * without control characters, 1 to max bytes. */
static bool text_ok(const char *s, size_t max)
{
	size_t n = s != NULL ? strlen(s) : 0;
	return n > 0 && n <= max && pol_claims_text_ok(s, n);
}

bool gw_access_possible(const pol_snapshot_t *snap, const char *service)
{
	for (size_t i = 0; i < snap->n_rules; i++) {
		const pol_rule_t *rule = &snap->rules[i];
		if (!rule->requires_approval)
			continue;
		for (size_t k = 0; k < rule->n_services; k++)
			if (strcmp(rule->services[k], "*") == 0 ||
			    strcmp(rule->services[k], service) == 0)
				return true;
	}
	return false;
}

/* With on_failure refuse, nothing is granted that the audit log cannot
 * record. */
static bool audit_down(gw_gateway_t *gw, gw_access_outcome_t *out)
{
	/* the writer's health changes on every worker: under the audit lock */
	uv_mutex_lock(&gw->audit_lock);
	bool refusing =
	        !cg_audit_healthy(gw->audit) && cg_audit_on_failure(gw->audit) == CG_AUDIT_REFUSE;
	uv_mutex_unlock(&gw->audit_lock);
	if (!refusing)
		return false;
	refuse(out, GW_ACCESS_UNAVAILABLE,
	       "the audit log cannot be written (audit.on_failure is refuse): try again later");
	return true;
}

/* The checks and the recording of gw_access_ask; out->verdict says how it went. */
static void ask_checked(gw_gateway_t *gw, const char *user, const char *service, const char *reason,
                        const char *duration, const char *by, gw_access_outcome_t *out)
{
	uint64_t ms = 0;
	if (!text_ok(user, POL_CLAIM_MAX_LEN)) {
		refuse(out, GW_ACCESS_INVALID,
		       "user: expected UTF-8 text without control characters");
		return;
	}
	if (service == NULL || pol_snapshot_service(gw->rt->snap, service) == NULL) {
		refuse(out, GW_ACCESS_INVALID, "service: no service %.*s in the policy in force",
		       CUT128(service != NULL && text_ok(service, POL_CLAIM_MAX_LEN)
		                      ? service
		                      : "(unprintable)"));
		return;
	}
	if (!gw_access_possible(gw->rt->snap, service)) {
		refuse(out, GW_ACCESS_INVALID,
		       "service: no rule of the policy in force requires approval for %.*s: "
		       "there is nothing to ask for",
		       CUT128(service));
		return;
	}
	if (!text_ok(reason, GW_ACCESS_REASON_MAX)) {
		refuse(out, GW_ACCESS_INVALID,
		       "reason: expected 1 to %d bytes of UTF-8 text without control characters",
		       GW_ACCESS_REASON_MAX);
		return;
	}
	if (duration == NULL || !cg_duration_parse(duration, &ms) || ms < 1000 ||
	    ms > (uint64_t)GW_ACCESS_MAX_DURATION_MS) {
		refuse(out, GW_ACCESS_INVALID,
		       "duration: expected a duration from 1s to 7d, like \"30m\" or \"1h\"");
		return;
	}
	if (audit_down(gw, out))
		return;
	gw_access_result_t rc = gw_state_access_ask(gw->state, user, service, reason, (int64_t)ms,
	                                            cg_wall_ms(), by, &out->req);
	switch (rc) {
	case GW_ACCESS_OK:
		break;
	case GW_ACCESS_DUPLICATE:
		refuse(out, GW_ACCESS_CONFLICT, "%s is pending already for %.*s on %.*s",
		       out->req->id, CUT128(user), CUT128(service));
		return;
	case GW_ACCESS_LIMIT_USER:
		refuse(out, GW_ACCESS_LIMITED,
		       "%.*s has %d requests pending, the most allowed: wait for a decision",
		       CUT128(user), GW_ACCESS_PENDING_PER_USER);
		return;
	case GW_ACCESS_LIMIT_TOTAL:
		refuse(out, GW_ACCESS_LIMITED,
		       "%d requests are pending, the most allowed: wait for decisions",
		       GW_ACCESS_PENDING_MAX);
		return;
	default:
		refuse(out, GW_ACCESS_FAILED, "out of memory");
		return;
	}
}

void gw_access_ask(gw_gateway_t *gw, const char *user, const char *service, const char *reason,
                   const char *duration, const char *by, json_t *extra, gw_access_outcome_t *out)
{
	memset(out, 0, sizeof(*out));
	ask_checked(gw, user, service, reason, duration, by, out);
	if (out->verdict != GW_ACCESS_DONE) {
		json_decref(extra);
		return;
	}
	json_t *f = event_fields(out->req, by, reason);
	json_object_set_new(f, "duration", json_string(duration));
	if (extra != NULL)
		json_object_update_missing(f, extra);
	json_decref(extra);
	(void)gw_audit(gw, "access.requested", f);
}

void gw_access_decide(gw_gateway_t *gw, const char *id, bool approve, const char *by,
                      const char *reason, const char *caller, gw_access_outcome_t *out)
{
	memset(out, 0, sizeof(*out));
	if (!text_ok(by, BY_MAX)) {
		refuse(out, GW_ACCESS_INVALID,
		       "by: expected the approver's name, 1 to %d bytes of UTF-8 text without "
		       "control characters",
		       BY_MAX);
		return;
	}
	if (reason != NULL && !text_ok(reason, GW_ACCESS_REASON_MAX)) {
		refuse(out, GW_ACCESS_INVALID,
		       "reason: expected 1 to %d bytes of UTF-8 text without control characters",
		       GW_ACCESS_REASON_MAX);
		return;
	}
	const gw_access_request_t *r = gw_state_access_get(gw->state, id);
	out->req = r;
	if (r == NULL) {
		refuse(out, GW_ACCESS_UNKNOWN, "no access request %.64s", id);
		return;
	}
	if (r->state != GW_ACCESS_PENDING) {
		char when[CG_RFC3339_LEN];
		cg_rfc3339_ms(r->decided_ms, when);
		refuse(out, GW_ACCESS_CONFLICT, "%s was %s already (by %.*s at %s)", r->id,
		       r->state == GW_ACCESS_DENIED ? "denied" : "approved",
		       CUT128(r->decided_by != NULL ? r->decided_by : "?"), when);
		return;
	}
	/* users compare case-insensitively everywhere: so does the approver */
	if (approve && strcasecmp(by, r->user) == 0) {
		refuse(out, GW_ACCESS_SELF, "%.*s cannot approve their own request %s", CUT128(by),
		       r->id);
		return;
	}
	if (approve && audit_down(gw, out))
		return;
	switch (gw_state_access_decide(gw->state, id, approve, by, reason, cg_wall_ms(),
	                               &out->req)) {
	case GW_ACCESS_OK:
		break;
	default:
		refuse(out, GW_ACCESS_FAILED, "out of memory");
		return;
	}
	r = out->req;
	json_t *f = event_fields(r, by, reason);
	json_object_set_new(f, "from", caller != NULL ? json_string(caller) : json_null());
	json_object_set_new(f, "requested_reason",
	                    r->reason != NULL ? json_string(r->reason) : json_null());
	(void)gw_audit(gw, approve ? "access.approved" : "access.denied", f);
	if (approve) {
		/* a session admitted by an earlier grant now holds until this one ends */
		gw_reauthorize_matching(gw, r->user, NULL, "revoked: policy");
		gw_access_rearm(gw);
	}
}

/* --- expiry --------------------------------------------------------------- */

/* An access.expired line waiting for its claim. */
typedef struct expiry {
	gw_gateway_t *gw;
	json_t *fields;
} expiry_t;

static void on_expiry_claimed(void *ctx, gw_token_claim_t result)
{
	expiry_t *e = ctx;
	/* replayed: another gateway wrote it; the store away: better twice than
	   never */
	if (result != GW_TOKEN_REPLAYED)
		(void)gw_audit(e->gw, "access.expired", e->fields);
	else
		json_decref(e->fields);
	free(e);
}

/* Every gateway sharing a store expires the grant on its own timer; the
 * first to claim "access.expired:ID" writes the line, so it is written
 * once per grant across them all. */
static void audit_expired(gw_gateway_t *gw, const gw_access_request_t *r)
{
	json_t *fields = event_fields(r, r->decided_by, "grant ended");
	char what[128], hash[65];
	int len = snprintf(what, sizeof(what), "access.expired:%s", r->id);
	expiry_t *e = NULL;
	if (!gw_state_shared(gw->state) || len <= 0 || (size_t)len >= sizeof(what) ||
	    !gw_state_claim_key(what, (size_t)len, hash) || (e = malloc(sizeof(*e))) == NULL) {
		(void)gw_audit(gw, "access.expired", fields);
		return;
	}
	*e = (expiry_t){.gw = gw, .fields = fields};
	/* remembered as long as a removed record is (a week) */
	gw_state_token_claim(gw->state, hash, r->until_ms + 7 * 86400 * (int64_t)1000, cg_wall_ms(),
	                     on_expiry_claimed, e);
}

static void on_expired(void *arg, const gw_access_request_t *r)
{
	gw_gateway_t *gw = arg;
	audit_expired(gw, r);
	/* the session timers end those it admitted; this catches any other */
	gw_reauthorize_matching(gw, r->user, NULL, "revoked: policy");
}

static void on_timer(uv_timer_t *timer)
{
	gw_gateway_t *gw = timer->data;
	(void)gw_state_access_expire(gw->state, cg_wall_ms(), on_expired, gw);
	gw_access_rearm(gw);
}

void gw_access_rearm(gw_gateway_t *gw)
{
	if (!gw->access_timer_on)
		return;
	int64_t next = gw_state_access_next_expiry(gw->state);
	if (next == INT64_MAX) {
		uv_timer_stop(&gw->access_timer);
		return;
	}
	int64_t due = next - cg_wall_ms();
	if (due < 0)
		due = 0;
	/* the wall clock may be set meanwhile: look again within a minute */
	if (due > 60000)
		due = 60000;
	uv_timer_start(&gw->access_timer, on_timer, (uint64_t)due, 0);
}

void gw_access_start(gw_gateway_t *gw)
{
	uv_timer_init(gw->loop, &gw->access_timer);
	gw->access_timer.data = gw;
	gw->access_timer_on = true;
	gw_access_rearm(gw);
}
