/* A connection that asks for just-in-time access (`certgate request`): the
 * server name certgate-catalog with ALPN certgate-jit/1. After the
 * handshake the client sends one JSON line,
 *   {"op": "request", "service": S, "reason": R, "duration": "1h"}
 *   {"op": "status", "id": "req-N"}
 * and gets one JSON line back, {"request": {...}} (gw_access_request_json)
 * or {"error": "why"} (with "request" when one is pending already), then
 * close_notify.
 *
 * The requester is the certificate's user claim, never the message's. What
 * the certificate and the policy can say is checked here, on the worker:
 * the service, that a rule requires approval for it, that the certificate
 * is not refused outright (a lock, a forgotten device, always_deny) and
 * that an approval would admit it. The requests belong to the control
 * loop, so the rest (the input's checks, the bounds, the record and its
 * audit: gw_access_ask) runs there, and the answer comes back to this
 * worker. A refused request is audited (access.refused) and answered; a
 * status read is neither audited nor shown for another user's request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cg_utf8.h"
#include "core/access.h"
#include "core/catalog.h"
#include "core/session.h"

/* The longest line a client may send (a reason is at most 500 bytes). */
#define ACCESS_LINE_MAX 4096

/* One request on its way to the control loop and back. */
typedef struct access_call {
	gw_worker_t *worker;
	gw_session_t *session; /* compared, never followed, until found alive */
	char session_id[GW_SESSION_ID_LEN];
	bool status; /* op "status" */
	char *user, *service, *reason, *duration, *id;
	json_t *fields; /* the audit's: session, client, user, device_id */
	char *answer;   /* the line back, made on the control loop */
} access_call_t;

static void call_free(access_call_t *c)
{
	free(c->user);
	free(c->service);
	free(c->reason);
	free(c->duration);
	free(c->id);
	json_decref(c->fields);
	free(c->answer);
	free(c);
}

static gw_end_t *client_end(gw_session_t *s)
{
	return &s->link.end[GW_CLIENT];
}

/* Sends line (one JSON document) and ends the connection. */
static void answer(gw_session_t *s, const char *line)
{
	if (line != NULL) {
		size_t len = strlen(line);
		if (gw_end_send_tls(client_end(s), line, len) == 0)
			(void)gw_end_send_tls(client_end(s), "\n", 1);
	}
	gw_session_drop(s, true);
}

/* {"error": why[, "request": req]}, one line (NULL when out of memory). */
static char *error_line(const char *why, const gw_access_request_t *req)
{
	json_t *j = json_object();
	cg_json_set_lossy_str(j, "error", why);
	if (req != NULL)
		json_object_set_new(j, "request", gw_access_request_json(req));
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return text;
}

/* The fields of every access.refused line and of access.requested's extra. */
static json_t *identity_fields(gw_session_t *s)
{
	json_t *f = json_object();
	json_object_set_new(f, "session", json_string(s->id));
	json_object_set_new(f, "client", json_string(s->client));
	json_object_set_new(f, "user", s->claims.user ? json_string(s->claims.user) : json_null());
	json_object_set_new(f, "device_id",
	                    s->claims.device_id ? json_string(s->claims.device_id) : json_null());
	return f;
}

/* access.refused: f (stolen) plus what was asked and why it is refused. */
static void audit_refusal(gw_gateway_t *gw, json_t *f, const char *service, const char *reason,
                          const char *duration, const char *why)
{
	json_object_set_new(f, "id", json_null());
	cg_json_set_lossy_str(f, "service", service != NULL ? service : "");
	json_object_set(f, "by", json_object_get(f, "user"));
	cg_json_set_lossy_str(f, "reason", why);
	json_object_set_new(f, "until", json_null());
	if (reason != NULL)
		cg_json_set_lossy_str(f, "requested_reason", reason);
	if (duration != NULL)
		cg_json_set_lossy_str(f, "duration", duration);
	(void)gw_audit(gw, "access.refused", f);
}

/* A request refused on the worker: audited, answered, closed. */
static void refuse(gw_session_t *s, const char *service, const char *reason, const char *duration,
                   const char *why)
{
	audit_refusal(s->gw, identity_fields(s), service, reason, duration, why);
	char *line = error_line(why, NULL);
	answer(s, line);
	free(line);
}

/* --- the control loop's side ------------------------------------------------- */

