/* Tests gateway/core/syslog_msg.c: the RFC 5424 message of an audit line
 * (header, structured data and its escaping, octet counting) and the
 * bounded queue (the oldest dropped first, never the one in flight). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/syslog_msg.h"

static const gw_syslog_origin_t origin = {.hostname = "gw1.example", .procid = "4242"};

static char *message(const char *line, int facility, bool octets, size_t *len)
{
	json_t *obj = json_loads(line, 0, NULL);
	assert_non_null(obj);
	gw_syslog_frame_t *f = gw_syslog_format(&origin, facility, obj, line, strlen(line), octets);
	json_decref(obj);
	assert_non_null(f);
	char *text = malloc(f->len + 1);
	memcpy(text, f->data, f->len);
	text[f->len] = '\0';
	*len = f->len;
	free(f);
	return text;
}

static void test_format(void **state)
{
	(void)state;
	static const char line[] = "{\"ts\":\"2026-12-01T10:00:00.123Z\",\"event\":\"session."
	                           "start\",\"seq\":12,\"prev\":"
	                           "\"00\",\"user\":\"al\\\"i]c\\\\e\",\"service\":\"orders-db\","
	                           "\"groups\":[\"dba\"]}";
	size_t len;
	char *m = message(line, 4, false, &len);
	/* auth (4) * 8 + informational (6) = 38 */
	static const char want_head[] =
	        "<38>1 2026-12-01T10:00:00.123Z gw1.example certgate 4242 session.start "
	        "[certgate@32473 event=\"session.start\" seq=\"12\" user=\"al\\\"i\\]c\\\\e\" "
	        "service=\"orders-db\"] ";
	assert_int_equal(strncmp(m, want_head, strlen(want_head)), 0);
	/* the message is the line, byte for byte */
	assert_string_equal(m + strlen(want_head), line);
	assert_int_equal(len, strlen(want_head) + strlen(line));
	free(m);

	/* TCP: octet counting, the length of what follows the space */
	char *t = message(line, 4, true, &len);
	char *sp = strchr(t, ' ');
	assert_int_equal((size_t)strtoul(t, NULL, 10), len - (size_t)(sp + 1 - t));
	assert_int_equal(strncmp(sp + 1, want_head, strlen(want_head)), 0);
	free(t);

	/* a refusal is a warning; local0 (16): 16 * 8 + 4 */
	char *w = message("{\"ts\":\"2026-12-01T10:00:00.123Z\",\"event\":\"tls.rejected\","
	                  "\"reason\":\"not tls\"}",
	                  16, false, &len);
	assert_int_equal(strncmp(w, "<132>1 ", 7), 0);
	assert_non_null(strstr(w, "reason=\"not tls\"]"));
	free(w);
	assert_int_equal(gw_syslog_severity("authz.denied"), 4);
	assert_int_equal(gw_syslog_severity("authz.would_deny"), 5);
	assert_int_equal(gw_syslog_severity("audit.repaired"), 5);
	assert_int_equal(gw_syslog_severity("gateway.start"), 6);

	/* an event name that cannot be a MSGID (over 32 bytes) is "-" */
	char *long_event = message("{\"ts\":\"2026-12-01T10:00:00.123Z\",\"event\":"
	                           "\"an.event.name.longer.than.thirty.two\"}",
	                           4, false, &len);
	assert_non_null(strstr(long_event, " certgate 4242 - [certgate@32473 event="));
	free(long_event);
}

static void test_sd_escape(void **state)
{
	(void)state;
	char out[2 * GW_SYSLOG_SD_VALUE_MAX + 1];
	assert_int_equal(gw_syslog_sd_escape("a\"b\\c]d", out), 10);
	assert_string_equal(out, "a\\\"b\\\\c\\]d");
	gw_syslog_sd_escape("tab\there\nnl\x7f", out);
	assert_string_equal(out, "tab?here?nl?");
	/* cut to 256 bytes, on a character boundary (é is 2 bytes) */
	char big[600];
	memset(big, 'x', 255);
	strcpy(big + 255, "\xc3\xa9tail");
	gw_syslog_sd_escape(big, out);
	assert_int_equal(strlen(out), 255);
	/* every byte escaped still fits */
	memset(big, ']', 599);
	big[599] = '\0';
	assert_int_equal(gw_syslog_sd_escape(big, out), 2 * GW_SYSLOG_SD_VALUE_MAX);
}

static gw_syslog_frame_t *frame(size_t len, char fill)
{
	gw_syslog_frame_t *f = malloc(sizeof(*f) + len);
	assert_non_null(f);
	f->next = NULL;
	f->len = len;
	memset(f->data, fill, len);
	return f;
}

static void test_queue(void **state)
{
	(void)state;
	gw_syslog_queue_t q;
	gw_syslog_queue_init(&q, 100);
	assert_int_equal(gw_syslog_queue_push(&q, frame(40, 'a')), 0);
	assert_int_equal(gw_syslog_queue_push(&q, frame(40, 'b')), 0);
	/* full: the oldest goes */
	assert_int_equal(gw_syslog_queue_push(&q, frame(40, 'c')), 1);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 80);
	assert_int_equal(q.head->data[0], 'b');
	/* in flight: the head stays, the one after it goes */
	q.head_in_flight = true;
	assert_int_equal(gw_syslog_queue_push(&q, frame(40, 'd')), 1);
	assert_int_equal(q.head->data[0], 'b');
	assert_int_equal(q.head->next->data[0], 'd');
	assert_ptr_equal(q.tail, q.head->next);
	/* too big to ever fit: dropped itself */
	assert_int_equal(gw_syslog_queue_push(&q, frame(101, 'e')), 1);
	/* only the message in flight and no room beside it: the new one goes */
	assert_int_equal(gw_syslog_queue_push(&q, frame(70, 'f')), 2);
	assert_int_equal(q.count, 1);
	assert_int_equal(q.head->data[0], 'b');
	assert_int_equal(gw_syslog_queue_drop_waiting(&q), 0);
	gw_syslog_queue_pop(&q);
	assert_false(q.head_in_flight);
	assert_int_equal(q.count, 0);
	assert_null(q.tail);
	assert_int_equal(gw_syslog_queue_push(&q, frame(10, 'g')), 0);
	assert_int_equal(gw_syslog_queue_push(&q, frame(10, 'h')), 0);
	assert_int_equal(gw_syslog_queue_drop_waiting(&q), 2);
	assert_int_equal(q.bytes, 0);
	assert_int_equal(gw_syslog_queue_clear(&q), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_format),
	        cmocka_unit_test(test_sd_escape),
	        cmocka_unit_test(test_queue),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
