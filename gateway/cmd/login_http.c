/* The HTTPS client of `certgate login` (see login_http.h).
 *
 * Each request gets a fresh easy handle: a login makes five or six
 * requests, so reusing connections saves nothing worth the state. The
 * extra CA bundle is added to the store curl builds from the system's
 * (CURLOPT_SSL_CTX_FUNCTION), so --ca widens trust instead of replacing
 * it; curl's CA cache is off so every handle gets that store. */
#include "cmd/login_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "certgate_config.h"

#define CONNECT_TIMEOUT_S 10
#define MAX_REDIRECTS     3

typedef struct sink {
	char *buf;
	size_t len, cap;
	bool too_large;
} sink_t;

bool login_http_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

void login_http_global_finish(void)
{
	curl_global_cleanup();
}

bool login_is_https_url(const char *url)
{
	if (url == NULL || strncasecmp(url, "https://", 8) != 0)
		return false;
	/* a URL is printable ASCII without spaces (RFC 3986): what a server
	 * sends as one is printed as it is, so nothing else may pass (an
	 * escape sequence would drive the user's terminal) */
	for (const unsigned char *p = (const unsigned char *)url; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return false;
	const char *host = url + 8;
	return *host != '\0' && *host != '/' && *host != ':' && *host != '?' && *host != '#';
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *userp)
{
	sink_t *s = userp;
	size_t n = size * nmemb;
	if (n > LOGIN_HTTP_MAX_BODY - s->len) {
		s->too_large = true;
		return 0; /* curl stops with CURLE_WRITE_ERROR */
	}
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->len + n + 1)
			cap *= 2;
		char *p = realloc(s->buf, cap);
		if (p == NULL)
			return 0;
		s->buf = p;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	s->buf[s->len] = '\0';
	return n;
}

static CURLcode add_ca_file(CURL *curl, void *ssl_ctx, void *userp)
{
	(void)curl;
	X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
	if (store == NULL || X509_STORE_load_file(store, userp) != 1) {
		ERR_clear_error();
		return CURLE_SSL_CACERT_BADFILE;
	}
	return CURLE_OK;
}

static int perform(const login_http_t *http, const char *method, const char *url,
                   const char *content_type, const char *body, const char *bearer,
                   login_reply_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!login_is_https_url(url)) {
		snprintf(err, errlen, "%s %s: not an https:// URL", method, url);
		return -1;
	}
	CURL *curl = curl_easy_init();
	if (curl == NULL) {
		snprintf(err, errlen, "%s %s: cannot start libcurl", method, url);
		return -1;
	}
	char curl_err[CURL_ERROR_SIZE] = "";
	sink_t sink = {0};
	struct curl_slist *headers = NULL;
	char auth[8192];
	int rc = -1;
	headers = curl_slist_append(headers, "Accept: application/json");
	if (content_type != NULL) {
		char ct[128];
		snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
		headers = curl_slist_append(headers, ct);
	}
	if (bearer != NULL) {
		if ((size_t)snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer) >=
		    sizeof(auth)) {
			snprintf(err, errlen, "%s %s: the ID token is too long", method, url);
			goto done;
		}
		headers = curl_slist_append(headers, auth);
	}
	long timeout = http->timeout_s > 0 ? http->timeout_s : LOGIN_HTTP_TIMEOUT_S;
	bool ok = curl_easy_setopt(curl, CURLOPT_URL, url) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "https") == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) ==
	                  CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S) ==
	                  CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
	                           (curl_off_t)LOGIN_HTTP_MAX_BODY) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers) == CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_USERAGENT, "certgate/" CERTGATE_VERSION) ==
	                  CURLE_OK &&
	          curl_easy_setopt(curl, CURLOPT_CA_CACHE_TIMEOUT, 0L) == CURLE_OK;
	if (ok && strcmp(method, "GET") == 0)
		ok = curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK &&
		     curl_easy_setopt(curl, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS) == CURLE_OK;
	if (ok && body != NULL)
		ok = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body) == CURLE_OK;
	if (ok && http->ca_file != NULL)
		ok = curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, add_ca_file) == CURLE_OK &&
		     curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, (void *)http->ca_file) ==
		             CURLE_OK;
	if (!ok || headers == NULL) {
		snprintf(err, errlen, "%s %s: cannot set up libcurl (built without HTTPS?)", method,
		         url);
		goto done;
	}
	CURLcode cc = curl_easy_perform(curl);
	if (cc != CURLE_OK) {
		if (sink.too_large || cc == CURLE_FILESIZE_EXCEEDED)
			snprintf(err, errlen, "%s %s: the reply is larger than %d bytes", method,
			         url, LOGIN_HTTP_MAX_BODY);
		else if (cc == CURLE_SSL_CACERT_BADFILE && http->ca_file != NULL)
			snprintf(err, errlen, "%s %s: cannot load --ca %s", method, url,
			         http->ca_file);
		else
			snprintf(err, errlen, "%s %s: %s", method, url,
			         curl_err[0] ? curl_err : curl_easy_strerror(cc));
		goto done;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
	if (sink.buf == NULL && (sink.buf = calloc(1, 1)) == NULL) {
		snprintf(err, errlen, "%s %s: out of memory", method, url);
		goto done;
	}
	out->body = sink.buf;
	out->len = sink.len;
	sink.buf = NULL;
	json_t *json = json_loadb(out->body, out->len, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(json))
		out->json = json;
	else
		json_decref(json);
	rc = 0;
done:
	free(sink.buf);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	OPENSSL_cleanse(auth, sizeof(auth));
	return rc;
}