static void answer_on_worker(gw_worker_t *w, void *arg)
{
	access_call_t *c = arg;
	for (gw_session_t *s = w->sessions; s != NULL; s = s->next) {
		if (s == c->session && strcmp(s->id, c->session_id) == 0 &&
		    s->state == GW_SESSION_ACCESS) {
			answer(s, c->answer);
			break;
		}
	}
	/* not found: the client left meanwhile (what it asked for stands) */
	call_free(c);
}

static json_t *request_reply(const gw_access_request_t *r)
{
	return json_pack("{s:o}", "request", gw_access_request_json(r));
}

static void run_on_control(gw_gateway_t *gw, void *arg)
{
	access_call_t *c = arg;
	json_t *reply = NULL;
	if (c->status) {
		const gw_access_request_t *r = gw_state_access_get(gw->state, c->id);
		/* another user's request is none of this one's business */
		if (r != NULL && strcasecmp(r->user, c->user) == 0) {
			reply = request_reply(r);
		} else {
			char why[160];
			snprintf(why, sizeof(why), "no access request %.64s of yours", c->id);
			c->answer = error_line(why, NULL);
		}
	} else {
		gw_access_outcome_t out;
		gw_access_ask(gw, c->user, c->service, c->reason, c->duration, c->user,
		              json_deep_copy(c->fields), &out);
		if (out.verdict == GW_ACCESS_DONE) {
			reply = request_reply(out.req);
		} else {
			audit_refusal(gw, c->fields, c->service, c->reason, c->duration, out.why);
			c->fields = NULL;
			/* a conflict: the request already pending, to wait on */
			c->answer = error_line(out.why,
			                       out.verdict == GW_ACCESS_CONFLICT ? out.req : NULL);
		}
	}
	if (reply != NULL) {
		c->answer = json_dumps(reply, JSON_COMPACT);
		json_decref(reply);
	}
	if (gw_worker_post(c->worker, answer_on_worker, c) < 0)
		call_free(c); /* the client gets no answer: it times out */
}

/* --- the worker's side -------------------------------------------------------- */

/* The rule named name in snap, or NULL. */
static const pol_rule_t *rule_named(const pol_snapshot_t *snap, const char *name)
{
	for (size_t i = 0; name != NULL && i < snap->n_rules; i++)
		if (snap->rules[i].name != NULL && strcmp(snap->rules[i].name, name) == 0)
			return &snap->rules[i];
	return NULL;
}

/* What the certificate and the policy say of a request for service: NULL
 * when it may go on to the control loop, else why not (in why). */
static const char *judge(gw_session_t *s, const char *service, char *why, size_t len)
{
	const pol_snapshot_t *snap = s->rt->snap;
	const pol_service_t *svc = pol_snapshot_service(snap, service);
	if (svc == NULL) {
		snprintf(why, len, "service: no service %.128s in the policy in force", service);
		return why;
	}
	if (!gw_access_possible(snap, service)) {
		snprintf(why, len,
		         "service: no rule of the policy in force requires approval for %.128s: "
		         "there is nothing to ask for",
		         service);
		return why;
	}
	gw_authz_request_t req = {
	        .service = svc,
	        .claims = &s->claims,
	        .source = (struct sockaddr *)&s->peer,
	        .db_any = svc->mode == POL_MODE_POSTGRES,
	        .cert_not_before_ms = s->not_before_ms,
	};
	pol_decision_t d;
	if (gw_authorize(s->gw->state, s->rt, &req, &d)) {
		const pol_rule_t *rule = rule_named(snap, d.rule);
		if (rule == NULL || !rule->requires_approval) {
			/* a grant held already: asking again extends it */
			snprintf(why, len,
			         "rule %.128s admits you to %.128s without an approval: there is "
			         "nothing to ask for",
			         d.rule, service);
			return why;
		}
		return NULL;
	}
	if (gw_catalog_refuses_all(&d)) {
		snprintf(why, len, "%s", d.reason);
		return why;
	}
	req.assume_grant = true;
	if (!gw_authorize(s->gw->state, s->rt, &req, &d)) {
		snprintf(why, len, "an approval would not admit you to %.128s: %s", service,
		         d.reason);
		return why;
	}
	return NULL;
}

/* A string member of msg, NULL when absent; false when it is not text. */
static bool member(json_t *msg, const char *key, const char **out)
{
	json_t *v = json_object_get(msg, key);
	*out = json_string_value(v);
	return v == NULL || *out != NULL;
}

