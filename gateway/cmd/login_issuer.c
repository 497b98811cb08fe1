/* certgate's issuer, the client side (see login_issuer.h). */
#include "cmd/login_issuer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "cg_file.h"
#include "tls/device_id.h"

#define MAX_OS_RELEASE (64 * 1024)
#define MAX_SCOPE      1024

static const char *const default_scopes[] = {"openid", "email", "profile", "groups", NULL};

/* --- GET /v1/login/config ----------------------------------------------------- */

void login_config_finish(login_config_t *cfg)
{
	free(cfg->idp_issuer);
	free(cfg->client_id);
	free(cfg->scope);
	free(cfg->cert_lifetime);
	memset(cfg, 0, sizeof(*cfg));
}

/* RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E */
static bool scope_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

static int join_scopes(const json_t *scopes, char **out, char *err, size_t errlen)
{
	char buf[MAX_SCOPE] = "";
	size_t n = 0;
	bool openid = false;
	for (size_t i = 0;; i++) {
		const char *s;
		if (scopes == NULL) {
			s = default_scopes[i];
		} else {
			if (i == json_array_size(scopes))
				break;
			s = json_string_value(json_array_get(scopes, i));
			if (s == NULL || !scope_token(s)) {
				snprintf(err, errlen,
				         "the issuer's login config: scopes[%zu] is not a "
				         "scope name",
				         i);
				return -1;
			}
		}
		if (s == NULL)
			break;
		openid = openid || strcmp(s, "openid") == 0;
		int w = snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "", s);
		if (w < 0 || (size_t)w >= sizeof(buf) - n) {
			snprintf(err, errlen, "the issuer's login config: too many scopes");
			return -1;
		}
		n += (size_t)w;
	}
	if (!openid) {
		snprintf(err, errlen, "the issuer's login config: the scopes lack \"openid\"");
		return -1;
	}
	*out = strdup(buf);
	return 0;
}

int login_config_fetch(const login_http_t *http, const char *issuer_url, login_config_t *out,
                       char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char url[2048], why[512];
	if ((size_t)snprintf(url, sizeof(url), "%s/v1/login/config", issuer_url) >= sizeof(url)) {
		snprintf(err, errlen, "--issuer: URL too long");
		return -1;
	}
	login_reply_t reply;
	if (login_http_get(http, url, &reply, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "cannot reach the issuer: %s", why);
		return -1;
	}
	int rc = -1;
	if (reply.status != 200 || reply.json == NULL) {
		login_reply_error(&reply, "error", "reason", why, sizeof(why));
		snprintf(err, errlen, "GET %s: %s%s", url, why,
		         reply.status == 200 ? " (not a JSON object)" : "");
		goto done;
	}
	const char *idp = login_json_str(reply.json, "issuer");
	const char *client_id = login_json_str(reply.json, "client_id");
	const char *lifetime = login_json_str(reply.json, "cert_lifetime");
	const json_t *scopes = json_object_get(reply.json, "scopes");
	if (!login_is_https_url(idp)) {
		snprintf(err, errlen,
		         "the issuer's login config has no https identity provider "
		         "(issuer)");
		goto done;
	}
	if (client_id == NULL || *client_id == '\0') {
		snprintf(err, errlen, "the issuer's login config has no client_id");
		goto done;
	}
	if (scopes != NULL && !json_is_array(scopes)) {
		snprintf(err, errlen, "the issuer's login config: scopes is not an array");
		goto done;
	}
	if (join_scopes(scopes, &out->scope, err, errlen) < 0)
		goto done;
	out->idp_issuer = strdup(idp);
	out->client_id = strdup(client_id);
	out->cert_lifetime = lifetime != NULL ? strdup(lifetime) : NULL;
	if (out->scope == NULL || out->idp_issuer == NULL || out->client_id == NULL ||
	    (lifetime != NULL && out->cert_lifetime == NULL)) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	rc = 0;
done:
	login_reply_finish(&reply);
	if (rc < 0)
		login_config_finish(out);
	return rc;
}

/* --- the platform ------------------------------------------------------------ */

/* PRETTY_NAME's value in os_release into out (quotes and escapes of the
 * shell-like syntax removed); false when absent. */
