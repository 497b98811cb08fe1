/* Loading a generation: snapshot, server TLS context, client CA, CRL.
 *
 * Verification is chain_verify.c's: cert_verify_cb sets the context up
 * (strictness, the CRL flags of gateway.crl_check), runs OpenSSL's chain
 * check with verify_cb judging each step, then certgate's leaf rules, and
 * keeps the precise refusal (reason, and the certificate it is about) for
 * the audit. gw_cert_reverify runs the very same checks outside a
 * handshake, against a newer runtime or (explain --at) at another time. */
#include "core/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cg_log.h"
#include "cg_time.h"
#include "tls/minter.h"
#include "tls/tls_engine.h"
#include "tls/verify_cache.h"
#include "tls/x509_info.h"

#define MAX_CLIENT_CHAIN_BYTES (32 * 1024) /* whole Certificate message */

static int hs_index = -1; /* SSL ex_data: gw_handshake_t* */
static pthread_once_t hs_index_once = PTHREAD_ONCE_INIT;

static void make_hs_index(void)
{
	hs_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	gw_handshake_t *hs = ssl != NULL ? SSL_get_ex_data(ssl, hs_index) : NULL;
	if (hs == NULL)
		return 0; /* fail closed */
	if (X509_STORE_CTX_get_error_depth(ctx) == 0 && hs->cert == NULL) {
		X509 *leaf = X509_STORE_CTX_get_current_cert(ctx);
		if (leaf != NULL && X509_up_ref(leaf))
			hs->cert = leaf;
	}
	return gw_verify_step(ok, ctx, &hs->rt->limits, &hs->refusal);
}

/* The handshake's chain check: a chain this runtime verified before, and
 * still within its validity, is not checked again (verify_cache.h); only
 * successes are remembered, leaf rules included. */
static int cert_verify_cb(X509_STORE_CTX *ctx, void *arg)
{
	(void)arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	gw_handshake_t *hs = ssl != NULL ? SSL_get_ex_data(ssl, hs_index) : NULL;
	if (hs == NULL)
		return 0; /* fail closed */
	gw_vcache_t *cache = hs->rt->vcache;
	unsigned char key[32];
	bool keyed = cache != NULL && gw_vcache_key(X509_STORE_CTX_get0_cert(ctx),
	                                            X509_STORE_CTX_get0_untrusted(ctx), key);
	int64_t now = cg_wall_ms();
	if (keyed && gw_vcache_hit(cache, key, now))
		return 1;
	gw_verify_prepare(ctx, &hs->rt->limits, 0);
	int ok = X509_verify_cert(ctx);
	if (ok == 1)
		ok = gw_verify_finish(ctx, &hs->rt->limits, &hs->refusal);
	if (ok == 1 && keyed) {
		int64_t until = gw_vcache_chain_expiry_ms(X509_STORE_CTX_get0_chain(ctx));
		if (hs->rt->crl_next_update_ms < until)
			until = hs->rt->crl_next_update_ms;
		gw_vcache_put(cache, key, now, until);
	}
	return ok;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	gw_handshake_t *hs = SSL_get_ex_data(ssl, hs_index);
	if (hs == NULL)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name != NULL)
		snprintf(hs->sni, sizeof(hs->sni), "%s", name);
	if (hs->service_fixed)
		return SSL_TLSEXT_ERR_OK;
	if (name != NULL && strcasecmp(name, POL_CATALOG_SNI) == 0) {
		hs->catalog = true; /* no service: the catalog (core/catalog.c) */
		return SSL_TLSEXT_ERR_OK;
	}
	hs->service = name != NULL ? pol_snapshot_service_by_sni(hs->rt->snap, name) : NULL;
	if (hs->service == NULL) {
		hs->refusal.reason = "unknown service";
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

void gw_handshake_attach(SSL *ssl, gw_handshake_t *hs)
{
	SSL_set_ex_data(ssl, hs_index, hs);
}

void gw_handshake_finish(gw_handshake_t *hs)
{
	X509_free(hs->cert);
	hs->cert = NULL;
	gw_refusal_finish(&hs->refusal);
}

const char *gw_cert_reverify(const gw_runtime_t *rt, X509 *leaf, STACK_OF(X509) * untrusted,
                             int64_t at_s, gw_refusal_t *out)
{
	return gw_chain_verify(SSL_CTX_get_cert_store(rt->server_ctx), &rt->limits, leaf, untrusted,
	                       at_s, out);
}

/* --- loading ------------------------------------------------------------- */

static void ssl_error(cg_errors_t *errs, const pol_file_t *file, const char *what)
{
	char detail[160];
	char where[512];
	gw_tls_describe_error(detail, sizeof(detail), "unreadable");
	pol_file_where(file, where, sizeof(where));
	cg_errors_add(errs, "%s: %s %s: %s", where, what, file->path, detail);
}

/* file:line:col of a configured file's key, for a message */
static const char *where_of(const pol_file_t *file, char where[512])
{
	pol_file_where(file, where, 512);
	return where;
}

static int load_client_ca(SSL_CTX *ctx, const pol_file_t *ca, cg_errors_t *errs)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	char where[512]; /* filled only for a message: the lookup costs */
	BIO *bio = BIO_new_file(ca->path, "r");
	if (bio == NULL) {
		cg_errors_add(errs, "%s: cannot read %s: %s", where_of(ca, where), ca->path,
		              strerror(errno));
		ERR_clear_error();
		return -1;
	}
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	int count = 0;
	X509 *cert;
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_check_ca(cert) == 0) {
			char subject[256];
			gw_cert_subject(cert, subject, sizeof(subject));
			cg_errors_add(errs, "%s: %s: certificate \"%s\" is not a CA",
			              where_of(ca, where), ca->path, subject);
		}
		X509_STORE_add_cert(store, cert);
		X509_NAME *name = X509_NAME_dup(X509_get_subject_name(cert));
		if (names != NULL && name != NULL)
			sk_X509_NAME_push(names, name);
		X509_free(cert);
		count++;
	}
	ERR_clear_error(); /* the end of the PEM stream reads as an error */
	BIO_free(bio);
	if (count == 0) {
		cg_errors_add(errs, "%s: %s: no PEM certificate found", where_of(ca, where),
		              ca->path);
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		return -1;
	}
	/* the CertificateRequest names the accepted CAs so clients pick a cert */
	SSL_CTX_set_client_CA_list(ctx, names);
	return 0;
}

