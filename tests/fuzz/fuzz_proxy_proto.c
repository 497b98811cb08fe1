/* Fuzzes gateway/proxy_proto.c: gw_pp_parse over the input, and the
 * sans-IO contract the session relies on when it feeds the bytes of a
 * connection as they arrive:
 *   - every strict prefix of a complete header is NEED_MORE;
 *   - once OK, more bytes change nothing (same length, same addresses);
 *   - once INVALID, more bytes never make it valid;
 *   - OK never claims more bytes than it was given, nor more than
 *     GW_PP_MAX_HEADER; INVALID always says why.
 * Each parse gets an exactly-sized heap copy so reading past len is caught. */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "core/proxy_proto.h"

/* Longest input worth parsing: a v1 line is at most 107 bytes and a v2
 * header at most GW_PP_MAX_HEADER; what follows is payload. */
#define INTERESTING (GW_PP_MAX_HEADER + 64)

static gw_pp_status_t parse_exact(const uint8_t *data, size_t len, gw_pp_result_t *out)
{
	uint8_t *copy = fuzz_copy(data, len);
	gw_pp_status_t st = gw_pp_parse(copy, len, out);
	free(copy);
	return st;
}

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return memcmp(a, b, sizeof(struct sockaddr_in)) == 0;
	if (a->ss_family == AF_INET6)
		return memcmp(a, b, sizeof(struct sockaddr_in6)) == 0;
	return true;
}

static void check_result(gw_pp_status_t st, const gw_pp_result_t *r, size_t len)
{
	FUZZ_CHECK(st == GW_PP_NEED_MORE || st == GW_PP_OK || st == GW_PP_INVALID);
	if (st == GW_PP_INVALID)
		FUZZ_CHECK(r->error != NULL && r->error[0] != '\0');
	if (st != GW_PP_OK)
		return;
	FUZZ_CHECK(r->header_len > 0 && r->header_len <= len);
	FUZZ_CHECK(r->header_len <= GW_PP_MAX_HEADER);
	FUZZ_CHECK(r->has_address == 0 || r->has_address == 1);
	if (r->has_address) {
		FUZZ_CHECK(r->src.ss_family == AF_INET || r->src.ss_family == AF_INET6);
		FUZZ_CHECK(r->dst.ss_family == r->src.ss_family);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gw_pp_result_t whole, part;
	gw_pp_status_t st;

	if (size > INTERESTING)
		size = INTERESTING;
	st = parse_exact(data, size, &whole);
	check_result(st, &whole, size);

	/* The same bytes arriving in pieces: what each prefix says must agree
	 * with what the whole says. */
	bool invalid_seen = false;
	for (size_t k = 0; k < size; k++) {
		gw_pp_status_t pst = parse_exact(data, k, &part);
		check_result(pst, &part, k);
		if (invalid_seen)
			FUZZ_CHECK(pst == GW_PP_INVALID);
		invalid_seen = pst == GW_PP_INVALID;
		switch (st) {
		case GW_PP_NEED_MORE:
			FUZZ_CHECK(pst == GW_PP_NEED_MORE);
			break;
		case GW_PP_INVALID:
			FUZZ_CHECK(pst == GW_PP_NEED_MORE || pst == GW_PP_INVALID);
			break;
		case GW_PP_OK:
			if (k < whole.header_len) {
				FUZZ_CHECK(pst == GW_PP_NEED_MORE);
			} else {
				FUZZ_CHECK(pst == GW_PP_OK);
				FUZZ_CHECK(part.header_len == whole.header_len);
				FUZZ_CHECK(part.has_address == whole.has_address);
				if (whole.has_address) {
					FUZZ_CHECK(same_address(&part.src, &whole.src));
					FUZZ_CHECK(same_address(&part.dst, &whole.dst));
				}
			}
			break;
		}
	}
	return 0;
}
