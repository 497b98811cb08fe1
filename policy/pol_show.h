/* What GET /v1/policy (and `certgate explain`) show of a snapshot: the
 * effective configuration as JSON, built once by pol_snapshot_load into
 * snap->shown. */
#ifndef POL_SHOW_H
#define POL_SHOW_H

#include <jansson.h>

#include "pol_types.h"

/* snap->shown: every default filled in, durations as text, file paths
 * absolute, never what the files hold. New reference; NULL on allocation
 * failure. */
json_t *pol_show_snapshot(const pol_snapshot_t *snap);

#endif
