/* The certificate signing request of a login (LOGIN.md): PEM PKCS#10 of at
 * most 8 KiB, its self-signature valid (the client holds the key), its key
 * ECDSA P-256/P-384 or RSA of at least 2048 bits. Its subject and
 * extensions are never read: the issuer writes every claim itself. */
#ifndef GW_CSR_H
#define GW_CSR_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define GW_CSR_MAX (8 * 1024)

/* The request's public key (new reference) and its DER (*der, OPENSSL_free,
 * for the device proof), or NULL with *reason one of "csr too large",
 * "csr not pem", "csr signature invalid", "csr key not allowed". */
EVP_PKEY *gw_csr_check(const char *pem, size_t len, unsigned char **der, size_t *der_len,
                       const char **reason);

#endif
