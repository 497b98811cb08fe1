/* The login folder (LOGIN.md, "The client"): where `certgate login` writes
 * and `certgate status` / `certgate connect` read. DIR is --dir, else
 * $XDG_CONFIG_HOME/certgate, else ~/.config/certgate, made 0700. It holds
 * the device key (made once per machine), the login key in PEM and DER
 * PKCS#8, the login certificate, the CA bundle, and login.json (what the
 * last login said, and where it logged in, for the next one). */
#ifndef GW_LOGIN_FILES_H
#define GW_LOGIN_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#define LOGIN_CERT_FILE       "login-cert.pem"
#define LOGIN_KEY_FILE        "login-key.pem"
#define LOGIN_PK8_FILE        "login-key.pk8"
#define LOGIN_CA_FILE         "ca.pem"
#define LOGIN_JSON_FILE       "login.json"
#define LOGIN_DEVICE_KEY_FILE "device-key.pem"
/* login.json's member naming the gateway (HOST:PORT) that certgate services
 * and certgate connect use when not given --gateway (certgate login
 * --gateway writes it; other logins keep it) */
#define LOGIN_GATEWAY_KEY "gateway"

/* The folder: given when not NULL; else xdg + "/certgate" when xdg is an
 * absolute path (the XDG spec ignores a relative one); else home +
 * "/.config/certgate". False when there is none (no usable home) or it
 * does not fit len. */
bool login_dir_resolve(const char *given, const char *xdg, const char *home, char *out, size_t len);
/* login_dir_resolve with $XDG_CONFIG_HOME and $HOME (or the password
 * database's home when HOME is unset). */
bool login_dir_default(const char *given, char *out, size_t len);
/* out = dir + "/" + name; false when it does not fit. */
bool login_dir_file(const char *dir, const char *name, char *out, size_t len);
/* Makes the folder (and its parents) 0700 when it is missing. 0, or -1. */
int login_dir_make(const char *dir, char *err, size_t errlen) __attribute__((warn_unused_result));

/* The device key DIR/device-key.pem: loaded, or made (ECDSA P-256, 0600)
 * when missing (*created set). Refused when others may read it, when it is
 * not the user's, or not P-256. NULL with why in err. */
EVP_PKEY *login_device_key(const char *dir, bool *created, char *err, size_t errlen);

/* login.json */
typedef struct login_record {
	char *issuer;    /* the certgate issuer URL logged in at */
	char *issuer_ca; /* the --ca bundle used then (absolute), or NULL */
	char *user;
	char **groups;
	size_t n_groups;
	char *device_id;    /* NULL without a device claim */
	char *device_trust; /* NULL without a trust claim */
	char *not_after;    /* RFC 3339 */
	json_t *extra;      /* other members (e.g. "gateway"), kept as they are */
} login_record_t;

json_t *login_record_to_json(const login_record_t *r);
/* From a JSON object: the known members must have their types; others go
 * to extra. 0, or -1 with why (r left empty). */
int login_record_from_json(const json_t *json, login_record_t *r, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void login_record_finish(login_record_t *r);
/* DIR/login.json: 0 loaded, 1 missing (r empty), -1 unreadable (err). */
int login_record_load(const char *dir, login_record_t *r, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* The claims and notAfter of a login certificate into r's user, groups,
 * device_id, device_trust and not_after (replaced). False when out of
 * memory. */
bool login_record_from_cert(login_record_t *r, X509 *cert) __attribute__((warn_unused_result));

/* "8h", "59m30s", "45s": how long ms is, to the minute above an hour. */
void login_human_duration(int64_t ms, char *out, size_t len);
/* The record as "key: value" lines (user, groups, device, trust,
 * expires with how long from now_ms until not_after_ms). */
void login_record_print(FILE *out, const login_record_t *r, int64_t not_after_ms, int64_t now_ms);

/* Writes a login into DIR: ca.pem, login-key.pem and login-key.pk8 (0600),
 * then login-cert.pem — the certificate after its key: certgate connect
 * watches it and must never find a certificate without its key — then
 * login.json. Each file atomically. 0, or -1 with why. */
int login_files_write(const char *dir, EVP_PKEY *key, const char *cert_pem, const char *ca_pem,
                      const login_record_t *r, char *err, size_t errlen)
        __attribute__((warn_unused_result));

#endif
