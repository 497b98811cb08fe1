/* libcurl multi on the loop (see http_client.h). */
#include "http/http_client.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

typedef struct request {
	struct request *next;
	gw_http_client_t *client;
	CURL *easy;
	gw_http_done_fn done;
	void *ctx;
	char *body;
	size_t len, max;
	bool too_big;
	char error[CURL_ERROR_SIZE];
} request_t;

/* One socket curl watches. */
typedef struct watch {
	uv_poll_t poll;
	curl_socket_t fd;
	gw_http_client_t *client;
} watch_t;

struct gw_http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	request_t *requests;
	bool closing;
};

static void check_done(gw_http_client_t *c);

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
	request_t *r = arg;
	size_t len = size * n;
	if (r->len + len > r->max) {
		r->too_big = true;
		return 0; /* aborts the transfer */
	}
	char *grown = realloc(r->body, r->len + len + 1);
	if (grown == NULL)
		return 0;
	memcpy(grown + r->len, data, len);
	r->body = grown;
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
	watch_t *w = poll->data;
	int flags = 0;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	int running;
	curl_multi_socket_action(w->client->multi, w->fd, flags, &running);
	check_done(w->client);
}

static void on_timer(uv_timer_t *timer)
{
	gw_http_client_t *c = timer->data;
	int running;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
}

static void watch_closed(uv_handle_t *handle)
{
	free(handle->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socket_arg)
{
	gw_http_client_t *c = arg;
	watch_t *w = socket_arg;
	if (what == CURL_POLL_REMOVE) {
		if (w != NULL) {
			uv_poll_stop(&w->poll);
			curl_multi_assign(c->multi, fd, NULL);
			uv_close((uv_handle_t *)&w->poll, watch_closed);
		}
		return 0;
	}
	if (w == NULL) {
		w = calloc(1, sizeof(*w));
		if (w == NULL || uv_poll_init_socket(c->loop, &w->poll, fd) != 0) {
			free(w);
			return -1;
		}
		w->fd = fd;
		w->client = c;
		w->poll.data = w;
		curl_multi_assign(c->multi, fd, w);
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	return uv_poll_start(&w->poll, events, on_poll) == 0 ? 0 : -1;
}

static int on_timeout(CURLM *multi, long ms, void *arg)
{
	gw_http_client_t *c = arg;
	if (ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
	return 0;
}

static void unlink_request(gw_http_client_t *c, request_t *r)
{
	for (request_t **at = &c->requests; *at != NULL; at = &(*at)->next)
		if (*at == r) {
			*at = r->next;
			return;
		}
}

static void request_free(gw_http_client_t *c, request_t *r)
{
	curl_multi_remove_handle(c->multi, r->easy);
	curl_easy_cleanup(r->easy);
	free(r->body);
	free(r);
}

static void check_done(gw_http_client_t *c)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		request_t *r = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r == NULL)
			continue;
		gw_http_response_t res = {0};
		CURLcode code = msg->data.result;
		if (code == CURLE_OK) {
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
			res.body = r->body != NULL ? r->body : "";
			res.body_len = r->len;
		} else if (r->too_big) {
			res.error = "answer too large";
		} else {
			res.error = r->error[0] != '\0' ? r->error : curl_easy_strerror(code);
		}
		unlink_request(c, r);
		r->done(r->ctx, &res);
		request_free(c, r);
	}
}

gw_http_client_t *gw_http_client_create(uv_loop_t *loop)
{
	static bool curl_ready;
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		curl_ready = true;
	}
	gw_http_client_t *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->loop = loop;
	c->multi = curl_multi_init();
	if (c->multi == NULL) {
		free(c);
		return NULL;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	return c;
}

static void client_closed(uv_handle_t *handle)
{
	gw_http_client_t *c = handle->data;
	curl_multi_cleanup(c->multi);
	free(c);
}

void gw_http_client_destroy(gw_http_client_t *c)
{
	if (c == NULL || c->closing)
		return;
	c->closing = true;
	while (c->requests != NULL) {
		request_t *r = c->requests;
		c->requests = r->next;
		request_free(c, r); /* curl closes its sockets: on_socket REMOVE */
	}
	uv_close((uv_handle_t *)&c->timer, client_closed);
}

int gw_http_get(gw_http_client_t *c, const char *url, const char *ca_file, size_t max_bytes,
                long timeout_ms, gw_http_done_fn done, void *ctx)
{
	if (c->closing || strncmp(url, "https://", 8) != 0)
		return -1;
	request_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -1;
	r->client = c;
	r->done = done;
	r->ctx = ctx;
	r->max = max_bytes;
	r->easy = curl_easy_init();
	if (r->easy == NULL) {
		free(r);
		return -1;
	}
	CURL *e = r->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "certgate");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		free(r);
		return -1;
	}
	r->next = c->requests;
	c->requests = r;
	return 0;
}
