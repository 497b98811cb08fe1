/* The user's catalog as a client reads it (docs/login.md, "The services
 * you may reach"): a mutual-TLS connection to the gateway's shared
 * listener with the login certificate and the TLS server name
 * "certgate-catalog", one JSON document back, then the end of the
 * connection. Blocking with a deadline, so `certgate services` calls it
 * directly and `certgate connect --all` on libuv's thread pool (the
 * context is only read: OpenSSL lets threads share it). */
#ifndef GW_CATALOG_CLIENT_H
#define GW_CATALOG_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "cg_addr.h"

#define CATALOG_TIMEOUT_MS 15000
#define CATALOG_MAX_BYTES  (4 * 1024 * 1024)

typedef enum { CATALOG_TUNNEL, CATALOG_POSTGRES } catalog_mode_t;

typedef struct catalog_entry {
	char *name;
	catalog_mode_t mode;
	char *description;    /* NULL when none */
	uint16_t client_port; /* 0 when none */
	uint16_t port;        /* postgres mode: the gateway's port for it, 0 = the shared one */
} catalog_entry_t;

typedef struct catalog {
	json_t *doc;           /* as the gateway sent it (certgate services --json) */
	const char *user;      /* in doc */
	const char *device_id; /* in doc; NULL when none */
	const char *refused;   /* in doc: the certificate itself is refused (why) */
	catalog_entry_t *entries;
	size_t n;
} catalog_t;

/* Reads the catalog from gateway with ctx (the login certificate's,
 * client_tls.h) within timeout_ms. 0, or -1 with why in err ("cannot
 * connect to gw:8443: Connection refused", "the gateway refused it:
 * certificate expired", ...). */
int catalog_fetch(SSL_CTX *ctx, const cg_hostport_t *gateway, int64_t timeout_ms, catalog_t *out,
                  char *err, size_t errlen) __attribute__((warn_unused_result));

/* One exchange on the catalog's server name (catalog_fetch's, and
 * `certgate request`'s): offers alpn (NULL: the context's, certgate/1),
 * which the gateway must then select; sends line (NULL: nothing) once the
 * handshake is done; reads what the gateway sends until it closes. 0 with
 * *text (malloc'd, NUL-terminated, *len bytes), or -1 with why in err. */
int catalog_exchange(SSL_CTX *ctx, const cg_hostport_t *gateway, int64_t timeout_ms,
                     const char *alpn, const char *line, char **text, size_t *len, char *err,
                     size_t errlen) __attribute__((warn_unused_result));

/* The catalog as the gateway sent it (text), checked and read into out.
 * 0, or -1 with why. */
int catalog_parse(const char *text, size_t len, catalog_t *out, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* The entry named name (exact), or NULL. */
const catalog_entry_t *catalog_find(const catalog_t *cat, const char *name);

void catalog_finish(catalog_t *cat);

#endif
