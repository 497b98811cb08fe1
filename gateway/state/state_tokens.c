/* The issuer's used-token cache (see state.h) as memory and file keep it:
 * an ID token is accepted once; its SHA-256 is remembered until the token
 * expires. Saved as {"tokens": {HASH: expires_ms}}. Bounded: past
 * GW_STATE_TOKENS_MAX live entries a new claim is refused (a login flood
 * cannot grow memory), after the lapsed ones are dropped. A shared store
 * claims tokens itself, in one atomic statement (state_pg_sync.c): the
 * kind has no records to share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state.h"
#include "state/state_model.h"

static void tokens_finish(gw_state_t *st)
{
	cg_strmap_destroy(st->tokens, free);
	st->tokens = NULL;
}

typedef struct lapsed {
	int64_t now;
	char (*keys)[65];
	size_t n, cap;
} lapsed_t;

static bool collect_lapsed(const char *hash, void *value, void *arg)
{
	lapsed_t *l = arg;
	if (*(int64_t *)value <= l->now && l->n < l->cap)
		snprintf(l->keys[l->n++], 65, "%s", hash);
	return l->n < l->cap;
}

/* Drops lapsed entries, at most 1024 per call (the rest on later calls). */
static void prune(gw_state_t *st, int64_t now_ms)
{
	char keys[1024][65];
	lapsed_t l = {.now = now_ms, .keys = keys, .cap = 1024};
	cg_strmap_foreach(st->tokens, collect_lapsed, &l);
	for (size_t i = 0; i < l.n; i++)
		free(cg_strmap_remove(st->tokens, keys[i]));
}

gw_token_claim_t gw_state_token_claim_local(gw_state_t *st, const char *hash, int64_t expires_ms,
                                            int64_t now_ms)
{
	int64_t *seen = cg_strmap_get(st->tokens, hash);
	if (seen != NULL && *seen > now_ms)
		return GW_TOKEN_REPLAYED;
	if (cg_strmap_count(st->tokens) >= GW_STATE_TOKENS_MAX)
		prune(st, now_ms);
	if (seen == NULL && cg_strmap_count(st->tokens) >= GW_STATE_TOKENS_MAX)
		return GW_TOKEN_FULL;
	int64_t *until = malloc(sizeof(*until));
	if (until == NULL)
		return GW_TOKEN_FULL;
	*until = expires_ms;
	free(cg_strmap_put(st->tokens, hash, until));
	gw_state_record_changed(st, GW_STATE_TOKENS, hash);
	return GW_TOKEN_FRESH;
}

/* --- the saved form --------------------------------------------------------- */

static bool save_one(const char *hash, void *value, void *arg)
{
	return json_object_set_new(arg, hash, json_integer(*(int64_t *)value)) == 0;
}

static json_t *tokens_save(gw_state_t *st)
{
	json_t *tokens = json_object();
	if (tokens == NULL)
		return NULL;
	cg_strmap_foreach(st->tokens, save_one, tokens);
	return json_pack("{s:o}", "tokens", tokens);
}

static bool tokens_load(gw_state_t *st, const json_t *doc, char *err, size_t errlen)
{
	json_t *tokens = NULL;
	json_error_t jerr;
	if (json_unpack_ex((json_t *)doc, &jerr, JSON_STRICT, "{s:o}", "tokens", &tokens) != 0 ||
	    !json_is_object(tokens)) {
		snprintf(err, errlen, "expected {\"tokens\": {...}}");
		return false;
	}
	const char *hash;
	json_t *v;
	json_object_foreach(tokens, hash, v)
	{
		if (!json_is_integer(v) || strlen(hash) != 64) {
			snprintf(err, errlen, "tokens.%.64s: expected a hash and a time", hash);
			return false;
		}
		int64_t *until = malloc(sizeof(*until));
		if (until == NULL) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		*until = json_integer_value(v);
		free(cg_strmap_put(st->tokens, hash, until));
	}
	return true;
}

const gw_state_kind_t gw_state_tokens_kind = {
        .name = "tokens",
        .save = tokens_save,
        .load = tokens_load,
        .finish = tokens_finish,
};
