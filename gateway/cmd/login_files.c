/* The login folder (see login_files.h).
 *
 * The device key is made once per machine and must never be replaced
 * behind the user's back (its id is what an administrator trusts): a new
 * key is written beside its final name and link()ed into place, which
 * fails if another login made one meanwhile — that one is then used. */
#include "cmd/login_files.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/objects.h>

#include "cg_duration.h"
#include "cg_file.h"
#include "cg_time.h"
#include "pol_claims.h"
#include "tls/pem_io.h"
#include "tls/x509_build.h"
#include "tls/x509_info.h"

#define MAX_LOGIN_JSON (256 * 1024)

/* --- the folder --------------------------------------------------------------- */

/* The length of path without its trailing slashes ("/" gives 0). */
static int trimmed(const char *path)
{
	size_t n = strlen(path);
	while (n > 0 && path[n - 1] == '/')
		n--;
	return n > 4096 ? 4096 : (int)n;
}

bool login_dir_resolve(const char *given, const char *xdg, const char *home, char *out, size_t len)
{
	int n;
	if (given != NULL && *given != '\0')
		n = snprintf(out, len, "%s", given);
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(out, len, "%.*s/certgate", trimmed(xdg), xdg);
	else if (home != NULL && home[0] == '/')
		n = snprintf(out, len, "%.*s/.config/certgate", trimmed(home), home);
	else
		return false;
	if (n < 0 || (size_t)n >= len)
		return false;
	/* "dir/" and "dir" are the same folder; keep file names clean */
	for (size_t i = (size_t)n; i > 1 && out[i - 1] == '/'; i--)
		out[i - 1] = '\0';
	return true;
}

bool login_dir_default(const char *given, char *out, size_t len)
{
	const char *home = getenv("HOME");
	if (home == NULL || *home == '\0') {
		struct passwd *pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : NULL;
	}
	return login_dir_resolve(given, getenv("XDG_CONFIG_HOME"), home, out, len);
}

bool login_dir_file(const char *dir, const char *name, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", dir, name);
	return n > 0 && (size_t)n < len;
}

int login_dir_make(const char *dir, char *err, size_t errlen)
{
	struct stat st;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s: not a folder", dir);
			return -1;
		}
		/* whoever may write here may swap ca.pem (and so pass for the
		 * gateway) or the key and certificate: only its owner (or root) */
		if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022) != 0) {
			snprintf(err, errlen,
			         "%s: the folder must be yours and not writable by others (it is "
			         "uid %ld, mode %04o): chmod go-w it, or use another --dir",
			         dir, (long)st.st_uid, (unsigned)(st.st_mode & 07777));
			return -1;
		}
		return 0;
	}
	char failed[4096];
	int rc = cg_file_mkdirs(dir, 0700, failed, sizeof(failed));
	if (rc == 0 && chmod(dir, 0700) < 0) /* whatever the umask did */
		rc = -errno;
	if (rc < 0) {
		snprintf(err, errlen, "cannot make the folder %s: %s",
		         rc == -ENAMETOOLONG ? dir : failed, strerror(-rc));
		return -1;
	}
	return 0;
}

/* --- the device key ----------------------------------------------------------- */

static bool is_p256(EVP_PKEY *key)
{
	char group[64];
	size_t n = 0;
	return EVP_PKEY_get_base_id(key) == EVP_PKEY_EC &&
	       EVP_PKEY_get_group_name(key, group, sizeof(group), &n) == 1 &&
	       strcmp(group, SN_X9_62_prime256v1) == 0;
}

