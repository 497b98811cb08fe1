/* Fuzzes policy/pol_claims.c: the input is a DER certificate (as a client
 * would present it; the TLS stack verifies the chain, but the claims reader
 * must not trust the encoding), parsed with d2i_X509 and read with two claim
 * maps: the defaults of CONFIG.md and one that uses every kind of source
 * (subject attribute by name and by dotted OID, SAN email/DNS/URI prefix,
 * a private extension). Checks: every claim handed to the policy is clean
 * UTF-8 text without control characters, at most 1024 bytes; the trust level
 * is a known one; copying the claims gives equal claims.
 *
 * The two maps are compiled once per process (they are read-only). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "cg_errors.h"
#include "cg_json.h"
#include "fuzz_util.h"
#include "pol_claims.h"
#include "pol_trust.h"

#define CLAIM_MAX_LEN 1024 /* pol_claims.c */

static const char every_source[] =
        "{\"claims\": {"
        "\"user\": [\"ext:1.3.6.1.4.1.99999.1\", \"san:email\", \"subject:2.5.4.3\"],"
        "\"groups\": [\"subject:O\", \"subject:OU\", \"san:dns\"],"
        "\"device_id\": [\"san:uri:spiffe://example.org/device/\", \"subject:serialNumber\"],"
        "\"device_trust\": [\"ext:1.3.6.1.4.1.99999.2\", \"san:uri:urn:certgate:trust:\"]"
        "}}";

static pol_claims_map_t default_map, every_map;

static void maps_finish(void)
{
	pol_claims_map_finish(&default_map);
	pol_claims_map_finish(&every_map);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	cg_errors_t errs;
	cg_jdoc_t *doc;

	(void)argc;
	(void)argv;
	cg_errors_init(&errs);
	FUZZ_CHECK(pol_claims_map_compile(&default_map, NULL, NULL, &errs));
	doc = cg_jdoc_parse("fuzz-claims.json", every_source, sizeof(every_source) - 1, &errs);
	FUZZ_CHECK(doc != NULL);
	FUZZ_CHECK(pol_claims_map_compile(&every_map, doc,
	                                  json_object_get(cg_jdoc_root(doc), "claims"), &errs));
	FUZZ_CHECK(errs.count == 0);
	cg_jdoc_destroy(doc);
	cg_errors_finish(&errs);
	atexit(maps_finish);
	return 0;
}

/* What pol_claims.h promises about a value handed to the policy. */
static void check_clean(const char *s)
{
	size_t len;

	if (!s)
		return;
	len = strlen(s);
	FUZZ_CHECK(len > 0 && len <= CLAIM_MAX_LEN);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		FUZZ_CHECK(c >= 0x20 && c != 0x7f);
		/* C1 controls U+0080..U+009F are UTF-8 C2 80..C2 9F */
		if (c == 0xc2 && i + 1 < len)
			FUZZ_CHECK((unsigned char)s[i + 1] > 0x9f);
		FUZZ_CHECK(c != 0xc0 && c != 0xc1 && c < 0xf5);
	}
}

static bool same_string(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void extract(const pol_claims_map_t *map, X509 *cert)
{
	pol_claims_t claims, copy;

	if (!pol_claims_extract(map, cert, &claims))
		return; /* allocation failure only */
	check_clean(claims.user);
	check_clean(claims.device_id);
	FUZZ_CHECK((claims.groups == NULL) == (claims.n_groups == 0));
	for (size_t i = 0; i < claims.n_groups; i++) {
		FUZZ_CHECK(claims.groups[i] != NULL);
		check_clean(claims.groups[i]);
	}
	FUZZ_CHECK(claims.device_trust >= POL_TRUST_NONE && claims.device_trust <= POL_TRUST_HIGH);

	if (pol_claims_copy(&copy, &claims)) {
		FUZZ_CHECK(same_string(copy.user, claims.user));
		FUZZ_CHECK(same_string(copy.device_id, claims.device_id));
		FUZZ_CHECK(copy.n_groups == claims.n_groups);
		for (size_t i = 0; i < claims.n_groups; i++)
			FUZZ_CHECK(strcmp(copy.groups[i], claims.groups[i]) == 0);
		FUZZ_CHECK(copy.device_trust == claims.device_trust);
		pol_claims_finish(&copy);
	}
	pol_claims_finish(&claims);
	FUZZ_CHECK(claims.user == NULL && claims.groups == NULL && claims.n_groups == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *der = fuzz_copy(data, size);
	const unsigned char *p = der;
	X509 *cert;

	if (size > 64 * 1024 || size > (size_t)INT32_MAX) {
		free(der);
		return 0;
	}
	cert = d2i_X509(NULL, &p, (long)size);
	if (cert) {
		extract(&default_map, cert);
		extract(&every_map, cert);
		X509_free(cert);
	}
	free(der);
	return 0;
}
