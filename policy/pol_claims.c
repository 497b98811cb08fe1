/* Claims: compiling the "claims" map of the configuration (where each claim
 * is read from) and extracting the claims from a verified login certificate.
 *
 * Data flow: config JSON -> pol_claims_map_t (ordered source lists, OIDs
 * resolved once at load) -> per connection pol_claims_extract walks the
 * sources of each claim in order; the first source that yields a usable value
 * wins. Values that are not clean UTF-8 text are never handed to the policy:
 * a NUL or a control character in a name is how certificate spoofing starts. */
#include "pol_claims.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

/* ---------------------------------------------------------------------- */
/* Compiling the map                                                        */

static const char *const default_user[] = {"san:email", "subject:CN"};
static const char *const default_groups[] = {"subject:OU"};
static const char *const default_device_id[] = {"san:uri:urn:certgate:device:"};
static const char *const default_device_trust[] = {"san:uri:urn:certgate:trust:"};

static void source_finish(pol_source_t *src)
{
	free(src->text);
	free(src->arg);
	ASN1_OBJECT_free(src->obj);
	memset(src, 0, sizeof(*src));
}

static void sources_finish(pol_sources_t *list)
{
	for (size_t i = 0; i < list->count; i++)
		source_finish(&list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

/* A dotted OID: digits separated by single dots, at least two arcs. */
static bool is_dotted_oid(const char *s)
{
	size_t arcs = 0;
	const char *p = s;

	while (*p) {
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
		arcs++;
		if (*p == '.') {
			p++;
			if (*p == '\0')
				return false;
		} else if (*p != '\0') {
			return false;
		}
	}
	return arcs >= 2;
}

/* Parses one source. On a syntax error returns false with *msg set to a
 * static description; *oom is set on allocation failure. */
static bool source_parse(const char *text, pol_source_t *out, const char **msg, bool *oom)
{
	memset(out, 0, sizeof(*out));
	*oom = false;
	*msg = NULL;

	if (strncmp(text, "subject:", 8) == 0) {
		const char *attr = text + 8;
		if (*attr == '\0') {
			*msg = "expected a subject attribute after \"subject:\" (CN, OU, O, ... or "
			       "a "
			       "dotted OID)";
			return false;
		}
		out->kind = POL_SRC_SUBJECT;
		out->obj = OBJ_txt2obj(attr, 0);
		if (!out->obj || OBJ_obj2nid(out->obj) == NID_undef) {
			/* an unregistered OID is fine in its dotted form */
			if (!out->obj || !is_dotted_oid(attr)) {
				ASN1_OBJECT_free(out->obj);
				out->obj = NULL;
				*msg = "unknown subject attribute (expected a short name like CN, "
				       "OU, O "
				       "or a dotted OID)";
				return false;
			}
		}
		out->arg = strdup(attr);
	} else if (strcmp(text, "san:email") == 0) {
		out->kind = POL_SRC_SAN_EMAIL;
	} else if (strcmp(text, "san:dns") == 0) {
		out->kind = POL_SRC_SAN_DNS;
	} else if (strncmp(text, "san:uri:", 8) == 0) {
		const char *prefix = text + 8;
		if (*prefix == '\0') {
			*msg = "expected a URI prefix after \"san:uri:\"";
			return false;
		}
		out->kind = POL_SRC_SAN_URI;
		out->arg = strdup(prefix);
	} else if (strncmp(text, "ext:", 4) == 0) {
		const char *oid = text + 4;
		if (!is_dotted_oid(oid) || !(out->obj = OBJ_txt2obj(oid, 1))) {
			*msg = "expected a dotted OID after \"ext:\" (like 1.3.6.1.4.1.99999.1)";
			return false;
		}
		out->kind = POL_SRC_EXT;
		out->arg = strdup(oid);
	} else {
		*msg = "unknown source (expected subject:ATTR, san:email, san:dns, "
		       "san:uri:PREFIX or ext:OID)";
		return false;
	}
	out->text = strdup(text);
	if (!out->text || ((out->kind == POL_SRC_SUBJECT || out->kind == POL_SRC_SAN_URI ||
	                    out->kind == POL_SRC_EXT) &&
	                   !out->arg)) {
		source_finish(out);
		*oom = true;
		return false;
	}
	return true;
}

static bool sources_from_defaults(pol_sources_t *list, const char *const *texts, size_t n)
{
	list->items = calloc(n, sizeof(*list->items));
	if (!list->items)
		return false;
	for (size_t i = 0; i < n; i++) {
		const char *msg;
		bool oom;
		if (!source_parse(texts[i], &list->items[list->count], &msg, &oom))
			return false;
		list->count++;
	}
	return true;
}

static bool sources_compile(pol_sources_t *list, const cg_jdoc_t *doc, const char *path,
                            const json_t *arr, cg_errors_t *errs)
{
	bool ok = true;
	size_t n;

	if (!json_is_array(arr) || json_array_size(arr) == 0) {
		cg_jdoc_error(doc, errs, path, "expected a non-empty array of sources");
		return false;
	}
	n = json_array_size(arr);
	list->items = calloc(n, sizeof(*list->items));
	if (!list->items) {
		cg_jdoc_error(doc, errs, path, "out of memory");
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *item = json_array_get(arr, i);
		char ipath[256];
		const char *msg;
		bool oom;

		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		if (!json_is_string(item)) {
			cg_jdoc_error(doc, errs, ipath, "expected a string");
			ok = false;
			continue;
		}
		if (!source_parse(json_string_value(item), &list->items[list->count], &msg, &oom)) {
			cg_jdoc_error(doc, errs, ipath, "%s", oom ? "out of memory" : msg);
			ok = false;
			continue;
		}
		list->count++;
	}
	return ok;
}

static bool sources_equal(const pol_sources_t *a, const pol_sources_t *b)
{
	if (a->count != b->count)
		return false;
	for (size_t i = 0; i < a->count; i++)
		if (a->items[i].kind != b->items[i].kind ||
		    strcmp(a->items[i].text, b->items[i].text) != 0)
			return false;
	return true;
}

bool pol_claims_map_equal(const pol_claims_map_t *a, const pol_claims_map_t *b)
{
	return sources_equal(&a->user, &b->user) && sources_equal(&a->groups, &b->groups) &&
	       sources_equal(&a->device_id, &b->device_id) &&
	       sources_equal(&a->device_trust, &b->device_trust);
}

bool pol_claims_map_compile(pol_claims_map_t *map, const cg_jdoc_t *doc, const json_t *json,
                            cg_errors_t *errs)
{
	static const char *const names[] = {"user", "groups", "device_id", "device_trust"};
	pol_sources_t *lists[] = {&map->user, &map->groups, &map->device_id, &map->device_trust};
	const char *const *defaults[] = {default_user, default_groups, default_device_id,
	                                 default_device_trust};
	const size_t n_defaults[] = {2, 1, 1, 1};
	bool ok = true;

	memset(map, 0, sizeof(*map));
	if (json && !json_is_object(json)) {
		cg_jdoc_error(doc, errs, "claims", "expected an object");
		ok = false;
		json = NULL;
	}
	if (json) {
		const char *key;
		json_t *value;
		json_object_foreach((json_t *)json, key, value)
		{
			bool known = false;
			for (size_t i = 0; i < 4; i++)
				known = known || strcmp(key, names[i]) == 0;
			if (!known) {
				char kpath[300];
				snprintf(kpath, sizeof(kpath), "claims.%s", key);
				cg_jdoc_error(doc, errs, kpath,
				              "unknown key (expected user, groups, device_id or "
				              "device_trust)");
				ok = false;
			}
		}
	}
	for (size_t i = 0; i < 4; i++) {
		const json_t *arr = json ? json_object_get(json, names[i]) : NULL;
		if (arr) {
			char path[64];
			snprintf(path, sizeof(path), "claims.%s", names[i]);
			if (!sources_compile(lists[i], doc, path, arr, errs))
				ok = false;
		} else if (!sources_from_defaults(lists[i], defaults[i], n_defaults[i])) {
			cg_errors_add(errs, "out of memory");
			ok = false;
		}
	}
	if (!ok)
		pol_claims_map_finish(map);
	return ok;
}

void pol_claims_map_finish(pol_claims_map_t *map)
{
	if (!map)
		return;
	sources_finish(&map->user);
	sources_finish(&map->groups);
	sources_finish(&map->device_id);
	sources_finish(&map->device_trust);
}

/* ---------------------------------------------------------------------- */
/* Extraction                                                               */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF) with no C0/C1
 * control character, no DEL and no NUL, non-empty and not too long. */
static bool clean_text(const unsigned char *s, size_t len)
{
	size_t i = 0;

	if (len == 0 || len > POL_CLAIM_MAX_LEN)
		return false;
	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t n;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false; /* truncated sequence */
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		if (cp >= 0xd800 && cp <= 0xdfff)
			return false;
		if (cp >= 0x80 && cp <= 0x9f)
			return false;
		i += n + 1;
	}
	return true;
}

