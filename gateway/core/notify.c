/* sd_notify (see notify.h). The watchdog pings at half the interval the
 * service manager asked for, from the loop itself: if the loop stalls, the
 * pings stop and systemd restarts the gateway. */
#include "core/notify.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

void gw_notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void gw_notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)usec);
}

void gw_notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

static void on_watchdog(uv_timer_t *timer)
{
	sd_notify(0, "WATCHDOG=1");
}

bool gw_watchdog_start(uv_loop_t *loop, uv_timer_t *timer)
{
	uint64_t usec = 0;
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return false;
	uint64_t every_ms = usec / 2000u;
	if (every_ms == 0)
		every_ms = 1;
	uv_timer_init(loop, timer);
	uv_timer_start(timer, on_watchdog, 0, every_ms);
	return true;
}
