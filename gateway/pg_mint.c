/* Minting per-db-user client certificates (see pg_mint.h). One P-256 key per
 * db user, re-used across renewals of that user's certificate; nothing is
 * ever written to disk. */
#include "pg_mint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "cg_strmap.h"
#include "tls_engine.h"
#include "x509_build.h"

typedef struct minted {
	X509 *cert;
	EVP_PKEY *key;
	int64_t not_after_ms;
} minted_t;

struct gw_minter {
	X509 *ca;
	EVP_PKEY *ca_key;
	cg_strmap_t *cache; /* db user -> minted_t* */
};

static void minted_free(void *p)
{
	minted_t *m = p;
	X509_free(m->cert);
	EVP_PKEY_free(m->key);
	free(m);
}

static void load_error(cg_errors_t *errs, const pol_file_t *file, const char *what)
{
	char detail[160];
	char where[512];
	gw_tls_describe_error(detail, sizeof(detail), "unreadable");
	pol_file_where(file, where, sizeof(where));
	cg_errors_add(errs, "%s: cannot load %s %s: %s", where, what, file->path, detail);
}

gw_minter_t *gw_minter_load(const pol_upstream_tls_t *cfg, cg_errors_t *errs)
{
	size_t before = errs->count;
	gw_minter_t *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		cg_errors_add(errs, "out of memory");
		return NULL;
	}
	FILE *f = fopen(cfg->client_ca_cert.path, "re");
	if (f != NULL) {
		m->ca = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (m->ca == NULL)
		load_error(errs, &cfg->client_ca_cert, "certificate");
	f = fopen(cfg->client_ca_key.path, "re");
	if (f != NULL) {
		m->ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (m->ca_key == NULL)
		load_error(errs, &cfg->client_ca_key, "private key");
	if (m->ca != NULL && m->ca_key != NULL) {
		char where[512];
		if (X509_check_private_key(m->ca, m->ca_key) != 1) {
			pol_file_where(&cfg->client_ca_key, where, sizeof(where));
			cg_errors_add(errs, "%s: %s does not match %s", where,
			              cfg->client_ca_key.path, cfg->client_ca_cert.path);
		} else if (X509_check_ca(m->ca) == 0) {
			pol_file_where(&cfg->client_ca_cert, where, sizeof(where));
			cg_errors_add(errs, "%s: %s is not a CA certificate", where,
			              cfg->client_ca_cert.path);
		}
	}
	ERR_clear_error();
	m->cache = cg_strmap_create();
	if (m->ca == NULL || m->ca_key == NULL || errs->count != before) {
		gw_minter_free(m);
		return NULL;
	}
	return m;
}

void gw_minter_free(gw_minter_t *m)
{
	if (m == NULL)
		return;
	cg_strmap_destroy(m->cache, minted_free);
	X509_free(m->ca);
	EVP_PKEY_free(m->ca_key);
	free(m);
}

static X509 *mint(gw_minter_t *m, const char *db_user, EVP_PKEY *key, time_t now)
{
	X509_NAME *subject = X509_NAME_new();
	if (subject == NULL || !gw_x509_name_add(subject, NID_commonName, db_user)) {
		X509_NAME_free(subject);
		return NULL;
	}
	X509V3_CTX ctx;
	/* a minute early: the database's clock may run a little behind ours */
	X509 *x = gw_x509_cert_new(subject, m->ca, key, now, -60, GW_MINT_TTL_S + 60, &ctx);
	X509_NAME_free(subject);
	if (x == NULL)
		return NULL;
	if (!gw_x509_add_ext(&ctx, x, NID_basic_constraints, "critical,CA:FALSE") ||
	    !gw_x509_add_ext(&ctx, x, NID_key_usage, "critical,digitalSignature") ||
	    !gw_x509_add_ext(&ctx, x, NID_ext_key_usage, "clientAuth") ||
	    X509_sign(x, m->ca_key, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int gw_minter_get(gw_minter_t *m, const char *db_user, int64_t now_ms, X509 **cert, EVP_PKEY **key)
{
	minted_t *e = cg_strmap_get(m->cache, db_user);
	if (e == NULL || e->not_after_ms - now_ms < (int64_t)GW_MINT_RENEW_S * 1000) {
		EVP_PKEY *k = e != NULL ? e->key : gw_x509_key_new(0);
		if (k == NULL)
			return -1;
		X509 *x = mint(m, db_user, k, (time_t)(now_ms / 1000));
		if (x == NULL) {
			if (e == NULL)
				EVP_PKEY_free(k);
			return -1;
		}
		if (e == NULL) {
			if (cg_strmap_count(m->cache) >= GW_MINT_CACHE_MAX) {
				/* bounded: start over rather than grow without end */
				cg_strmap_destroy(m->cache, minted_free);
				m->cache = cg_strmap_create();
			}
			e = calloc(1, sizeof(*e));
			if (e == NULL) {
				X509_free(x);
				EVP_PKEY_free(k);
				return -1;
			}
			e->key = k;
			cg_strmap_put(m->cache, db_user, e);
		}
		X509_free(e->cert);
		e->cert = x;
		e->not_after_ms = now_ms + (int64_t)GW_MINT_TTL_S * 1000;
	}
	if (!X509_up_ref(e->cert) || !EVP_PKEY_up_ref(e->key))
		return -1;
	*cert = e->cert;
	*key = e->key;
	return 0;
}
