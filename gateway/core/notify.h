/* systemd notifications (sd_notify through libsystemd): READY=1 once
 * listeners are bound and the policy is loaded, RELOADING=1 (with
 * MONOTONIC_USEC) then READY=1 around reloads, STOPPING=1 on drain, and
 * WATCHDOG=1 from a loop timer when the unit sets WatchdogSec. Without
 * NOTIFY_SOCKET all of this does nothing. */
#ifndef GW_NOTIFY_H
#define GW_NOTIFY_H

#include <stdbool.h>

#include <uv.h>

void gw_notify_ready(const char *status);
void gw_notify_reloading(void);
void gw_notify_stopping(void);

/* Starts the watchdog timer on loop if the service manager asked for one
 * (WATCHDOG_USEC for this pid); returns whether it did. */
bool gw_watchdog_start(uv_loop_t *loop, uv_timer_t *timer);

#endif
