/* An audit line as an RFC 5424 syslog message, and the bounded queue of
 * messages waiting for the receiver (see syslog_msg.h).
 *
 * The message carries the audit line byte for byte as its MSG (no BOM:
 * MSG-ANY; the line is UTF-8 JSON), so a SIEM holds the same bytes as the
 * file, seq and prev included, and can check the file's chain against
 * them. The structured data repeats a few fields for receivers that index
 * SD params without parsing JSON. */
#include "core/syslog_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_utf8.h"

static bool printusascii(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n] != '\0'; n++)
		if (n >= max || s[n] < 33 || s[n] > 126)
			return false;
	return n > 0;
}

void gw_syslog_origin_init(gw_syslog_origin_t *origin)
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	/* RFC 5424 6.2.4: 1-255 printable US-ASCII; anything else is "-" */
	snprintf(origin->hostname, sizeof(origin->hostname), "%s",
	         printusascii(host, 255) ? host : "-");
	snprintf(origin->procid, sizeof(origin->procid), "%ld", (long)getpid());
}

int gw_syslog_severity(const char *event)
{
	static const char *const warning[] = {"tls.rejected",
	                                      "authz.denied",
	                                      "upstream.failed",
	                                      "login.denied",
	                                      "access.denied",
	                                      "admin.denied",
	                                      NULL};
	static const char *const notice[] = {"authz.would_deny", "audit.resumed", "audit.repaired",
	                                     NULL};
	for (const char *const *e = warning; *e != NULL; e++)
		if (strcmp(event, *e) == 0)
			return 4;
	for (const char *const *e = notice; *e != NULL; e++)
		if (strcmp(event, *e) == 0)
			return 5;
	return 6;
}

size_t gw_syslog_sd_escape(const char *value, char *out)
{
	size_t n = cg_utf8_cut(value, strlen(value), GW_SYSLOG_SD_VALUE_MAX), o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		if (c == '"' || c == '\\' || c == ']')
			out[o++] = '\\';
		out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	out[o] = '\0';
	return o;
}

/* " name=\"value\"" for a string member of obj (or an integer: seq). */
static size_t sd_param(char *out, size_t cap, const json_t *obj, const char *name)
{
	char escaped[2 * GW_SYSLOG_SD_VALUE_MAX + 1];
	const json_t *v = json_object_get(obj, name);
	if (json_is_string(v))
		gw_syslog_sd_escape(json_string_value(v), escaped);
	else if (json_is_integer(v))
		snprintf(escaped, sizeof(escaped), "%lld", (long long)json_integer_value(v));
	else
		return 0;
	int n = snprintf(out, cap, " %s=\"%s\"", name, escaped);
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

gw_syslog_frame_t *gw_syslog_format(const gw_syslog_origin_t *origin, int facility,
                                    const json_t *line_obj, const char *line, size_t len,
                                    bool octet_counting)
{
	static const char *const params[] = {"event", "seq", "user", "service", "reason"};
	/* header + SD: ~300 bytes and five values of at most 512 escaped bytes */
	char head[4096];
	const char *event = json_string_value(json_object_get(line_obj, "event"));
	const char *ts = json_string_value(json_object_get(line_obj, "ts"));
	if (event == NULL)
		event = "";
	int pri = facility * 8 + gw_syslog_severity(event);
	int n = snprintf(head, sizeof(head), "<%d>1 %s %s certgate %s %s [" GW_SYSLOG_SD_ID, pri,
	                 ts != NULL && printusascii(ts, 32) ? ts : "-", origin->hostname,
	                 origin->procid, printusascii(event, 32) ? event : "-");
	if (n < 0 || (size_t)n >= sizeof(head))
		return NULL;
	size_t h = (size_t)n;
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		h += sd_param(head + h, sizeof(head) - h, line_obj, params[i]);
	if (h + 3 > sizeof(head))
		return NULL;
	head[h++] = ']';
	head[h++] = ' ';

	size_t msg_len = h + len;
	char prefix[24] = "";
	size_t p = 0;
	if (octet_counting) {
		n = snprintf(prefix, sizeof(prefix), "%zu ", msg_len);
		p = n > 0 ? (size_t)n : 0;
	}
	gw_syslog_frame_t *f = malloc(sizeof(*f) + p + msg_len);
	if (f == NULL)
		return NULL;
	f->next = NULL;
	f->len = p + msg_len;
	memcpy(f->data, prefix, p);
	memcpy(f->data + p, head, h);
	memcpy(f->data + p + h, line, len);
	return f;
}

void gw_syslog_queue_init(gw_syslog_queue_t *q, size_t max_bytes)
{
	memset(q, 0, sizeof(*q));
	q->max_bytes = max_bytes;
}

void gw_syslog_queue_pop(gw_syslog_queue_t *q)
{
	gw_syslog_frame_t *f = q->head;
	if (f == NULL)
		return;
	q->head = f->next;
	if (q->head == NULL)
		q->tail = NULL;
	q->bytes -= f->len;
	q->count--;
	q->head_in_flight = false;
	free(f);
}

size_t gw_syslog_queue_clear(gw_syslog_queue_t *q)
{
	size_t n = q->count;
	while (q->head != NULL)
		gw_syslog_queue_pop(q);
	return n;
}

/* Drops the oldest message that is not in flight. */
static bool drop_oldest(gw_syslog_queue_t *q)
{
	if (q->head == NULL)
		return false;
	if (!q->head_in_flight) {
		gw_syslog_queue_pop(q);
		return true;
	}
	gw_syslog_frame_t *victim = q->head->next;
	if (victim == NULL)
		return false;
	q->head->next = victim->next;
	if (q->tail == victim)
		q->tail = q->head;
	q->bytes -= victim->len;
	q->count--;
	free(victim);
	return true;
}

size_t gw_syslog_queue_drop_waiting(gw_syslog_queue_t *q)
{
	size_t n = 0;
	while (drop_oldest(q))
		n++;
	return n;
}

size_t gw_syslog_queue_push(gw_syslog_queue_t *q, gw_syslog_frame_t *frame)
{
	size_t dropped = 0;
	if (frame->len > q->max_bytes) {
		free(frame);
		return 1;
	}
	while (q->bytes + frame->len > q->max_bytes && drop_oldest(q))
		dropped++;
	if (q->bytes + frame->len > q->max_bytes) {
		free(frame); /* only the message in flight is left, and no room */
		return dropped + 1;
	}
	frame->next = NULL;
	if (q->tail != NULL)
		q->tail->next = frame;
	else
		q->head = frame;
	q->tail = frame;
	q->bytes += frame->len;
	q->count++;
	return dropped;
}
