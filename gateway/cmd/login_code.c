/* The authorization code flow with PKCE and a loopback redirect (see
 * login_code.h).
 *
 * The callback listener is libmicrohttpd with its own thread, bound by us
 * to 127.0.0.1 port 0 (the kernel picks a free port, RFC 8252 7.3). Its
 * handler answers every request with a small page and, for the one
 * callback carrying this login's state, records the code or the
 * provider's error; the waiting thread wakes once that page has been sent
 * (MHD_OPTION_NOTIFY_COMPLETED), so the browser always gets its answer.
 * A callback with another state is answered 400 and ignored: it was not
 * started by this login (a stale tab, or someone forging one), and letting
 * it end the login would let anyone on the machine abort it. */
#include "cmd/login_code.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "cg_duration.h"

#define MAX_CODE          4096
#define MAX_CONNECTIONS   16
#define CONN_TIMEOUT_S    10
#define CONN_MEMORY_LIMIT (32 * 1024)
#define MAX_WARNINGS      10

extern char **environ;

typedef struct callback {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	const char *state;  /* this login's */
	const char *issuer; /* the provider's, for an iss parameter (RFC 9207) */
	bool iss_required;  /* the provider says every answer carries iss */
	bool answered;      /* the final callback was handled ... */
	bool done;          /* ... and its page sent */
	unsigned ignored;   /* answers with another state */
	char *code;
	char error[768];
} callback_t;

static int final_marker; /* *con_cls of the connection that ends the wait */

/* --- the page ------------------------------------------------------------------- */

static void html_escape(const char *in, char *out, size_t len)
{
	size_t n = 0;
	for (const unsigned char *s = (const unsigned char *)in; *s && n + 7 < len; s++) {
		const char *rep = NULL;
		switch (*s) {
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '&':
			rep = "&amp;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			break;
		}
		if (rep != NULL) {
			memcpy(out + n, rep, strlen(rep));
			n += strlen(rep);
		} else {
			out[n++] = (*s >= 0x20 && *s < 0x7f) ? (char)*s : '?';
		}
	}
	out[n] = '\0';
}

static enum MHD_Result page(struct MHD_Connection *conn, unsigned status, const char *title,
                            const char *text)
{
	char t[256], x[1024], body[1600];
	html_escape(title, t, sizeof(t));
	html_escape(text, x, sizeof(x));
	int n = snprintf(body, sizeof(body),
	                 "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
	                 "<title>certgate login</title></head>\n<body><h1>%s</h1>\n<p>%s</p>\n"
	                 "</body></html>\n",
	                 t, x);
	if (n < 0 || (size_t)n >= sizeof(body))
		return MHD_NO;
	struct MHD_Response *resp =
	        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "Content-Security-Policy", "default-src 'none'");
	enum MHD_Result r = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return r;
}

/* --- the callback listener ---------------------------------------------------------- */

static bool same_secret(const char *a, const char *b)
{
	return a != NULL && b != NULL && strlen(a) == strlen(b) &&
	       CRYPTO_memcmp(a, b, strlen(b)) == 0;
}

