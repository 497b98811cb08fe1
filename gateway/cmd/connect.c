/* `certgate connect`: the client-side connector (banyanproxy's TCP mode).
 *
 * Listens locally; for every accepted connection opens a TCP connection to
 * the gateway, runs a TLS client handshake with the login certificate and
 * SNI = service, verifying the gateway's certificate against --ca and the
 * gateway host name, then relays both ways through a link (client end
 * plain, upstream end TLS). The local client is not read until the tunnel
 * is up, so nothing it sends early is lost or reordered.
 *
 * The connector offers ALPN "certgate/1": a gateway that selects it sends
 * one status line before any byte of the service ("OK" or "REFUSED
 * <reason>"), so a refusal is logged here with its reason whatever the
 * protocol inside (docs/architecture.md, "The connector's status line").
 *
 * Login certificates are short-lived: before each new connection the
 * cert/key files are stat()ed and the TLS context rebuilt when they changed
 * (a renewal written mid-way simply fails to load and the old context
 * stays).
 *
 * Without --cert/--key/--ca the files of the login folder are used (what
 * `certgate login` writes, login_files.h). */
#include "cmd/cli.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cg_addr.h"
#include "cg_log.h"
#include "cg_time.h"
#include "cmd/login_files.h"
#include "core/link.h"
#include "core/runtime.h"
#include "tls/x509_info.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define CONNECT_TIMEOUT_MS              10000
#define HANDSHAKE_TIMEOUT_MS            15000

typedef struct file_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
} file_stamp_t;

typedef struct connector {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_signal_t sig_term, sig_int;
	cg_hostport_t gateway;
	const char *service, *cert_path, *key_path, *ca_path;
	SSL_CTX *ctx;
	file_stamp_t cert_stamp, key_stamp;
	struct tunnel *tunnels; /* open tunnels, for closing on a signal */
	size_t n_conns;
	bool stopping;
	uint64_t next_id;
} connector_t;

typedef struct tunnel {
	gw_link_t link;
	connector_t *conn;
	struct tunnel *prev, *next;
	uint64_t id;
	uv_connect_t connect_req;
	uv_getaddrinfo_t resolve_req;
	bool resolving, zombie, connected;
	/* every address of the gateway, tried in turn (localhost may be ::1
	 * first while the gateway listens on 127.0.0.1 only) */
	struct addrinfo *addrs, *next_addr;
	struct sockaddr_storage numeric;
	bool numeric_left;
	const char *last_error;
	/* the gateway's status line (ALPN certgate/1) */
	bool status_expected; /* the gateway selected certgate/1 */
	bool status_read;
	bool refused;
	char status[256];
	size_t status_len;
	/* the local client's first bytes, to tell a PostgreSQL CancelRequest
	 * (which never gets an answer) from a session */
	uint8_t first[8];
	size_t first_len;
} tunnel_t;

/* --- TLS context -------------------------------------------------------- */

static void stamp(const char *path, file_stamp_t *out)
{
	struct stat st;
	memset(out, 0, sizeof(*out));
	if (stat(path, &st) == 0) {
		out->dev = st.st_dev;
		out->ino = st.st_ino;
		out->size = st.st_size;
		out->mtime = st.st_mtim;
	}
}

static bool same_stamp(const file_stamp_t *a, const file_stamp_t *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static SSL_CTX *build_ctx(connector_t *c, char *err, size_t errlen)
{
	char detail[160];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	static const unsigned char alpn[] = "\x0a" GW_ALPN_CERTGATE;
	if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
		snprintf(err, errlen, "cannot offer ALPN %s", GW_ALPN_CERTGATE);
		goto fail;
	}
	if (SSL_CTX_load_verify_file(ctx, c->ca_path) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--ca %s: %s", c->ca_path, detail);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_path) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--cert %s: %s", c->cert_path, detail);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, c->key_path, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--key %s: %s", c->key_path, detail);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static void warn_if_expired(SSL_CTX *ctx, const char *path)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	if (cert != NULL && gw_valid_until_ms(gw_cert_not_after_ms(cert)) <= cg_wall_ms())
		cg_log(CG_LOG_WARN,
		       "the login certificate %s has expired: log in again to renew it", path);
}

/* Rebuilds the context when the cert or key file changed. Returns the
 * context to use (the old one if the new files do not load). */
