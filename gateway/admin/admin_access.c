/* The access-request endpoints (ADMIN_API.md, just-in-time access): ask on
 * a user's behalf, list (filter ?state= and ?user=), read one, approve,
 * deny. The workflow, its checks and its audit are core/access.c's; here
 * are the bodies and the statuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "core/access.h"
#include "cg_utf8.h"

static unsigned status_of(gw_access_verdict_t verdict)
{
	switch (verdict) {
	case GW_ACCESS_DONE:
		return 200;
	case GW_ACCESS_INVALID:
		return 400;
	case GW_ACCESS_SELF:
		return 403;
	case GW_ACCESS_UNKNOWN:
		return 404;
	case GW_ACCESS_CONFLICT:
		return 409;
	case GW_ACCESS_LIMITED:
		return 429;
	case GW_ACCESS_UNAVAILABLE:
		return 503;
	case GW_ACCESS_FAILED:
		break;
	}
	return 500;
}

/* A refusal: {"error": why}, plus the request concerned for a conflict
 * (the one pending already, or how it was decided). */
static void reply_refusal(gw_http_reply_t *reply, const gw_access_outcome_t *out)
{
	if (out->verdict == GW_ACCESS_CONFLICT && out->req != NULL) {
		json_t *j = json_pack("{s:o}", "request", gw_access_request_json(out->req));
		if (j != NULL && cg_json_set_lossy_str(j, "error", out->why) != 0) {
			json_decref(j);
			j = NULL;
		}
		gw_http_json(reply, 409, j);
	} else {
		gw_http_error(reply, status_of(out->verdict), "%s", out->why);
	}
}

/* body.key: a string, or NULL when absent or null; false (400 sent) when
 * it is something else. */
static bool string_field(json_t *body, const char *key, const char **out, gw_http_reply_t *reply)
{
	json_t *v = json_object_get(body, key);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
		gw_http_error(reply, 400, "%s: expected a string", key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

void adm_post_access_request(adm_request_t *req, gw_http_reply_t *reply)
{
	static const char *const allowed[] = {"user", "service", "reason", "duration", NULL};
	json_t *body = gw_http_body_object(req->http, reply, allowed);
	if (body == NULL)
		return;
	const char *user, *service, *reason, *duration;
	if (string_field(body, "user", &user, reply) &&
	    string_field(body, "service", &service, reply) &&
	    string_field(body, "reason", &reason, reply) &&
	    string_field(body, "duration", &duration, reply)) {
		gw_access_outcome_t out;
		gw_access_ask(req->gw, user, service, reason, duration, req->by, NULL, &out);
		if (out.verdict == GW_ACCESS_DONE)
			gw_http_json(reply, 201, gw_access_request_json(out.req));
		else
			reply_refusal(reply, &out);
	}
	json_decref(body);
}

void adm_get_access_requests(adm_request_t *req, gw_http_reply_t *reply)
{
	const char *state = gw_http_query(req->http, "state");
	const char *user = gw_http_query(req->http, "user");
	gw_access_state_t want = GW_ACCESS_PENDING;
	if (state != NULL && !gw_access_state_parse(state, &want)) {
		gw_http_error(
		        reply, 400,
		        "state: expected \"pending\", \"approved\", \"denied\" or \"expired\"");
		return;
	}
	json_t *list = json_array();
	for (const gw_access_request_t *r = gw_state_access_list(req->gw->state); r != NULL;
	     r = r->next) {
		if ((state != NULL && r->state != want) ||
		    (user != NULL && strcasecmp(user, r->user) != 0))
			continue;
		json_array_append_new(list, gw_access_request_json(r));
	}
	gw_http_json(reply, 200, json_pack("{s:o}", "requests", list));
}

void adm_get_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	const gw_access_request_t *r = gw_state_access_get(req->gw->state, id);
	if (r == NULL)
		gw_http_error(reply, 404, "no access request %s", id);
	else
		gw_http_json(reply, 200, gw_access_request_json(r));
}

static void decide(adm_request_t *req, gw_http_reply_t *reply, const char *id, bool approve)
{
	static const char *const allowed[] = {"by", "reason", NULL};
	json_t *body = gw_http_body_object(req->http, reply, allowed);
	if (body == NULL)
		return;
	const char *by, *reason;
	if (string_field(body, "by", &by, reply) && string_field(body, "reason", &reason, reply)) {
		gw_access_outcome_t out;
		gw_access_decide(req->gw, id, approve, by, reason, req->by, &out);
		if (out.verdict == GW_ACCESS_DONE)
			gw_http_json(reply, 200, gw_access_request_json(out.req));
		else
			reply_refusal(reply, &out);
	}
	json_decref(body);
}

void adm_approve_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	decide(req, reply, id, true);
}

void adm_deny_access_request(adm_request_t *req, gw_http_reply_t *reply, const char *id)
{
	decide(req, reply, id, false);
}
