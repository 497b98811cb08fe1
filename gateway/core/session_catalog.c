/* A session that asked for the user's catalog (SNI certgate-catalog, see
 * core/catalog.h): once the handshake and the claims are done, the
 * catalog is built, the request audited (catalog.listed), the document
 * sent inside the TLS connection as one line, then close_notify. Nothing
 * is relayed and no upstream is touched. */
#include <stdlib.h>
#include <string.h>

#include "core/catalog.h"
#include "core/session.h"

void gw_session_answer_catalog(gw_session_t *s)
{
	gw_gateway_t *gw = s->gw;
	json_t *names = NULL;
	json_t *doc = gw_catalog_build(gw->state, s->rt, &s->claims, (struct sockaddr *)&s->peer,
	                               s->not_before_ms, &names);
	char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (text == NULL) {
		json_decref(doc);
		json_decref(names);
		gw_session_reject(s, "out of memory", NULL);
		return;
	}
	json_t *f = gw_session_base_fields(s);
	json_object_set_new(f, "user", s->claims.user ? json_string(s->claims.user) : json_null());
	json_object_set_new(f, "device_id",
	                    s->claims.device_id ? json_string(s->claims.device_id) : json_null());
	json_object_set_new(f, "services", names);
	json_t *refused = json_object_get(doc, "refused");
	if (refused != NULL)
		json_object_set(f, "reason", refused);
	bool audited = gw_audit_or_refuse(gw, "catalog.listed", f);
	json_decref(doc);
	if (!audited) {
		/* no answer that is not audited */
		free(text);
		gw_count_refusal(gw, "catalog.listed", "audit unavailable");
		gw_session_tell_status(s, "audit unavailable");
		gw_session_drop(s, true);
		return;
	}
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps' NUL: the document is one line */
	(void)gw_end_send_tls(&s->link.end[GW_CLIENT], text, len + 1);
	free(text);
	gw_session_drop(s, true);
}
