/* Untrusted bytes as text: strict UTF-8 checks, cuts that never split a
 * character, and JSON strings that always exist. jansson refuses a string
 * that is not valid UTF-8 (json_string returns NULL, and
 * json_object_set_new with NULL drops the field), so every value that
 * comes from a peer (PostgreSQL startup parameters, SQL, certificate
 * subjects, SNI) goes into the audit through cg_json_set_lossy.
 *
 * The escape (docs/audit.md): a value that is not valid UTF-8 is written
 * with each byte that is not part of a valid character, and each
 * backslash, as the four characters \xNN (lower-case hex); valid
 * characters stay as they are. The field's name is then listed in the
 * event's "escaped" array, so a reader knows to decode \xNN in it and the
 * escape cannot be confused with text that contains "\x" itself. */
#ifndef CG_UTF8_H
#define CG_UTF8_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 character starting at p (1-4), or 0 when the
 * bytes there are not one (overlong, surrogate, above U+10FFFF, truncated
 * at n). The same rules as jansson's. */
size_t cg_utf8_char_len(const unsigned char *p, size_t n);

/* Whether p[0..n) is entirely valid UTF-8 (NUL bytes allowed). */
bool cg_utf8_valid(const void *p, size_t n);

/* The largest length <= max (and <= n) that does not end inside a
 * character: when byte max-1 belongs to a multi-byte character that does
 * not end by max, the cut moves back to that character's start. Bytes
 * that are not UTF-8 at all are cut anywhere. */
size_t cg_utf8_cut(const void *p, size_t n, size_t max);

/* n without a character that the end of p[0..n) cuts off (the valid
 * beginning of a multi-byte character in its last 1-3 bytes): for text
 * that something else (snprintf, a fixed buffer) has already cut. */
size_t cg_utf8_complete(const void *p, size_t n);

/* p[0..n) as a JSON string (new reference, never NULL unless out of
 * memory). Valid UTF-8 is kept as is; otherwise the escape above is
 * applied and *escaped (if given) set to true. */
json_t *cg_json_string_lossy(const void *p, size_t n, bool *escaped);

/* obj[key] = the string p[0..n) (lossy), or JSON null when p is NULL. When
 * the value had to be escaped, key is appended to obj's "escaped" array
 * (created on first use). Returns 0, or -1 out of memory. */
int cg_json_set_lossy(json_t *obj, const char *key, const void *p, size_t n);

/* The same for a NUL-terminated string (or NULL). */
int cg_json_set_lossy_str(json_t *obj, const char *key, const char *s);

#endif
