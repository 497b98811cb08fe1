/* The admin API as a gateway extension (see admin.h): its listener and
 * token follow the generations, every request is checked against the token
 * in force (constant time; a refusal goes to denied.c), then routed by
 * admin_api.c. */
#include "admin/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "admin/denied.h"
#include "cg_log.h"

struct gw_admin {
	gw_extension_t ext; /* first: the extension is the admin */
	gw_gateway_t *gw;
	gw_metrics_t *metrics;
	adm_denied_t *denied;     /* refused requests: audit and count */
	gw_http_server_t *server; /* NULL while no admin section is in force */
	char *listen;             /* what server listens on */
	char *token;              /* NULL: no token_file */
	/* what the reload being prepared brings */
	gw_http_server_t *next_server;
	char *next_listen;
	char *next_token;
	bool prepared;
};

static void on_tick(void *ctx);

/* docs/admin-api.md "Limits": 8 sources are needed to fill the server, and
 * a probe from anywhere else still gets in while one source floods it. */
static const gw_http_options_t http_options = {
        .name = "admin",
        .max_connections = 64,
        .max_per_source = 8,
        .timeout_s = 10,
        .tick = on_tick,
};

/* --- the token ------------------------------------------------------------ */

static void free_secret(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

char *gw_admin_token_load(const pol_file_t *file, cg_errors_t *errs)
{
	char where[512]; /* filled only for a message: the lookup costs */
	FILE *f = fopen(file->path, "re");
	if (f == NULL) {
		pol_file_where(file, where, sizeof(where));
		cg_errors_add(errs, "%s: cannot read %s: %s", where, file->path, strerror(errno));
		return NULL;
	}
	char buf[1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	bool too_long = !feof(f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	bool printable = true;
	for (size_t i = 0; i < n; i++)
		printable = printable && buf[i] > ' ' && buf[i] < 0x7f;
	if (too_long || n < 16 || n > 1000 || !printable) {
		pol_file_where(file, where, sizeof(where));
		cg_errors_add(errs,
		              "%s: %s: the token must be 16 to 1000 printable ASCII characters "
		              "without spaces",
		              where, file->path);
		OPENSSL_cleanse(buf, sizeof(buf));
		return NULL;
	}
	char *token = strdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return token;
}

/* Compares the presented bearer token with the configured one in constant
 * time: both are hashed first, so neither content nor length leaks. */
static bool token_ok(const char *expected, const char *header)
{
	static const char prefix[] = "Bearer ";
	if (header == NULL || strncasecmp(header, prefix, sizeof(prefix) - 1) != 0)
		return false;
	const char *given = header + sizeof(prefix) - 1;
	unsigned char a[32], b[32];
	unsigned int na = 0, nb = 0;
	if (EVP_Digest(given, strlen(given), a, &na, EVP_sha256(), NULL) != 1 ||
	    EVP_Digest(expected, strlen(expected), b, &nb, EVP_sha256(), NULL) != 1 || na != 32 ||
	    nb != 32)
		return false;
	return CRYPTO_memcmp(a, b, 32) == 0;
}

/* --- requests ------------------------------------------------------------- */

/* A Host that names this machine by address or as localhost: what a client
 * on loopback uses. Anything else, without a token, may be a web page's
 * own name rebound to 127.0.0.1 (DNS rebinding). */
static bool host_is_local(const char *host)
{
	if (host == NULL)
		return true; /* HTTP/1.0: no name to rebind */
	char name[64];
	const char *end;
	if (host[0] == '[') { /* [v6]:port */
		end = strchr(host, ']');
		if (end == NULL || (end[1] != '\0' && end[1] != ':'))
			return false;
		host++;
	} else {
		end = strchr(host, ':');
		if (end == NULL)
			end = host + strlen(host);
	}
	size_t n = (size_t)(end - host);
	if (n == 0 || n >= sizeof(name))
		return false;
	memcpy(name, host, n);
	name[n] = '\0';
	unsigned char addr[16];
	return strcasecmp(name, "localhost") == 0 || inet_pton(AF_INET, name, addr) == 1 ||
	       inet_pton(AF_INET6, name, addr) == 1;
}

/* Why a request that a browser made for a web page is refused, or NULL.
 * The admin API serves programs, never pages: a page opened on an
 * operator's machine must not approve, lock or reload through it
 * (cross-site request forgery), nor read it through a rebound name. */
static const char *browser_refusal(const gw_admin_t *admin, const gw_http_request_t *http,
                                   gw_admin_denial_t *why)
{
	const char *site = gw_http_header(http, "Sec-Fetch-Site");
	*why = GW_ADMIN_WEB_PAGE;
	if (gw_http_header(http, "Origin") != NULL ||
	    (site != NULL && strcasecmp(site, "none") != 0))
		return "the admin API does not answer requests made by web pages (Origin or "
		       "Sec-Fetch-Site header)";
	*why = GW_ADMIN_REBOUND_HOST;
	if (admin->token == NULL && !host_is_local(gw_http_header(http, "Host")))
		return "without admin.token_file the Host header must be an address or "
		       "localhost";
	return NULL;
}

static void on_request(void *ctx, const gw_http_request_t *http, gw_http_reply_t *reply)
{
	gw_admin_t *admin = ctx;
	adm_request_t req = {
	        .gw = admin->gw,
	        .metrics = admin->metrics,
	        .http = http,
	        .method = http->method,
	        .path = http->raw_path,
	        .body = http->body,
	        .body_len = http->body_len,
	        .by = http->client,
	};
	gw_admin_denial_t why;
	const char *refusal = browser_refusal(admin, http, &why);
	if (refusal != NULL) {
		adm_denied_record(admin->denied, http, why);
		gw_http_error(reply, 403, "%s", refusal);
		return;
	}
	const char *authorization = gw_http_header(http, "Authorization");
	if (admin->token != NULL && !adm_is_open_path(http->raw_path) &&
	    !token_ok(admin->token, authorization)) {
		adm_denied_record(admin->denied, http,
		                  authorization != NULL ? GW_ADMIN_WRONG_TOKEN
		                                        : GW_ADMIN_MISSING_TOKEN);
		gw_http_error(reply, 401,
		              "a valid bearer token is required (Authorization: Bearer ...)");
		reply->challenge = "Bearer realm=\"certgate\"";
		return;
	}
	adm_dispatch(&req, reply);
}

static void on_tick(void *ctx)
{
	gw_admin_t *admin = ctx;
	adm_denied_tick(admin->denied);
}

/* --- following the generations -------------------------------------------- */

static void prepare(gw_extension_t *ext, const gw_runtime_t *rt, cg_errors_t *errs)
{
	gw_admin_t *admin = (gw_admin_t *)ext;
	const pol_admin_t *next = &rt->snap->admin;
	admin->prepared = true;
	admin->next_server = admin->server;
	admin->next_listen = NULL;
	admin->next_token = NULL;
	if (!next->enabled) {
		admin->next_server = NULL;
		return;
	}
	/* (a non-loopback admin listener without a token is refused by the loader) */
	if (next->token_file.path != NULL)
		admin->next_token = gw_admin_token_load(&next->token_file, errs);
	if (admin->server != NULL && strcmp(admin->listen, next->listen) == 0)
		return;
	admin->next_listen = strdup(next->listen);
	char err[256];
	if (admin->next_listen == NULL) {
		admin->next_server = NULL;
		cg_errors_add(errs, "out of memory");
		return;
	}
	admin->next_server = gw_http_start(admin->gw->loop, next->listen, &http_options, on_request,
	                                   admin, err, sizeof(err));
	if (admin->next_server == NULL)
		cg_errors_add(errs, "%s: admin.listen: %s", rt->snap->config_path, err);
	else if (admin->server != NULL)
		cg_log(CG_LOG_INFO, "admin API moves from %s to %s", admin->listen, next->listen);
}

static void commit(gw_extension_t *ext)
{
	gw_admin_t *admin = (gw_admin_t *)ext;
	if (!admin->prepared)
		return;
	admin->prepared = false;
	if (admin->next_server != admin->server) {
		gw_http_stop(admin->server);
		admin->server = admin->next_server;
		free(admin->listen);
		admin->listen = admin->next_listen;
	} else {
		free(admin->next_listen);
	}
	free_secret(admin->token);
	admin->token = admin->next_token;
	admin->next_server = NULL;
	admin->next_listen = admin->next_token = NULL;
}

static void rollback(gw_extension_t *ext)
{
	gw_admin_t *admin = (gw_admin_t *)ext;
	if (!admin->prepared)
		return;
	admin->prepared = false;
	if (admin->next_server != admin->server)
		gw_http_stop(admin->next_server);
	free(admin->next_listen);
	free_secret(admin->next_token);
	admin->next_server = NULL;
	admin->next_listen = admin->next_token = NULL;
}

static void stop(gw_extension_t *ext)
{
	gw_admin_t *admin = (gw_admin_t *)ext;
	rollback(ext);
	gw_http_stop(admin->server);
	admin->server = NULL;
}

static void destroy(gw_extension_t *ext)
{
	gw_admin_t *admin = (gw_admin_t *)ext;
	stop(ext);
	free(admin->listen);
	free_secret(admin->token);
	adm_denied_destroy(admin->denied);
	free(admin);
}

static const gw_extension_ops_t admin_ops = {
        .prepare = prepare,
        .commit = commit,
        .rollback = rollback,
        .stop = stop,
        .destroy = destroy,
};

gw_admin_t *gw_admin_create(gw_gateway_t *gw, gw_metrics_t *metrics)
{
	gw_admin_t *admin = calloc(1, sizeof(*admin));
	if (admin == NULL)
		return NULL;
	admin->ext.ops = &admin_ops;
	admin->gw = gw;
	admin->metrics = metrics;
	admin->denied = adm_denied_create(gw, metrics);
	if (admin->denied == NULL) {
		free(admin);
		return NULL;
	}
	gw_extension_add(gw, &admin->ext);
	return admin;
}

const char *gw_admin_listening(const gw_admin_t *admin)
{
	return admin->server != NULL ? admin->listen : NULL;
}
