/* An audit line as a syslog message (RFC 5424), and the bounded queue of
 * messages the sender keeps while its receiver is away. Sans-IO: the
 * sender (core/syslog_out.c) owns the sockets. */
#ifndef GW_SYSLOG_MSG_H
#define GW_SYSLOG_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The private enterprise number in the structured data's SD-ID
 * ("certgate@32473"): 32473 is the one RFC 5612 reserves for
 * documentation, a placeholder until certgate has a number of its own. */
#define GW_SYSLOG_SD_ID "certgate@32473"
/* A structured-data value is cut to this many bytes (on a character
 * boundary); the message, the JSON line, has every byte. */
#define GW_SYSLOG_SD_VALUE_MAX 256

/* How the syslog header names us: HOSTNAME and PROCID of RFC 5424 6.2. */
typedef struct gw_syslog_origin {
	char hostname[256]; /* printable US-ASCII, or "-" */
	char procid[24];
} gw_syslog_origin_t;

/* hostname from gethostname(2) (cut to what RFC 5424 allows), procid the pid. */
void gw_syslog_origin_init(gw_syslog_origin_t *origin);

/* The severity of an event (RFC 5424 6.2.1): refusals and denials are
 * warning (4), would-deny, audit.resumed and audit.repaired notice (5),
 * everything else informational (6). */
int gw_syslog_severity(const char *event);

/* value escaped for a PARAM-VALUE (RFC 5424 6.3.3): '"', '\' and ']'
 * backslash-escaped, control characters as '?', cut to
 * GW_SYSLOG_SD_VALUE_MAX bytes of value first. out must hold
 * 2 * GW_SYSLOG_SD_VALUE_MAX + 1 bytes. Returns the length written. */
size_t gw_syslog_sd_escape(const char *value, char *out);

/* One message, ready to send. */
typedef struct gw_syslog_frame {
	struct gw_syslog_frame *next;
	size_t len;
	char data[];
} gw_syslog_frame_t;

/* One message: "<PRI>1 TIMESTAMP HOSTNAME certgate PROCID MSGID
 * [certgate@32473 event=.. seq=.. user=.. service=.. reason=..] LINE",
 * TIMESTAMP the line's ts, MSGID its event. With octet_counting (TCP,
 * RFC 6587 3.4.1) the message is preceded by its length and a space.
 * line_obj is the event as written, line[0..len) its bytes. Returns a
 * malloc'd frame (free() it, or give it to a queue), NULL out of memory. */
gw_syslog_frame_t *gw_syslog_format(const gw_syslog_origin_t *origin, int facility,
                                    const json_t *line_obj, const char *line, size_t len,
                                    bool octet_counting);

/* Messages waiting for the receiver: at most max_bytes of them; a new one
 * that does not fit pushes out the oldest (counted as dropped). The head
 * may be "in flight" (handed to a write that has not completed): it is
 * never pushed out. */

typedef struct gw_syslog_queue {
	gw_syslog_frame_t *head, *tail;
	size_t bytes, count, max_bytes;
	bool head_in_flight;
} gw_syslog_queue_t;

void gw_syslog_queue_init(gw_syslog_queue_t *q, size_t max_bytes);
/* Drops everything; returns how many messages that was. */
size_t gw_syslog_queue_clear(gw_syslog_queue_t *q);
/* Takes the frame (freed here or later). Returns how many messages were
 * dropped to make room (the new one counts if it could not be kept). */
size_t gw_syslog_queue_push(gw_syslog_queue_t *q, gw_syslog_frame_t *frame);
/* Drops every message but one in flight; returns how many. */
size_t gw_syslog_queue_drop_waiting(gw_syslog_queue_t *q);
/* Removes and frees the head. */
void gw_syslog_queue_pop(gw_syslog_queue_t *q);

#endif