static int load_crl(SSL_CTX *ctx, const pol_file_t *crl, cg_errors_t *errs)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	char where[512]; /* filled only for a message: the lookup costs */
	BIO *bio = BIO_new_file(crl->path, "r");
	if (bio == NULL) {
		cg_errors_add(errs, "%s: cannot read %s: %s", where_of(crl, where), crl->path,
		              strerror(errno));
		ERR_clear_error();
		return -1;
	}
	int count = 0;
	X509_CRL *c;
	while ((c = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
		const ASN1_TIME *next = X509_CRL_get0_nextUpdate(c);
		if (next != NULL && X509_cmp_current_time(next) < 0)
			cg_log(CG_LOG_WARN,
			       "%s: %s: CRL has expired: every client of its CA is refused until "
			       "it "
			       "is renewed",
			       where_of(crl, where), crl->path);
		X509_STORE_add_crl(store, c);
		X509_CRL_free(c);
		count++;
	}
	ERR_clear_error();
	BIO_free(bio);
	if (count == 0) {
		cg_errors_add(errs, "%s: %s: no PEM CRL found", where_of(crl, where), crl->path);
		return -1;
	}
	/* the CRL flags are set per verification (gw_verify_prepare) */
	return 0;
}

/* The earliest nextUpdate of the loaded CRLs (epoch ms): a remembered
 * verification must not outlive the CRL it was checked against. INT64_MAX
 * without CRL; 0 (nothing remembered) when one has no readable nextUpdate. */
static int64_t crl_horizon_ms(SSL_CTX *ctx)
{
	int64_t earliest = INT64_MAX;
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
		if (crl == NULL)
			continue;
		int64_t t = gw_asn1_time_ms(X509_CRL_get0_nextUpdate(crl));
		if (t == 0)
			return 0;
		if (t < earliest)
			earliest = t;
	}
	return earliest;
}

/* Selects "postgresql" when the client offers it (PostgreSQL 17 direct TLS
 * requires it; the postgres front checks it was selected), else
 * "certgate/1" when `certgate connect` offers it (the status line), else
 * "certgate-jit/1" when `certgate request` does (handshake_done
 * refuses it outside the catalog's server name); other offers get no ALPN
 * at all, which plain tunnel clients do not need. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char postgresql[] = "\x0a" GW_ALPN_POSTGRESQL;
	static const unsigned char certgate[] = "\x0a" GW_ALPN_CERTGATE;
	static const unsigned char request[] = "\x0e" GW_ALPN_REQUEST;
	unsigned char *selected = NULL;
	if (SSL_select_next_proto(&selected, outlen, postgresql, sizeof(postgresql) - 1, in,
	                          inlen) == OPENSSL_NPN_NEGOTIATED ||
	    SSL_select_next_proto(&selected, outlen, certgate, sizeof(certgate) - 1, in, inlen) ==
	            OPENSSL_NPN_NEGOTIATED ||
	    SSL_select_next_proto(&selected, outlen, request, sizeof(request) - 1, in, inlen) ==
	            OPENSSL_NPN_NEGOTIATED) {
		*out = selected;
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/* OpenSSL decodes a certificate's extensions on first use and caches them
 * under a lock that not every reader takes (openssl#25202: two workers'
 * handshakes checking one CA race there, ThreadSanitizer saw it). Decoded
 * here, on one thread, before any worker shares the context. */