static bool pretty_name(const char *os_release, char *out, size_t len)
{
	for (const char *line = os_release; line != NULL && *line;) {
		const char *end = strchr(line, '\n');
		size_t n = end != NULL ? (size_t)(end - line) : strlen(line);
		static const char key[] = "PRETTY_NAME=";
		if (n >= sizeof(key) - 1 && strncmp(line, key, sizeof(key) - 1) == 0) {
			const char *v = line + sizeof(key) - 1, *stop = line + n;
			char quote = (*v == '"' || *v == '\'') ? *v++ : '\0';
			size_t o = 0;
			for (; v < stop && *v != quote && o + 1 < len; v++) {
				if (quote == '"' && *v == '\\' && v + 1 < stop)
					v++;
				out[o++] = *v;
			}
			out[o] = '\0';
			return o > 0;
		}
		line = end != NULL ? end + 1 : NULL;
	}
	return false;
}

void login_platform(const char *sysname, const char *release, const char *os_release,
                    char out[LOGIN_PLATFORM_MAX + 1])
{
	char pretty[256], raw[512];
	bool have = os_release != NULL && pretty_name(os_release, pretty, sizeof(pretty));
	snprintf(raw, sizeof(raw), "%s %s%s%s", sysname ? sysname : "", release ? release : "",
	         have ? " " : "", have ? pretty : "");
	size_t o = 0;
	for (const unsigned char *s = (const unsigned char *)raw; *s && o < LOGIN_PLATFORM_MAX;
	     s++) {
		char c = (*s >= 0x20 && *s < 0x7f) ? (char)*s : '?';
		if (c == ' ' && (o == 0 || out[o - 1] == ' '))
			continue; /* no leading or doubled spaces */
		out[o++] = c;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

void login_platform_here(char out[LOGIN_PLATFORM_MAX + 1])
{
	struct utsname u;
	char *os_release = NULL;
	size_t len = 0;
	if (uname(&u) < 0)
		memset(&u, 0, sizeof(u));
	if (cg_file_read("/etc/os-release", MAX_OS_RELEASE, &os_release, &len) < 0 &&
	    cg_file_read("/usr/lib/os-release", MAX_OS_RELEASE, &os_release, &len) < 0)
		os_release = NULL;
	login_platform(u.sysname, u.release, os_release, out);
	free(os_release);
}

/* --- POST /v1/login/certificate ------------------------------------------------ */

X509_REQ *login_csr_new(EVP_PKEY *key)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	bool ok = req != NULL && name != NULL && X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
	          X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                     (const unsigned char *)"certgate login", -1, -1,
	                                     0) == 1 &&
	          X509_REQ_set_subject_name(req, name) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
	          X509_REQ_sign(req, key, EVP_sha256()) > 0;
	X509_NAME_free(name);
	if (!ok) {
		X509_REQ_free(req);
		return NULL;
	}
	return req;
}

static char *bio_text(BIO *bio)
{
	char *data = NULL;
	long n = BIO_get_mem_data(bio, &data);
	char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (out != NULL) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
	}
	return out;
}

/* The request body: csr, device_key, device_proof, platform. */
static char *request_body(EVP_PKEY *key, EVP_PKEY *device_key, const char *platform)
{
	X509_REQ *req = login_csr_new(key);
	BIO *csr_bio = BIO_new(BIO_s_mem()), *dev_bio = BIO_new(BIO_s_mem());
	unsigned char *der = NULL;
	int der_len = req != NULL ? i2d_X509_REQ(req, &der) : -1;
	char *csr_pem = NULL, *dev_pem = NULL, *proof = NULL, *body = NULL;
	if (der_len <= 0 || csr_bio == NULL || dev_bio == NULL ||
	    PEM_write_bio_X509_REQ(csr_bio, req) != 1 ||
	    (device_key != NULL && PEM_write_bio_PUBKEY(dev_bio, device_key) != 1))
		goto done;
	csr_pem = bio_text(csr_bio);
	dev_pem = device_key != NULL ? bio_text(dev_bio) : NULL;
	proof = device_key != NULL ? gw_device_prove(device_key, der, (size_t)der_len) : NULL;
	if (csr_pem == NULL || (device_key != NULL && (dev_pem == NULL || proof == NULL)))
		goto done;
	json_t *obj = json_pack("{s:s, s:s*, s:s*, s:s*}", "csr", csr_pem, "device_key", dev_pem,
	                        "device_proof", proof, "platform", platform);
	body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
done:
	ERR_clear_error();
	X509_REQ_free(req);
	OPENSSL_free(der);
	BIO_free(csr_bio);
	BIO_free(dev_bio);
	free(csr_pem);
	free(dev_pem);
	free(proof);
	return body;
}

