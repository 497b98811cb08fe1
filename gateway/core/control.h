/* Operating a running gateway: reload, drain, and re-authorizing the live
 * sessions that a lock or a trust change touches (see control.c). */
#ifndef GW_CONTROL_H
#define GW_CONTROL_H

#include "cg_errors.h"
#include "core/gateway.h"

/* Re-reads everything from disk. Valid: swaps it in, re-authorizes live
 * sessions, returns 0. Invalid: leaves the old one in force, fills errs,
 * returns -1. Both audited (admin.reload) with `by`. */
int gw_reload(gw_gateway_t *gw, const char *by, cg_errors_t *errs);

/* Re-authorizes the live sessions of user (case-insensitive) or device
 * against the runtime in force; those now refused end with reason. */
void gw_reauthorize_matching(gw_gateway_t *gw, const char *user, const char *device,
                             const char *reason);

/* Stops accepting, ends every session (reason "shutdown") and lets the loop
 * run dry. */
void gw_drain(gw_gateway_t *gw);

#endif