static SSL_CTX *current_ctx(connector_t *c)
{
	file_stamp_t cs, ks;
	stamp(c->cert_path, &cs);
	stamp(c->key_path, &ks);
	if (c->ctx != NULL && same_stamp(&cs, &c->cert_stamp) && same_stamp(&ks, &c->key_stamp))
		return c->ctx;
	char err[512];
	SSL_CTX *ctx = build_ctx(c, err, sizeof(err));
	if (ctx == NULL) {
		cg_log(CG_LOG_WARN, "%s%s", err,
		       c->ctx != NULL ? " (keeping the certificate loaded before)" : "");
		return c->ctx;
	}
	if (c->ctx != NULL)
		cg_log(CG_LOG_INFO, "loaded the renewed login certificate %s", c->cert_path);
	SSL_CTX_free(c->ctx);
	c->ctx = ctx;
	c->cert_stamp = cs;
	c->key_stamp = ks;
	warn_if_expired(ctx, c->cert_path);
	return ctx;
}

/* --- tunnels ------------------------------------------------------------- */

static void tunnel_close(tunnel_t *t, bool graceful)
{
	gw_link_close(&t->link, graceful);
}

static void on_freed(gw_link_t *link)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	connector_t *c = t->conn;
	c->n_conns--;
	uv_freeaddrinfo(t->addrs);
	t->addrs = NULL;
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		c->tunnels = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	if (t->resolving)
		t->zombie = true;
	else
		free(t);
	if (c->stopping && c->n_conns == 0) {
		uv_close((uv_handle_t *)&c->sig_term, NULL);
		uv_close((uv_handle_t *)&c->sig_int, NULL);
	}
}

/* A PostgreSQL CancelRequest: 16 bytes, code 80877102. Its connection is
 * closed without an answer by design. */
static bool sent_cancel_request(const tunnel_t *t)
{
	static const uint8_t head[8] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e};
	return t->first_len == sizeof(head) && memcmp(t->first, head, sizeof(head)) == 0;
}

static void on_relay_done(gw_link_t *link, const char *reason, const char *detail)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	bool silent_close =
	        link->end[GW_UPSTREAM].bytes_in == 0 && strcmp(reason, "upstream closed") == 0;
	if (silent_close && !t->refused && !sent_cancel_request(t))
		cg_log(CG_LOG_WARN,
		       t->status_read
		               ? "tunnel %llu: the service closed the connection without a "
		                 "word"
		               : "tunnel %llu: the gateway closed the tunnel before the service "
		                 "said anything: refused? (the gateway's audit log says why)",
		       (unsigned long long)t->id);
	else if (detail != NULL)
		cg_log(CG_LOG_INFO, "tunnel %llu: %s (%s)", (unsigned long long)t->id,
		       strcmp(reason, "upstream closed") == 0 ? "gateway closed" : reason, detail);
	tunnel_close(t, true);
}

/* The gateway's status line, then the service's bytes as they come. */
static bool read_status(tunnel_t *t, const char *data, size_t len)
{
	const char *nl = memchr(data, '\n', len);
	size_t take = nl != NULL ? (size_t)(nl - data) + 1 : len;
	if (t->status_len + take > sizeof(t->status) - 1) {
		cg_log(CG_LOG_WARN, "tunnel %llu: the gateway sent no status line",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return true;
	}
	memcpy(t->status + t->status_len, data, take);
	t->status_len += take;
	if (nl == NULL)
		return true; /* the rest of the line is still to come */
	t->status[t->status_len - 1] = '\0';
	t->status_read = true;
	if (strncmp(t->status, "REFUSED ", 8) == 0) {
		t->refused = true;
		cg_log(CG_LOG_WARN, "tunnel %llu: the gateway refused it: %s",
		       (unsigned long long)t->id, t->status + 8);
	} else if (strcmp(t->status, "OK") != 0) {
		cg_log(CG_LOG_WARN, "tunnel %llu: unexpected status from the gateway",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return true;
	}
	/* what followed the line in this read goes on to the local client */
	if (take < len && gw_end_write(&t->link.end[GW_CLIENT], data + take, len - take) < 0)
		tunnel_close(t, false);
	return true;
}

static bool on_filter(gw_link_t *link, gw_end_t *from, const char *data, size_t len)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (from->id == GW_CLIENT) {
		size_t take = sizeof(t->first) - t->first_len;
		take = take < len ? take : len;
		memcpy(t->first + t->first_len, data, take);
		t->first_len += take;
		return false;
	}
	if (!t->status_expected || t->status_read)
		return false;
	return read_status(t, data, len);
}

static void on_timer(gw_link_t *link)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	cg_log(CG_LOG_WARN, "tunnel %llu: gateway %s:%u: %s", (unsigned long long)t->id,
	       t->conn->gateway.host, t->conn->gateway.port,
	       t->connected ? "TLS handshake timed out" : "connect timed out");
	tunnel_close(t, false);
}

