/* Warnings about a configuration that loads but is dangerous: what a
 * security review would flag (`certgate check`, and `--strict` makes them
 * fatal). A pure function of the snapshot; checks that need the file system
 * (key file modes) are the caller's. */
#ifndef POL_LINT_H
#define POL_LINT_H

#include "cg_errors.h"
#include "pol_types.h"

/* The limits past which a setting is warned about. */
#define POL_LINT_MAX_LIFETIME_MS (7ULL * 24 * 3600 * 1000) /* max_cert_lifetime */
#define POL_LINT_MAX_SKEW_MS     (5ULL * 60 * 1000)        /* clock_skew */

/* Adds one line per warning to warnings, gateway settings first, then the
 * rules in their order: "FILE:LINE:COL: warning: PATH: MESSAGE". Warned
 * about:
 *  - gateway.proxy_protocol_from holding 0.0.0.0/0 or ::/0 (anyone may then
 *    claim any client address);
 *  - gateway.max_cert_lifetime over 7 days, gateway.clock_skew over 5
 *    minutes;
 *  - an allow rule that admits every user of every service with no
 *    min_trust (no users, groups, devices, sources or database condition
 *    narrows it);
 *  - in an allow rule's db_users or db_names, {user.local} while the rule's
 *    users are not confined to one domain (alice@partner.example would get
 *    alice@example.com's names), and a glob beside any placeholder with no
 *    separator a user name cannot hold between them ({user.local}_* lets
 *    alice into alice_x_private). */
void pol_lint(const pol_snapshot_t *snap, cg_errors_t *warnings);

#endif