bool pol_claims_text_ok(const char *s, size_t len)
{
	return s != NULL && clean_text((const unsigned char *)s, len);
}

/* A growing list of claim values for one source. */
typedef struct values {
	char **items;
	size_t count, cap;
	bool raw_seen; /* some value was present, clean or not */
	bool oom;
} values_t;

static void values_finish(values_t *v)
{
	for (size_t i = 0; i < v->count; i++)
		free(v->items[i]);
	free(v->items);
	memset(v, 0, sizeof(*v));
}

/* Adds a copy of s if it is clean text. */
static void values_add(values_t *v, const unsigned char *s, size_t len)
{
	char *copy;

	v->raw_seen = true;
	if (!clean_text(s, len))
		return;
	if (v->count == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 4;
		char **items = realloc(v->items, cap * sizeof(*items));
		if (!items) {
			v->oom = true;
			return;
		}
		v->items = items;
		v->cap = cap;
	}
	copy = malloc(len + 1);
	if (!copy) {
		v->oom = true;
		return;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	v->items[v->count++] = copy;
}

static void read_subject(const pol_source_t *src, X509 *cert, values_t *v)
{
	const X509_NAME *name = X509_get_subject_name(cert);
	int idx = -1;

	if (!name)
		return;
	while ((idx = X509_NAME_get_index_by_OBJ(name, src->obj, idx)) >= 0) {
		const X509_NAME_ENTRY *entry = X509_NAME_get_entry(name, idx);
		const ASN1_STRING *data = entry ? X509_NAME_ENTRY_get_data(entry) : NULL;
		unsigned char *utf8 = NULL;
		int len;

		if (!data)
			continue;
		len = ASN1_STRING_to_UTF8(&utf8, data);
		if (len < 0) {
			v->raw_seen = true; /* undecodable: present but unusable */
			continue;
		}
		values_add(v, utf8, (size_t)len);
		OPENSSL_free(utf8);
	}
}

static void read_san(const pol_source_t *src, X509 *cert, values_t *v)
{
	int crit = 0;
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	size_t prefix_len = src->arg ? strlen(src->arg) : 0;

	if (!names)
		return; /* absent, or several SAN extensions (ambiguous): no value */
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		int type;
		const ASN1_STRING *str;
		const unsigned char *data;
		size_t len;

		str = GENERAL_NAME_get0_value(gn, &type);
		if (!str || !((src->kind == POL_SRC_SAN_EMAIL && type == GEN_EMAIL) ||
		              (src->kind == POL_SRC_SAN_DNS && type == GEN_DNS) ||
		              (src->kind == POL_SRC_SAN_URI && type == GEN_URI)))
			continue;
		data = ASN1_STRING_get0_data(str);
		len = (size_t)ASN1_STRING_length(str);
		if (src->kind == POL_SRC_SAN_URI) {
			if (len < prefix_len || memcmp(data, src->arg, prefix_len) != 0)
				continue;
			data += prefix_len;
			len -= prefix_len;
		}
		values_add(v, data, len);
	}
	GENERAL_NAMES_free(names);
}

