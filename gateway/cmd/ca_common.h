/* What the `certgate ca` subcommands share (private to cmd/): messages in
 * one shape, option parsing, the CA folder (ca.crt, ca.key, chain.crt)
 * and writing a certificate with its key. See ca.c for the folder's
 * layout. */
#ifndef GW_CA_COMMON_H
#define GW_CA_COMMON_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define CA_DEFAULT_NAME              "certgate dev CA"
#define CA_DEFAULT_INTERMEDIATE_NAME "certgate dev intermediate CA"
#define CA_DEFAULT_TTL               "365d"
#define ISSUE_DEFAULT_TTL            "15m"
#define SERVER_DEFAULT_TTL           "90d"
#define CRL_DEFAULT_TTL              "7d"
#define CLOCK_SLACK_S                60   /* CA and server certs start a minute early */
#define RSA_MIN_BITS                 1024 /* weak on purpose: the weak-key test needs it */
#define RSA_MAX_BITS                 8192
#define MAX_TEXT_FILE                (16 * 1024 * 1024)

/* ---- messages: "certgate: ca SUB: ..." on stderr ------------------------- */

/* Prints the line and returns exit code 1. */
int ca_refuse(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like ca_refuse with OpenSSL's newest reason appended; empties its queue. */
int ca_refuse_ssl(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the line with a hint to --help and returns exit code 2. */
int ca_usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- files ---------------------------------------------------------------- */

bool ca_join_path(char *buf, size_t size, const char *dir, const char *name);
bool ca_suffix_path(char *buf, size_t size, const char *prefix, const char *suffix);
/* cg_file_write_atomic with the failure reported; 0 or 1. */
int ca_write(const char *sub, const char *path, mode_t mode, const void *data, size_t len);
/* A small text file as a string (*out NULL and 0 when the file is missing). */
int ca_read_text(const char *sub, const char *path, char **out);

/* ---- the CA folder --------------------------------------------------------- */

typedef struct ca {
	const char *dir;
	X509 *cert;
	EVP_PKEY *key;
} ca_t;

/* Loads DIR/ca.crt and DIR/ca.key and checks they belong together. */
int ca_load(const char *sub, const char *dir, ca_t *ca);
void ca_finish(ca_t *ca);
/* The CA's certificate followed by the rest of its chain: DIR/chain.crt if
 * it exists (an intermediate), else DIR/ca.crt. */
int ca_load_chain(const char *sub, const char *dir, STACK_OF(X509) * *out);
/* A PEM certificate file's first certificate. */
int ca_load_cert(const char *sub, const char *path, X509 **out);

/* Writes PREFIX.key (and PREFIX.pk8, DER, with pk8), then PREFIX.crt (leaf,
 * then DIR's chain with with_chain). The certificate goes last: a watcher
 * that sees a new certificate finds its key already in place. */
int ca_write_leaf(const char *sub, const char *dir, const char *prefix, X509 *cert, EVP_PKEY *key,
                  bool with_chain, bool pk8);

/* ---- options ---------------------------------------------------------------- */

enum {
	OPT_HELP = 256,
	OPT_DIR,
	OPT_NAME,
	OPT_TTL,
	OPT_PARENT,
	OPT_FORCE,
	OPT_OUT,
	OPT_USER,
	OPT_GROUP,
	OPT_DEVICE_ID,
	OPT_DEVICE_TRUST,
	OPT_BACKDATE,
	OPT_POSTDATE,
	OPT_EKU,
	OPT_CA_TRUE,
	OPT_RSA,
	OPT_DIGEST,
	OPT_CRITICAL_EXT,
	OPT_EXT,
	OPT_CN,
	OPT_NO_EMAIL,
	OPT_CHAIN,
	OPT_DNS,
	OPT_IP,
	OPT_CERT,
	OPT_CRL_TTL,
	OPT_PK8,
};

/* A repeatable option's values; capacity argc is always enough. */
typedef struct list {
	const char **items;
	int count;
} list_t;

bool ca_list_init(list_t *l, int argc);
/* Next option, or -1 at the end. Unknown options, missing arguments and
 * --help are turned into *rc (2, 2, 0) with the return value 0. */
int ca_next_option(const char *sub, int argc, char **argv, const struct option *opts,
                   void (*help)(void), int *rc);
/* A single-valued option given once. */
bool ca_set_once(const char *sub, const char **slot, const char *name, int *rc);
/* A DUR option in whole seconds (at least min_s). */
bool ca_parse_seconds(const char *sub, const char *name, const char *text, int64_t min_s,
                      int64_t *out, int *rc);
bool ca_parse_rsa_bits(const char *sub, const char *text, unsigned *out, int *rc);
/* Printable ASCII without spaces: what fits an IA5String SAN entry. */
bool ca_is_token(const char *s);

/* The subcommands (ca_issue.c, ca_crl.c) */
int ca_cmd_issue(int argc, char **argv);
int ca_cmd_revoke(int argc, char **argv);
int ca_cmd_crl(int argc, char **argv);

#endif
