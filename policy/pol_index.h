/* The decision index of a fully loaded snapshot: per service, the rules that
 * can apply to it, filed under the group, user domain or device they require
 * first, in policy order. Built once by pol_snapshot_load; read by
 * pol_decide's live path and by the service lookups. */
#ifndef POL_INDEX_H
#define POL_INDEX_H

#include <stddef.h>

#include "pol_types.h"

/* Keys (and the names lower-cased into them) are at most this long. */
#define POL_INDEX_KEY_MAX 1200

typedef struct pol_rule_list {
	size_t n, cap;
	size_t *rules; /* indexes into snap->rules, ascending */
} pol_rule_list_t;

/* NULL on allocation failure. */
void *pol_index_create(const pol_snapshot_t *snap);
void pol_index_destroy(void *index); /* accepts NULL */
/* The service of snap called name, ignoring ASCII case (as strcasecmp);
 * NULL when none. One hash lookup: re-authorizing every live session after
 * a reload asks once per session. */
const pol_service_t *pol_index_service(const void *index, const pol_snapshot_t *snap,
                                       const char *name);
/* The rules of scope (a service name or "*") filed under kind ('g' group,
 * 'u' lower-cased user domain, 'd' device) and value, or with value NULL the
 * rules that require none of them; NULL when none. */
const pol_rule_list_t *pol_index_rules(const void *index, const char *scope, char kind,
                                       const char *value);
/* ASCII lower case copy of src, truncated to len - 1 bytes, as the index
 * files user domains. */
void pol_index_lower(char *dst, size_t len, const char *src);

#endif