static void handshake_step(tunnel_t *t)
{
	gw_end_t *gw_end = &t->link.end[GW_UPSTREAM];
	gw_tls_status_t st = gw_tls_handshake(&gw_end->tls);
	int rc = gw_end_flush_tls(gw_end);
	if (st == GW_TLS_FAILED) {
		long verify = SSL_get_verify_result(gw_end->tls.ssl);
		cg_log(CG_LOG_WARN, "tunnel %llu: TLS with the gateway failed: %s",
		       (unsigned long long)t->id,
		       verify != X509_V_OK ? X509_verify_cert_error_string(verify)
		                           : gw_end->tls.error);
		tunnel_close(t, false);
		return;
	}
	if (rc < 0) {
		tunnel_close(t, false);
		return;
	}
	if (st == GW_TLS_DONE) {
		uv_timer_stop(&t->link.timer);
		t->status_expected = strcmp(gw_end->tls.alpn, GW_ALPN_CERTGATE) == 0;
		gw_link_relay(&t->link);
	}
}

static void on_setup_input(gw_link_t *link, gw_end_t *end, const char *data, ssize_t nread)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (nread < 0) {
		cg_log(CG_LOG_WARN,
		       "tunnel %llu: the gateway closed the connection during the "
		       "handshake",
		       (unsigned long long)t->id);
		tunnel_close(t, false);
		return;
	}
	if (end->id != GW_UPSTREAM || gw_tls_feed(&end->tls, data, (size_t)nread) < 0) {
		tunnel_close(t, false);
		return;
	}
	handshake_step(t);
}

static void try_next_address(tunnel_t *t);

static void on_connect(uv_connect_t *req, int status)
{
	tunnel_t *t = container_of(req, tunnel_t, connect_req);
	if (t->link.closing)
		return;
	connector_t *c = t->conn;
	if (status < 0) {
		t->last_error = uv_strerror(status);
		gw_end_close(&t->link.end[GW_UPSTREAM]); /* on_end_closed tries the next */
		return;
	}
	t->connected = true;
	gw_end_t *g = &t->link.end[GW_UPSTREAM];
	g->connected = true;
	uv_tcp_nodelay(&g->tcp, 1);
	uv_tcp_keepalive(&g->tcp, 1, 60);
	SSL_CTX *ctx = current_ctx(c);
	if (ctx == NULL || gw_tls_init(&g->tls, ctx, false) < 0) {
		tunnel_close(t, false);
		return;
	}
	g->tls_on = true;
	SSL *ssl = g->tls.ssl;
	SSL_set_tlsext_host_name(ssl, c->service);
	/* verify the gateway's certificate names the host we dialled */
	struct sockaddr_storage ss;
	if (cg_hostport_to_sockaddr(&c->gateway, &ss))
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->gateway.host);
	else
		SSL_set1_host(ssl, c->gateway.host);
	gw_link_arm(&t->link, HANDSHAKE_TIMEOUT_MS);
	if (gw_end_read_start(g) < 0) {
		tunnel_close(t, false);
		return;
	}
	handshake_step(t);
}

static void connect_to(tunnel_t *t, const struct sockaddr *addr)
{
	gw_end_t *g = &t->link.end[GW_UPSTREAM];
	int rc = gw_end_open(&t->link, GW_UPSTREAM);
	if (rc < 0) {
		t->last_error = uv_strerror(rc);
		try_next_address(t);
		return;
	}
	rc = uv_tcp_connect(&t->connect_req, &g->tcp, addr, on_connect);
	if (rc < 0) {
		t->last_error = uv_strerror(rc);
		gw_end_close(g); /* on_end_closed tries the next */
	}
}

static void try_next_address(tunnel_t *t)
{
	connector_t *c = t->conn;
	if (t->numeric_left) {
		t->numeric_left = false;
		connect_to(t, (struct sockaddr *)&t->numeric);
		return;
	}
	if (t->next_addr != NULL) {
		struct addrinfo *ai = t->next_addr;
		t->next_addr = ai->ai_next;
		connect_to(t, ai->ai_addr);
		return;
	}
	cg_log(CG_LOG_WARN, "tunnel %llu: cannot connect to the gateway %s:%u: %s",
	       (unsigned long long)t->id, c->gateway.host, c->gateway.port,
	       t->last_error != NULL ? t->last_error : "no address");
	tunnel_close(t, false);
}

