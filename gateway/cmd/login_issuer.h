/* certgate's issuer as `certgate login` talks to it (LOGIN.md, "Issuer"):
 * GET /v1/login/config (which identity provider, client and scopes), and
 * POST /v1/login/certificate with the ID token as a Bearer token, a CSR
 * of a key made for this login, the device key's public half and its
 * proof over the CSR, and the platform. The certificate that comes back
 * must be for the CSR's key. */
#ifndef GW_LOGIN_ISSUER_H
#define GW_LOGIN_ISSUER_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cmd/login_http.h"

#define LOGIN_PLATFORM_MAX 128

typedef struct login_config {
	char *idp_issuer; /* the identity provider's issuer URL */
	char *client_id;
	char *scope;         /* the scopes, space-separated */
	char *cert_lifetime; /* as the issuer says it ("8h"), or NULL */
} login_config_t;

/* GET {issuer_url}/v1/login/config. 0, or -1 with why. */
int login_config_fetch(const login_http_t *http, const char *issuer_url, login_config_t *out,
                       char *err, size_t errlen) __attribute__((warn_unused_result));
void login_config_finish(login_config_t *cfg);

/* "Linux 6.1.0-18-amd64 Debian GNU/Linux 12 (bookworm)": the system name
 * and release (uname) and PRETTY_NAME of os_release (the text of
 * /etc/os-release; NULL or without it: left out). Printable ASCII only
 * (anything else becomes '?'), at most LOGIN_PLATFORM_MAX bytes; out must
 * hold LOGIN_PLATFORM_MAX + 1. */
void login_platform(const char *sysname, const char *release, const char *os_release,
                    char out[LOGIN_PLATFORM_MAX + 1]);
/* login_platform of this machine. */
void login_platform_here(char out[LOGIN_PLATFORM_MAX + 1]);

/* A PKCS#10 request signed by key (subject CN=certgate login: the issuer
 * writes every name itself). NULL on failure. */
X509_REQ *login_csr_new(EVP_PKEY *key);

typedef struct login_issued {
	X509 *cert;
	char *cert_pem; /* as the issuer sent it */
	char *ca_pem;
} login_issued_t;

/* POST {issuer_url}/v1/login/certificate. 0 with the certificate (checked:
 * PEM, for key; ca: PEM certificates), or -1 with the issuer's reason. */
int login_certificate_request(const login_http_t *http, const char *issuer_url,
                              const char *id_token, EVP_PKEY *key, EVP_PKEY *device_key,
                              const char *platform, login_issued_t *out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void login_issued_finish(login_issued_t *issued);

#endif
