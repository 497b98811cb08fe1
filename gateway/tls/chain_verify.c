/* Client certificate verification (see chain_verify.h). */
#include "tls/chain_verify.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cg_time.h"

typedef struct run {
	const gw_verify_limits_t *lim;
	const char *reason;
} run_t;

static int run_index = -1; /* X509_STORE_CTX ex_data: run_t* of gw_chain_verify */
static pthread_once_t run_index_once = PTHREAD_ONCE_INIT;

static void make_run_index(void)
{
	run_index = X509_STORE_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

const char *gw_verify_reason(int err)
{
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate not yet valid";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		return "unknown ca";
	case X509_V_ERR_CERT_REVOKED:
		return "certificate revoked";
	case X509_V_ERR_CRL_HAS_EXPIRED:
		return "crl expired";
	case X509_V_ERR_CRL_NOT_YET_VALID:
		return "crl not yet valid";
	case X509_V_ERR_UNABLE_TO_GET_CRL:
		return "crl unavailable for this ca";
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
		return "crl signature invalid";
	case X509_V_ERR_INVALID_PURPOSE:
		return "certificate not for client authentication";
	case X509_V_ERR_INVALID_CA:
		return "invalid ca in chain";
	case X509_V_ERR_CERT_CHAIN_TOO_LONG:
		return "certificate chain too long";
	case X509_V_ERR_EE_KEY_TOO_SMALL:
	case X509_V_ERR_CA_KEY_TOO_SMALL:
		return "key too small";
	case X509_V_ERR_CA_MD_TOO_WEAK:
		return "signature algorithm too weak";
	case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
		return "unhandled critical extension";
	default:
		return X509_verify_cert_error_string(err);
	}
}

const char *gw_cert_check_leaf(const gw_verify_limits_t *lim, X509 *leaf)
{
	int days = 0, secs = 0;
	if (!ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)))
		return "certificate validity unreadable";
	int64_t lifetime_ms = ((int64_t)days * 86400 + secs) * 1000;
	if (lifetime_ms < 0)
		return "certificate validity unreadable";
	if ((uint64_t)lifetime_ms > lim->max_lifetime_ms)
		return "lifetime exceeds max_cert_lifetime";
	/* X509_check_ca says 0 for CA:TRUE when keyUsage lacks keyCertSign: a
	 * leaf claiming CA:TRUE is refused whatever its keyUsage */
	if (X509_check_ca(leaf) != 0 || (X509_get_extension_flags(leaf) & EXFLAG_CA) != 0)
		return "certificate is a ca";
	if (X509_check_purpose(leaf, X509_PURPOSE_SSL_CLIENT, 0) != 1)
		return "certificate not for client authentication";
	return NULL;
}

/* notBefore may be up to clock_skew in the future (the issuer's clock runs
 * ahead); notAfter is enforced exactly: a session never outlives its
 * certificate. */
static bool within_skew(X509 *cert, uint64_t skew_ms)
{
	time_t later = (time_t)((cg_wall_ms() + (int64_t)skew_ms) / 1000);
	return X509_cmp_time(X509_get0_notBefore(cert), &later) <= 0;
}

int gw_verify_step(int ok, X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, const char **reason)
{
	int depth = X509_STORE_CTX_get_error_depth(ctx);
	X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
	if (!ok) {
		int err = X509_STORE_CTX_get_error(ctx);
		if (err == X509_V_ERR_CERT_NOT_YET_VALID && depth == 0 && cert != NULL &&
		    within_skew(cert, lim->clock_skew_ms)) {
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			return 1;
		}
		if (*reason == NULL)
			*reason = gw_verify_reason(err);
		return 0;
	}
	if (depth == 0 && cert != NULL) {
		const char *why = gw_cert_check_leaf(lim, cert);
		if (why != NULL) {
			if (*reason == NULL)
				*reason = why;
			X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return 1;
}

static int run_cb(int ok, X509_STORE_CTX *ctx)
{
	run_t *run = X509_STORE_CTX_get_ex_data(ctx, run_index);
	if (run == NULL)
		return 0; /* fail closed */
	return gw_verify_step(ok, ctx, run->lim, &run->reason);
}

const char *gw_chain_verify(X509_STORE *store, const gw_verify_limits_t *lim, X509 *leaf,
                            STACK_OF(X509) * untrusted)
{
	pthread_once(&run_index_once, make_run_index);
	run_t run = {.lim = lim, .reason = NULL};
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (ctx == NULL)
		return "out of memory";
	const char *result = NULL;
	if (!X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
		result = "out of memory";
		goto done;
	}
	X509_STORE_CTX_set_ex_data(ctx, run_index, &run);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	X509_STORE_CTX_set_depth(ctx, (int)lim->depth);
	X509_VERIFY_PARAM_set_auth_level(X509_STORE_CTX_get0_param(ctx), lim->security_level);
	X509_STORE_CTX_set_verify_cb(ctx, run_cb);
	if (X509_verify_cert(ctx) != 1)
		result = run.reason != NULL ? run.reason
		                            : gw_verify_reason(X509_STORE_CTX_get_error(ctx));
done:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return result;
}