static void on_end_closed(gw_link_t *link, gw_end_t *end)
{
	tunnel_t *t = container_of(link, tunnel_t, link);
	if (end->id == GW_UPSTREAM && !t->connected && !link->closing)
		try_next_address(t);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	tunnel_t *t = container_of(req, tunnel_t, resolve_req);
	t->resolving = false;
	if (t->zombie) {
		uv_freeaddrinfo(res);
		free(t);
		return;
	}
	if (t->link.closing) {
		uv_freeaddrinfo(res);
		return;
	}
	if (status < 0 || res == NULL) {
		cg_log(CG_LOG_WARN, "tunnel %llu: cannot resolve %s: %s", (unsigned long long)t->id,
		       t->conn->gateway.host, status < 0 ? uv_strerror(status) : "no address");
		uv_freeaddrinfo(res);
		tunnel_close(t, false);
		return;
	}
	t->addrs = t->next_addr = res;
	try_next_address(t);
}

static const gw_link_ops_t tunnel_ops = {
        .setup_input = on_setup_input,
        .filter = on_filter,
        .relay_done = on_relay_done,
        .timer = on_timer,
        .end_closed = on_end_closed,
        .freed = on_freed,
};

static void on_connection(uv_stream_t *server, int status)
{
	connector_t *c = server->data;
	if (status < 0)
		return;
	tunnel_t *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return;
	t->conn = c;
	t->id = ++c->next_id;
	gw_link_init(&t->link, c->loop, &tunnel_ops);
	c->n_conns++;
	t->next = c->tunnels;
	if (c->tunnels != NULL)
		c->tunnels->prev = t;
	c->tunnels = t;
	gw_end_t *local = &t->link.end[GW_CLIENT];
	int rc = gw_end_open(&t->link, GW_CLIENT);
	if (rc == 0)
		rc = uv_accept(server, (uv_stream_t *)&local->tcp);
	if (rc < 0 || c->stopping) {
		tunnel_close(t, false);
		return;
	}
	local->connected = true;
	uv_tcp_nodelay(&local->tcp, 1);
	gw_link_arm(&t->link, CONNECT_TIMEOUT_MS);
	if (cg_hostport_to_sockaddr(&c->gateway, &t->numeric)) {
		t->numeric_left = true;
		try_next_address(t);
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", c->gateway.port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	rc = uv_getaddrinfo(c->loop, &t->resolve_req, on_resolved, c->gateway.host, port, &hints);
	if (rc < 0) {
		cg_log(CG_LOG_WARN, "cannot resolve %s: %s", c->gateway.host, uv_strerror(rc));
		tunnel_close(t, false);
		return;
	}
	t->resolving = true;
}

static void on_signal(uv_signal_t *handle, int signum)
{
	connector_t *c = handle->data;
	if (c->stopping)
		return;
	c->stopping = true;
	cg_log(CG_LOG_INFO, "%s: stopping", strsignal(signum));
	uv_close((uv_handle_t *)&c->listener, NULL);
	if (c->n_conns == 0) {
		uv_close((uv_handle_t *)&c->sig_term, NULL);
		uv_close((uv_handle_t *)&c->sig_int, NULL);
		return;
	}
	for (tunnel_t *t = c->tunnels; t != NULL; t = t->next)
		tunnel_close(t, true); /* the last one closes the signals */
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate connect --gateway HOST:PORT --service NAME --listen ADDR:PORT\n"
	        "                        [--cert FILE --key FILE] [--ca FILE] [--dir DIR]\n"
	        "Listens on ADDR:PORT; every connection is tunnelled to the gateway over mutual\n"
	        "TLS with the login certificate (SNI = NAME), the gateway's certificate verified\n"
	        "against --ca and HOST. Renewed --cert/--key files are picked up without a "
	        "restart.\n"
	        "Without --cert/--key and --ca: the login folder's login-cert.pem, login-key.pem\n"
	        "and ca.pem (certgate login writes them; --dir DIR, default\n"
	        "$XDG_CONFIG_HOME/certgate, else ~/.config/certgate).\n");
}