static EVP_PKEY *load_device_key(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: not a regular file of this user: refused", path);
		return NULL;
	}
	if ((st.st_mode & 077) != 0) {
		snprintf(err, errlen, "%s: mode %04o lets others read the device key: chmod 600 it",
		         path, (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	char why[256];
	EVP_PKEY *key = gw_pem_read_key(path, why, sizeof(why));
	if (key == NULL) {
		snprintf(err, errlen, "%s: %s", path, why);
		return NULL;
	}
	if (!is_p256(key)) {
		EVP_PKEY_free(key);
		snprintf(err, errlen, "%s: not an ECDSA P-256 key", path);
		return NULL;
	}
	return key;
}

EVP_PKEY *login_device_key(const char *dir, bool *created, char *err, size_t errlen)
{
	char path[4096], fresh[4200];
	*created = false;
	if (!login_dir_file(dir, LOGIN_DEVICE_KEY_FILE, path, sizeof(path))) {
		snprintf(err, errlen, "%s: path too long", dir);
		return NULL;
	}
	if (access(path, F_OK) == 0 || errno != ENOENT)
		return load_device_key(path, err, errlen);
	EVP_PKEY *key = gw_x509_key_new(0);
	size_t len = 0;
	char *pem = key != NULL ? gw_pem_key(key, &len) : NULL;
	EVP_PKEY_free(key);
	if (pem == NULL) {
		snprintf(err, errlen, "cannot make a device key");
		return NULL;
	}
	snprintf(fresh, sizeof(fresh), "%s.%ld", path, (long)getpid());
	int rc = cg_file_write_atomic(fresh, 0600, pem, len);
	OPENSSL_clear_free(pem, len);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", fresh, strerror(-rc));
		return NULL;
	}
	bool lost_race = link(fresh, path) < 0;
	int link_errno = errno;
	unlink(fresh);
	if (lost_race && link_errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", path, strerror(link_errno));
		return NULL;
	}
	*created = !lost_race;
	return load_device_key(path, err, errlen);
}

/* --- login.json ---------------------------------------------------------------- */

static const char *const known_keys[] = {"issuer",    "issuer_ca",    "user",      "groups",
                                         "device_id", "device_trust", "not_after", NULL};

void login_record_finish(login_record_t *r)
{
	free(r->issuer);
	free(r->issuer_ca);
	free(r->user);
	for (size_t i = 0; i < r->n_groups; i++)
		free(r->groups[i]);
	free(r->groups);
	free(r->device_id);
	free(r->device_trust);
	free(r->not_after);
	json_decref(r->extra);
	memset(r, 0, sizeof(*r));
}

static bool set_str(json_t *obj, const char *key, const char *value)
{
	return value == NULL || json_object_set_new(obj, key, json_string(value)) == 0;
}

json_t *login_record_to_json(const login_record_t *r)
{
	json_t *obj = json_object(), *groups = json_array();
	bool ok = obj != NULL && groups != NULL;
	for (size_t i = 0; ok && i < r->n_groups; i++)
		ok = json_array_append_new(groups, json_string(r->groups[i])) == 0;
	ok = ok && set_str(obj, "issuer", r->issuer) && set_str(obj, "issuer_ca", r->issuer_ca) &&
	     set_str(obj, "user", r->user) && json_object_set(obj, "groups", groups) == 0 &&
	     set_str(obj, "device_id", r->device_id) &&
	     set_str(obj, "device_trust", r->device_trust) &&
	     set_str(obj, "not_after", r->not_after);
	const char *key;
	json_t *value;
	if (ok && r->extra != NULL)
		json_object_foreach(r->extra, key, value)
		{
			if (json_object_get(obj, key) == NULL &&
			    json_object_set(obj, key, value) != 0) {
				ok = false;
				break;
			}
		}
	json_decref(groups);
	if (!ok) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/* A string member into *out (NULL when absent). */
static bool get_str(const json_t *obj, const char *key, char **out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_string(v)) {
		snprintf(err, errlen, "login.json: %s: expected a string", key);
		return false;
	}
	*out = strdup(json_string_value(v));
	if (*out == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

static bool is_known(const char *key)
{
	for (size_t i = 0; known_keys[i] != NULL; i++)
		if (strcmp(known_keys[i], key) == 0)
			return true;
	return false;
}

int login_record_from_json(const json_t *json, login_record_t *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	if (!json_is_object(json)) {
		snprintf(err, errlen, "login.json: expected an object");
		return -1;
	}
	const json_t *groups = json_object_get(json, "groups");
	if (groups != NULL && !json_is_array(groups)) {
		snprintf(err, errlen, "login.json: groups: expected an array of strings");
		return -1;
	}
	if (!get_str(json, "issuer", &r->issuer, err, errlen) ||
	    !get_str(json, "issuer_ca", &r->issuer_ca, err, errlen) ||
	    !get_str(json, "user", &r->user, err, errlen) ||
	    !get_str(json, "device_id", &r->device_id, err, errlen) ||
	    !get_str(json, "device_trust", &r->device_trust, err, errlen) ||
	    !get_str(json, "not_after", &r->not_after, err, errlen))
		goto fail;
	size_t n = json_array_size(groups);
	r->groups = calloc(n + 1, sizeof(*r->groups));
	if (r->groups == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *g = json_array_get(groups, i);
		if (!json_is_string(g)) {
			snprintf(err, errlen, "login.json: groups[%zu]: expected a string", i);
			goto fail;
		}
		if ((r->groups[i] = strdup(json_string_value(g))) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		r->n_groups++;
	}
	r->extra = json_object();
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)json, key, value)
	{
		if (r->extra == NULL ||
		    (!is_known(key) && json_object_set(r->extra, key, value) != 0)) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	return 0;
fail:
	login_record_finish(r);
	return -1;
}

int login_record_load(const char *dir, login_record_t *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	char path[4096], *text = NULL;
	size_t len = 0;
	if (!login_dir_file(dir, LOGIN_JSON_FILE, path, sizeof(path))) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -1;
	}
	int rc = cg_file_read(path, MAX_LOGIN_JSON, &text, &len);
	if (rc == -ENOENT)
		return 1;
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return -1;
	}
	json_error_t jerr;
	json_t *json = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (json == NULL) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		return -1;
	}
	char why[256];
	rc = login_record_from_json(json, r, why, sizeof(why));
	json_decref(json);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	return 0;
}

