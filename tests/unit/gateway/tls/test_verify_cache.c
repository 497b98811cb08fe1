/* gateway/verify_cache.c: keys tell chains apart (leaf, intermediates,
 * order), a success is remembered only until its deadline and never past
 * the horizon, a newcomer in the same slot pushes the old one out, and a
 * chain's expiry is one second after its earliest notAfter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "tls/x509_info.h"
#include "tls/verify_cache.h"
#include "tls/x509_build.h"

static X509 *cert(const char *cn, int64_t ttl_s)
{
	EVP_PKEY *key = gw_x509_key_new(0);
	X509_NAME *name = X509_NAME_new();
	assert_true(gw_x509_name_add(name, NID_commonName, cn));
	X509V3_CTX ctx;
	X509 *x = gw_x509_cert_new(name, NULL, key, time(NULL), -60, ttl_s, &ctx);
	X509_NAME_free(name);
	assert_non_null(x);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	EVP_PKEY_free(key);
	return x;
}

static void test_keys_tell_chains_apart(void **state)
{
	(void)state;
	X509 *a = cert("a", 3600), *b = cert("b", 3600), *i1 = cert("i1", 3600),
	     *i2 = cert("i2", 3600);
	unsigned char k[6][32];
	STACK_OF(X509) *one = sk_X509_new_null(), *two = sk_X509_new_null(),
	               *rev = sk_X509_new_null(), *with_leaf = sk_X509_new_null();
	sk_X509_push(one, i1);
	sk_X509_push(two, i1);
	sk_X509_push(two, i2);
	sk_X509_push(rev, i2);
	sk_X509_push(rev, i1);
	sk_X509_push(with_leaf, a); /* libssl passes the leaf in the stack too */
	sk_X509_push(with_leaf, i1);
	assert_true(gw_vcache_key(a, NULL, k[0]));
	assert_true(gw_vcache_key(b, NULL, k[1]));
	assert_true(gw_vcache_key(a, one, k[2]));
	assert_true(gw_vcache_key(a, two, k[3]));
	assert_true(gw_vcache_key(a, rev, k[4]));
	assert_true(gw_vcache_key(a, with_leaf, k[5]));
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			assert_memory_not_equal(k[i], k[j], 32);
	assert_memory_equal(k[2], k[5], 32);
	unsigned char again[32];
	assert_true(gw_vcache_key(a, one, again));
	assert_memory_equal(k[2], again, 32);
	sk_X509_free(one);
	sk_X509_free(two);
	sk_X509_free(rev);
	sk_X509_free(with_leaf);
	X509_free(a);
	X509_free(b);
	X509_free(i1);
	X509_free(i2);
}

static void test_success_remembered_until_deadline(void **state)
{
	(void)state;
	gw_vcache_t *c = gw_vcache_new();
	assert_non_null(c);
	unsigned char k[32], other[32];
	memset(k, 7, sizeof(k));
	memset(other, 8, sizeof(other));
	int64_t now = 1000000;
	assert_false(gw_vcache_hit(c, k, now));
	gw_vcache_put(c, k, now, now + 5000);
	assert_true(gw_vcache_hit(c, k, now));
	assert_true(gw_vcache_hit(c, k, now + 4999));
	assert_false(gw_vcache_hit(c, other, now));
	assert_false(gw_vcache_hit(c, k, now + 5000)); /* at the deadline: gone */
	assert_false(gw_vcache_hit(c, k, now));        /* and stays gone */
	/* a deadline already passed is not stored */
	gw_vcache_put(c, k, now, now);
	assert_false(gw_vcache_hit(c, k, now - 1));
	/* a far deadline is capped at the horizon */
	gw_vcache_put(c, k, now, INT64_MAX);
	assert_true(gw_vcache_hit(c, k, now + GW_VCACHE_HORIZON_MS - 1));
	assert_false(gw_vcache_hit(c, k, now + GW_VCACHE_HORIZON_MS));
	/* no cache: never a hit */
	gw_vcache_put(NULL, k, now, now + 5000);
	assert_false(gw_vcache_hit(NULL, k, now));
	gw_vcache_free(c);
}

static void test_same_slot_newcomer_wins(void **state)
{
	(void)state;
	gw_vcache_t *c = gw_vcache_new();
	unsigned char a[32], b[32];
	memset(a, 1, sizeof(a));
	memcpy(b, a, sizeof(b));
	b[31] ^= 0xff; /* same slot (first bytes), different key */
	gw_vcache_put(c, a, 0, 5000);
	gw_vcache_put(c, b, 0, 5000);
	assert_true(gw_vcache_hit(c, b, 1));
	assert_false(gw_vcache_hit(c, a, 1));
	gw_vcache_free(c);
}

static void test_chain_expiry_is_earliest(void **state)
{
	(void)state;
	X509 *long_lived = cert("ca", 86400), *short_lived = cert("leaf", 600);
	STACK_OF(X509) *chain = sk_X509_new_null();
	assert_int_equal(gw_vcache_chain_expiry_ms(chain), INT64_MAX);
	sk_X509_push(chain, short_lived);
	sk_X509_push(chain, long_lived);
	/* the notAfter second is still valid (RFC 5280 4.1.2.5) */
	assert_int_equal(gw_vcache_chain_expiry_ms(chain),
	                 gw_cert_not_after_ms(short_lived) + 1000);
	sk_X509_free(chain);
	X509_free(long_lived);
	X509_free(short_lived);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_keys_tell_chains_apart),
	        cmocka_unit_test(test_success_remembered_until_deadline),
	        cmocka_unit_test(test_same_slot_newcomer_wins),
	        cmocka_unit_test(test_chain_expiry_is_earliest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