static void settle_certificates(SSL_CTX *ctx)
{
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (x != NULL)
			(void)X509_get_extension_flags(x);
	}
	X509 *own = SSL_CTX_get0_certificate(ctx);
	STACK_OF(X509) *chain = NULL;
	if (own != NULL)
		(void)X509_get_extension_flags(own);
	if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1)
		for (int i = 0; i < sk_X509_num(chain); i++)
			(void)X509_get_extension_flags(sk_X509_value(chain, i));
}

static SSL_CTX *build_server_ctx(const pol_snapshot_t *snap, cg_errors_t *errs)
{
	const pol_gateway_t *g = &snap->gateway;
	size_t before = errs->count;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		cg_errors_add(errs, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	/* No resumption: every connection gets a full handshake (a verified
	 * chain is remembered instead, see cert_verify_cb). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_max_early_data(ctx, 0);
	/* the chain sent is the cert file's, as written: without NO_AUTO_CHAIN
	 * OpenSSL would rebuild (and verify) it from the client CA store on
	 * every handshake, a signature check per connection for nothing */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_security_level(ctx, GW_TLS_SECURITY_LEVEL);
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
	SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
	SSL_CTX_set_max_cert_list(ctx, MAX_CLIENT_CHAIN_BYTES);

	/* a NULL path: the loader already reported the key as missing or wrong */
	if (g->cert.path == NULL || g->key.path == NULL)
		;
	else if (SSL_CTX_use_certificate_chain_file(ctx, g->cert.path) != 1)
		ssl_error(errs, &g->cert, "cannot load certificate");
	else if (SSL_CTX_use_PrivateKey_file(ctx, g->key.path, SSL_FILETYPE_PEM) != 1)
		ssl_error(errs, &g->key, "cannot load private key");
	else if (SSL_CTX_check_private_key(ctx) != 1)
		ssl_error(errs, &g->key, "private key does not match");
	if (g->client_ca.path != NULL && load_client_ca(ctx, &g->client_ca, errs) == 0 &&
	    g->crl.path != NULL)
		(void)load_crl(ctx, &g->crl, errs);

	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_verify_depth(ctx, (int)g->verify_depth);
	SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, NULL);
	gw_tls_ctx_allow_offload(ctx);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	settle_certificates(ctx);
	ERR_clear_error();
	if (errs->count != before) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

typedef struct minter_report {
	cg_errors_t *errs;
	const pol_file_t *files[2]; /* GW_MINTER_CA_CERT, GW_MINTER_CA_KEY */
} minter_report_t;

static void minter_report(void *ctx, unsigned which, const char *message)
{
	minter_report_t *r = ctx;
	char where[512];
	cg_errors_add(r->errs, "%s: %s", where_of(r->files[which], where), message);
}

/* The client side towards a postgres-mode upstream: verify-full against
 * upstream_tls.ca only (never the system bundle); the client certificate is
 * set per connection from the minter. */
static void build_pg_upstream(gw_pg_upstream_t *pg, const pol_upstream_tls_t *u, cg_errors_t *errs)
{
	pg->ctx = SSL_CTX_new(TLS_client_method());
	if (pg->ctx == NULL) {
		cg_errors_add(errs, "cannot create a TLS context");
		return;
	}
	SSL_CTX_set_min_proto_version(pg->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(pg->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(pg->ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_security_level(pg->ctx, 2);
	SSL_CTX_set_verify(pg->ctx, SSL_VERIFY_PEER, NULL);
	if (u->ca.path != NULL && SSL_CTX_load_verify_file(pg->ctx, u->ca.path) != 1)
		ssl_error(errs, &u->ca, "cannot load CA");
	if (u->client_ca_cert.path != NULL && u->client_ca_key.path != NULL) {
		minter_report_t r = {.errs = errs,
		                     .files = {&u->client_ca_cert, &u->client_ca_key}};
		gw_minter_files_t files = {.ca_cert = u->client_ca_cert.path,
		                           .ca_key = u->client_ca_key.path,
		                           .report = minter_report,
		                           .ctx = &r};
		pg->minter = gw_minter_load(&files);
	}
	settle_certificates(pg->ctx);
	ERR_clear_error();
}

gw_pg_upstream_t *gw_runtime_pg(const gw_runtime_t *rt, const pol_service_t *svc)
{
	size_t i = (size_t)(svc - rt->snap->services);
	if (rt->pg == NULL || i >= rt->snap->n_services || rt->pg[i].ctx == NULL)
		return NULL;
	return &rt->pg[i];
}

static bool digest_file(EVP_MD_CTX *md, const char *path)
{
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return false;
	char buf[8192];
	size_t n;
	bool ok = true;
	while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
		ok = EVP_DigestUpdate(md, buf, n) == 1;
	ok = ok && !ferror(f);
	fclose(f);
	return ok;
}

/* What verification depends on, hashed: equal hashes verify alike. */
static bool trust_digest(const pol_gateway_t *g, unsigned char out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int n = 0;
	uint64_t limits[4] = {g->max_cert_lifetime_ms, g->clock_skew_ms, g->verify_depth,
	                      (uint64_t)g->crl_check};
	bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	          g->client_ca.path != NULL && digest_file(md, g->client_ca.path) &&
	          EVP_DigestUpdate(md, "\0crl", 4) == 1 &&
	          (g->crl.path == NULL || digest_file(md, g->crl.path)) &&
	          EVP_DigestUpdate(md, limits, sizeof(limits)) == 1 &&
	          EVP_DigestFinal_ex(md, out, &n) == 1 && n == 32;
	EVP_MD_CTX_free(md);
	return ok;
}

static gw_crl_check_t crl_check_of(const pol_gateway_t *g)
{
	if (g->crl.path == NULL)
		return GW_CRL_OFF;
	switch (g->crl_check) {
	case POL_CRL_CHECK_LEAF:
		return GW_CRL_LEAF;
	case POL_CRL_CHECK_ALL:
		return GW_CRL_ALL;
	case POL_CRL_CHECK_CHAIN:
	default:
		return GW_CRL_CHAIN;
	}
}

bool gw_runtime_same_trust(const gw_runtime_t *a, const gw_runtime_t *b)
{
	return a == b || (a->trust_known && b->trust_known && memcmp(a->trust, b->trust, 32) == 0);
}

gw_runtime_t *gw_runtime_load(const char *config_path, cg_errors_t *errs)
{
	pthread_once(&hs_index_once, make_hs_index);
	bool complete = false;
	/* even a configuration with errors names files: load them too, so every
	 * error is reported at once */
	pol_snapshot_t *snap = pol_snapshot_load_partial(config_path, errs, &complete);
	if (snap == NULL)
		return NULL;
	gw_runtime_t *rt = calloc(1, sizeof(*rt));
	if (rt == NULL) {
		cg_errors_add(errs, "out of memory");
		pol_snapshot_unref(snap);
		return NULL;
	}
	atomic_init(&rt->refs, 1);
	rt->snap = snap;
	rt->limits = (gw_verify_limits_t){
	        .max_lifetime_ms = snap->gateway.max_cert_lifetime_ms,
	        .clock_skew_ms = snap->gateway.clock_skew_ms,
	        .depth = snap->gateway.verify_depth,
	        .security_level = GW_TLS_SECURITY_LEVEL,
	        .crl_check = crl_check_of(&snap->gateway),
	};
	size_t before = errs->count;
	rt->server_ctx = build_server_ctx(snap, errs);
	rt->trust_known = trust_digest(&snap->gateway, rt->trust);
	rt->crl_next_update_ms = rt->server_ctx != NULL ? crl_horizon_ms(rt->server_ctx) : 0;
	/* NULL (off, or no memory): every handshake verifies the chain */
	rt->vcache = snap->gateway.verify_cache ? gw_vcache_new() : NULL;
	rt->pg = calloc(snap->n_services > 0 ? snap->n_services : 1, sizeof(*rt->pg));
	if (rt->pg == NULL)
		cg_errors_add(errs, "out of memory");
	for (size_t i = 0; rt->pg != NULL && i < snap->n_services; i++)
		if (snap->services[i].has_upstream_tls)
			build_pg_upstream(&rt->pg[i], &snap->services[i].upstream_tls, errs);
	if (!complete || errs->count != before) {
		gw_runtime_unref(rt);
		return NULL;
	}
	return rt;
}

gw_runtime_t *gw_runtime_ref(gw_runtime_t *rt)
{
	atomic_fetch_add(&rt->refs, 1);
	return rt;
}

void gw_runtime_unref(gw_runtime_t *rt)
{
	if (rt == NULL || atomic_fetch_sub(&rt->refs, 1) != 1)
		return;
	SSL_CTX_free(rt->server_ctx);
	gw_vcache_free(rt->vcache);
	for (size_t i = 0; rt->pg != NULL && i < rt->snap->n_services; i++) {
		SSL_CTX_free(rt->pg[i].ctx);
		gw_minter_free(rt->pg[i].minter);
	}
	free(rt->pg);
	pol_snapshot_unref(rt->snap);
	free(rt);
}