static bool dup_all(access_call_t *c, const char *service, const char *reason, const char *duration,
                    const char *id)
{
	c->service = service != NULL ? strdup(service) : NULL;
	c->reason = reason != NULL ? strdup(reason) : NULL;
	c->duration = duration != NULL ? strdup(duration) : NULL;
	c->id = id != NULL ? strdup(id) : NULL;
	return (service == NULL || c->service != NULL) && (reason == NULL || c->reason != NULL) &&
	       (duration == NULL || c->duration != NULL) && (id == NULL || c->id != NULL);
}

/* The client's line, whole: checked here, then to the control loop. */
static void handle_line(gw_session_t *s, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *op = json_string_value(json_object_get(msg, "op"));
	const char *service = NULL, *reason = NULL, *duration = NULL, *id = NULL;
	char why[400];
	const char *refusal = NULL;
	if (!json_is_object(msg) || op == NULL ||
	    (strcmp(op, "request") != 0 && strcmp(op, "status") != 0)) {
		refusal = "malformed access request: expected {\"op\": \"request\" or \"status\", "
		          "...}";
	} else if (!member(msg, "service", &service) || !member(msg, "reason", &reason) ||
	           !member(msg, "duration", &duration) || !member(msg, "id", &id)) {
		refusal = "malformed access request: service, reason, duration and id are strings";
	} else if (json_object_size(msg) !=
	           1u + (service != NULL) + (reason != NULL) + (duration != NULL) + (id != NULL)) {
		refusal = "malformed access request: an unknown member";
	} else if (s->claims.user == NULL) {
		refusal = "the certificate has no user claim";
	} else if (strcmp(op, "status") == 0) {
		if (id == NULL)
			refusal = "malformed access request: status needs an id";
	} else if (service == NULL) {
		refusal = "service: missing";
	} else {
		refusal = judge(s, service, why, sizeof(why));
	}
	if (refusal != NULL) {
		refuse(s, service, reason, duration, refusal);
		json_decref(msg);
		return;
	}
	access_call_t *c = calloc(1, sizeof(*c));
	bool status = strcmp(op, "status") == 0;
	if (c == NULL || (c->user = strdup(s->claims.user)) == NULL ||
	    !dup_all(c, status ? NULL : service, status ? NULL : reason, status ? NULL : duration,
	             status ? id : NULL) ||
	    (c->fields = identity_fields(s)) == NULL) {
		if (c != NULL)
			call_free(c);
		refuse(s, service, reason, duration, "out of memory");
		json_decref(msg);
		return;
	}
	c->worker = s->worker;
	c->session = s;
	c->status = status;
	snprintf(c->session_id, sizeof(c->session_id), "%s", s->id);
	s->access_posted = true;
	/* with one worker this runs (and answers) at once: s is not touched after */
	if (gw_control_post(s->gw, !s->worker->threaded, run_on_control, c) < 0) {
		call_free(c);
		refuse(s, service, reason, duration, "the gateway is stopping: try again");
	}
	json_decref(msg);
}

void gw_session_access_input(gw_session_t *s)
{
	gw_end_t *c = client_end(s);
	char chunk[1024];
	while (s->state == GW_SESSION_ACCESS && !s->access_posted) {
		ssize_t n = gw_tls_read(&c->tls, chunk, sizeof(chunk));
		if (n == GW_TLS_READ_WANT)
			break;
		if (n <= 0 && c->tls.abuse != NULL) {
			(void)gw_end_flush_control(c); /* its alert */
			gw_session_reject(s, c->tls.abuse, NULL);
			return;
		}
		if (n <= 0) {
			gw_session_drop(s, false); /* the client left before its request */
			return;
		}
		size_t take = (size_t)n;
		char *nl = memchr(chunk, '\n', take);
		if (nl != NULL)
			take = (size_t)(nl - chunk); /* anything after the line is ignored */
		if (s->access_len + take > ACCESS_LINE_MAX) {
			refuse(s, NULL, NULL, NULL,
			       "malformed access request: longer than 4096 bytes");
			return;
		}
		memcpy(s->access_line + s->access_len, chunk, take);
		s->access_len += take;
		if (nl != NULL) {
			handle_line(s, s->access_line, s->access_len);
			return;
		}
	}
	if (s->state == GW_SESSION_ACCESS)
		(void)gw_end_flush_control(c);
}

void gw_session_access_start(gw_session_t *s)
{
	s->access_line = malloc(ACCESS_LINE_MAX);
	if (s->access_line == NULL) {
		gw_session_reject(s, "out of memory", NULL);
		return;
	}
	/* the handshake deadline still runs, and it still counts as one */
	s->state = GW_SESSION_ACCESS;
	gw_session_access_input(s); /* the line may have come with the handshake */
}
