/* The catalog client (see catalog.h): resolve, connect (every address in
 * turn), TLS with SNI "certgate-catalog" and the gateway's name verified,
 * (for an access request: send its line), read until the gateway closes
 * (at most CATALOG_MAX_BYTES), parse. One
 * non-blocking socket driven by poll(2) against one deadline, so a gateway
 * that never answers costs at most the timeout. A gateway that offers the
 * status line (ALPN certgate/1) and refuses the certificate after the
 * handshake says "REFUSED <reason>" instead of a document. */
#include "cmd/catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "cg_time.h"
#include "cmd/client_tls.h"
#include "pol_types.h"
#include "tls/tls_engine.h"

typedef struct fetch {
	int fd;
	int64_t deadline_ms;
	char *err;
	size_t errlen;
} fetch_t;

/* Waits until fd is ready for events or the deadline passes. */
static bool wait_fd(fetch_t *f, short events)
{
	for (;;) {
		int64_t left = f->deadline_ms - cg_wall_ms();
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = f->fd, .events = events};
		int rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return true;
		if (rc == 0 || errno != EINTR)
			return false;
	}
}

static int connect_one(fetch_t *f, const struct addrinfo *ai)
{
	f->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (f->fd < 0)
		return -errno;
	if (connect(f->fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 0;
	int e = errno;
	if (e == EINPROGRESS) {
		socklen_t len = sizeof(e);
		if (!wait_fd(f, POLLOUT))
			e = ETIMEDOUT;
		else if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
			e = errno;
	}
	if (e == 0)
		return 0;
	close(f->fd);
	f->fd = -1;
	return -e;
}

static int connect_gateway(fetch_t *f, const cg_hostport_t *gw)
{
	char port[8];
	snprintf(port, sizeof(port), "%u", gw->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
	int rc = getaddrinfo(gw->host, port, &hints, &res);
	if (rc != 0) {
		snprintf(f->err, f->errlen, "cannot resolve %s: %s", gw->host, gai_strerror(rc));
		return -1;
	}
	int last = -EHOSTUNREACH;
	/* localhost may be ::1 first while the gateway listens on 127.0.0.1 */
	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
		if ((last = connect_one(f, ai)) == 0)
			break;
	freeaddrinfo(res);
	if (last < 0) {
		snprintf(f->err, f->errlen, "cannot connect to the gateway %s:%u: %s", gw->host,
		         gw->port, strerror(-last));
		return -1;
	}
	return 0;
}

/* Drives an SSL call that may want to read or write until it is done. */
static int ssl_step(fetch_t *f, SSL *ssl, int rc)
{
	switch (SSL_get_error(ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(f, POLLIN) ? 1 : -ETIMEDOUT;
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(f, POLLOUT) ? 1 : -ETIMEDOUT;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		return -EPROTO;
	}
}

static int handshake(fetch_t *f, SSL *ssl, const cg_hostport_t *gw)
{
	for (;;) {
		ERR_clear_error();
		int rc = SSL_connect(ssl);
		if (rc == 1)
			return 0;
		int step = ssl_step(f, ssl, rc);
		if (step > 0)
			continue;
		long verify = SSL_get_verify_result(ssl);
		char detail[200];
		if (step == -ETIMEDOUT)
			snprintf(detail, sizeof(detail), "timed out");
		else if (verify != X509_V_OK)
			snprintf(detail, sizeof(detail), "the gateway's certificate: %s",
			         X509_verify_cert_error_string(verify));
		else
			gw_tls_describe_error(detail, sizeof(detail), "handshake failed");
		snprintf(f->err, f->errlen, "TLS with the gateway %s:%u failed: %s", gw->host,
		         gw->port, detail);
		return -1;
	}
}

/* Everything the gateway sends until it closes; *text NUL-terminated. */
static int read_all(fetch_t *f, SSL *ssl, char **text, size_t *len)
{
	size_t cap = 16 * 1024;
	char *buf = malloc(cap);
	*len = 0;
	while (buf != NULL) {
		if (*len + 1 == cap) {
			char *grown = cap < CATALOG_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
			if (grown == NULL)
				break;
			buf = grown;
			cap *= 2;
		}
		ERR_clear_error();
		int n = SSL_read(ssl, buf + *len, (int)(cap - 1 - *len));
		if (n > 0) {
			*len += (size_t)n;
			continue;
		}
		int step = ssl_step(f, ssl, n);
		if (step > 0)
			continue;
		if (*len > 0) { /* close_notify, or the end of what it sent */
			buf[*len] = '\0';
			*text = buf;
			return 0;
		}
		char detail[200] = "";
		if (step == -ETIMEDOUT)
			snprintf(f->err, f->errlen, "the gateway did not answer (timed out)");
		else if (step < 0 && gw_tls_describe_error(detail, sizeof(detail), "") != 0)
			snprintf(f->err, f->errlen,
			         "the gateway ended the connection: %s (its audit log says why)",
			         detail);
		else
			snprintf(f->err, f->errlen,
			         "the gateway closed the connection without a word: refused? (its "
			         "audit log says why)");
		free(buf);
		return -1;
	}
	free(buf);
	snprintf(f->err, f->errlen, "the catalog is larger than %d bytes", CATALOG_MAX_BYTES);
	return -1;
}

static int write_all(fetch_t *f, SSL *ssl, const char *data, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ERR_clear_error();
		int n = SSL_write(ssl, data + off, (int)(len - off));
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		int step = ssl_step(f, ssl, n);
		if (step > 0)
			continue;
		snprintf(f->err, f->errlen, "cannot send to the gateway: %s",
		         step == -ETIMEDOUT ? "timed out" : "the connection ended");
		return -1;
	}
	return 0;
}

/* Whether the gateway selected alpn. */
static bool selected(SSL *ssl, const char *alpn)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;
	SSL_get0_alpn_selected(ssl, &p, &n);
	return p != NULL && n == strlen(alpn) && memcmp(p, alpn, n) == 0;
}

int catalog_exchange(SSL_CTX *ctx, const cg_hostport_t *gateway, int64_t timeout_ms,
                     const char *alpn, const char *line, char **text, size_t *len, char *err,
                     size_t errlen)
{
	fetch_t f = {
	        .fd = -1, .deadline_ms = cg_wall_ms() + timeout_ms, .err = err, .errlen = errlen};
	*text = NULL;
	*len = 0;
	if (connect_gateway(&f, gateway) < 0)
		return -1;
	int rc = -1;
	unsigned char protos[64];
	size_t alen = alpn != NULL ? strlen(alpn) : 0;
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL || SSL_set_fd(ssl, f.fd) != 1 ||
	    SSL_set_tlsext_host_name(ssl, POL_CATALOG_SNI) != 1 || alen >= sizeof(protos)) {
		snprintf(err, errlen, "cannot set up TLS");
		goto done;
	}
	if (alpn != NULL) {
		protos[0] = (unsigned char)alen;
		memcpy(protos + 1, alpn, alen);
		if (SSL_set_alpn_protos(ssl, protos, (unsigned int)alen + 1) != 0) {
			snprintf(err, errlen, "cannot offer ALPN %s", alpn);
			goto done;
		}
	}
	/* the document is whole or it does not parse: an EOF ends it like
	 * close_notify */
	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	client_tls_expect_gateway(ssl, gateway);
	if (handshake(&f, ssl, gateway) < 0)
		goto done;
	if (alpn != NULL && !selected(ssl, alpn)) {
		snprintf(err, errlen,
		         "the gateway %s:%u does not speak %s (a certgate older than this one?)",
		         gateway->host, gateway->port, alpn);
		goto done;
	}
	if (line != NULL && write_all(&f, ssl, line, strlen(line)) < 0)
		goto done;
	if (read_all(&f, ssl, text, len) < 0)
		goto done;
	(void)SSL_shutdown(ssl); /* our close_notify; the gateway is gone anyway */
	rc = 0;
done:
	SSL_free(ssl);
	close(f.fd);
	ERR_clear_error();
	return rc;
}

int catalog_fetch(SSL_CTX *ctx, const cg_hostport_t *gateway, int64_t timeout_ms, catalog_t *out,
                  char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char *text = NULL;
	size_t len = 0;
	if (catalog_exchange(ctx, gateway, timeout_ms, NULL, NULL, &text, &len, err, errlen) < 0)
		return -1;
	int rc = -1;
	if (strncmp(text, "REFUSED ", 8) == 0) {
		size_t n = strcspn(text + 8, "\n");
		snprintf(err, errlen, "the gateway refused the login certificate: %.*s",
		         (int)(n < 200 ? n : 200), text + 8);
	} else {
		rc = catalog_parse(text, len, out, err, errlen);
	}
	free(text);
	return rc;
}

/* --- the document ----------------------------------------------------------- */

static bool service_name_ok(const char *s)
{
	size_t n = strlen(s);
	return n > 0 && n <= 253 &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A port member: an integer 1-65535, or null / absent (0). */
static bool port_of(const json_t *v, uint16_t *out)
{
	*out = 0;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
		return false;
	*out = (uint16_t)json_integer_value(v);
	return true;
}

static const char *read_entry(const json_t *j, catalog_entry_t *e)
{
	const char *name = json_string_value(json_object_get(j, "name"));
	const char *mode = json_string_value(json_object_get(j, "mode"));
	const json_t *desc = json_object_get(j, "description");
	if (name == NULL || !service_name_ok(name))
		return "a service without a valid name";
	if (mode == NULL || (strcmp(mode, "tunnel") != 0 && strcmp(mode, "postgres") != 0))
		return "a service without a mode";
	if (desc != NULL && !json_is_null(desc) && !json_is_string(desc))
		return "a description that is not text";
	if (!port_of(json_object_get(j, "client_port"), &e->client_port) ||
	    !port_of(json_object_get(j, "port"), &e->port))
		return "a port that is not 1 to 65535";
	e->mode = strcmp(mode, "postgres") == 0 ? CATALOG_POSTGRES : CATALOG_TUNNEL;
	e->name = strdup(name);
	e->description = json_is_string(desc) ? strdup(json_string_value(desc)) : NULL;
	if (e->name == NULL || (json_is_string(desc) && e->description == NULL))
		return "out of memory";
	return NULL;
}

int catalog_parse(const char *text, size_t len, catalog_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	json_error_t jerr;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *services = json_object_get(doc, "services");
	if (doc == NULL || !json_is_object(doc) || !json_is_array(services)) {
		snprintf(err, errlen, "the gateway's answer is not a catalog%s%s",
		         doc == NULL ? ": " : "", doc == NULL ? jerr.text : "");
		json_decref(doc);
		return -1;
	}
	out->doc = doc;
	out->user = json_string_value(json_object_get(doc, "user"));
	out->device_id = json_string_value(json_object_get(doc, "device_id"));
	out->refused = json_string_value(json_object_get(doc, "refused"));
	out->entries = calloc(json_array_size(services) + 1, sizeof(*out->entries));
	if (out->entries == NULL) {
		snprintf(err, errlen, "out of memory");
		catalog_finish(out);
		return -1;
	}
	size_t i;
	json_t *j;
	json_array_foreach(services, i, j)
	{
		const char *why = read_entry(j, &out->entries[out->n++]);
		if (why != NULL) {
			snprintf(err, errlen, "the gateway's catalog has %s (services[%zu])", why,
			         i);
			catalog_finish(out);
			return -1;
		}
	}
	return 0;
}

const catalog_entry_t *catalog_find(const catalog_t *cat, const char *name)
{
	for (size_t i = 0; i < cat->n; i++)
		if (strcmp(cat->entries[i].name, name) == 0)
			return &cat->entries[i];
	return NULL;
}

void catalog_finish(catalog_t *cat)
{
	for (size_t i = 0; i < cat->n; i++) {
		free(cat->entries[i].name);
		free(cat->entries[i].description);
	}
	free(cat->entries);
	json_decref(cat->doc);
	memset(cat, 0, sizeof(*cat));
}
