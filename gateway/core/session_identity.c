/* A session's certificate after the handshake, and the re-checks of live
 * sessions: after session.start only the DER of the client's chain is kept
 * (a parsed X509 costs some 6 KiB in OpenSSL 3), parsed again for the rare
 * re-verification after a reload, a lock, a trust change or a time window's
 * boundary. A session re-authorized under a newer generation moves to it,
 * or ends. And what a decision's permissive rules report (authz.would_deny). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "cg_utf8.h"
#include "core/authz.h"
#include "core/session.h"
#include "tls/x509_info.h"

/* After session.start only the DER is kept (see session.h). */
void gw_session_stow_identity(gw_session_t *s)
{
	char serial[128];
	gw_cert_serial_hex(s->cert, serial, sizeof(serial));
	size_t total = 0;
	int n = i2d_X509(s->cert, NULL);
	bool ok = n > 0;
	total += ok ? (size_t)n : 0;
	for (int i = 0; ok && i < sk_X509_num(s->chain); i++) {
		n = i2d_X509(sk_X509_value(s->chain, i), NULL);
		ok = n > 0;
		total += ok ? (size_t)n : 0;
	}
	uint8_t *der = ok ? malloc(total) : NULL;
	char *hex = strdup(serial);
	if (der == NULL || hex == NULL) {
		free(der);
		free(hex);
		return; /* keeps the parsed certificate: correct, only larger */
	}
	uint8_t *p = der;
	(void)i2d_X509(s->cert, &p);
	for (int i = 0; i < sk_X509_num(s->chain); i++)
		(void)i2d_X509(sk_X509_value(s->chain, i), &p);
	s->cert_der = der;
	s->cert_der_len = total;
	s->cert_serial = hex;
	X509_free(s->cert);
	sk_X509_pop_free(s->chain, X509_free);
	s->cert = NULL;
	s->chain = NULL;
}

typedef struct identity {
	X509 *cert;
	STACK_OF(X509) * chain;
	bool parsed; /* ours to free */
} identity_t;

/* The session's certificate and intermediates, parsed again if stowed. */
static bool identity_open(const gw_session_t *s, identity_t *id)
{
	*id = (identity_t){.cert = s->cert, .chain = s->chain, .parsed = false};
	if (s->cert != NULL)
		return true;
	if (s->cert_der == NULL)
		return false;
	const unsigned char *p = s->cert_der, *end = s->cert_der + s->cert_der_len;
	id->parsed = true;
	id->cert = d2i_X509(NULL, &p, (long)(end - p));
	id->chain = sk_X509_new_null();
	bool ok = id->cert != NULL && id->chain != NULL;
	while (ok && p < end) {
		X509 *x = d2i_X509(NULL, &p, (long)(end - p));
		ok = x != NULL && sk_X509_push(id->chain, x) > 0;
		if (!ok)
			X509_free(x);
	}
	return ok;
}

static void identity_close(identity_t *id)
{
	if (!id->parsed)
		return;
	X509_free(id->cert);
	sk_X509_pop_free(id->chain, X509_free);
}

/* A reload landed while this client was handshaking: its certificate was
 * verified against the older CA/CRL. Verify again, and decide, under what
 * is in force now. */
bool gw_session_adopt_current_runtime(gw_session_t *s)
{
	gw_runtime_t *rt = s->worker->rt;
	identity_t id;
	gw_refusal_t refusal = {0};
	const char *why = identity_open(s, &id)
	                          ? gw_cert_reverify(rt, id.cert, id.chain, 0, &refusal)
	                          : "certificate unreadable";
	identity_close(&id);
	if (why != NULL) {
		gw_session_reject(s, why, refusal.detail);
		gw_refusal_finish(&refusal);
		return false;
	}
	/* the catalog (no service) is answered under the generation in force */
	const pol_service_t *svc =
	        s->service != NULL ? pol_snapshot_service(rt->snap, s->service->name) : NULL;
	if (svc == NULL && !s->hs.catalog) {
		gw_session_reject(s, "unknown service", NULL);
		return false;
	}
	gw_runtime_t *old = s->rt;
	s->rt = gw_runtime_ref(rt);
	s->hs.rt = rt;
	s->service = s->hs.service = svc;
	gw_runtime_unref(old);
	if (s->claims.user != NULL || s->claims.n_groups > 0) {
		/* already read under the old claims map: read them again */
		pol_claims_finish(&s->claims);
		bool read = identity_open(s, &id) &&
		            pol_claims_extract(&rt->snap->claims, id.cert, &s->claims);
		identity_close(&id);
		if (!read) {
			gw_session_reject(s, "cannot read certificate claims", NULL);
			return false;
		}
	}
	return true;
}