/* --cert/--key/--ca not given: the login folder's. 0, or an exit code. */
static int login_defaults(connector_t *c, const char *dir_opt)
{
	static char dir[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	if (c->cert_path != NULL && c->ca_path != NULL)
		return 0;
	if (!login_dir_default(dir_opt, dir, sizeof(dir)) ||
	    !login_dir_file(dir, LOGIN_CERT_FILE, cert, sizeof(cert)) ||
	    !login_dir_file(dir, LOGIN_KEY_FILE, key, sizeof(key)) ||
	    !login_dir_file(dir, LOGIN_CA_FILE, ca, sizeof(ca))) {
		fprintf(stderr, "certgate connect: no login folder (HOME unset?): give --dir or "
		                "--cert, --key and --ca\n");
		return 1;
	}
	if (c->cert_path == NULL) {
		if (access(cert, F_OK) < 0 || access(key, F_OK) < 0) {
			fprintf(stderr,
			        "certgate connect: no login certificate in %s: run certgate "
			        "login\n",
			        dir);
			return 1;
		}
		c->cert_path = cert;
		c->key_path = key;
	}
	if (c->ca_path == NULL) {
		if (access(ca, F_OK) < 0) {
			fprintf(stderr,
			        "certgate connect: no %s in %s: run certgate login, or give "
			        "--ca\n",
			        LOGIN_CA_FILE, dir);
			return 1;
		}
		c->ca_path = ca;
	}
	return 0;
}

int gw_connect_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"gateway", required_argument, NULL, 'g'},
	        {"service", required_argument, NULL, 's'},
	        {"listen", required_argument, NULL, 'l'},
	        {"cert", required_argument, NULL, 'c'},
	        {"key", required_argument, NULL, 'k'},
	        {"ca", required_argument, NULL, 'a'},
	        {"dir", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	connector_t c;
	memset(&c, 0, sizeof(c));
	const char *gateway = NULL, *listen = NULL, *dir = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'g':
			gateway = optarg;
			break;
		case 's':
			c.service = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'c':
			c.cert_path = optarg;
			break;
		case 'k':
			c.key_path = optarg;
			break;
		case 'a':
			c.ca_path = optarg;
			break;
		case 'd':
			dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	const char *missing = gateway == NULL                                 ? "--gateway"
	                      : c.service == NULL                             ? "--service"
	                      : listen == NULL                                ? "--listen"
	                      : (c.cert_path == NULL) != (c.key_path == NULL) ? "--cert with --key"
	                                                                      : NULL;
	if (missing != NULL || optind != argc) {
		if (missing != NULL)
			fprintf(stderr, "certgate connect: %s is required\n", missing);
		else
			fprintf(stderr, "certgate connect: unexpected argument \"%s\"\n",
			        argv[optind]);
		usage(stderr);
		return 2;
	}
	int rc = login_defaults(&c, dir);
	if (rc != 0)
		return rc;
	cg_log(CG_LOG_INFO, "login certificate %s, key %s, CA %s", c.cert_path, c.key_path,
	       c.ca_path);
	cg_hostport_t local;
	struct sockaddr_storage ss;
	if (!cg_hostport_parse(gateway, &c.gateway)) {
		fprintf(stderr, "certgate connect: --gateway %s: expected HOST:PORT\n", gateway);
		return 2;
	}
	if (!cg_hostport_parse(listen, &local) || !cg_hostport_to_sockaddr(&local, &ss)) {
		fprintf(stderr, "certgate connect: --listen %s: expected IP:PORT\n", listen);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	c.loop = uv_default_loop();
	char err[512];
	c.ctx = build_ctx(&c, err, sizeof(err));
	if (c.ctx == NULL) {
		fprintf(stderr, "certgate connect: %s\n", err);
		return 1;
	}
	stamp(c.cert_path, &c.cert_stamp);
	stamp(c.key_path, &c.key_stamp);
	warn_if_expired(c.ctx, c.cert_path);

	uv_tcp_init(c.loop, &c.listener);
	c.listener.data = &c;
	rc = uv_tcp_bind(&c.listener, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&c.listener, 128, on_connection);
	if (rc < 0) {
		fprintf(stderr, "certgate connect: cannot listen on %s: %s\n", listen,
		        uv_strerror(rc));
		uv_close((uv_handle_t *)&c.listener, NULL);
		uv_run(c.loop, UV_RUN_DEFAULT);
		SSL_CTX_free(c.ctx);
		return 1;
	}
	uv_signal_init(c.loop, &c.sig_term);
	uv_signal_init(c.loop, &c.sig_int);
	c.sig_term.data = c.sig_int.data = &c;
	uv_signal_start(&c.sig_term, on_signal, SIGTERM);
	uv_signal_start(&c.sig_int, on_signal, SIGINT);
	cg_log(CG_LOG_INFO, "listening on %s, tunnelling to %s (service %s)", listen, gateway,
	       c.service);
	uv_run(c.loop, UV_RUN_DEFAULT);
	uv_loop_close(c.loop);
	SSL_CTX_free(c.ctx);
	return 0;
}
