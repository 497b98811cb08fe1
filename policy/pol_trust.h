/* Device trust levels, lowest to highest. */
#ifndef POL_TRUST_H
#define POL_TRUST_H

#include <stdbool.h>

typedef enum {
	POL_TRUST_NONE = -1, /* no claim / no feed value */
	POL_TRUST_ALWAYS_DENY = 0,
	POL_TRUST_LOW,
	POL_TRUST_MEDIUM,
	POL_TRUST_HIGH,
} pol_trust_t;

/* "always_deny", "low", "medium", "high" (exact, lower case). */
bool pol_trust_parse(const char *text, pol_trust_t *out) __attribute__((warn_unused_result));
/* The name above, or "none" for POL_TRUST_NONE. */
const char *pol_trust_name(pol_trust_t level);
/* Effective level: the lower of the certificate claim and the feed value.
 * The feed only lowers: without a claim the result is NONE, unless the feed
 * says always_deny. */
pol_trust_t pol_trust_effective(pol_trust_t claim, pol_trust_t feed);

#endif
