/* A direct-mapped table: a key's slot is its first bytes, a newcomer takes
 * the slot whatever was there. Bounded memory, no eviction bookkeeping,
 * and a miss only costs the verification it would have cost anyway. */
#include "tls/verify_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tls/x509_info.h"

typedef struct slot {
	unsigned char key[32];
	int64_t until_ms; /* 0: empty */
} slot_t;

/* Every worker of a generation shares its cache. */
struct gw_vcache {
	pthread_mutex_t lock;
	slot_t slot[GW_VCACHE_SLOTS];
};

gw_vcache_t *gw_vcache_new(void)
{
	gw_vcache_t *c = calloc(1, sizeof(gw_vcache_t));
	if (c != NULL && pthread_mutex_init(&c->lock, NULL) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

void gw_vcache_free(gw_vcache_t *c)
{
	if (c == NULL)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static bool hash_cert(EVP_MD_CTX *md, X509 *cert)
{
	unsigned char *der = NULL;
	int len = i2d_X509(cert, &der);
	if (len <= 0)
		return false;
	/* length first: the concatenation cannot be cut two ways */
	unsigned char n[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                      (unsigned char)(len >> 8), (unsigned char)len};
	bool ok = EVP_DigestUpdate(md, n, sizeof(n)) == 1 &&
	          EVP_DigestUpdate(md, der, (size_t)len) == 1;
	OPENSSL_free(der);
	return ok;
}

bool gw_vcache_key(X509 *leaf, STACK_OF(X509) * untrusted, unsigned char key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int n = 0;
	bool ok =
	        md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && hash_cert(md, leaf);
	for (int i = 0; ok && i < sk_X509_num(untrusted); i++) {
		X509 *x = sk_X509_value(untrusted, i);
		if (x != leaf)
			ok = hash_cert(md, x);
	}
	ok = ok && EVP_DigestFinal_ex(md, key, &n) == 1 && n == 32;
	EVP_MD_CTX_free(md);
	return ok;
}

static slot_t *slot_of(gw_vcache_t *c, const unsigned char key[32])
{
	uint32_t h;
	memcpy(&h, key, sizeof(h));
	return &c->slot[h % GW_VCACHE_SLOTS];
}

bool gw_vcache_hit(gw_vcache_t *c, const unsigned char key[32], int64_t now_ms)
{
	if (c == NULL)
		return false;
	slot_t *s = slot_of(c, key);
	pthread_mutex_lock(&c->lock);
	bool hit = s->until_ms != 0 && memcmp(s->key, key, 32) == 0;
	if (hit && now_ms >= s->until_ms) {
		s->until_ms = 0;
		hit = false;
	}
	pthread_mutex_unlock(&c->lock);
	return hit;
}

void gw_vcache_put(gw_vcache_t *c, const unsigned char key[32], int64_t now_ms, int64_t until_ms)
{
	if (c == NULL)
		return;
	if (until_ms > now_ms + GW_VCACHE_HORIZON_MS)
		until_ms = now_ms + GW_VCACHE_HORIZON_MS;
	if (until_ms <= now_ms)
		return;
	slot_t *s = slot_of(c, key);
	pthread_mutex_lock(&c->lock);
	memcpy(s->key, key, 32);
	s->until_ms = until_ms;
	pthread_mutex_unlock(&c->lock);
}

int64_t gw_vcache_chain_expiry_ms(STACK_OF(X509) * chain)
{
	int64_t earliest = INT64_MAX;
	for (int i = 0; i < sk_X509_num(chain); i++) {
		int64_t t = gw_valid_until_ms(gw_cert_not_after_ms(sk_X509_value(chain, i)));
		if (t < earliest)
			earliest = t;
	}
	return earliest;
}
