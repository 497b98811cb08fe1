/* TLS 1.3 record protection (see tls_records.h).
 *
 * Each direction keeps its traffic secret (for KeyUpdate), the static IV
 * and the sequence number; the per-record nonce is the IV XOR the sequence
 * number, the additional data is the record header (RFC 8446 §5.2-5.3).
 * One EVP_CIPHER_CTX per direction keeps its key schedule: a record only
 * sets the nonce. Algorithms are fetched once per process, shared by every
 * worker; a gw_records_t belongs to one worker. */
#include "tls/tls_records.h"

#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#define MAX_SECRET 48
#define IV_LEN     12

typedef struct direction {
	EVP_CIPHER_CTX *ctx;
	uint8_t secret[MAX_SECRET];
	uint8_t iv[IV_LEN];
	uint64_t seq;
} direction_t;

typedef struct suite {
	uint16_t id;
	const char *cipher, *digest;
	size_t key_len, secret_len;
	EVP_CIPHER *fetched; /* fetch_algorithms, never freed */
} suite_t;

static suite_t suites[] = {
        {0x1301, "AES-128-GCM", "SHA256", 16, 32, NULL},
        {0x1302, "AES-256-GCM", "SHA384", 32, 48, NULL},
        {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32, NULL},
};

struct gw_records {
	const suite_t *suite;
	direction_t rd, wr;
};

static EVP_KDF *hkdf; /* fetch_algorithms, never freed */
static pthread_once_t fetched_once = PTHREAD_ONCE_INIT;

/* Once per process, whichever worker comes first: every worker's records
 * share the fetched algorithms (read-only once fetched). */
static void fetch_algorithms(void)
{
	hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		suites[i].fetched = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
}

static suite_t *find_suite(uint16_t id)
{
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (suites[i].id == id)
			return &suites[i];
	return NULL;
}

size_t gw_records_secret_len(uint16_t suite)
{
	const suite_t *s = find_suite(suite);
	return s != NULL ? s->secret_len : 0;
}

/* HKDF-Expand-Label(secret, label, "", out_len) (RFC 8446 §7.1). */
static bool expand_label(const suite_t *s, const uint8_t *secret, const char *label, uint8_t *out,
                         size_t out_len)
{
	if (hkdf == NULL)
		return false;
	uint8_t info[2 + 1 + 255 + 1];
	size_t label_len = 6 + strlen(label);
	info[0] = (uint8_t)(out_len >> 8);
	info[1] = (uint8_t)out_len;
	info[2] = (uint8_t)label_len;
	memcpy(info + 3, "tls13 ", 6);
	memcpy(info + 9, label, label_len - 6);
	info[3 + label_len] = 0; /* empty context */
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
	        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
	        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)s->digest, 0),
	        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret,
	                                          s->secret_len),
	        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 4 + label_len),
	        OSSL_PARAM_construct_end(),
	};
	EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(hkdf);
	bool ok = kctx != NULL && EVP_KDF_derive(kctx, out, out_len, params) == 1;
	EVP_KDF_CTX_free(kctx);
	return ok;
}

/* Keys a direction from its current secret. */
static bool key_direction(const suite_t *s, direction_t *d, bool enc)
{
	uint8_t key[32];
	bool ok = expand_label(s, d->secret, "key", key, s->key_len) &&
	          expand_label(s, d->secret, "iv", d->iv, IV_LEN) &&
	          EVP_CipherInit_ex2(d->ctx, s->fetched, key, NULL, enc ? 1 : 0, NULL) == 1;
	OPENSSL_cleanse(key, sizeof(key));
	d->seq = 0;
	return ok;
}

gw_records_t *gw_records_new(uint16_t suite, const uint8_t *read_secret,
                             const uint8_t *write_secret, size_t secret_len)
{
	pthread_once(&fetched_once, fetch_algorithms);
	suite_t *s = find_suite(suite);
	if (s == NULL || secret_len != s->secret_len || s->fetched == NULL)
		return NULL;
	gw_records_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->suite = s;
	memcpy(r->rd.secret, read_secret, secret_len);
	memcpy(r->wr.secret, write_secret, secret_len);
	r->rd.ctx = EVP_CIPHER_CTX_new();
	r->wr.ctx = EVP_CIPHER_CTX_new();
	if (r->rd.ctx == NULL || r->wr.ctx == NULL || !key_direction(s, &r->rd, false) ||
	    !key_direction(s, &r->wr, true)) {
		gw_records_free(r);
		return NULL;
	}
	return r;
}

void gw_records_free(gw_records_t *r)
{
	if (r == NULL)
		return;
	EVP_CIPHER_CTX_free(r->rd.ctx);
	EVP_CIPHER_CTX_free(r->wr.ctx);
	OPENSSL_clear_free(r, sizeof(*r));
}