int login_http_get(const login_http_t *http, const char *url, login_reply_t *out, char *err,
                   size_t errlen)
{
	return perform(http, "GET", url, NULL, NULL, NULL, out, err, errlen);
}

int login_http_post(const login_http_t *http, const char *url, const char *content_type,
                    const char *body, const char *bearer, login_reply_t *out, char *err,
                    size_t errlen)
{
	return perform(http, "POST", url, content_type, body, bearer, out, err, errlen);
}

void login_reply_finish(login_reply_t *reply)
{
	free(reply->body);
	json_decref(reply->json);
	memset(reply, 0, sizeof(*reply));
}

/* --- text ------------------------------------------------------------------- */

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends the percent-encoding of s (RFC 3986 unreserved kept). */
static char *append_escaped(char *p, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (unreserved(*c)) {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	return p;
}

char *login_form_encode(const char *const *pairs)
{
	size_t need = 1;
	for (size_t i = 0; pairs[i] != NULL && pairs[i + 1] != NULL; i += 2)
		need += 3 * (strlen(pairs[i]) + strlen(pairs[i + 1])) + 2;
	char *out = malloc(need), *p = out;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; pairs[i] != NULL && pairs[i + 1] != NULL; i += 2) {
		if (i > 0)
			*p++ = '&';
		p = append_escaped(p, pairs[i]);
		*p++ = '=';
		p = append_escaped(p, pairs[i + 1]);
	}
	*p = '\0';
	return out;
}

char *login_url_with_query(const char *url, const char *const *pairs)
{
	char *query = login_form_encode(pairs);
	if (query == NULL)
		return NULL;
	size_t n = strlen(url) + strlen(query) + 2;
	char *out = malloc(n);
	if (out != NULL)
		snprintf(out, n, "%s%c%s", url, strchr(url, '?') != NULL ? '&' : '?', query);
	free(query);
	return out;
}

char *login_printable(const char *text, char *out, size_t len)
{
	if (len == 0)
		return out;
	size_t n = 0;
	const unsigned char *s = (const unsigned char *)(text != NULL ? text : "");
	for (; *s && n + 1 < len; s++)
		out[n++] = (*s >= 0x20 && *s < 0x7f) ? (char)*s : '?';
	out[n] = '\0';
	if (*s && len > 4)
		memcpy(out + len - 4, "...", 4);
	return out;
}

const char *login_json_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

void login_reply_error(const login_reply_t *reply, const char *error_key, const char *detail_key,
                       char *out, size_t len)
{
	const char *error = login_json_str(reply->json, error_key);
	const char *detail = detail_key ? login_json_str(reply->json, detail_key) : NULL;
	char e[128], d[384];
	if (error != NULL && detail != NULL && *detail)
		snprintf(out, len, "%s: %s", login_printable(error, e, sizeof(e)),
		         login_printable(detail, d, sizeof(d)));
	else if (error != NULL)
		snprintf(out, len, "%s", login_printable(error, e, sizeof(e)));
	else
		snprintf(out, len, "HTTP %ld", reply->status);
}
