/* Minting per-db-user client certificates (see minter.h). One P-256 key per
 * db user, re-used across renewals of that user's certificate; nothing is
 * ever written to disk. */
#include "tls/minter.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "cg_strmap.h"
#include "tls/tls_engine.h"
#include "tls/x509_build.h"
#include "tls/x509_issue.h"

typedef struct minted {
	X509 *cert;
	EVP_PKEY *key;
	int64_t not_after_ms;
} minted_t;

struct gw_minter {
	pthread_mutex_t lock; /* the cache: every worker mints through it */
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

static void load_error(const gw_minter_files_t *files, unsigned which, const char *what)
{
	char detail[160], msg[600];
	gw_tls_describe_error(detail, sizeof(detail), "unreadable");
	snprintf(msg, sizeof(msg), "cannot load %s %s: %s", what,
	         which == GW_MINTER_CA_CERT ? files->ca_cert : files->ca_key, detail);
	files->report(files->ctx, which, msg);
}

gw_minter_t *gw_minter_load(const gw_minter_files_t *files)
{
	gw_minter_t *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		files->report(files->ctx, GW_MINTER_CA_CERT, "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		files->report(files->ctx, GW_MINTER_CA_CERT, "cannot create a lock");
		return NULL;
	}
	bool ok = true;
	FILE *f = fopen(files->ca_cert, "re");
	if (f != NULL) {
		m->ca = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (m->ca == NULL)
		load_error(files, GW_MINTER_CA_CERT, "certificate");
	f = fopen(files->ca_key, "re");
	if (f != NULL) {
		m->ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (m->ca_key == NULL)
		load_error(files, GW_MINTER_CA_KEY, "private key");
	if (m->ca != NULL && m->ca_key != NULL) {
		char msg[600];
		if (X509_check_private_key(m->ca, m->ca_key) != 1) {
			snprintf(msg, sizeof(msg), "%s does not match %s", files->ca_key,
			         files->ca_cert);
			files->report(files->ctx, GW_MINTER_CA_KEY, msg);
			ok = false;
		} else if (X509_check_ca(m->ca) == 0) {
			snprintf(msg, sizeof(msg), "%s is not a CA certificate", files->ca_cert);
			files->report(files->ctx, GW_MINTER_CA_CERT, msg);
			ok = false;
		}
	}
	ERR_clear_error();
	m->cache = cg_strmap_create();
	if (m->ca == NULL || m->ca_key == NULL || m->cache == NULL || !ok) {
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
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static X509 *mint(gw_minter_t *m, const char *db_user, EVP_PKEY *key, time_t now)
{
	char why[256];
	gw_cert_spec_t spec = {
	        .profile = GW_CERT_CLIENT,
	        .cn = db_user,
	        .key = key,
	        .issuer = m->ca,
	        .issuer_key = m->ca_key,
	        .now = now,
	        /* a minute early: the database's clock may run a little behind ours */
	        .start_offset_s = -60,
	        .ttl_s = GW_MINT_TTL_S + 60,
	};
	return gw_x509_issue(&spec, why, sizeof(why));
}

static int get_locked(gw_minter_t *m, const char *db_user, int64_t now_ms, X509 **cert,
                      EVP_PKEY **key)
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

int gw_minter_get(gw_minter_t *m, const char *db_user, int64_t now_ms, X509 **cert, EVP_PKEY **key)
{
	/* minting is rare (once per db user and hour): one at a time is plenty */
	pthread_mutex_lock(&m->lock);
	int rc = get_locked(m, db_user, now_ms, cert, key);
	pthread_mutex_unlock(&m->lock);
	return rc;
}
