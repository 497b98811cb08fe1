/* Device identity (LOGIN.md, "Device identity"): a device id is never taken
 * on the client's word. Each machine has a device key (ECDSA P-256); a
 * login request carries its public key and the device key's signature
 * (ecdsa-with-SHA256, DER, base64url) of the CSR's DER bytes, and the id
 * is derived from the key: "d-" + the first 26 characters of the
 * lowercase, unpadded base32 of SHA-256(SPKI DER). Shared by the issuer,
 * which verifies, and `certgate login`, which proves. */
#ifndef GW_DEVICE_ID_H
#define GW_DEVICE_ID_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#define GW_DEVICE_ID_LEN 28 /* "d-" + 26 */

/* The device id of key into out[GW_DEVICE_ID_LEN + 1]; false on failure. */
bool gw_device_id(EVP_PKEY *key, char out[GW_DEVICE_ID_LEN + 1]);

/* The proof: the device key's ECDSA-SHA256 signature of data, DER,
 * base64url without padding (malloc'd, NUL-terminated), or NULL. */
char *gw_device_prove(EVP_PKEY *device_key, const unsigned char *data, size_t len);

/* True when proof (base64url, as above) is device_key's valid signature of
 * data, and the key is ECDSA P-256. */
bool gw_device_proof_ok(EVP_PKEY *device_key, const unsigned char *data, size_t len,
                        const char *proof);

/* base64url without padding: encode (malloc'd, NUL-terminated) and decode
 * (malloc'd, *out_len bytes; NULL on a bad character or length). */
char *gw_b64url_encode(const unsigned char *data, size_t len);
unsigned char *gw_b64url_decode(const char *text, size_t text_len, size_t *out_len);

#endif
