/* The issuer as a gateway extension (see issuer.h): generations, the
 * listener, and the HTTP server its connections are handed to. */
#include "issuer/issuer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cg_addr.h"
#include "cg_log.h"
#include "issuer/issuer_conn.h"
#include "tls/pem_io.h"
#include "tls/tls_engine.h"

#define MAX_CONNECTIONS 1024
/* one host's share: a login takes one or two connections; a NAT of many
 * users still gets 64 at once, and 16 sources are needed to take all */
#define MAX_PER_SOURCE (MAX_CONNECTIONS / 16)

struct gw_issuer {
	gw_extension_t ext; /* first: the extension is the issuer */
	gw_gateway_t *gw;
	gw_http_server_t *http; /* MHD without a listener, for every generation */
	uv_tcp_t *listener;     /* NULL while not serving */
	char *listen;           /* what listener is bound to */
	gw_issuer_gen_t *cur;
	/* what the reload being prepared brings */
	gw_issuer_gen_t *next;
	uv_tcp_t *next_listener;
	char *next_listen;
	bool prepared;
	gw_conn_slots_t slots;
	uint64_t generations; /* serials handed out */
};

static const gw_http_options_t http_options = {
        .name = "issuer",
        .max_connections = MAX_CONNECTIONS,
        .max_per_source = 0,
        .timeout_s = 30,
        /* room for a CSR over the issuer's own cap, refused with its reason */
        .max_body = 256 * 1024,
};

/* --- loading a generation -------------------------------------------------- */

static void file_error(cg_errors_t *errs, const pol_file_t *file, const char *what, const char *why)
{
	char where[512];
	pol_file_where(file, where, sizeof(where));
	cg_errors_add(errs, "%s: %s %s: %s", where, what, file->path, why);
}

/* The login CA must be one the gateway trusts, else every certificate the
 * issuer signs is refused at the door. */
static bool ca_in_client_ca(const pol_snapshot_t *snap, X509 *ca, cg_errors_t *errs)
{
	char why[256];
	STACK_OF(X509) *trusted = gw_pem_read_certs(snap->gateway.client_ca.path, why, sizeof(why));
	bool found = false;
	for (int i = 0; trusted != NULL && i < sk_X509_num(trusted) && !found; i++)
		found = X509_cmp(sk_X509_value(trusted, i), ca) == 0;
	sk_X509_pop_free(trusted, X509_free);
	if (!found) {
		char where[512];
		pol_file_where(&snap->issuer.ca_cert, where, sizeof(where));
		cg_errors_add(
		        errs,
		        "%s: %s is not one of gateway.client_ca (%s): the gateway would refuse "
		        "every certificate the issuer signs",
		        where, snap->issuer.ca_cert.path, snap->gateway.client_ca.path);
	}
	return found;
}

static SSL_CTX *server_ctx(const pol_issuer_t *cfg, cg_errors_t *errs)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		cg_errors_add(errs, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_security_level(ctx, 2);
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
	char detail[160];
	bool ok = true;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert.path) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		file_error(errs, &cfg->cert, "cannot load certificate", detail);
		ok = false;
	} else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key.path, SSL_FILETYPE_PEM) != 1 ||
	           SSL_CTX_check_private_key(ctx) != 1) {
		gw_tls_describe_error(detail, sizeof(detail),
		                      "unreadable or not the certificate's");
		file_error(errs, &cfg->key, "cannot load private key", detail);
		ok = false;
	}
	ERR_clear_error();
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

bool gw_issuer_load(const pol_snapshot_t *snap, gw_issuer_gen_t *gen, cg_errors_t *errs)
{
	const pol_issuer_t *cfg = &snap->issuer;
	size_t before = errs->count;
	gw_issuer_gen_t tmp = {.snap = snap, .cfg = cfg};
	char why[256];
	if (cfg->cert.path != NULL && cfg->key.path != NULL)
		tmp.server_ctx = server_ctx(cfg, errs);
	if (cfg->ca_cert.path != NULL &&
	    (tmp.ca_cert = gw_pem_read_cert(cfg->ca_cert.path, why, sizeof(why))) == NULL)
		file_error(errs, &cfg->ca_cert, "cannot load", why);
	if (cfg->ca_key.path != NULL &&
	    (tmp.ca_key = gw_pem_read_key(cfg->ca_key.path, why, sizeof(why))) == NULL)
		file_error(errs, &cfg->ca_key, "cannot load", why);
	if (tmp.ca_cert != NULL && tmp.ca_key != NULL) {
		if (X509_check_private_key(tmp.ca_cert, tmp.ca_key) != 1)
			file_error(errs, &cfg->ca_key, "key", "does not match issuer.ca_cert");
		else if (X509_check_ca(tmp.ca_cert) == 0)
			file_error(errs, &cfg->ca_cert, "certificate", "is not a CA certificate");
		else
			(void)ca_in_client_ca(snap, tmp.ca_cert, errs);
	}
	/* "ca" in a login's reply: what certgate connect verifies the gateway
	 * with (ca.pem) */
	STACK_OF(X509) *server = NULL;
	if (cfg->server_ca.path != NULL) {
		server = gw_pem_read_certs(cfg->server_ca.path, why, sizeof(why));
		if (server == NULL)
			file_error(errs, &cfg->server_ca, "cannot load", why);
	} else if (tmp.ca_cert != NULL && (server = sk_X509_new_null()) != NULL) {
		if (!X509_up_ref(tmp.ca_cert) || sk_X509_push(server, tmp.ca_cert) <= 0) {
			sk_X509_pop_free(server, X509_free);
			server = NULL;
		}
	}
	size_t pem_len = 0;
	if (server != NULL && (tmp.ca_pem = gw_pem_certs(server, &pem_len)) == NULL)
		cg_errors_add(errs, "out of memory");
	sk_X509_pop_free(server, X509_free);
	if (cfg->oidc.ca_file.path != NULL) {
		STACK_OF(X509) *bundle =
		        gw_pem_read_certs(cfg->oidc.ca_file.path, why, sizeof(why));
		if (bundle == NULL)
			file_error(errs, &cfg->oidc.ca_file, "cannot load", why);
		sk_X509_pop_free(bundle, X509_free);
	}
	ERR_clear_error();
	bool ok = errs->count == before;
	if (ok && gen != NULL) {
		*gen = tmp;
		return true;
	}
	gw_issuer_gen_finish(&tmp);
	return ok;
}