static void read_ext(const pol_source_t *src, X509 *cert, values_t *v)
{
	int n = X509_get_ext_count(cert);

	for (int i = 0; i < n; i++) {
		X509_EXTENSION *ext = X509_get_ext(cert, i);
		const ASN1_OCTET_STRING *oct;
		const unsigned char *p, *end;
		ASN1_UTF8STRING *utf8;

		if (!ext || OBJ_cmp(X509_EXTENSION_get_object(ext), src->obj) != 0)
			continue;
		/* a critical extension we do not implement must not be read as if
		 * we understood it */
		if (X509_EXTENSION_get_critical(ext))
			continue;
		oct = X509_EXTENSION_get_data(ext);
		if (!oct)
			continue;
		p = ASN1_STRING_get0_data(oct);
		end = p + ASN1_STRING_length(oct);
		utf8 = d2i_ASN1_UTF8STRING(NULL, &p, ASN1_STRING_length(oct));
		if (!utf8 || p != end) {
			v->raw_seen = true;
			ASN1_UTF8STRING_free(utf8);
			continue;
		}
		values_add(v, ASN1_STRING_get0_data(utf8), (size_t)ASN1_STRING_length(utf8));
		ASN1_UTF8STRING_free(utf8);
	}
}

static void read_source(const pol_source_t *src, X509 *cert, values_t *v)
{
	switch (src->kind) {
	case POL_SRC_SUBJECT:
		read_subject(src, cert, v);
		break;
	case POL_SRC_SAN_EMAIL:
	case POL_SRC_SAN_DNS:
	case POL_SRC_SAN_URI:
		read_san(src, cert, v);
		break;
	case POL_SRC_EXT:
		read_ext(src, cert, v);
		break;
	}
}

