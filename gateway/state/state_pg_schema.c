/* The state store's SQL (see state_pg.h): the schema, its migrations and
 * every statement the gateway sends, with the schema's name written in
 * ("@S"; policy/ allows only a lowercase identifier, so it needs no
 * quoting and is also the NOTIFY channel). Values always travel as
 * parameters, JSON-encoded where there are many.
 *
 * The schema: one row per record.
 *   @S.records (kind, key) primary key; value jsonb (NULL in a tombstone),
 *              deleted, updated_at (the store's time the change was made:
 *              the last writer wins, see WRITE), expires_ms (the gateway's
 *              epoch ms at which the record lapses, 0 never).
 *   @S.schema_version (version): one row.
 * The migration runs at every connect, in one transaction under an
 * advisory lock (gateways starting together take turns); it creates the
 * schema if missing (CREATE on the database is needed only then: a schema
 * created beforehand and owned by the gateway's role is enough), applies
 * what this binary knows beyond the version found, and refuses a version
 * newer than it knows (GW_PG_SQLSTATE_TOO_NEW, the version in DETAIL).
 * search_path is set to pg_catalog first: no function or table of
 * another schema can stand in for the ones named here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_pg.h"

/* Version 1. A migration to version N is one more "IF v < N THEN ... END
 * IF;" block here, and GW_PG_SCHEMA_VERSION = N ("@V"). */
/* clang-format off */
static const char migrate[] =
        "SET search_path = pg_catalog;\n"
        "BEGIN;\n"
        "SELECT pg_advisory_xact_lock(hashtext('certgate state schema @S'));\n"
        "DO $certgate$\n"
        "DECLARE\n"
        "  v integer := 0;\n"
        "BEGIN\n"
        "  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '@S') THEN\n"
        "    CREATE SCHEMA @S;\n"
        "  END IF;\n"
        "  IF to_regclass('@S.schema_version') IS NULL THEN\n"
        "    CREATE TABLE @S.schema_version (version integer NOT NULL);\n"
        "    INSERT INTO @S.schema_version VALUES (0);\n"
        "  END IF;\n"
        "  SELECT max(version) INTO v FROM @S.schema_version;\n"
        "  v := coalesce(v, 0);\n"
        "  IF v > @V THEN\n"
        "    RAISE EXCEPTION 'certgate: the state schema @S is version %', v\n"
        "      USING ERRCODE = '" GW_PG_SQLSTATE_TOO_NEW "', DETAIL = v::text;\n"
        "  END IF;\n"
        "  IF v < 1 THEN\n"
        "    CREATE TABLE @S.records (\n"
        "      kind text NOT NULL,\n"
        "      key text NOT NULL,\n"
        "      value jsonb,\n"
        "      deleted boolean NOT NULL DEFAULT false,\n"
        "      updated_at timestamptz NOT NULL,\n"
        "      expires_ms bigint NOT NULL DEFAULT 0,\n"
        "      PRIMARY KEY (kind, key));\n"
        "  END IF;\n"
        "  IF v < @V THEN\n"
        "    UPDATE @S.schema_version SET version = @V;\n"
        "  END IF;\n"
        "END\n"
        "$certgate$;\n"
        "COMMIT;\n";
/* clang-format on */

static const char *const texts[GW_PG_SQL_COUNT] = {
        [GW_PG_SQL_MIGRATE] = migrate,
        /* and the store's clock, in a quick round trip */
        [GW_PG_SQL_LISTEN] = "LISTEN @S; "
                             "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        [GW_PG_SQL_LOAD] = "SELECT kind, key, value::text, deleted, expires_ms FROM @S.records "
                           "WHERE kind IN (SELECT jsonb_array_elements_text($1::jsonb))",
        [GW_PG_SQL_READ] = "SELECT r.kind, r.key, r.value::text, r.deleted, r.expires_ms "
                           "FROM @S.records r "
                           "JOIN jsonb_to_recordset($1::jsonb) AS x(kind text, key text) "
                           "ON r.kind = x.kind AND r.key = x.key",
        /* The last writer wins, by the store's clock: a record's stamp is
         * the store's time its change was made (the gateway's clock plus
         * the offset it measures), and a row is replaced only by a change
         * made at the same time or later. Every row written is announced
         * to the other gateways; a change that lost is not (the writer
         * reads the row back instead). */
        [GW_PG_SQL_WRITE] =
                "WITH v AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(kind text, key "
                "text, value jsonb, deleted boolean, stamp bigint, expires bigint)), "
                "w AS (INSERT INTO @S.records AS r (kind, key, value, deleted, updated_at, "
                "expires_ms) SELECT kind, key, value, deleted, to_timestamp(stamp / 1000.0), "
                "expires FROM v ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
                "deleted = excluded.deleted, updated_at = excluded.updated_at, expires_ms = "
                "excluded.expires_ms WHERE r.updated_at <= excluded.updated_at RETURNING "
                "r.kind, r.key) "
                "SELECT kind, key, pg_notify('@S', kind || ':' || key) FROM w",
        /* atomic across gateways: exactly one INSERT of a hash succeeds */
        [GW_PG_SQL_CLAIM] = "INSERT INTO @S.records (kind, key, value, deleted, updated_at, "
                            "expires_ms) VALUES ('tokens', $1, NULL, false, clock_timestamp(), "
                            "$2::bigint) ON CONFLICT (kind, key) DO NOTHING RETURNING 1",
        [GW_PG_SQL_CLOCK] = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        /* lapsed records (with a minute's grace for clocks that differ),
         * and tombstones after a week: a gateway away from the store for
         * longer may bring a removed record back with its older change */
        [GW_PG_SQL_PRUNE] = "DELETE FROM @S.records WHERE (expires_ms <> 0 AND expires_ms < "
                            "(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 60000) "
                            "OR (deleted AND updated_at < clock_timestamp() - interval "
                            "'7 days')",
};

/* text with every "@S" replaced by schema and "@V" by the version. */
char *gw_pg_sql(gw_pg_sql_id_t id, const char *schema)
{
	const char *text = texts[id];
	char version[16];
	snprintf(version, sizeof(version), "%d", GW_PG_SCHEMA_VERSION);
	size_t n = 0, slen = strlen(schema), vlen = strlen(version);
	for (const char *p = text; (p = strchr(p, '@')) != NULL; p++)
		n++;
	char *out = malloc(strlen(text) + n * (slen > vlen ? slen : vlen) + 1);
	if (out == NULL)
		return NULL;
	char *o = out;
	for (const char *p = text; *p != '\0'; p++) {
		if (p[0] == '@' && (p[1] == 'S' || p[1] == 'V')) {
			const char *with = p[1] == 'S' ? schema : version;
			memcpy(o, with, strlen(with));
			o += strlen(with);
			p++;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}