bool login_record_from_cert(login_record_t *r, X509 *cert)
{
	pol_claims_map_t map;
	cg_errors_t errs;
	cg_errors_init(&errs);
	bool ok = pol_claims_map_compile(&map, NULL, NULL, &errs);
	cg_errors_finish(&errs);
	if (!ok)
		return false;
	pol_claims_t claims;
	ok = pol_claims_extract(&map, cert, &claims);
	pol_claims_map_finish(&map);
	if (!ok)
		return false;
	free(r->user);
	free(r->device_id);
	free(r->device_trust);
	free(r->not_after);
	for (size_t i = 0; i < r->n_groups; i++)
		free(r->groups[i]);
	free(r->groups);
	r->user = claims.user;
	r->groups = claims.groups;
	r->n_groups = claims.n_groups;
	r->device_id = claims.device_id;
	claims.user = claims.device_id = NULL;
	claims.groups = NULL;
	claims.n_groups = 0;
	r->device_trust = claims.device_trust != POL_TRUST_NONE
	                          ? strdup(pol_trust_name(claims.device_trust))
	                          : NULL;
	char when[CG_RFC3339_LEN];
	cg_rfc3339_ms(gw_cert_not_after_ms(cert), when);
	r->not_after = strdup(when);
	pol_claims_finish(&claims);
	return r->not_after != NULL &&
	       (claims.device_trust == POL_TRUST_NONE || r->device_trust != NULL);
}

void login_human_duration(int64_t ms, char *out, size_t len)
{
	uint64_t v = ms > 0 ? (uint64_t)ms : 0;
	v = v >= 3600 * 1000 ? v / 60000 * 60000 : v / 1000 * 1000;
	cg_duration_format(v, out, len);
}

void login_record_print(FILE *out, const login_record_t *r, int64_t not_after_ms, int64_t now_ms)
{
	fprintf(out, "user:    %s\ngroups:  ", r->user != NULL ? r->user : "(none)");
	for (size_t i = 0; i < r->n_groups; i++)
		fprintf(out, "%s%s", i ? ", " : "", r->groups[i]);
	char left[32];
	login_human_duration(not_after_ms > now_ms ? not_after_ms - now_ms : now_ms - not_after_ms,
	                     left, sizeof(left));
	fprintf(out, "%s\ndevice:  %s\ntrust:   %s\nexpires: %s (%s%s%s)\n",
	        r->n_groups ? "" : "(none)", r->device_id != NULL ? r->device_id : "(none)",
	        r->device_trust != NULL ? r->device_trust : "(none)",
	        r->not_after != NULL ? r->not_after : "?",
	        not_after_ms > now_ms ? "in " : "expired ", left,
	        not_after_ms > now_ms ? "" : " ago");
}

/* --- writing a login --------------------------------------------------------------- */

static int write_file(const char *dir, const char *name, mode_t mode, const void *data, size_t len,
                      char *err, size_t errlen)
{
	char path[4096];
	if (!login_dir_file(dir, name, path, sizeof(path))) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -1;
	}
	int rc = cg_file_write_atomic(path, mode, data, len);
	if (rc < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
		return -1;
	}
	return 0;
}

int login_files_write(const char *dir, EVP_PKEY *key, const char *cert_pem, const char *ca_pem,
                      const login_record_t *r, char *err, size_t errlen)
{
	size_t pem_len = 0, der_len = 0;
	char *pem = gw_pem_key(key, &pem_len);
	unsigned char *der = gw_der_key(key, &der_len);
	json_t *json = login_record_to_json(r);
	char *text = json != NULL ? json_dumps(json, JSON_INDENT(2)) : NULL;
	json_decref(json);
	int rc = -1;
	if (pem == NULL || der == NULL || text == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	size_t text_len = strlen(text);
	char *line = realloc(text, text_len + 2); /* json_dumps ends without a newline */
	if (line == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	text = line;
	text[text_len++] = '\n';
	text[text_len] = '\0';
	if (write_file(dir, LOGIN_CA_FILE, 0644, ca_pem, strlen(ca_pem), err, errlen) < 0 ||
	    write_file(dir, LOGIN_KEY_FILE, 0600, pem, pem_len, err, errlen) < 0 ||
	    write_file(dir, LOGIN_PK8_FILE, 0600, der, der_len, err, errlen) < 0 ||
	    write_file(dir, LOGIN_CERT_FILE, 0644, cert_pem, strlen(cert_pem), err, errlen) < 0 ||
	    write_file(dir, LOGIN_JSON_FILE, 0600, text, text_len, err, errlen) < 0)
		goto done;
	rc = 0;
done:
	if (pem != NULL)
		OPENSSL_clear_free(pem, pem_len);
	if (der != NULL)
		OPENSSL_clear_free(der, der_len);
	free(text);
	return rc;
}