void login_issued_finish(login_issued_t *issued)
{
	X509_free(issued->cert);
	free(issued->cert_pem);
	free(issued->ca_pem);
	memset(issued, 0, sizeof(*issued));
}

/* Every certificate of a PEM text; false when none or anything else. */
static bool pem_certs_ok(const char *pem, X509 **first)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	int count = 0;
	X509 *x;
	while (bio != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (count++ == 0 && first != NULL)
			*first = x;
		else
			X509_free(x);
	}
	unsigned long e = ERR_peek_last_error();
	bool clean_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
	ERR_clear_error();
	BIO_free(bio);
	return count > 0 && clean_end;
}

static int issued_from_reply(const login_reply_t *reply, EVP_PKEY *key, login_issued_t *out,
                             char *err, size_t errlen)
{
	const char *cert = login_json_str(reply->json, "certificate");
	const char *ca = login_json_str(reply->json, "ca");
	if (cert == NULL || ca == NULL) {
		snprintf(err, errlen, "the issuer's reply lacks the certificate or the ca");
		return -1;
	}
	if (!pem_certs_ok(cert, &out->cert) || !pem_certs_ok(ca, NULL)) {
		snprintf(err, errlen, "the issuer's reply holds no readable PEM certificate%s",
		         out->cert != NULL ? " in ca" : "");
		return -1;
	}
	if (X509_check_private_key(out->cert, key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen,
		         "the issuer's certificate is not for this login's key: refused");
		return -1;
	}
	out->cert_pem = strdup(cert);
	out->ca_pem = strdup(ca);
	if (out->cert_pem == NULL || out->ca_pem == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int login_certificate_request(const login_http_t *http, const char *issuer_url,
                              const char *id_token, EVP_PKEY *key, EVP_PKEY *device_key,
                              const char *platform, login_issued_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	char url[2048], why[512];
	if ((size_t)snprintf(url, sizeof(url), "%s/v1/login/certificate", issuer_url) >=
	    sizeof(url)) {
		snprintf(err, errlen, "--issuer: URL too long");
		return -1;
	}
	char *body = request_body(key, device_key, platform);
	if (body == NULL) {
		snprintf(err, errlen, "cannot make the certificate request (CSR, device proof)");
		return -1;
	}
	login_reply_t reply;
	int rc = login_http_post(http, url, "application/json", body, id_token, &reply, why,
	                         sizeof(why));
	free(body);
	if (rc < 0) {
		snprintf(err, errlen, "cannot reach the issuer: %s", why);
		return -1;
	}
	rc = -1;
	if (reply.status == 201 || reply.status == 200) {
		rc = issued_from_reply(&reply, key, out, err, errlen);
	} else {
		const char *reason = login_json_str(reply.json, "reason");
		const char *error = login_json_str(reply.json, "error");
		char r[400], e[120];
		if (reason != NULL)
			snprintf(err, errlen, "the issuer refused: %s (HTTP %ld%s%s)",
			         login_printable(reason, r, sizeof(r)), reply.status,
			         error != NULL ? " " : "",
			         error != NULL ? login_printable(error, e, sizeof(e)) : "");
		else if (error != NULL)
			snprintf(err, errlen, "the issuer refused: %s (HTTP %ld)",
			         login_printable(error, e, sizeof(e)), reply.status);
		else
			snprintf(err, errlen, "the issuer answered HTTP %ld to POST %s",
			         reply.status, url);
	}
	login_reply_finish(&reply);
	if (rc < 0)
		login_issued_finish(out);
	return rc;
}
