/* Fuzzes gateway/tls_records.c, the record layer a live TLS 1.3 session
 * runs on once OpenSSL is freed. Input: byte 0 picks the suite (and a
 * second byte the mode), then:
 *   mode 0, raw: the bytes are records from an attacker without the keys.
 *     gw_records_length never claims more than it was given, and
 *     gw_records_open (on an exactly-sized copy) never accepts anything.
 *   mode 1, sealed: the bytes are (type, length, content) chunks that a
 *     peer with the keys seals; every record opens to what was sealed, in
 *     order, with any KeyUpdate applied on both sides between records; a
 *     flipped bit anywhere in a record makes it fail to open.
 * Keys come from fixed secrets: finding a forgery would mean breaking the
 * AEAD, so mode 0 exercises the framing and failure paths. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tls/tls_records.h"

static const uint16_t suite_ids[] = {0x1301, 0x1302, 0x1303};

static void raw(gw_records_t *rx, const uint8_t *data, size_t size)
{
	static uint8_t out[GW_REC_MAX_CIPHER];
	while (size > 0) {
		uint8_t *copy = fuzz_copy(data, size);
		ssize_t n = gw_records_length(copy, size);
		FUZZ_CHECK(n >= -1);
		if (n <= 0 || (size_t)n > size) {
			free(copy);
			return;
		}
		FUZZ_CHECK(n >= GW_REC_HEADER + GW_REC_TAG + 1 && n <= GW_REC_HEADER + GW_REC_MAX_CIPHER);
		uint8_t *rec = fuzz_copy(copy, (size_t)n);
		uint8_t type = 0;
		size_t len = 0;
		const char *why = NULL;
		FUZZ_CHECK(!gw_records_open(rx, rec, (size_t)n, out, &type, &len, &why));
		FUZZ_CHECK(why != NULL && why[0] != '\0');
		free(rec);
		free(copy);
		data += n;
		size -= (size_t)n;
	}
}

static void sealed(gw_records_t *tx, gw_records_t *rx, const uint8_t *data, size_t size)
{
	static uint8_t rec[GW_REC_MAX_PLAIN + GW_REC_OVERHEAD], out[GW_REC_MAX_CIPHER],
	        content[GW_REC_MAX_PLAIN];
	while (size >= 3) {
		uint8_t type = data[0];
		size_t len = ((size_t)data[1] << 8 | data[2]) % (GW_REC_MAX_PLAIN + 1);
		data += 3;
		size -= 3;
		/* the content: the input's next bytes, repeated as needed */
		for (size_t i = 0; i < len; i++)
			content[i] = size > 0 ? data[i % size] : (uint8_t)i;
		size_t n = gw_records_seal(tx, type, content, len, rec);
		FUZZ_CHECK(n == len + GW_REC_OVERHEAD);
		FUZZ_CHECK(gw_records_length(rec, n) == (ssize_t)n);
		FUZZ_CHECK(gw_records_length(rec, GW_REC_HEADER - 1) == 0);
		bool flip = size > 0 && (data[0] & 0x80) != 0;
		if (flip) {
			/* one bit, anywhere after the header's type and version */
			size_t at = 3 + (size_t)data[0] % (n - 3);
			rec[at] ^= (uint8_t)(1u << (data[0] & 7));
			ssize_t m = gw_records_length(rec, n);
			uint8_t t = 0;
			size_t got = 0;
			const char *why = NULL;
			if (m == (ssize_t)n)
				FUZZ_CHECK(!gw_records_open(rx, rec, n, out, &t, &got, &why));
			return; /* the receiver's sequence is now behind: stop here */
		}
		uint8_t *copy = fuzz_copy(rec, n);
		uint8_t t = 0;
		size_t got = 0;
		const char *why = NULL;
		bool ok = gw_records_open(rx, copy, n, out, &t, &got, &why);
		free(copy);
		/* a zero type is padding: the record has no content type */
		if (type == 0) {
			FUZZ_CHECK(!ok || got < len);
			return;
		}
		FUZZ_CHECK(ok);
		FUZZ_CHECK(t == type && got == len && memcmp(out, content, len) == 0);
		if (type == GW_REC_HANDSHAKE && len == 5 && content[0] == 24) {
			FUZZ_CHECK(gw_records_update_write(tx));
			FUZZ_CHECK(gw_records_update_read(rx));
		}
		size_t used = len < size ? len : size;
		data += used;
		size -= used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint16_t suite = suite_ids[data[0] % 3];
	bool mode_sealed = (data[1] & 1) != 0;
	data += 2;
	size -= 2;
	uint8_t a[48], b[48];
	memset(a, 0x11, sizeof(a));
	memset(b, 0x22, sizeof(b));
	size_t secret_len = gw_records_secret_len(suite);
	FUZZ_CHECK(secret_len == 32 || secret_len == 48);
	gw_records_t *tx = gw_records_new(suite, b, a, secret_len);
	gw_records_t *rx = gw_records_new(suite, a, b, secret_len);
	FUZZ_CHECK(tx != NULL && rx != NULL);
	if (mode_sealed)
		sealed(tx, rx, data, size);
	else
		raw(rx, data, size);
	gw_records_free(tx);
	gw_records_free(rx);
	return 0;
}