void gw_issuer_gen_finish(gw_issuer_gen_t *gen)
{
	SSL_CTX_free(gen->server_ctx);
	X509_free(gen->ca_cert);
	EVP_PKEY_free(gen->ca_key);
	free(gen->ca_pem);
	gen->ca_pem = NULL;
	gen->server_ctx = NULL;
	gen->ca_cert = NULL;
	gen->ca_key = NULL;
}

static bool same_idp(const gw_issuer_gen_t *a, const pol_issuer_t *b)
{
	const char *ca_a = a->cfg->oidc.ca_file.path, *ca_b = b->oidc.ca_file.path;
	return strcmp(a->cfg->oidc.issuer, b->oidc.issuer) == 0 &&
	       ((ca_a == NULL && ca_b == NULL) ||
	        (ca_a != NULL && ca_b != NULL && strcmp(ca_a, ca_b) == 0));
}

static void gen_free(gw_issuer_gen_t *gen, bool with_idp)
{
	if (gen == NULL)
		return;
	gw_issuer_gen_finish(gen);
	if (with_idp)
		gw_idp_destroy(gen->idp);
	pol_snapshot_unref((pol_snapshot_t *)gen->snap);
	free(gen);
}

/* --- the listener ------------------------------------------------------------ */

static void on_connection(uv_stream_t *server, int status)
{
	gw_issuer_t *issuer = server->data;
	if (status < 0) {
		cg_log(CG_LOG_WARN, "issuer: accept: %s", uv_strerror(status));
		return;
	}
	gw_issuer_conn_accept(server, issuer->cur != NULL ? issuer->cur->server_ctx : NULL,
	                      issuer->http, &issuer->slots);
}

static void free_handle(uv_handle_t *handle)
{
	free(handle);
}

static void listener_close(uv_tcp_t *tcp)
{
	if (tcp != NULL)
		uv_close((uv_handle_t *)tcp, free_handle);
}

static uv_tcp_t *listener_open(gw_issuer_t *issuer, const pol_issuer_t *cfg, cg_errors_t *errs)
{
	struct sockaddr_storage ss;
	if (!cg_hostport_to_sockaddr(&cfg->listen_addr, &ss)) {
		cg_errors_add(errs, "issuer.listen %s: not a numeric address", cfg->listen);
		return NULL;
	}
	uv_tcp_t *tcp = calloc(1, sizeof(*tcp));
	if (tcp == NULL) {
		cg_errors_add(errs, "out of memory");
		return NULL;
	}
	uv_tcp_init(issuer->gw->loop, tcp);
	tcp->data = issuer;
	int rc = uv_tcp_bind(tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)tcp, 256, on_connection);
	if (rc < 0) {
		cg_errors_add(errs, "issuer.listen: cannot listen on %s: %s", cfg->listen,
		              uv_strerror(rc));
		listener_close(tcp);
		return NULL;
	}
	return tcp;
}

/* --- following the generations -------------------------------------------------- */