/* Values of the first source of list that yields a clean value. When
 * stop_at_raw is set, the first source where any value is present wins even
 * if none of its values is clean (v->count is then 0). Returns false on OOM. */
static bool read_claim(const pol_sources_t *list, X509 *cert, bool stop_at_raw, values_t *v)
{
	for (size_t i = 0; i < list->count; i++) {
		memset(v, 0, sizeof(*v));
		read_source(&list->items[i], cert, v);
		if (v->oom) {
			values_finish(v);
			return false;
		}
		if (v->count > 0 || (stop_at_raw && v->raw_seen))
			return true;
		values_finish(v);
	}
	memset(v, 0, sizeof(*v));
	return true;
}

/* Moves the first value out of v (or NULL) and frees the rest. */
static char *take_first(values_t *v)
{
	char *first = NULL;

	if (v->count > 0) {
		first = v->items[0];
		v->items[0] = NULL;
	}
	values_finish(v);
	return first;
}

bool pol_claims_extract(const pol_claims_map_t *map, X509 *cert, pol_claims_t *out)
{
	values_t v;

	memset(out, 0, sizeof(*out));
	out->device_trust = POL_TRUST_NONE;
	if (!cert)
		return true;

	if (!read_claim(&map->user, cert, false, &v))
		goto fail;
	out->user = take_first(&v);

	if (!read_claim(&map->groups, cert, false, &v))
		goto fail;
	out->groups = v.items;
	out->n_groups = v.count;
	if (out->n_groups == 0) {
		free(out->groups);
		out->groups = NULL;
	}

	if (!read_claim(&map->device_id, cert, false, &v))
		goto fail;
	out->device_id = take_first(&v);

	/* Trust fails closed: a trust value that is present but unreadable or not
	 * a known level counts as always_deny rather than "no claim" (which the
	 * live feed alone could raise). */
	if (!read_claim(&map->device_trust, cert, true, &v))
		goto fail;
	if (v.raw_seen) {
		char *level = take_first(&v);
		if (!level || !pol_trust_parse(level, &out->device_trust))
			out->device_trust = POL_TRUST_ALWAYS_DENY;
		free(level);
	} else {
		values_finish(&v);
	}
	return true;

fail:
	pol_claims_finish(out);
	return false;
}

void pol_claims_finish(pol_claims_t *claims)
{
	if (!claims)
		return;
	free(claims->user);
	for (size_t i = 0; i < claims->n_groups; i++)
		free(claims->groups[i]);
	free(claims->groups);
	free(claims->device_id);
	memset(claims, 0, sizeof(*claims));
	claims->device_trust = POL_TRUST_NONE;
}

bool pol_claims_copy(pol_claims_t *dst, const pol_claims_t *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->device_trust = src->device_trust;
	if (src->user && !(dst->user = strdup(src->user)))
		goto fail;
	if (src->device_id && !(dst->device_id = strdup(src->device_id)))
		goto fail;
	if (src->n_groups > 0) {
		dst->groups = calloc(src->n_groups, sizeof(*dst->groups));
		if (!dst->groups)
			goto fail;
		for (size_t i = 0; i < src->n_groups; i++) {
			if (!(dst->groups[i] = strdup(src->groups[i])))
				goto fail;
			dst->n_groups++;
		}
	}
	return true;

fail:
	/* n_groups counts only the entries copied so far */
	pol_claims_finish(dst);
	return false;
}
