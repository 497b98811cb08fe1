/* The HTTPS client of `certgate login` (libcurl's easy API): the issuer's
 * two endpoints and the identity provider's discovery, token and device
 * endpoints. Only https:// URLs; the peer verified against the system store
 * plus an optional extra CA bundle (--ca); bounded replies and times; GET
 * follows a few redirects (HTTPS only), POST none. Also the small text
 * helpers the flows share: form encoding, and making text from a server
 * safe to print on a terminal. */
#ifndef GW_LOGIN_HTTP_H
#define GW_LOGIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define LOGIN_HTTP_MAX_BODY  (1024 * 1024)
#define LOGIN_HTTP_TIMEOUT_S 30

typedef struct login_http {
	const char *ca_file; /* trusted besides the system store; NULL for none */
	long timeout_s;      /* whole request; 0: LOGIN_HTTP_TIMEOUT_S */
} login_http_t;

typedef struct login_reply {
	long status;
	char *body; /* malloc'd, NUL after len bytes */
	size_t len;
	json_t *json; /* the body when it is a JSON object (owned), else NULL */
} login_reply_t;

/* Global libcurl set-up and its end, once per process. */
bool login_http_global_init(void);
void login_http_global_finish(void);

/* One request. 0 with *out filled whatever the HTTP status, or -1 with
 * "METHOD URL: why" in err (not https, connection, TLS verification, too
 * large, timed out). login_reply_finish frees. bearer (may be NULL) goes
 * in an Authorization header; content_type with the POST body. */
int login_http_get(const login_http_t *http, const char *url, login_reply_t *out, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
int login_http_post(const login_http_t *http, const char *url, const char *content_type,
                    const char *body, const char *bearer, login_reply_t *out, char *err,
                    size_t errlen) __attribute__((warn_unused_result));
void login_reply_finish(login_reply_t *reply);

/* True for an https:// URL with a host. */
bool login_is_https_url(const char *url);

/* application/x-www-form-urlencoded of the NULL-terminated name, value, ...
 * list (malloc'd; NULL when out of memory). */
char *login_form_encode(const char *const *pairs);
/* url + "?" (or "&" when it has a query) + the form encoding of pairs. */
char *login_url_with_query(const char *url, const char *const *pairs);

/* Text from a server made safe for a terminal: printable ASCII kept, any
 * other byte shown as '?', cut to len - 1 bytes with "..." when longer.
 * Returns out. */
char *login_printable(const char *text, char *out, size_t len);

/* "error: error_description" of an OAuth/issuer error reply (the members
 * named, printable), or "HTTP <status>" when the reply has none. */
void login_reply_error(const login_reply_t *reply, const char *error_key, const char *detail_key,
                       char *out, size_t len);

/* A string member of a JSON object, or NULL. */
const char *login_json_str(const json_t *obj, const char *key);

#endif
