/* Untrusted bytes as text (see cg_utf8.h): strict UTF-8 as jansson checks
 * it, character-boundary cuts, and JSON strings with the \xNN escape for
 * whatever is not UTF-8. */
#include "cg_utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool cont(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/* The length of the character a lead byte c starts (2-4), with the range
 * of its second byte; 0 when c cannot start a multi-byte character. */
static size_t lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
	*lo = 0x80;
	*hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		return 2;
	if (c >= 0xe0 && c <= 0xef) {
		if (c == 0xe0)
			*lo = 0xa0; /* overlong */
		else if (c == 0xed)
			*hi = 0x9f; /* surrogates */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (c == 0xf0)
			*lo = 0x90; /* overlong */
		else if (c == 0xf4)
			*hi = 0x8f; /* above U+10FFFF */
		return 4;
	}
	return 0; /* a continuation byte, 0xc0, 0xc1, 0xf5..0xff */
}

/* Whether the first have bytes at p (fewer than or as many as the
 * character needs) are a valid beginning of a character. */
static bool valid_prefix(const unsigned char *p, size_t have, size_t len, unsigned char lo,
                         unsigned char hi)
{
	if (have > len || (have >= 2 && (p[1] < lo || p[1] > hi)))
		return false;
	for (size_t i = 2; i < have; i++)
		if (!cont(p[i]))
			return false;
	return true;
}

size_t cg_utf8_char_len(const unsigned char *p, size_t n)
{
	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	unsigned char lo, hi;
	size_t len = lead(p[0], &lo, &hi);
	if (len == 0 || n < len || !valid_prefix(p, len, len, lo, hi))
		return 0;
	return len;
}

bool cg_utf8_valid(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i = 0;
	while (i < n) {
		if (b[i] < 0x80) {
			i++;
			continue;
		}
		size_t len = cg_utf8_char_len(b + i, n - i);
		if (len == 0)
			return false;
		i += len;
	}
	return true;
}

size_t cg_utf8_cut(const void *p, size_t n, size_t max)
{
	const unsigned char *b = p;
	if (n <= max)
		return n;
	if (!cont(b[max]))
		return max; /* byte max starts a character (or is not UTF-8) */
	/* byte max continues a character: where did it start? */
	for (size_t back = 1; back <= 3 && back <= max; back++) {
		size_t start = max - back;
		if (cont(b[start]))
			continue;
		size_t len = cg_utf8_char_len(b + start, n - start);
		return len > back ? start : max;
	}
	return max;
}

size_t cg_utf8_complete(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t back = 1; back <= 3 && back <= n; back++) {
		size_t start = n - back;
		if (cont(b[start]))
			continue;
		unsigned char lo, hi;
		size_t len = lead(b[start], &lo, &hi);
		/* a valid beginning of a character that needs more bytes */
		if (len > back && valid_prefix(b + start, back, len, lo, hi))
			return start;
		return n;
	}
	return n;
}

json_t *cg_json_string_lossy(const void *p, size_t n, bool *escaped)
{
	const unsigned char *b = p;
	if (cg_utf8_valid(b, n))
		return json_stringn((const char *)b, n);
	if (escaped != NULL)
		*escaped = true;
	if (n > (SIZE_MAX - 1) / 4)
		return NULL;
	char *text = malloc(n * 4 + 1);
	if (text == NULL)
		return NULL;
	static const char hex[] = "0123456789abcdef";
	size_t at = 0;
	for (size_t i = 0; i < n;) {
		size_t len = cg_utf8_char_len(b + i, n - i);
		if (len > 0 && b[i] != '\\') {
			memcpy(text + at, b + i, len);
			at += len;
			i += len;
			continue;
		}
		text[at++] = '\\';
		text[at++] = 'x';
		text[at++] = hex[b[i] >> 4];
		text[at++] = hex[b[i] & 0xf];
		i++;
	}
	json_t *j = json_stringn(text, at);
	free(text);
	return j;
}

int cg_json_set_lossy(json_t *obj, const char *key, const void *p, size_t n)
{
	if (p == NULL)
		return json_object_set_new(obj, key, json_null()) == 0 ? 0 : -1;
	bool escaped = false;
	json_t *value = cg_json_string_lossy(p, n, &escaped);
	if (value == NULL || json_object_set_new(obj, key, value) != 0)
		return -1;
	if (!escaped)
		return 0;
	json_t *list = json_object_get(obj, "escaped");
	if (!json_is_array(list)) {
		list = json_array();
		if (list == NULL || json_object_set_new(obj, "escaped", list) != 0)
			return -1;
	}
	for (size_t i = 0; i < json_array_size(list); i++)
		if (strcmp(json_string_value(json_array_get(list, i)), key) == 0)
			return 0;
	return json_array_append_new(list, json_string(key)) == 0 ? 0 : -1;
}

int cg_json_set_lossy_str(json_t *obj, const char *key, const char *s)
{
	return cg_json_set_lossy(obj, key, s, s != NULL ? strlen(s) : 0);
}
