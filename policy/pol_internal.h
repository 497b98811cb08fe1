/* Private to policy/: what pol_snapshot_load builds besides the parsed
 * configuration. Not installed, not for other components. */
#ifndef POL_INTERNAL_H
#define POL_INTERNAL_H

#include <jansson.h>

#include "pol_config.h"

/* pol_decide.c: the decision index of a fully loaded snapshot (per service,
 * the rules that can apply to it, in policy order). NULL on allocation
 * failure. */
void *pol_index_create(const pol_snapshot_t *snap);
void pol_index_destroy(void *index); /* accepts NULL */
/* The service of snap called name, ignoring ASCII case (as strcasecmp);
 * NULL when none. One hash lookup: re-authorizing every live session after
 * a reload asks once per session. */
const pol_service_t *pol_index_service(const void *index, const pol_snapshot_t *snap,
                                       const char *name);

/* pol_show.c: snap->shown. New reference; NULL on allocation failure. */
json_t *pol_show_snapshot(const pol_snapshot_t *snap);

#endif
