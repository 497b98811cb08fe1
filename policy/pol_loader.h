/* Private to policy/: the state of one configuration load (loader_t), the
 * reading helpers every section shares (pol_loader.c) and the sections that
 * live in files of their own. Only the pol_config*.c files include it. */
#ifndef POL_LOADER_H
#define POL_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "cg_errors.h"
#include "cg_json.h"
#include "cg_strmap.h"
#include "pol_types.h"

#define PATH_BUF 512

typedef struct loader {
	cg_errors_t *errs;
	pol_snapshot_t *snap;
	bool failed;
	/* socket addresses of gateway.listen and services[].listen, for
	 * conflict checks (NULL entries when invalid) */
	struct sockaddr_storage *gw_listen_ss;
	bool *gw_listen_ok;
	struct sockaddr_storage *svc_listen_ss;
	bool *svc_listen_ok;
	bool *svc_listen_given;   /* the key is there, valid or not */
	cg_strmap_t *svc_by_name; /* exact service name -> index + 1 */
} loader_t;

/* pol_loader.c: errors and paths. An error at path "" names the document. */
void pol_ld_err(loader_t *ld, const cg_jdoc_t *doc, const char *path, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
const char *pol_ld_pcat(char *buf, const char *a, const char *b);      /* buf = a + b */
const char *pol_ld_pkey(char *buf, const char *path, const char *key); /* path.key */
const char *pol_ld_pidx(char *buf, const char *path, size_t i);        /* path[i] */
void pol_ld_check_keys(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                       const char *const *allowed);
bool pol_ld_has_control(const char *s);
char *pol_ld_xstrdup(loader_t *ld, const char *s);         /* reports out of memory */
void *pol_ld_xcalloc(loader_t *ld, size_t n, size_t size); /* reports out of memory */

/* pol_loader.c: file paths */
char *pol_ld_path_join(const char *dir, const char *rel);
char *pol_ld_path_dir(const char *path);
char *pol_ld_path_absolute(const char *path);
void pol_ld_file_finish(pol_file_t *file);

/* pol_loader.c: typed members of obj at path, each reported where wrong */
extern const char *const pol_ld_expect_hostport;
bool pol_ld_get_string(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                       const char *key, bool required, const char **out);
void pol_ld_get_file(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool required, const char *dir, pol_file_t *out);
void pol_ld_get_duration(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                         const char *key, bool allow_zero, uint64_t *out);
void pol_ld_get_uint(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, json_int_t min, json_int_t max, const char *expect,
                     uint32_t *out);
void pol_ld_get_bool(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                     const char *key, bool def, bool *out);
bool pol_ld_parse_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *value, const char *path,
                         cg_hostport_t *hp, struct sockaddr_storage *ss);
void pol_ld_get_string_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                            const char *key, bool (*check)(const char *), const char *expect,
                            char ***out, size_t *n);
void pol_ld_get_cidr_list(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *path,
                          const char *key, bool allow_empty, cg_cidr_t **out, size_t *n);

/* pol_config_services.c: the services section and the listen checks */
bool pol_ld_listen_conflict(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
void pol_ld_load_services(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr, const char *dir);
void pol_ld_check_listen_overlap(loader_t *ld, const cg_jdoc_t *doc, size_t n_gw);
void pol_ld_check_gateway_listen(loader_t *ld, const cg_jdoc_t *doc, const json_t *gw);

/* pol_config_issuer.c: the issuer section (after the gateway: its
 * certificate is the default) */
void pol_ld_load_issuer(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *dir);
void pol_ld_issuer_finish(pol_issuer_t *is);

/* pol_config_audit.c: the audit section */
void pol_ld_load_audit(loader_t *ld, const cg_jdoc_t *doc, const json_t *aud, const char *dir);

/* pol_config_state.c: the state section (where run-time state is kept) */
void pol_ld_load_state(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj, const char *dir);
void pol_ld_state_finish(pol_state_cfg_t *st);

/* pol_config_rules.c: the rules section (after the services: rules name them) */
void pol_ld_load_rules(loader_t *ld, const cg_jdoc_t *doc, const json_t *arr);

#endif