ssize_t gw_records_length(const uint8_t *data, size_t len)
{
	if (len < GW_REC_HEADER)
		return 0;
	/* protected records all say application_data, legacy version 3.3 */
	if (data[0] != GW_REC_APPLICATION || data[1] != 3 || data[2] != 3)
		return -1;
	size_t body = (size_t)data[3] << 8 | data[4];
	if (body < GW_REC_TAG + 1 || body > GW_REC_MAX_CIPHER)
		return -1;
	return (ssize_t)(GW_REC_HEADER + body);
}

static void nonce(const direction_t *d, uint8_t out[IV_LEN])
{
	memcpy(out, d->iv, IV_LEN);
	for (int i = 0; i < 8; i++)
		out[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

bool gw_records_open(gw_records_t *r, const uint8_t *rec, size_t rec_len, uint8_t *out,
                     uint8_t *type, size_t *content_len, const char **why)
{
	direction_t *d = &r->rd;
	size_t body = rec_len - GW_REC_HEADER - GW_REC_TAG;
	uint8_t iv[IV_LEN];
	int n = 0, fin = 0;
	*why = "bad record mac";
	if (d->seq == UINT64_MAX) {
		*why = "record sequence exhausted";
		return false;
	}
	nonce(d, iv);
	if (EVP_CipherInit_ex2(d->ctx, NULL, NULL, iv, 0, NULL) != 1 ||
	    EVP_CipherUpdate(d->ctx, NULL, &n, rec, GW_REC_HEADER) != 1 ||
	    EVP_CipherUpdate(d->ctx, out, &n, rec + GW_REC_HEADER, (int)body) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, GW_REC_TAG,
	                        (void *)(rec + rec_len - GW_REC_TAG)) != 1 ||
	    EVP_CipherFinal_ex(d->ctx, out + n, &fin) != 1)
		return false;
	d->seq++;
	/* TLSInnerPlaintext: content, the type, then zero padding; with the
	 * padding at most 2^14 + 1 bytes (RFC 8446 5.4) */
	size_t len = (size_t)n + (size_t)fin;
	if (len > GW_REC_MAX_PLAIN + 1) {
		*why = "record overflow";
		return false;
	}
	while (len > 0 && out[len - 1] == 0)
		len--;
	if (len == 0) {
		*why = "record without content type";
		return false;
	}
	*type = out[len - 1];
	*content_len = len - 1;
	if (*content_len > GW_REC_MAX_PLAIN) {
		*why = "record overflow";
		return false;
	}
	return true;
}

size_t gw_records_seal(gw_records_t *r, uint8_t type, const uint8_t *data, size_t len, uint8_t *out)
{
	direction_t *d = &r->wr;
	size_t body = len + 1 + GW_REC_TAG;
	uint8_t iv[IV_LEN];
	int n = 0, m = 0, fin = 0;
	if (len > GW_REC_MAX_PLAIN || d->seq == UINT64_MAX)
		return 0;
	out[0] = GW_REC_APPLICATION;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(body >> 8);
	out[4] = (uint8_t)body;
	nonce(d, iv);
	uint8_t *p = out + GW_REC_HEADER;
	if (EVP_CipherInit_ex2(d->ctx, NULL, NULL, iv, 1, NULL) != 1 ||
	    EVP_CipherUpdate(d->ctx, NULL, &n, out, GW_REC_HEADER) != 1 ||
	    (len > 0 && EVP_CipherUpdate(d->ctx, p, &n, data, (int)len) != 1) ||
	    EVP_CipherUpdate(d->ctx, p + len, &m, &type, 1) != 1 ||
	    EVP_CipherFinal_ex(d->ctx, p + len + 1, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, GW_REC_TAG, p + len + 1) != 1)
		return 0;
	d->seq++;
	return GW_REC_HEADER + body;
}

static bool update(const suite_t *s, direction_t *d, bool enc)
{
	uint8_t next[MAX_SECRET];
	if (!expand_label(s, d->secret, "traffic upd", next, s->secret_len))
		return false;
	memcpy(d->secret, next, s->secret_len);
	OPENSSL_cleanse(next, sizeof(next));
	return key_direction(s, d, enc);
}

bool gw_records_update_read(gw_records_t *r)
{
	return update(r->suite, &r->rd, false);
}

bool gw_records_update_write(gw_records_t *r)
{
	return update(r->suite, &r->wr, true);
}

bool gw_records_write_due(const gw_records_t *r)
{
	return r->wr.seq >= GW_REC_UPDATE_AFTER;
}