static void prepare(gw_extension_t *ext, const gw_runtime_t *rt, cg_errors_t *errs)
{
	gw_issuer_t *issuer = (gw_issuer_t *)ext;
	const pol_issuer_t *cfg = &rt->snap->issuer;
	issuer->prepared = true;
	issuer->next = NULL;
	issuer->next_listener = issuer->listener;
	issuer->next_listen = NULL;
	if (!cfg->enabled) {
		issuer->next_listener = NULL;
		return;
	}
	gw_issuer_gen_t *gen = calloc(1, sizeof(*gen));
	if (gen == NULL) {
		cg_errors_add(errs, "out of memory");
		return;
	}
	if (!gw_issuer_load(rt->snap, gen, errs)) {
		free(gen);
		return;
	}
	gen->snap = pol_snapshot_ref((pol_snapshot_t *)rt->snap);
	gen->serial = ++issuer->generations;
	if (issuer->cur != NULL && same_idp(issuer->cur, cfg))
		gen->idp = issuer->cur->idp; /* the keys fetched stay */
	else
		gen->idp =
		        gw_idp_create(issuer->gw->loop, cfg->oidc.issuer, cfg->oidc.ca_file.path);
	if (gen->idp == NULL) {
		cg_errors_add(errs, "out of memory");
		gen_free(gen, false);
		return;
	}
	issuer->next = gen;
	if (issuer->listener != NULL && strcmp(issuer->listen, cfg->listen) == 0)
		return;
	issuer->next_listen = strdup(cfg->listen);
	issuer->next_listener =
	        issuer->next_listen != NULL ? listener_open(issuer, cfg, errs) : NULL;
	if (issuer->next_listen == NULL)
		cg_errors_add(errs, "out of memory");
}

static void drop_next(gw_issuer_t *issuer)
{
	if (issuer->next != NULL)
		gen_free(issuer->next,
		         issuer->cur == NULL || issuer->next->idp != issuer->cur->idp);
	if (issuer->next_listener != issuer->listener)
		listener_close(issuer->next_listener);
	free(issuer->next_listen);
	issuer->next = NULL;
	issuer->next_listener = NULL;
	issuer->next_listen = NULL;
}

static void commit(gw_extension_t *ext)
{
	gw_issuer_t *issuer = (gw_issuer_t *)ext;
	if (!issuer->prepared)
		return;
	issuer->prepared = false;
	if (issuer->next_listener != issuer->listener) {
		listener_close(issuer->listener);
		issuer->listener = issuer->next_listener;
		free(issuer->listen);
		issuer->listen = issuer->next_listen;
		if (issuer->listener != NULL)
			cg_log(CG_LOG_INFO, "issuer on %s (identity provider %s)", issuer->listen,
			       issuer->next->cfg->oidc.issuer);
	} else {
		free(issuer->next_listen);
	}
	if (issuer->cur != NULL)
		gen_free(issuer->cur,
		         issuer->next == NULL || issuer->next->idp != issuer->cur->idp);
	issuer->cur = issuer->next;
	issuer->next = NULL;
	issuer->next_listener = NULL;
	issuer->next_listen = NULL;
}

static void rollback(gw_extension_t *ext)
{
	gw_issuer_t *issuer = (gw_issuer_t *)ext;
	if (!issuer->prepared)
		return;
	issuer->prepared = false;
	drop_next(issuer);
}

static void stop(gw_extension_t *ext)
{
	gw_issuer_t *issuer = (gw_issuer_t *)ext;
	rollback(ext);
	listener_close(issuer->listener);
	issuer->listener = NULL;
	gen_free(issuer->cur, true);
	issuer->cur = NULL;
	gw_http_stop(issuer->http);
	issuer->http = NULL;
}

static void destroy(gw_extension_t *ext)
{
	gw_issuer_t *issuer = (gw_issuer_t *)ext;
	stop(ext);
	free(issuer->listen);
	cg_strmap_destroy(issuer->slots.per_source, NULL);
	free(issuer);
}

static const gw_extension_ops_t issuer_ops = {
        .prepare = prepare,
        .commit = commit,
        .rollback = rollback,
        .stop = stop,
        .destroy = destroy,
};

gw_issuer_t *gw_issuer_create(gw_gateway_t *gw)
{
	gw_issuer_t *issuer = calloc(1, sizeof(*issuer));
	if (issuer == NULL)
		return NULL;
	issuer->ext.ops = &issuer_ops;
	issuer->gw = gw;
	issuer->slots.max = MAX_CONNECTIONS;
	issuer->slots.max_per_source = MAX_PER_SOURCE;
	issuer->slots.per_source = cg_strmap_create();
	char err[256];
	issuer->http = gw_http_start(gw->loop, NULL, &http_options, gw_issuer_handle, issuer, err,
	                             sizeof(err));
	if (issuer->http == NULL || issuer->slots.per_source == NULL) {
		cg_log(CG_LOG_ERROR, "issuer: %s", issuer->http == NULL ? err : "out of memory");
		gw_http_stop(issuer->http);
		cg_strmap_destroy(issuer->slots.per_source, NULL);
		free(issuer);
		return NULL;
	}
	gw_extension_add(gw, &issuer->ext);
	return issuer;
}

const char *gw_issuer_listening(const gw_issuer_t *issuer)
{
	return issuer->listener != NULL ? issuer->listen : NULL;
}

gw_issuer_gen_t *gw_issuer_current(gw_issuer_t *issuer)
{
	return issuer->cur;
}

gw_gateway_t *gw_issuer_gateway(gw_issuer_t *issuer)
{
	return issuer->gw;
}
