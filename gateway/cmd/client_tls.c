/* The login certificate's TLS client context (see client_tls.h): the files
 * and the gateway settled once, the context rebuilt whenever the
 * certificate or key file is seen to change (stat: device, inode, size,
 * mtime), a renewal written half-way simply failing to load until it is
 * whole. */
#include "cmd/client_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cg_log.h"
#include "cmd/login_files.h"
#include "core/runtime.h"
#include "tls/tls_engine.h"
#include "tls/x509_info.h"

static void stamp(const char *path, client_stamp_t *out)
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

static bool same_stamp(const client_stamp_t *a, const client_stamp_t *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* The gateway remembered by certgate login --gateway, into t->gateway. */
static int gateway_of_login(client_tls_t *t, const char *cmd, const char *dir)
{
	login_record_t r;
	char err[512];
	int rc = login_record_load(dir, &r, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", cmd, err);
		return 1;
	}
	const char *gw = json_string_value(json_object_get(r.extra, LOGIN_GATEWAY_KEY));
	bool ok = gw != NULL && cg_hostport_parse(gw, &t->gateway);
	if (gw != NULL && !ok)
		fprintf(stderr, "%s: %s/%s: \"%s\" %s: expected HOST:PORT\n", cmd, dir,
		        LOGIN_JSON_FILE, LOGIN_GATEWAY_KEY, gw);
	else if (!ok)
		fprintf(stderr,
		        "%s: --gateway HOST:PORT is required (certgate login --gateway HOST:PORT "
		        "remembers one)\n",
		        cmd);
	login_record_finish(&r);
	return ok ? 0 : (gw != NULL ? 1 : 2);
}

int client_tls_settle(client_tls_t *t, const char *cmd, const char *dir_opt, const char *gateway,
                      bool gateway_required)
{
	char dir[PATH_MAX];
	if (gateway != NULL && !cg_hostport_parse(gateway, &t->gateway)) {
		fprintf(stderr, "%s: --gateway %s: expected HOST:PORT\n", cmd, gateway);
		return 2;
	}
	bool need_files = t->cert_path == NULL || t->ca_path == NULL;
	bool need_gateway = gateway == NULL && gateway_required;
	if (!need_files && !need_gateway)
		return 0;
	if (!login_dir_default(dir_opt, dir, sizeof(dir)) ||
	    !login_dir_file(dir, LOGIN_CERT_FILE, t->cert_buf, sizeof(t->cert_buf)) ||
	    !login_dir_file(dir, LOGIN_KEY_FILE, t->key_buf, sizeof(t->key_buf)) ||
	    !login_dir_file(dir, LOGIN_CA_FILE, t->ca_buf, sizeof(t->ca_buf))) {
		fprintf(stderr,
		        "%s: no login folder (HOME unset?): give --dir or --cert, --key and "
		        "--ca\n",
		        cmd);
		return 1;
	}
	if (t->cert_path == NULL) {
		if (access(t->cert_buf, F_OK) < 0 || access(t->key_buf, F_OK) < 0) {
			fprintf(stderr, "%s: no login certificate in %s: run certgate login\n", cmd,
			        dir);
			return 1;
		}
		t->cert_path = t->cert_buf;
		t->key_path = t->key_buf;
	}
	if (t->ca_path == NULL) {
		if (access(t->ca_buf, F_OK) < 0) {
			fprintf(stderr, "%s: no %s in %s: run certgate login, or give --ca\n", cmd,
			        LOGIN_CA_FILE, dir);
			return 1;
		}
		t->ca_path = t->ca_buf;
	}
	return need_gateway ? gateway_of_login(t, cmd, dir) : 0;
}

static SSL_CTX *build(const client_tls_t *t, char *err, size_t errlen)
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
	if (SSL_CTX_load_verify_file(ctx, t->ca_path) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--ca %s: %s", t->ca_path, detail);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_path) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--cert %s: %s", t->cert_path, detail);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key_path, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		gw_tls_describe_error(detail, sizeof(detail), "unreadable");
		snprintf(err, errlen, "--key %s: %s", t->key_path, detail);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

static void adopt(client_tls_t *t, SSL_CTX *ctx, const client_stamp_t *cs, const client_stamp_t *ks)
{
	SSL_CTX_free(t->ctx);
	t->ctx = ctx;
	t->cert_stamp = *cs;
	t->key_stamp = *ks;
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	t->not_after_ms = cert != NULL ? gw_cert_not_after_ms(cert) : 0;
}

int client_tls_load(client_tls_t *t, char *err, size_t errlen)
{
	client_stamp_t cs, ks;
	stamp(t->cert_path, &cs);
	stamp(t->key_path, &ks);
	SSL_CTX *ctx = build(t, err, errlen);
	if (ctx == NULL)
		return -1;
	adopt(t, ctx, &cs, &ks);
	return 0;
}

bool client_tls_refresh(client_tls_t *t)
{
	client_stamp_t cs, ks;
	stamp(t->cert_path, &cs);
	stamp(t->key_path, &ks);
	if (t->ctx != NULL && same_stamp(&cs, &t->cert_stamp) && same_stamp(&ks, &t->key_stamp))
		return false;
	char err[512];
	SSL_CTX *ctx = build(t, err, sizeof(err));
	if (ctx == NULL) {
		/* said once per change of the files: the stamps move on */
		cg_log(CG_LOG_WARN, "%s%s", err,
		       t->ctx != NULL ? " (keeping the certificate loaded before)" : "");
		t->cert_stamp = cs;
		t->key_stamp = ks;
		return false;
	}
	bool renewed = t->ctx != NULL;
	adopt(t, ctx, &cs, &ks);
	if (renewed)
		cg_log(CG_LOG_INFO, "loaded the renewed login certificate %s", t->cert_path);
	return renewed;
}

void client_tls_expect_gateway(SSL *ssl, const cg_hostport_t *gateway)
{
	struct sockaddr_storage ss;
	if (cg_hostport_to_sockaddr(gateway, &ss))
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), gateway->host);
	else
		SSL_set1_host(ssl, gateway->host);
}

void client_tls_finish(client_tls_t *t)
{
	SSL_CTX_free(t->ctx);
	t->ctx = NULL;
}
