/* PEM and DER files of certificates, keys and CRLs: read from a path,
 * written to memory (for cg_file_write_atomic). Errors are one phrase for
 * "PATH: phrase" lines: "No such file or directory", "no certificate
 * found", "cannot read private key: <OpenSSL's reason>". Keys are never
 * read with a passphrase prompt (a prompt inside a script hangs it). */
#ifndef GW_PEM_IO_H
#define GW_PEM_IO_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Every certificate of the PEM file, in order; at least one. NULL with the
 * phrase in err. The caller frees with sk_X509_pop_free(.., X509_free). */
STACK_OF(X509) * gw_pem_read_certs(const char *path, char *err, size_t errlen);
/* The first certificate of the PEM file. */
X509 *gw_pem_read_cert(const char *path, char *err, size_t errlen);
/* A PEM private key (PKCS#8 or traditional, unencrypted). */
EVP_PKEY *gw_pem_read_key(const char *path, char *err, size_t errlen);

/* Memory images (malloc'd, *len bytes, NUL after them for PEM), NULL when
 * out of memory: certificates as PEM, a private key as PEM PKCS#8 ("PRIVATE
 * KEY", what libpq and the gateway load) or as DER PKCS#8 (what pgjdbc
 * loads), a CRL as PEM. Key images are secrets: OPENSSL_clear_free(p,
 * len) them. */
char *gw_pem_certs(const STACK_OF(X509) * certs, size_t *len);
char *gw_pem_key(EVP_PKEY *key, size_t *len);
unsigned char *gw_der_key(EVP_PKEY *key, size_t *len);
char *gw_pem_crl(X509_CRL *crl, size_t *len);

#endif
