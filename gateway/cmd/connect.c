/* `certgate connect`: the client-side connector (banyanproxy's TCP mode).
 *
 * One local listener per service: --service NAME on --listen ADDR:PORT (or,
 * without --listen, on 127.0.0.1 at the service's client_port from the
 * user's catalog), or with --all one for every tunnel-mode service the
 * catalog lists with a client_port. Every accepted connection becomes a
 * tunnel (connect_tunnel.c).
 *
 * With --all the catalog is read again every --refresh (default 60s) and
 * at once when the login certificate is renewed, on libuv's thread pool
 * (catalog.c is blocking): a service no longer listed loses its listener
 * (its live tunnels end by the gateway's own revocation), a new one gets
 * one; a port that is taken, a service without client_port and a
 * postgres-mode service are skipped with a word, said again only when
 * that changes. A catalog that cannot be read keeps the listeners as they
 * are.
 *
 * A one-second watch re-reads renewed certificate files (client_tls.c;
 * tunnels also check before each connection) and warns about the login
 * certificate's expiry: once 10 minutes before, once more at expiry if it
 * was not renewed by then (run certgate login).
 *
 * Without --cert/--key/--ca the files of the login folder are used, and
 * without --gateway the gateway certgate login --gateway remembered. */
#include "cmd/cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_addr.h"
#include "cg_duration.h"
#include "cg_log.h"
#include "cg_time.h"
#include "cmd/catalog.h"
#include "cmd/connect.h"
#include "cmd/login_files.h"
#include "tls/x509_info.h"

#define WATCH_MS          1000
#define EXPIRY_WARNING_MS (10 * 60 * 1000)
#define DEFAULT_REFRESH   "60s"

/* What was said about a service --all does not listen for, so it is said
 * again only when it changes. */
typedef struct conn_note {
	struct conn_note *next;
	char service[CONNECT_SERVICE_MAX + 1];
	char text[200];
	bool seen; /* in the latest catalog */
} conn_note_t;

/* --- listeners ---------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
	conn_listener_t *l = server->data;
	if (status < 0)
		return;
	connect_tunnel_accept(l);
}

static void free_listener(uv_handle_t *handle)
{
	free(handle->data);
}

/* A listener for service on ss. 0, or a UV_E* code (nothing left open). */
static int listener_open(connector_t *c, const char *service, const struct sockaddr *ss,
                         uint16_t client_port)
{
	conn_listener_t *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return UV_ENOMEM;
	l->conn = c;
	l->client_port = client_port;
	snprintf(l->service, sizeof(l->service), "%s", service);
	cg_sockaddr_format(ss, l->address, sizeof(l->address));
	uv_tcp_init(c->loop, &l->tcp);
	l->tcp.data = l;
	int rc = uv_tcp_bind(&l->tcp, ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection);
	if (rc < 0) {
		uv_close((uv_handle_t *)&l->tcp, free_listener);
		return rc;
	}
	l->next = c->listeners;
	c->listeners = l;
	return 0;
}

static void listener_close(connector_t *c, conn_listener_t *l)
{
	for (conn_listener_t **at = &c->listeners; *at != NULL; at = &(*at)->next) {
		if (*at == l) {
			*at = l->next;
			break;
		}
	}
	uv_close((uv_handle_t *)&l->tcp, free_listener);
}

static conn_listener_t *listener_of(connector_t *c, const char *service)
{
	for (conn_listener_t *l = c->listeners; l != NULL; l = l->next)
		if (strcmp(l->service, service) == 0)
			return l;
	return NULL;
}

/* --- --all: the catalog, applied -------------------------------------------------- */

