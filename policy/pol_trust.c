/* Device trust levels: parsing, naming, and the "lower of claim and feed"
 * rule that gives a device its effective level. */
#include "pol_trust.h"

#include <string.h>

static const char *const trust_names[] = {"always_deny", "low", "medium", "high"};

bool pol_trust_parse(const char *text, pol_trust_t *out)
{
	if (!text)
		return false;
	for (int i = 0; i < (int)(sizeof(trust_names) / sizeof(trust_names[0])); i++) {
		if (strcmp(text, trust_names[i]) == 0) {
			*out = (pol_trust_t)(POL_TRUST_ALWAYS_DENY + i);
			return true;
		}
	}
	return false;
}

const char *pol_trust_name(pol_trust_t level)
{
	if (level >= POL_TRUST_ALWAYS_DENY && level <= POL_TRUST_HIGH)
		return trust_names[level - POL_TRUST_ALWAYS_DENY];
	return "none";
}

/* The feed can only lower: with no claim there is nothing to lower but to
 * always_deny, so a device without a trust claim never gains a level from
 * the feed (CONFIG.md: no claim, no min_trust rule matches). */
pol_trust_t pol_trust_effective(pol_trust_t claim, pol_trust_t feed)
{
	if (claim == POL_TRUST_NONE)
		return feed == POL_TRUST_ALWAYS_DENY ? POL_TRUST_ALWAYS_DENY : POL_TRUST_NONE;
	if (feed == POL_TRUST_NONE)
		return claim;
	return claim < feed ? claim : feed;
}