/* A started session ends (session.end); one authorized but not started yet
 * (inner check, upstream connect) is refused (authz.denied). */
static void end_or_refuse(gw_session_t *s, const char *reason)
{
	if (s->started)
		gw_session_end(s, reason);
	else
		gw_session_deny(s, reason, reason);
}

void gw_session_reauthorize(gw_session_t *s, gw_runtime_t *rt, const char *revoked_reason)
{
	if (s->state != GW_SESSION_INNER && s->state != GW_SESSION_CONNECTING &&
	    s->state != GW_SESSION_LIVE)
		return;
	/* Verifying a chain costs signature checks: skip it when the CA, CRL
	 * and verification settings are byte for byte those that admitted the
	 * session (its notAfter is watched by its timer). Likewise the claims
	 * are read again only when the claims map changed. */
	bool same_trust = gw_runtime_same_trust(s->rt, rt);
	bool same_claims = pol_claims_map_equal(&s->rt->snap->claims, &rt->snap->claims);
	identity_t id = {0};
	if ((!same_trust || !same_claims) && !identity_open(s, &id)) {
		identity_close(&id);
		end_or_refuse(s, "revoked: certificate");
		return;
	}
	if (!same_trust && gw_cert_reverify(rt, id.cert, id.chain, 0, NULL) != NULL) {
		identity_close(&id);
		end_or_refuse(s, "revoked: certificate");
		return;
	}
	const pol_service_t *svc = pol_snapshot_service(rt->snap, s->service->name);
	if (svc == NULL) {
		end_or_refuse(s, revoked_reason);
		return;
	}
	pol_claims_t fresh;
	bool read = same_claims || pol_claims_extract(&rt->snap->claims, id.cert, &fresh);
	identity_close(&id);
	if (!read) {
		end_or_refuse(s, revoked_reason);
		return;
	}
	pol_decision_t decision;
	gw_authz_request_t req = {
	        .service = svc,
	        .claims = same_claims ? &s->claims : &fresh,
	        .source = (struct sockaddr *)&s->peer,
	        .db_user = gw_session_db_user(s),
	        .db_name = gw_session_db_name(s),
	        .cert_not_before_ms = s->not_before_ms,
	};
	bool allowed = gw_authorize(s->gw->state, rt, &req, &decision);
	if (!allowed) {
		if (!same_claims)
			pol_claims_finish(&fresh);
		end_or_refuse(s, gw_authz_revocation_reason(&decision, revoked_reason));
		return;
	}
	/* still admitted: it now belongs to the new generation */
	if (!same_claims) {
		pol_claims_finish(&s->claims);
		s->claims = fresh;
	}
	/* the names of before's permissive rules live in s->rt, still held */
	pol_decision_t before = s->decision;
	s->decision = decision;
	gw_session_report_would_deny(s, &before);
	s->service = svc;
	s->hs.service = svc;
	if (s->rt != rt) {
		gw_runtime_t *old = s->rt;
		s->rt = gw_runtime_ref(rt);
		s->hs.rt = rt;
		gw_runtime_unref(old);
	}
	if (s->state == GW_SESSION_LIVE)
		gw_session_arm_live_timer(s); /* idle_timeout may have changed */
}

static bool named_in(const pol_decision_t *d, const char *rule)
{
	for (size_t i = 0; d != NULL && i < d->n_would_deny; i++)
		if (strcmp(d->would_deny[i], rule) == 0)
			return true;
	return false;
}

/* Reported once per rule and session: a reload, a lock or a window's
 * boundary decides again, but only a permissive rule that did not match
 * before is news. */
void gw_session_report_would_deny(gw_session_t *s, const pol_decision_t *before)
{
	const pol_decision_t *d = &s->decision;
	for (size_t i = 0; i < d->n_would_deny; i++) {
		const char *rule = d->would_deny[i];
		if (named_in(before, rule))
			continue;
		json_t *f = gw_session_base_fields(s);
		gw_session_add_identity(s, f);
		gw_session_add_front_fields(s, f);
		json_object_set_new(f, "allowed_by", json_string(d->rule));
		json_object_set_new(f, "rule", json_string(rule));
		char reason[160];
		snprintf(reason, sizeof(reason), "would be denied by rule %s (permissive)", rule);
		cg_json_set_lossy_str(f, "reason", reason);
		(void)gw_audit(s->gw, "authz.would_deny", f);
		if (s->gw->observer.would_deny != NULL)
			s->gw->observer.would_deny(s->gw->observer.ctx, rule);
	}
}