static void note(connector_t *c, const char *service, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void note(connector_t *c, const char *service, const char *fmt, ...)
{
	char text[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	conn_note_t *n = c->notes;
	while (n != NULL && strcmp(n->service, service) != 0)
		n = n->next;
	if (n == NULL && (n = calloc(1, sizeof(*n))) != NULL) {
		snprintf(n->service, sizeof(n->service), "%s", service);
		n->next = c->notes;
		c->notes = n;
	}
	if (n == NULL || strcmp(n->text, text) != 0)
		cg_log(CG_LOG_INFO, "%s: %s", service, text);
	if (n != NULL) {
		snprintf(n->text, sizeof(n->text), "%s", text);
		n->seen = true;
	}
}

static void notes_free(connector_t *c)
{
	while (c->notes != NULL) {
		conn_note_t *next = c->notes->next;
		free(c->notes);
		c->notes = next;
	}
}

/* A note is forgotten when its service leaves the catalog: coming back,
 * it is said again. */
static void notes_prune(connector_t *c)
{
	for (conn_note_t **at = &c->notes; *at != NULL;) {
		conn_note_t *n = *at;
		if (n->seen) {
			n->seen = false;
			at = &n->next;
		} else {
			*at = n->next;
			free(n);
		}
	}
}

static void listen_for(connector_t *c, const catalog_entry_t *e)
{
	conn_listener_t *l = listener_of(c, e->name);
	if (l != NULL && l->client_port == e->client_port)
		return; /* listening already */
	if (l != NULL)
		listener_close(c, l); /* its client_port moved */
	if (e->mode == CATALOG_POSTGRES) {
		bool v6 = strchr(c->tls.gateway.host, ':') != NULL;
		note(c, e->name, "postgres mode: psql connects to the gateway, %s%s%s:%u",
		     v6 ? "[" : "", c->tls.gateway.host, v6 ? "]" : "",
		     e->port != 0 ? e->port : c->tls.gateway.port);
		return;
	}
	if (e->client_port == 0) {
		note(c, e->name,
		     "no client_port: skipped (certgate connect --service %s --listen "
		     "ADDR:PORT)",
		     e->name);
		return;
	}
	struct sockaddr_storage ss;
	cg_hostport_t local = {.port = e->client_port};
	snprintf(local.host, sizeof(local.host), "127.0.0.1");
	int rc = cg_hostport_to_sockaddr(&local, &ss)
	                 ? listener_open(c, e->name, (struct sockaddr *)&ss, e->client_port)
	                 : UV_EINVAL;
	if (rc == UV_EADDRINUSE)
		note(c, e->name, "127.0.0.1:%u is taken: skipped", e->client_port);
	else if (rc < 0)
		note(c, e->name, "cannot listen on 127.0.0.1:%u: %s: skipped", e->client_port,
		     uv_strerror(rc));
	else
		note(c, e->name, "listening on 127.0.0.1:%u", e->client_port);
}

static void apply_catalog(connector_t *c, const catalog_t *cat)
{
	if (cat->refused != NULL)
		cg_log(CG_LOG_WARN, "the gateway refuses the login certificate: %s", cat->refused);
	/* gone from the catalog: stop listening (live tunnels are the gateway's
	 * to end) */
	for (conn_listener_t *l = c->listeners, *next; l != NULL; l = next) {
		next = l->next;
		const catalog_entry_t *e = catalog_find(cat, l->service);
		if (e == NULL || e->mode != CATALOG_TUNNEL) {
			cg_log(CG_LOG_INFO,
			       "%s: no longer in your catalog: stopped listening on %s", l->service,
			       l->address);
			listener_close(c, l);
		}
	}
	for (size_t i = 0; i < cat->n; i++)
		listen_for(c, &cat->entries[i]);
	notes_prune(c);
	if (c->listeners == NULL && cat->refused == NULL)
		cg_log(CG_LOG_INFO, "no service to listen for now (certgate services lists yours)");
}

typedef struct refresh {
	uv_work_t work;
	connector_t *conn;
	SSL_CTX *ctx; /* a reference of its own: a renewal may replace the connector's */
	cg_hostport_t gateway;
	catalog_t cat;
	int rc;
	char err[512];
} refresh_t;

static void refresh_work(uv_work_t *req)
{
	refresh_t *r = req->data;
	r->rc = catalog_fetch(r->ctx, &r->gateway, CATALOG_TIMEOUT_MS, &r->cat, r->err,
	                      sizeof(r->err));
}

static void refresh_done(uv_work_t *req, int status)
{
	refresh_t *r = req->data;
	connector_t *c = r->conn;
	c->refreshing = false;
	if (!c->stopping && status == 0) {
		if (r->rc < 0) {
			if (!c->refresh_failed)
				cg_log(CG_LOG_WARN,
				       "cannot read the catalog: %s (the listeners stay)", r->err);
			c->refresh_failed = true;
		} else {
			if (c->refresh_failed)
				cg_log(CG_LOG_INFO, "read the catalog again");
			c->refresh_failed = false;
			apply_catalog(c, &r->cat);
		}
	}
	if (r->rc == 0)
		catalog_finish(&r->cat);
	SSL_CTX_free(r->ctx);
	free(r);
	connect_tunnel_gone(c); /* a stop may have waited for this */
}

static void refresh_start(connector_t *c)
{
	if (c->refreshing || c->stopping || c->tls.ctx == NULL)
		return;
	refresh_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return;
	r->conn = c;
	r->gateway = c->tls.gateway;
	r->ctx = c->tls.ctx;
	SSL_CTX_up_ref(r->ctx);
	r->work.data = r;
	c->last_refresh = uv_now(c->loop);
	if (uv_queue_work(c->loop, &r->work, refresh_work, refresh_done) != 0) {
		SSL_CTX_free(r->ctx);
		free(r);
		return;
	}
	c->refreshing = true;
}

/* --- the watch: renewed files, expiry, refreshes ----------------------------------- */

static void warn_expiry(connector_t *c)
{
	int64_t not_after = c->tls.not_after_ms, now = cg_wall_ms();
	if (not_after == 0)
		return;
	if (not_after != c->warned_for) { /* another certificate: warn about it afresh */
		c->warned_for = not_after;
		c->warned_soon = c->warned_expired = false;
	}
	int64_t until = gw_valid_until_ms(not_after);
	char when[CG_RFC3339_LEN];
	cg_rfc3339_ms(not_after, when);
	if (now >= until && !c->warned_expired) {
		c->warned_expired = c->warned_soon = true;
		cg_log(CG_LOG_WARN,
		       "the login certificate %s has expired (%s): run certgate login; the "
		       "gateway refuses new tunnels until then",
		       c->tls.cert_path, when);
	} else if (now < until && until - now <= EXPIRY_WARNING_MS && !c->warned_soon) {
		char left[32];
		login_human_duration(until - now, left, sizeof(left));
		c->warned_soon = true;
		cg_log(CG_LOG_WARN,
		       "the login certificate %s expires in %s (%s): run certgate login (the "
		       "renewed files are picked up without a restart)",
		       c->tls.cert_path, left, when);
	}
}

static void on_watch(uv_timer_t *timer)
{
	connector_t *c = timer->data;
	bool renewed = client_tls_refresh(&c->tls);
	warn_expiry(c);
	if (c->all && (renewed || uv_now(c->loop) - c->last_refresh >= c->refresh_ms))
		refresh_start(c);
}

/* --- stopping ------------------------------------------------------------------ */

void connect_tunnel_gone(connector_t *c)
{
	if (!c->stopping || c->n_conns > 0 || c->refreshing ||
	    uv_is_closing((uv_handle_t *)&c->sig_term))
		return;
	uv_close((uv_handle_t *)&c->sig_term, NULL);
	uv_close((uv_handle_t *)&c->sig_int, NULL);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	connector_t *c = handle->data;
	if (c->stopping)
		return;
	c->stopping = true;
	cg_log(CG_LOG_INFO, "%s: stopping", strsignal(signum));
	while (c->listeners != NULL)
		listener_close(c, c->listeners);
	uv_close((uv_handle_t *)&c->watch, NULL);
	connect_tunnels_close(c); /* the last one out closes the signals */
	connect_tunnel_gone(c);
}

/* --- the command ------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: certgate connect [--gateway HOST:PORT] --service NAME [--listen "
	        "ADDR:PORT]\n"
	        "                        [--cert FILE --key FILE] [--ca FILE] [--dir DIR]\n"
	        "       certgate connect --all [--gateway HOST:PORT] [--refresh DUR] ...\n"
	        "Listens on ADDR:PORT; every connection is tunnelled to the gateway over mutual\n"
	        "TLS with the login certificate (SNI = NAME), the gateway's certificate verified\n"
	        "against --ca and HOST. Without --listen: 127.0.0.1 at the service's client_port\n"
	        "in your catalog (certgate services). --all: one listener on 127.0.0.1 for every\n"
	        "tunnel-mode service of your catalog with a client_port, the catalog read again\n"
	        "every --refresh (default " DEFAULT_REFRESH ") and when the certificate is "
	        "renewed.\n"
	        "Renewed --cert/--key files are picked up without a restart; a warning comes\n"
	        "10 minutes before the login certificate expires.\n"
	        "Without --gateway: the one certgate login --gateway remembered. Without\n"
	        "--cert/--key and --ca: the login folder's login-cert.pem, login-key.pem and\n"
	        "ca.pem (--dir DIR, default $XDG_CONFIG_HOME/certgate, else "
	        "~/.config/certgate).\n");
}

typedef struct connect_opts {
	const char *gateway, *service, *listen, *dir, *refresh;
	bool all;
} connect_opts_t;

static int parse_options(int argc, char **argv, connector_t *c, connect_opts_t *o)
{
	static const struct option options[] = {
	        {"gateway", required_argument, NULL, 'g'},
	        {"service", required_argument, NULL, 's'},
	        {"listen", required_argument, NULL, 'l'},
	        {"cert", required_argument, NULL, 'c'},
	        {"key", required_argument, NULL, 'k'},
	        {"ca", required_argument, NULL, 'a'},
	        {"dir", required_argument, NULL, 'd'},
	        {"all", no_argument, NULL, 'A'},
	        {"refresh", required_argument, NULL, 'r'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'g':
			o->gateway = optarg;
			break;
		case 's':
			o->service = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'c':
			c->tls.cert_path = optarg;
			break;
		case 'k':
			c->tls.key_path = optarg;
			break;
		case 'a':
			c->tls.ca_path = optarg;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'A':
			o->all = true;
			break;
		case 'r':
			o->refresh = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	const char *wrong = optind != argc                                        ? "surplus"
	                    : o->all && (o->service != NULL || o->listen != NULL) ? "--all alone"
	                    : !o->all && o->service == NULL                       ? "--service"
	                    : !o->all && o->refresh != NULL                       ? "--refresh"
	                    : (c->tls.cert_path == NULL) != (c->tls.key_path == NULL)
	                            ? "--cert with --key"
	                            : NULL;
	if (wrong == NULL)
		return -1;
	if (optind != argc)
		fprintf(stderr, "certgate connect: unexpected argument \"%s\"\n", argv[optind]);
	else if (strcmp(wrong, "--all alone") == 0)
		fprintf(stderr, "certgate connect: --all takes no --service or --listen\n");
	else if (strcmp(wrong, "--refresh") == 0)
		fprintf(stderr, "certgate connect: --refresh goes with --all\n");
	else
		fprintf(stderr, "certgate connect: %s is required\n", wrong);
	usage(stderr);
	return 2;
}

/* The catalog, read now (before the loop runs). 0, or an exit code. */
static int read_catalog(connector_t *c, catalog_t *cat)
{
	char err[512];
	if (catalog_fetch(c->tls.ctx, &c->tls.gateway, CATALOG_TIMEOUT_MS, cat, err, sizeof(err)) <
	    0) {
		fprintf(stderr, "certgate connect: cannot read your catalog: %s\n", err);
		return 1;
	}
	if (cat->refused != NULL) {
		fprintf(stderr, "certgate connect: the gateway refuses the login certificate: %s\n",
		        cat->refused);
		catalog_finish(cat);
		return 1;
	}
	return 0;
}

/* --service NAME without --listen: 127.0.0.1 at its client_port. */
static int listen_of_catalog(connector_t *c, const char *service, char *out, size_t len)
{
	catalog_t cat;
	int rc = read_catalog(c, &cat);
	if (rc != 0)
		return rc;
	const catalog_entry_t *e = catalog_find(&cat, service);
	rc = 1;
	if (e == NULL)
		fprintf(stderr,
		        "certgate connect: %s is not in your catalog (the policy does not admit "
		        "this certificate to it now, or there is no such service)\n",
		        service);
	else if (e->mode == CATALOG_POSTGRES)
		fprintf(stderr,
		        "certgate connect: %s is a postgres-mode service: psql connects to the "
		        "gateway itself (certgate services shows where)\n",
		        service);
	else if (e->client_port == 0)
		fprintf(stderr,
		        "certgate connect: %s has no client_port: give --listen ADDR:PORT\n",
		        service);
	else
		rc = snprintf(out, len, "127.0.0.1:%u", e->client_port) > 0 ? 0 : 1;
	catalog_finish(&cat);
	return rc;
}

static int open_one(connector_t *c, const char *service, const char *listen)
{
	cg_hostport_t local;
	struct sockaddr_storage ss;
	if (!cg_hostport_parse(listen, &local) || !cg_hostport_to_sockaddr(&local, &ss)) {
		fprintf(stderr, "certgate connect: --listen %s: expected IP:PORT\n", listen);
		return 2;
	}
	int rc = listener_open(c, service, (struct sockaddr *)&ss, 0);
	if (rc < 0) {
		fprintf(stderr, "certgate connect: cannot listen on %s: %s\n", listen,
		        uv_strerror(rc));
		return 1;
	}
	if (!cg_sockaddr_is_loopback((const struct sockaddr *)&ss))
		fprintf(stderr,
		        "certgate connect: warning: --listen %s is not a loopback address: anyone "
		        "who reaches it uses the service as you, with your login certificate\n",
		        listen);
	cg_log(CG_LOG_INFO, "listening on %s, tunnelling to %s:%u (service %s)", listen,
	       c->tls.gateway.host, c->tls.gateway.port, service);
	return 0;
}

static int start(connector_t *c, const connect_opts_t *o)
{
	char listen[64];
	int rc = client_tls_settle(&c->tls, "certgate connect", o->dir, o->gateway, true);
	if (rc != 0)
		return rc;
	uint64_t refresh_ms = 0;
	if (!cg_duration_parse(o->refresh != NULL ? o->refresh : DEFAULT_REFRESH, &refresh_ms) ||
	    refresh_ms < 1000) {
		fprintf(stderr,
		        "certgate connect: --refresh %s: expected a duration of 1s or more\n",
		        o->refresh);
		return 2;
	}
	c->all = o->all;
	c->refresh_ms = refresh_ms;
	cg_log(CG_LOG_INFO, "login certificate %s, key %s, CA %s", c->tls.cert_path,
	       c->tls.key_path, c->tls.ca_path);
	char err[512];
	if (client_tls_load(&c->tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "certgate connect: %s\n", err);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (o->all) {
		catalog_t cat;
		if ((rc = read_catalog(c, &cat)) != 0)
			return rc;
		c->last_refresh = uv_now(c->loop);
		apply_catalog(c, &cat);
		catalog_finish(&cat);
		cg_log(CG_LOG_INFO, "tunnelling to %s:%u, the catalog read every %llus",
		       c->tls.gateway.host, c->tls.gateway.port,
		       (unsigned long long)(refresh_ms / 1000));
		return 0;
	}
	if (o->listen == NULL &&
	    (rc = listen_of_catalog(c, o->service, listen, sizeof(listen))) != 0)
		return rc;
	return open_one(c, o->service, o->listen != NULL ? o->listen : listen);
}

int gw_connect_main(int argc, char **argv)
{
	connector_t c;
	connect_opts_t o = {0};
	memset(&c, 0, sizeof(c));
	int rc = parse_options(argc, argv, &c, &o);
	if (rc >= 0)
		return rc;
	c.loop = uv_default_loop();
	/* a SIGTERM that comes once "listening" is printed but before the
	   handlers below exist must still stop us cleanly: hold it until then */
	sigset_t stop_signals, old_mask;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigprocmask(SIG_BLOCK, &stop_signals, &old_mask);
	if ((rc = start(&c, &o)) != 0) {
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
		while (c.listeners != NULL)
			listener_close(&c, c.listeners);
		uv_run(c.loop, UV_RUN_DEFAULT);
		notes_free(&c);
		client_tls_finish(&c.tls);
		return rc;
	}
	uv_timer_init(c.loop, &c.watch);
	c.watch.data = &c;
	uv_timer_start(&c.watch, on_watch, 0, WATCH_MS);
	uv_signal_init(c.loop, &c.sig_term);
	uv_signal_init(c.loop, &c.sig_int);
	c.sig_term.data = c.sig_int.data = &c;
	uv_signal_start(&c.sig_term, on_signal, SIGTERM);
	uv_signal_start(&c.sig_int, on_signal, SIGINT);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	uv_run(c.loop, UV_RUN_DEFAULT);
	uv_loop_close(c.loop);
	notes_free(&c);
	client_tls_finish(&c.tls);
	return 0;
}
