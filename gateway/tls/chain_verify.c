/* Client certificate verification (see chain_verify.h).
 *
 * OpenSSL 3.0's X509_verify_cert runs, in this order: chain building,
 * extension checks (with X509_V_FLAG_X509_STRICT: RFC 5280 structure),
 * revocation, signatures and validity (calling back with ok=1 for each
 * certificate, the trust anchor first), name constraints. gw_verify_step
 * sees every error, overrules the few certgate judges otherwise, and adds
 * x509_strict.h's rules on each certificate in the ok=1 calls (so before
 * name constraints: a malformed SAN is named as such). certgate's leaf
 * policy waits for gw_verify_finish, once OpenSSL has accepted the chain. */
#include "tls/chain_verify.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/x509_info.h"
#include "tls/x509_strict.h"

#define DETAIL_MAX 512 /* a certificate name in an audit line, cut there */

typedef struct run {
	const gw_verify_limits_t *lim;
	gw_refusal_t refusal;
} run_t;

static int run_index = -1; /* X509_STORE_CTX ex_data: run_t* of gw_chain_verify */
static pthread_once_t run_index_once = PTHREAD_ONCE_INIT;

static void make_run_index(void)
{
	run_index = X509_STORE_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void gw_refusal_finish(gw_refusal_t *r)
{
	free(r->detail);
	*r = (gw_refusal_t){0};
}

const char *gw_verify_reason(int err)
{
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate not yet valid";
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
		return "certificate validity unreadable";
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
	case X509_V_ERR_PERMITTED_VIOLATION:
	case X509_V_ERR_EXCLUDED_VIOLATION:
		return "name constraints violated";
	case X509_V_ERR_SUBTREE_MINMAX:
	case X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE:
	case X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX:
	case X509_V_ERR_UNSUPPORTED_NAME_SYNTAX:
		return "name constraints unsupported";
	/* X509_V_FLAG_X509_STRICT (RFC 5280 structure) */
	case X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER:
		return "certificate malformed: ca without subject key identifier";
	case X509_V_ERR_CA_BCONS_NOT_CRITICAL:
		return "certificate malformed: basic constraints not critical";
	case X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER:
		return "certificate malformed: missing authority key identifier";
	case X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA:
		return "certificate malformed: leaf asserts keyCertSign";
	case X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL:
		return "certificate malformed: empty subject with non-critical subjectAltName";
	case X509_V_ERR_PATHLEN_INVALID_FOR_NON_CA:
	case X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN:
		return "certificate malformed: path length constraint on a non-ca";
	case X509_V_ERR_ISSUER_NAME_EMPTY:
		return "certificate malformed: empty issuer";
	case X509_V_ERR_SUBJECT_NAME_EMPTY:
		return "certificate malformed: empty subject";
	case X509_V_ERR_EMPTY_SUBJECT_ALT_NAME:
		return "certificate malformed: empty subjectAltName";
	case X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY:
		return "certificate malformed: inconsistent signature algorithm";
	case X509_V_ERR_AUTHORITY_KEY_IDENTIFIER_CRITICAL:
	case X509_V_ERR_SUBJECT_KEY_IDENTIFIER_CRITICAL:
		return "certificate malformed: critical key identifier";
	case X509_V_ERR_EXTENSIONS_REQUIRE_VERSION_3:
		return "certificate malformed: extensions in a version 1 certificate";
	case X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:
		return "certificate malformed: explicit elliptic curve parameters";
	case X509_V_ERR_INVALID_EXTENSION:
		return "certificate malformed: invalid extension";
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

void gw_verify_prepare(X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, int64_t at_s)
{
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	X509_STORE_CTX_set_depth(ctx, (int)lim->depth);
	X509_VERIFY_PARAM_set_auth_level(param, lim->security_level);
	unsigned long flags = X509_V_FLAG_X509_STRICT;
	if (lim->crl_check != GW_CRL_OFF)
		flags |= X509_V_FLAG_CRL_CHECK;
	if (lim->crl_check == GW_CRL_CHAIN || lim->crl_check == GW_CRL_ALL)
		flags |= X509_V_FLAG_CRL_CHECK_ALL;
	X509_VERIFY_PARAM_set_flags(param, flags);
	if (at_s > 0)
		X509_VERIFY_PARAM_set_time(param, (time_t)at_s);
}

/* The second the chain is judged at: --at, or now. */
static int64_t verify_time(X509_STORE_CTX *ctx)
{
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	if ((X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_USE_CHECK_TIME) != 0)
		return (int64_t)X509_VERIFY_PARAM_get_time(param);
	return (int64_t)time(NULL);
}

/* notBefore may be up to clock_skew in the future (the issuer's clock runs
 * ahead); notAfter is enforced exactly (below). */
static bool within_skew(X509 *cert, uint64_t skew_ms, int64_t now_s)
{
	time_t later = (time_t)((now_s * 1000 + (int64_t)skew_ms) / 1000);
	return X509_cmp_time(X509_get0_notBefore(cert), &later) <= 0;
}

/* RFC 5280 4.1.2.5: valid through the second of notAfter, which OpenSSL
 * 3.0 (X509_cmp_time) already calls expired. */
static bool at_not_after_second(X509 *cert, int64_t now_s)
{
	int64_t not_after_ms = gw_asn1_time_ms(X509_get0_notAfter(cert));
	return not_after_ms != 0 && not_after_ms / 1000 == now_s;
}

/* crl_check "chain": whether the CRLs hold one from cert's issuer (by
 * name: one that is there but does not fit still refuses). */
static bool issuer_has_crl(X509_STORE_CTX *ctx, X509 *cert)
{
	ERR_set_mark();
	STACK_OF(X509_CRL) *crls = X509_STORE_CTX_get1_crls(ctx, X509_get_issuer_name(cert));
	ERR_pop_to_mark();
	bool any = sk_X509_CRL_num(crls) > 0;
	sk_X509_CRL_pop_free(crls, X509_CRL_free);
	return any;
}

/* The refusal names the CA for these: it is the one that is unknown, or
 * whose CRL is missing or wrong. */
static bool about_issuer(int err)
{
	switch (err) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_UNABLE_TO_GET_CRL:
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
	case X509_V_ERR_CRL_SIGNATURE_FAILURE:
		return true;
	default:
		return false;
	}
}

/* Drops a UTF-8 sequence the cut left incomplete at the end of s. */
static void trim_partial_utf8(char *s)
{
	size_t n = strlen(s), lead = n;
	while (lead > 0 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80)
		lead--; /* continuation bytes: back to their lead byte */
	if (lead == 0 || (unsigned char)s[lead - 1] < 0xC0)
		return;
	unsigned char c = (unsigned char)s[lead - 1];
	size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
	if (n - (lead - 1) < want)
		s[lead - 1] = '\0';
}

/* Keeps the first refusal, with the name of the certificate (or of its
 * issuer) it is about. */
static void refuse(gw_refusal_t *r, const char *reason, X509 *cert, bool issuer)
{
	if (r->reason != NULL)
		return;
	r->reason = reason;
	if (cert == NULL)
		return;
	char name[DETAIL_MAX];
	if (issuer)
		gw_cert_issuer(cert, name, sizeof(name));
	else
		gw_cert_subject(cert, name, sizeof(name));
	trim_partial_utf8(name);
	if (name[0] != '\0')
		r->detail = strdup(name); /* NULL when out of memory: no detail */
}

int gw_verify_step(int ok, X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, gw_refusal_t *r)
{
	int depth = X509_STORE_CTX_get_error_depth(ctx);
	X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
	if (!ok) {
		int err = X509_STORE_CTX_get_error(ctx);
		bool let_through = false;
		switch (err) {
		case X509_V_ERR_CERT_NOT_YET_VALID:
			let_through = depth == 0 && cert != NULL &&
			              within_skew(cert, lim->clock_skew_ms, verify_time(ctx));
			break;
		case X509_V_ERR_CERT_HAS_EXPIRED:
			let_through = cert != NULL && at_not_after_second(cert, verify_time(ctx));
			break;
		case X509_V_ERR_CA_CERT_MISSING_KEY_USAGE:
			/* strict mode's one error RFC 5280 does not make a path
			 * validation failure (4.2.1.3 binds the CA, not us) */
			let_through = true;
			break;
		case X509_V_ERR_UNABLE_TO_GET_CRL:
			let_through = lim->crl_check == GW_CRL_CHAIN && cert != NULL &&
			              !issuer_has_crl(ctx, cert);
			break;
		default:
			break;
		}
		if (let_through) {
			X509_STORE_CTX_set_error(ctx, X509_V_OK);
			return 1;
		}
		refuse(r, gw_verify_reason(err), cert, about_issuer(err));
		return 0;
	}
	/* signatures and validity are fine at this depth: certgate's own
	 * structural rules, on every certificate but the trust anchor */
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	if (cert != NULL && depth < sk_X509_num(chain) - 1) {
		const char *why = gw_x509_strict_check(cert, depth == 0);
		if (why != NULL) {
			refuse(r, why, cert, false);
			X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
			return 0;
		}
	}
	return 1;
}

int gw_verify_finish(X509_STORE_CTX *ctx, const gw_verify_limits_t *lim, gw_refusal_t *r)
{
	X509 *leaf = X509_STORE_CTX_get0_cert(ctx);
	const char *why = leaf != NULL ? gw_cert_check_leaf(lim, leaf) : "no client certificate";
	if (why == NULL)
		return 1;
	refuse(r, why, leaf, false);
	X509_STORE_CTX_set_error_depth(ctx, 0);
	X509_STORE_CTX_set_current_cert(ctx, leaf);
	X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static int run_cb(int ok, X509_STORE_CTX *ctx)
{
	run_t *run = X509_STORE_CTX_get_ex_data(ctx, run_index);
	if (run == NULL)
		return 0; /* fail closed */
	return gw_verify_step(ok, ctx, run->lim, &run->refusal);
}

const char *gw_chain_verify(X509_STORE *store, const gw_verify_limits_t *lim, X509 *leaf,
                            STACK_OF(X509) * untrusted, int64_t at_s, gw_refusal_t *out)
{
	pthread_once(&run_index_once, make_run_index);
	run_t run = {.lim = lim, .refusal = {0}};
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (ctx == NULL || !X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
		run.refusal.reason = "out of memory";
		goto done;
	}
	X509_STORE_CTX_set_ex_data(ctx, run_index, &run);
	gw_verify_prepare(ctx, lim, at_s);
	X509_STORE_CTX_set_verify_cb(ctx, run_cb);
	if (X509_verify_cert(ctx) == 1)
		(void)gw_verify_finish(ctx, lim, &run.refusal);
	else if (run.refusal.reason == NULL)
		run.refusal.reason = gw_verify_reason(X509_STORE_CTX_get_error(ctx));
done:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	const char *reason = run.refusal.reason;
	if (out != NULL)
		*out = run.refusal;
	else
		gw_refusal_finish(&run.refusal);
	return reason;
}
