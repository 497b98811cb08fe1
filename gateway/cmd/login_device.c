/* The device authorization grant, RFC 8628 (see login_device.h).
 *
 * The verification URL and the user code come from the provider and go to
 * a terminal, and the user types the code elsewhere: text that is not
 * plain printable ASCII is refused rather than shown altered, and the URL
 * must be https. Polling sleeps the provider's interval between requests
 * (the protocol's own pacing, not a readiness wait). */
#include "cmd/login_device.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cg_duration.h"

#define DEVICE_GRANT       "urn:ietf:params:oauth:grant-type:device_code"
#define DEFAULT_INTERVAL_S 5
#define MAX_INTERVAL_S     60
#define SLOW_DOWN_S        5
#define DEFAULT_EXPIRES_S  600
#define MAX_EXPIRES_S      (24 * 3600)
#define MAX_SHOWN          1024

typedef struct grant {
	char *device_code;
	const char *user_code, *uri, *uri_complete; /* borrowed from the reply */
	int64_t interval_s, expires_s;
} grant_t;

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Text a user reads off this terminal: printable ASCII, bounded. */
static bool shown_as_is(const char *text)
{
	if (text == NULL || *text == '\0' || strlen(text) > MAX_SHOWN)
		return false;
	for (const unsigned char *s = (const unsigned char *)text; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return false;
	return true;
}

static int64_t int_member(const json_t *obj, const char *key, int64_t dflt)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* POST device_authorization_endpoint; the grant's fields from the reply
 * (which must outlive *g). */
static int start_grant(const login_client_t *c, login_reply_t *reply, grant_t *g, char *err,
                       size_t errlen)
{
	const char *const pairs[] = {"client_id", c->client_id, "scope", c->scope, NULL};
	char *form = login_form_encode(pairs), why[512];
	if (form == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = login_http_post(c->http, c->idp->device_endpoint,
	                         "application/x-www-form-urlencoded", form, NULL, reply, why,
	                         sizeof(why));
	free(form);
	if (rc < 0) {
		snprintf(err, errlen, "the identity provider's device authorization endpoint: %s",
		         why);
		return -1;
	}
	if (reply->status != 200) {
		login_reply_error(reply, "error", "error_description", why, sizeof(why));
		snprintf(err, errlen, "the identity provider refused the device sign-in: %s", why);
		return -1;
	}
	const char *device_code = login_json_str(reply->json, "device_code");
	g->user_code = login_json_str(reply->json, "user_code");
	g->uri = login_json_str(reply->json, "verification_uri");
	g->uri_complete = login_json_str(reply->json, "verification_uri_complete");
	g->interval_s = int_member(reply->json, "interval", DEFAULT_INTERVAL_S);
	g->expires_s = int_member(reply->json, "expires_in", DEFAULT_EXPIRES_S);
	if (device_code == NULL || *device_code == '\0' || g->user_code == NULL || g->uri == NULL) {
		snprintf(err, errlen,
		         "the identity provider's device authorization reply lacks device_code, "
		         "user_code or verification_uri");
		return -1;
	}
	if (!shown_as_is(g->user_code) || !shown_as_is(g->uri) ||
	    (g->uri_complete != NULL && !shown_as_is(g->uri_complete))) {
		snprintf(err, errlen,
		         "the identity provider's user code or verification URL is not plain "
		         "printable text: refused");
		return -1;
	}
	if (!login_is_https_url(g->uri) ||
	    (g->uri_complete != NULL && !login_is_https_url(g->uri_complete))) {
		snprintf(err, errlen, "the identity provider's verification URL is not https: %s",
		         g->uri);
		return -1;
	}
	if (g->interval_s < 1)
		g->interval_s = DEFAULT_INTERVAL_S;
	if (g->interval_s > MAX_INTERVAL_S)
		g->interval_s = MAX_INTERVAL_S;
	if (g->expires_s < 1)
		g->expires_s = DEFAULT_EXPIRES_S;
	if (g->expires_s > MAX_EXPIRES_S)
		g->expires_s = MAX_EXPIRES_S;
	g->device_code = strdup(device_code);
	if (g->device_code == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* One token request: 1 when the ID token came, 0 to poll again (interval
 * possibly raised), -1 to stop with err. */
static int poll_once(const login_client_t *c, grant_t *g, char **id_token, char *err, size_t errlen)
{
	const char *const pairs[] = {"grant_type", DEVICE_GRANT, "device_code", g->device_code,
	                             "client_id",  c->client_id, NULL};
	char *form = login_form_encode(pairs), why[512];
	if (form == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	login_reply_t reply;
	int rc = login_http_post(c->http, c->idp->token_endpoint,
	                         "application/x-www-form-urlencoded", form, NULL, &reply, why,
	                         sizeof(why));
	OPENSSL_clear_free(form, strlen(form));
	if (rc < 0) {
		snprintf(err, errlen, "the identity provider's token endpoint: %s", why);
		return -1;
	}
	const char *error = reply.status == 200 ? NULL : login_json_str(reply.json, "error");
	if (error != NULL && strcmp(error, "authorization_pending") == 0) {
		rc = 0;
	} else if (error != NULL && strcmp(error, "slow_down") == 0) {
		g->interval_s += SLOW_DOWN_S;
		rc = 0;
	} else if (error != NULL && strcmp(error, "access_denied") == 0) {
		login_reply_error(&reply, "error", "error_description", why, sizeof(why));
		snprintf(err, errlen, "the sign-in was denied at the identity provider (%s)", why);
		rc = -1;
	} else if (error != NULL && strcmp(error, "expired_token") == 0) {
		snprintf(err, errlen,
		         "the code expired before the sign-in was approved: run certgate login "
		         "--headless again");
		rc = -1;
	} else if (login_token_reply(&reply, id_token, err, errlen) < 0) {
		rc = -1;
	} else if (login_id_token_check(*id_token, c->idp->issuer, c->client_id, NULL, err,
	                                errlen) < 0) {
		free(*id_token);
		*id_token = NULL;
		rc = -1;
	} else {
		rc = 1;
	}
	login_reply_finish(&reply);
	return rc;
}

int login_device_flow(const login_client_t *c, char **id_token, char *err, size_t errlen)
{
	*id_token = NULL;
	if (c->idp->device_endpoint == NULL) {
		snprintf(err, errlen,
		         "the identity provider %s offers no device sign-in "
		         "(device_authorization_endpoint): log in without --headless",
		         c->idp->issuer);
		return -1;
	}
	login_reply_t reply = {0};
	grant_t g = {0};
	int rc = start_grant(c, &reply, &g, err, errlen);
	if (rc < 0)
		goto done;
	int64_t code_deadline = login_now_ms() + g.expires_s * 1000;
	bool code_first = code_deadline < c->deadline_ms;
	int64_t deadline = code_first ? code_deadline : c->deadline_ms;
	char wait_text[32];
	int64_t left = deadline - login_now_ms();
	cg_duration_format((uint64_t)(left > 0 ? left : 0) / 1000 * 1000, wait_text,
	                   sizeof(wait_text));
	fprintf(stderr,
	        "certgate login: sign in at %s from any device with a browser (waiting up to "
	        "%s):\nTo sign in, visit %s and enter the code: %s\n",
	        c->idp->issuer, wait_text, g.uri, g.user_code);
	if (g.uri_complete != NULL)
		fprintf(stderr, "Open %s\n", g.uri_complete);
	fflush(stderr);
	for (rc = 0; rc == 0;) {
		int64_t wait = g.interval_s * 1000;
		left = deadline - login_now_ms();
		if (left <= wait) {
			snprintf(err, errlen,
			         code_first
			                 ? "the code expired before the sign-in was approved: run "
			                   "certgate login --headless again"
			                 : "the sign-in was not approved in time: run certgate "
			                   "login --headless again");
			rc = -1;
			break;
		}
		sleep_ms(wait);
		rc = poll_once(c, &g, id_token, err, errlen);
	}
	if (rc > 0)
		rc = 0;
done:
	if (g.device_code != NULL)
		OPENSSL_clear_free(g.device_code, strlen(g.device_code));
	login_reply_finish(&reply);
	return rc;
}
