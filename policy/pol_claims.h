/* Claims: who the certificate says the caller is. Where each claim is read
 * from is configured (CONFIG.md "claims"); the first source present wins. */
#ifndef POL_CLAIMS_H
#define POL_CLAIMS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "cg_errors.h"
#include "cg_json.h"
#include "pol_trust.h"

typedef enum {
	POL_SRC_SUBJECT,   /* subject:ATTR (short name like CN/OU/O, or dotted OID) */
	POL_SRC_SAN_EMAIL, /* san:email */
	POL_SRC_SAN_DNS,   /* san:dns */
	POL_SRC_SAN_URI,   /* san:uri:PREFIX — URIs starting with PREFIX, claim = rest */
	POL_SRC_EXT,       /* ext:OID — non-critical extension holding a UTF8String */
} pol_source_kind_t;

typedef struct pol_source {
	pol_source_kind_t kind;
	char *text;       /* as written in the config, e.g. "san:uri:urn:certgate:device:" */
	char *arg;        /* attribute name / OID / URI prefix; NULL for email and dns */
	ASN1_OBJECT *obj; /* subject attribute or extension OID; NULL otherwise */
} pol_source_t;

typedef struct pol_sources {
	pol_source_t *items;
	size_t count;
} pol_sources_t;

typedef struct pol_claims_map {
	pol_sources_t user, groups, device_id, device_trust;
} pol_claims_map_t;

/* Compiles the "claims" object (json may be NULL: all defaults) at path
 * "claims" of doc. Missing members take the defaults of CONFIG.md. Adds every
 * error to errs; returns false if any. */
bool pol_claims_map_compile(pol_claims_map_t *map, const cg_jdoc_t *doc, const json_t *json,
                            cg_errors_t *errs);
void pol_claims_map_finish(pol_claims_map_t *map);
/* Same sources in the same order for every claim: claims read with one map
 * are those the other would read. */
bool pol_claims_map_equal(const pol_claims_map_t *a, const pol_claims_map_t *b);

/* Longest claim value accepted, in bytes; longer values read as absent. */
#define POL_CLAIM_MAX_LEN 1024

/* Whether s (len bytes) could be a claim value: strict UTF-8 (no overlongs,
 * surrogates or code points over U+10FFFF), no NUL, C0/C1 control or DEL,
 * 1 to POL_CLAIM_MAX_LEN bytes. What pol_claims_extract hands to the policy
 * is always such text; the admin API checks device and user names against
 * it, since anything else could never match a certificate. */
bool pol_claims_text_ok(const char *s, size_t len);

typedef struct pol_claims {
	char *user;    /* NULL when no source produced one */
	char **groups; /* all values of the first present source */
	size_t n_groups;
	char *device_id;          /* NULL when absent */
	pol_trust_t device_trust; /* POL_TRUST_NONE when absent; an unknown level
	                           * string reads as POL_TRUST_ALWAYS_DENY */
} pol_claims_t;

/* Reads the claims from cert into out (zeroed first). A claim whose value is
 * not valid UTF-8 or holds a NUL or control character is treated as absent.
 * Never fails for a missing claim; returns false only on allocation failure.
 * pol_claims_finish frees. */
bool pol_claims_extract(const pol_claims_map_t *map, X509 *cert, pol_claims_t *out)
        __attribute__((warn_unused_result));
void pol_claims_finish(pol_claims_t *claims);
/* Deep copy (dst zeroed first). */
bool pol_claims_copy(pol_claims_t *dst, const pol_claims_t *src)
        __attribute__((warn_unused_result));

#endif
