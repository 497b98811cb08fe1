/* The configuration in force: gateway, admin, audit, services, claims and
 * rules, compiled from JSON into an immutable, refcounted snapshot. A reload
 * builds a new snapshot beside the old one; nothing here changes after load.
 * The types are in pol_types.h (included). */
#ifndef POL_CONFIG_H
#define POL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cg_errors.h"
#include "pol_types.h"

/* "certgate.json:5:13: gateway.cert", for error messages about the file. */
void pol_file_where(const pol_file_t *file, char *buf, size_t len);

/* Loads and validates config_path (and its policy_file). Every error found is
 * added to errs as "file:line:col: path: message"; returns NULL if any. Only
 * reads JSON: certificates and keys are loaded by the gateway. */
pol_snapshot_t *pol_snapshot_load(const char *config_path, cg_errors_t *errs);

/* Like pol_snapshot_load, but when the document parses and only some values
 * are wrong, returns what could be read with *complete = false: enough for
 * `certgate check` to go on and load every file the configuration names, so
 * it reports every error at once. Never put such a snapshot in service. */
pol_snapshot_t *pol_snapshot_load_partial(const char *config_path, cg_errors_t *errs,
                                          bool *complete);

pol_snapshot_t *pol_snapshot_ref(pol_snapshot_t *snap);
void pol_snapshot_unref(pol_snapshot_t *snap); /* accepts NULL */

const pol_service_t *pol_snapshot_service(const pol_snapshot_t *snap, const char *name);
/* By TLS server name: a service name or one of its sni names, ASCII
 * case-insensitive. */
const pol_service_t *pol_snapshot_service_by_sni(const pol_snapshot_t *snap, const char *sni);

#endif
