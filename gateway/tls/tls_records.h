/* TLS 1.3 records without OpenSSL's SSL object (RFC 8446 §5, §7.3, §4.6.3).
 *
 * Once a TLS 1.3 handshake is over, a connection needs little more than
 * two AEAD keys, two IVs and two sequence numbers. OpenSSL 3's SSL object
 * holds some 18 KiB per idle connection; this holds about 2. The engine
 * (tls_engine.h) hands a finished server-side connection over to these
 * functions and frees the SSL; the caller sees the same API.
 *
 * Suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
 * TLS_CHACHA20_POLY1305_SHA256 (every TLS 1.3 suite certgate negotiates). */
#ifndef GW_TLS_RECORDS_H
#define GW_TLS_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_REC_HEADER     5
#define GW_REC_TAG        16
#define GW_REC_MAX_PLAIN  16384                            /* 2^14 */
#define GW_REC_MAX_CIPHER (GW_REC_MAX_PLAIN + 256)         /* record body limit */
#define GW_REC_OVERHEAD   (GW_REC_HEADER + 1 + GW_REC_TAG) /* per sealed record */

/* Record content types. */
#define GW_REC_ALERT       21
#define GW_REC_HANDSHAKE   22
#define GW_REC_APPLICATION 23

/* A write key is replaced (KeyUpdate) after this many records, far below
 * AES-GCM's limit of 2^24.5 per key. */
#define GW_REC_UPDATE_AFTER (UINT64_C(1) << 23)

typedef struct gw_records gw_records_t;

/* Secret length (the suite's hash) for a TLS 1.3 suite's protocol id
 * (0x1301...), 0 when not supported here. */
size_t gw_records_secret_len(uint16_t suite);

/* Keys from the application traffic secrets; NULL when out of memory or the
 * suite is unsupported. The secrets are copied (for key updates). */
gw_records_t *gw_records_new(uint16_t suite, const uint8_t *read_secret,
                             const uint8_t *write_secret, size_t secret_len);
void gw_records_free(gw_records_t *r); /* wipes the keys; accepts NULL */

/* The whole length (header included) of the record starting at data, from
 * its header: 0 while fewer than 5 bytes are there, -1 when the header is
 * not that of a protected TLS 1.3 record or announces too much. */
ssize_t gw_records_length(const uint8_t *data, size_t len);

/* Opens the whole record rec (rec_len bytes, header included, as
 * gw_records_length said) into out, which has room for rec_len - 21 bytes.
 * Sets *type and *content_len (padding and type removed). False when the
 * record does not authenticate or is malformed: *why says which. */
bool gw_records_open(gw_records_t *r, const uint8_t *rec, size_t rec_len, uint8_t *out,
                     uint8_t *type, size_t *content_len, const char **why);

/* Seals len (≤ GW_REC_MAX_PLAIN) bytes of content type into out, which has
 * room for len + GW_REC_OVERHEAD. Returns the bytes written, 0 on failure. */
size_t gw_records_seal(gw_records_t *r, uint8_t type, const uint8_t *data, size_t len,
                       uint8_t *out);

/* Moves a direction to its next traffic secret (KeyUpdate). */
bool gw_records_update_read(gw_records_t *r);
bool gw_records_update_write(gw_records_t *r);

/* True when the write key has sealed GW_REC_UPDATE_AFTER records. */
bool gw_records_write_due(const gw_records_t *r);

#endif
