/* The client's messages while relaying (see pg_audit.h): framing, the
 * query audit, and the refusals that keep both honest. A message is
 * judged when its last byte arrives, before that read is forwarded:
 * PostgreSQL runs nothing of a message it has not received whole. */
#include "pg/pg_audit.h"

#include <stdio.h>
#include <string.h>

#include "cg_utf8.h"

void pga_init(pga_t *a)
{
	memset(a, 0, sizeof(*a));
	pgw_fe_init(&a->reader);
}

void pga_finish(pga_t *a)
{
	pgw_fe_finish(&a->reader);
}

void pga_end(gw_session_t *s, pga_t *a, const char *reason, const char *sqlstate,
             const char *message)
{
	a->end_sqlstate = sqlstate;
	snprintf(a->end_message, sizeof(a->end_message), "%s", message);
	gw_session_end(s, reason);
}

static json_t *query_fields(gw_session_t *s)
{
	json_t *f = gw_session_base_fields(s);
	json_object_set_new(f, "user", s->claims.user ? json_string(s->claims.user) : json_null());
	cg_json_set_lossy_str(f, "db_user", gw_session_db_user(s));
	cg_json_set_lossy_str(f, "db_name", gw_session_db_name(s));
	return f;
}

/* f[key] = the kept bytes, cut to max on a character boundary. Returns
 * whether that is less than the whole (total bytes). */
static bool put_text(json_t *f, const char *key, const char *kept, size_t kept_len, size_t total,
                     size_t max)
{
	size_t n = cg_utf8_cut(kept, kept_len, max);
	cg_json_set_lossy(f, key, kept != NULL ? kept : "", n);
	return n < total;
}

/* A statement runs only once its line is written: with audit.on_failure
 * refuse, a line that cannot be written ends the session before the read
 * holding the message is forwarded. False: the session was ended. */
static bool audited(gw_session_t *s, pga_t *a, json_t *f)
{
	if (gw_audit_or_refuse(s->gw, "query", f))
		return true;
	pga_end(s, a, "audit unavailable", "57P03", "certgate: audit unavailable, try again later");
	return false;
}

static bool audit_query(gw_session_t *s, pga_t *a, const pgw_fe_msg_t *m)
{
	json_t *f = query_fields(s);
	bool cut = put_text(f, "sql", m->sql, m->sql_len, m->sql_total, PGW_SQL_MAX);
	json_object_set_new(f, "kind", json_string(m->type == 'Q' ? "simple" : "parse"));
	if (cut)
		json_object_set_new(f, "truncated", json_true());
	/* the name of a prepared statement, kept apart: however long, it
	 * cannot crowd the SQL out */
	if (m->type == 'P' && m->stmt_total > 0 &&
	    put_text(f, "statement", m->stmt, m->stmt_len, m->stmt_total, PGW_STMT_MAX))
		json_object_set_new(f, "statement_truncated", json_true());
	return audited(s, a, f);
}

static bool audit_call(gw_session_t *s, pga_t *a, const pgw_fe_msg_t *m, bool refused)
{
	json_t *f = query_fields(s);
	json_object_set_new(f, "sql", json_null());
	json_object_set_new(f, "kind", json_string("function_call"));
	json_object_set_new(f, "function_oid", json_integer(m->fn_oid));
	json_object_set_new(f, "args", json_integer(m->fn_nargs));
	if (refused)
		json_object_set_new(f, "refused", json_true());
	return audited(s, a, f);
}

/* A whole message has been read. False: the session was ended. */
static bool message_done(gw_session_t *s, pga_t *a, const pgw_fe_msg_t *m)
{
	const pol_service_t *svc = s->service;
	switch (m->type) {
	case 'Q':
	case 'P':
		return !svc->audit_queries || audit_query(s, a, m);
	case 'F':
		if (svc->function_calls == POL_FCALL_REFUSE) {
			if (svc->audit_queries && !audit_call(s, a, m, true))
				return false;
			pga_end(s, a, "refused: function call", "42501",
			        "certgate: function calls (FunctionCall messages) are refused on "
			        "this "
			        "service");
			return false;
		}
		return !svc->audit_queries || audit_call(s, a, m, false);
	case 'p':
		/* PasswordMessage, SASLInitialResponse, SASLResponse: which one
		 * follows from the server's last request */
		if (!a->sasl_expected)
			return true;
		a->sasl_expected = false;
		if (pgw_sasl_initial(m->head, m->head_len) != PGW_SASL_UNBOUND) {
			/* PostgreSQL would refuse it as "SCRAM channel binding check
			 * failed" or as a downgrade: say why, before it gets there */
			pga_end(s, a, "refused: channel binding", "28000",
			        PGA_CHANNEL_BINDING_MESSAGE);
			return false;
		}
		return true;
	default:
		return true;
	}
}

bool pga_client_bytes(gw_session_t *s, pga_t *a, const uint8_t *data, size_t len)
{
	a->reader.capture = s->service->audit_queries;
	while (len > 0) {
		size_t used = 0;
		const char *error = NULL;
		pgw_fe_status_t st = pgw_fe_read(&a->reader, data, len, &used, &error);
		if (st == PGW_FE_INVALID) {
			/* not passed unaudited, and the framing is lost from here */
			char reason[128], message[160];
			snprintf(reason, sizeof(reason), "protocol violation: %s", error);
			snprintf(message, sizeof(message), "certgate: protocol violation: %s",
			         error);
			pga_end(s, a, reason, "08P01", message);
			return false;
		}
		if (st == PGW_FE_NOMEM) {
			pga_end(s, a, "out of memory", "53200", "certgate: out of memory");
			return false;
		}
		data += used;
		len -= used;
		if (st == PGW_FE_MESSAGE && !message_done(s, a, &a->reader.msg))
			return false;
	}
	return true;
}