static const char *arg(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Records the final result of the callback; the caller holds the lock. */
static enum MHD_Result finish(callback_t *cb, struct MHD_Connection *conn, void **con_cls)
{
	const char *code = arg(conn, "code"), *error = arg(conn, "error");
	const char *iss = arg(conn, "iss");
	char a[200], b[400];
	cb->answered = true;
	*con_cls = &final_marker;
	if (iss == NULL && cb->iss_required) {
		snprintf(cb->error, sizeof(cb->error),
		         "the sign-in answer names no issuer, though %s says every answer does "
		         "(RFC 9207; a mix-up): refused",
		         cb->issuer);
		return page(conn, 400, "Sign-in refused",
		            "The answer did not say which identity provider sent it. See the "
		            "terminal.");
	}
	if (iss != NULL && strcmp(iss, cb->issuer) != 0) {
		snprintf(cb->error, sizeof(cb->error),
		         "the sign-in answer names the issuer \"%s\", not %s (a mix-up): refused",
		         login_printable(iss, a, sizeof(a)), cb->issuer);
		return page(conn, 400, "Sign-in refused",
		            "The answer came from another identity provider. See the terminal.");
	}
	if (error != NULL) {
		const char *desc = arg(conn, "error_description");
		snprintf(cb->error, sizeof(cb->error),
		         "the identity provider refused the sign-in: %s%s%s",
		         login_printable(error, a, sizeof(a)), desc != NULL ? ": " : "",
		         desc != NULL ? login_printable(desc, b, sizeof(b)) : "");
		return page(conn, 200, "Sign-in failed", cb->error + strlen("the "));
	}
	if (code == NULL || *code == '\0' || strlen(code) > MAX_CODE) {
		snprintf(cb->error, sizeof(cb->error),
		         "the identity provider's answer carries no usable code");
		return page(conn, 400, "Sign-in failed",
		            "No code in the answer. See the terminal.");
	}
	cb->code = strdup(code);
	if (cb->code == NULL) {
		snprintf(cb->error, sizeof(cb->error), "out of memory");
		return MHD_NO;
	}
	return page(conn, 200, "Signed in",
	            "certgate login goes on in the terminal. You can close this window.");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	callback_t *cb = cls;
	if (strcmp(method, "GET") != 0)
		return page(conn, 405, "Method not allowed", "This address takes GET only.");
	if (strcmp(url, "/callback") != 0)
		return page(conn, 404, "Not found", "certgate login listens on /callback only.");
	pthread_mutex_lock(&cb->lock);
	enum MHD_Result r;
	if (cb->answered) {
		r = page(conn, 409, "Already finished",
		         "This sign-in has already been answered. See the terminal.");
	} else if (!same_secret(arg(conn, "state"), cb->state)) {
		if (cb->ignored++ < MAX_WARNINGS) /* a flood must not fill the terminal */
			fprintf(stderr, "certgate login: ignored a sign-in answer with a wrong "
			                "state (not from this login); still waiting\n");
		r = page(conn, 400, "Sign-in refused",
		         "This answer does not belong to the certgate login waiting here (its "
		         "state does not match). It was ignored.");
	} else {
		r = finish(cb, conn, con_cls);
	}
	pthread_mutex_unlock(&cb->lock);
	return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	(void)toe;
	callback_t *cb = cls;
	if (*con_cls != &final_marker)
		return;
	pthread_mutex_lock(&cb->lock);
	cb->done = true;
	pthread_cond_signal(&cb->cond);
	pthread_mutex_unlock(&cb->lock);
}

/* A listening socket on 127.0.0.1, a free port. */
static int listen_loopback(unsigned *port, char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		snprintf(err, errlen, "cannot listen on 127.0.0.1 for the sign-in answer: %s",
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* --- the browser -------------------------------------------------------------------- */

/* xdg-open (with a desktop session) or open (macOS); never fails: the URL
 * is printed anyway. Returns the child's pid, or 0. */
static pid_t open_browser(const char *url)
{
#ifdef __APPLE__
	const char *tool = "open";
#else
	/* without a display xdg-open would start a text browser on this
	 * terminal, in the middle of certgate's output */
	if (getenv("DISPLAY") == NULL && getenv("WAYLAND_DISPLAY") == NULL)
		return 0;
	const char *tool = "xdg-open";
#endif
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return 0;
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	char *const argv[] = {(char *)tool, (char *)url, NULL};
	pid_t pid = 0;
	if (posix_spawnp(&pid, tool, &fa, NULL, argv, environ) != 0)
		pid = 0;
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

/* --- the flow ----------------------------------------------------------------------- */

/* Waits for the callback until the deadline; 0 with the code, or -1. */
static int wait_callback(callback_t *cb, int64_t deadline_ms, const char *redirect_uri, char *err,
                         size_t errlen)
{
	pthread_mutex_lock(&cb->lock);
	while (!cb->done) {
		int64_t left = deadline_ms - login_now_ms();
		if (left <= 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t ns = ts.tv_nsec + (left % 1000) * 1000000;
		ts.tv_sec += left / 1000 + ns / 1000000000;
		ts.tv_nsec = ns % 1000000000;
		pthread_cond_timedwait(&cb->cond, &cb->lock, &ts);
	}
	int rc = 0;
	if (!cb->done) {
		snprintf(err, errlen,
		         "no sign-in answer came back to %s in time: run certgate login again",
		         redirect_uri);
		rc = -1;
	} else if (cb->code == NULL) {
		snprintf(err, errlen, "%s", cb->error);
		rc = -1;
	}
	pthread_mutex_unlock(&cb->lock);
	return rc;
}

static int exchange_code(const login_client_t *c, const char *code, const char *redirect_uri,
                         const char *verifier, const char *nonce, char **id_token, char *err,
                         size_t errlen)
{
	const char *const pairs[] = {"grant_type",
	                             "authorization_code",
	                             "code",
	                             code,
	                             "redirect_uri",
	                             redirect_uri,
	                             "client_id",
	                             c->client_id,
	                             "code_verifier",
	                             verifier,
	                             NULL};
	char *form = login_form_encode(pairs);
	if (form == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	login_reply_t reply;
	char why[512];
	int rc = login_http_post(c->http, c->idp->token_endpoint,
	                         "application/x-www-form-urlencoded", form, NULL, &reply, why,
	                         sizeof(why));
	OPENSSL_clear_free(form, strlen(form));
	if (rc < 0) {
		snprintf(err, errlen, "the identity provider's token endpoint: %s", why);
		return -1;
	}
	rc = login_token_reply(&reply, id_token, err, errlen);
	login_reply_finish(&reply);
	if (rc == 0 &&
	    login_id_token_check(*id_token, c->idp->issuer, c->client_id, nonce, err, errlen) < 0) {
		free(*id_token);
		*id_token = NULL;
		rc = -1;
	}
	return rc;
}

int login_code_flow(const login_client_t *c, char **id_token, char *err, size_t errlen)
{
	*id_token = NULL;
	char state[LOGIN_TOKEN_LEN + 1], nonce[LOGIN_TOKEN_LEN + 1];
	char verifier[LOGIN_TOKEN_LEN + 1], challenge[LOGIN_TOKEN_LEN + 1];
	if (!login_random_token(state) || !login_random_token(nonce) ||
	    !login_random_token(verifier) || !login_pkce_challenge(verifier, challenge)) {
		snprintf(err, errlen, "no random bytes for state, nonce and PKCE");
		return -1;
	}
	callback_t cb = {
	        .state = state, .issuer = c->idp->issuer, .iss_required = c->idp->iss_in_answers};
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cb.cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&cb.lock, NULL);

	int rc = -1;
	char *url = NULL;
	unsigned port = 0;
	struct MHD_Daemon *mhd = NULL;
	int fd = listen_loopback(&port, err, errlen);
	if (fd < 0)
		goto done;
	mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, &cb,
	                       MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
	                       on_completed, &cb, MHD_OPTION_CONNECTION_LIMIT,
	                       (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
	                       (unsigned)CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	                       (size_t)CONN_MEMORY_LIMIT, MHD_OPTION_END);
	if (mhd == NULL) {
		close(fd);
		snprintf(err, errlen, "cannot start the loopback listener for the sign-in answer");
		goto done;
	}
	char redirect_uri[64];
	snprintf(redirect_uri, sizeof(redirect_uri), "http://127.0.0.1:%u/callback", port);
	url = login_authorization_url(c->idp, c->client_id, redirect_uri, c->scope, state, nonce,
	                              challenge);
	if (url == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	char wait_text[32];
	int64_t left = c->deadline_ms - login_now_ms();
	cg_duration_format((uint64_t)(left > 0 ? left : 0) / 1000 * 1000, wait_text,
	                   sizeof(wait_text));
	fprintf(stderr, "certgate login: sign in at %s in a browser (waiting up to %s):\nOpen %s\n",
	        c->idp->issuer, wait_text, url);
	fflush(stderr);
	pid_t browser = c->open_browser ? open_browser(url) : 0;
	rc = wait_callback(&cb, c->deadline_ms, redirect_uri, err, errlen);
	MHD_stop_daemon(mhd);
	mhd = NULL;
	if (browser > 0)
		waitpid(browser, NULL, WNOHANG);
	if (rc == 0)
		rc = exchange_code(c, cb.code, redirect_uri, verifier, nonce, id_token, err,
		                   errlen);
done:
	if (mhd != NULL)
		MHD_stop_daemon(mhd);
	free(url);
	if (cb.code != NULL)
		OPENSSL_clear_free(cb.code, strlen(cb.code));
	OPENSSL_cleanse(verifier, sizeof(verifier));
	pthread_mutex_destroy(&cb.lock);
	pthread_cond_destroy(&cb.cond);
	return rc;
}
