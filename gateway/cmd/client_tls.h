/* The login certificate as `certgate connect` and `certgate services`
 * present it to the gateway: which files (given, else the login folder's,
 * login_files.h) and which gateway (given, else the one `certgate login
 * --gateway` remembered in login.json); the TLS client context built from
 * them (the gateway verified against the CA and its host name, ALPN
 * certgate/1 offered), rebuilt when the certificate or key file changes —
 * login certificates are short-lived and get renewed under a running
 * connector. */
#ifndef GW_CLIENT_TLS_H
#define GW_CLIENT_TLS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <openssl/ssl.h>

#include "cg_addr.h"

typedef struct client_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
} client_stamp_t;

typedef struct client_tls {
	/* the files: given, or the login folder's (kept in the buffers) */
	const char *cert_path, *key_path, *ca_path;
	char cert_buf[PATH_MAX], key_buf[PATH_MAX], ca_buf[PATH_MAX];
	cg_hostport_t gateway;
	SSL_CTX *ctx; /* NULL until built */
	client_stamp_t cert_stamp, key_stamp;
	int64_t not_after_ms; /* of the certificate loaded, 0 if unreadable */
} client_tls_t;

/* Settles the files and the gateway of cmd ("certgate connect"): those
 * given (NULL when not), else the login folder's (dir, else the default
 * folder). gateway_required: no --gateway and none in login.json is an
 * error. 0, or an exit code with one line on stderr. */
int client_tls_settle(client_tls_t *t, const char *cmd, const char *dir, const char *gateway,
                      bool gateway_required) __attribute__((warn_unused_result));

/* Builds the context from the files (and stamps them). 0, or -1 with why
 * in err ("--cert FILE: ..."). */
int client_tls_load(client_tls_t *t, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Rebuilds the context when the certificate or key file changed since it
 * was built; a renewal that does not load yet keeps the one before
 * (logged). Returns true when a renewed certificate was loaded. */
bool client_tls_refresh(client_tls_t *t);

/* Sets up ssl to verify that the gateway's certificate names the host
 * dialled (an IP address or a DNS name). */
void client_tls_expect_gateway(SSL *ssl, const cg_hostport_t *gateway);

void client_tls_finish(client_tls_t *t);

#endif
