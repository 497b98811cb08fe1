/* cg_log: the operational log on stderr, "certgate: LEVEL: message", one line
 * per call written with a single fprintf so concurrent writers (other
 * processes sharing stderr) do not split it. The level threshold is the only
 * state (set before any thread starts); the rate limiter keeps its state in
 * the caller's slot, atomically, so threads may share one. */
#include "cg_log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static cg_log_level_t threshold = CG_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cg_log_set_level(cg_log_level_t level)
{
	threshold = level;
}

cg_log_level_t cg_log_get_level(void)
{
	return threshold;
}

static bool enabled(cg_log_level_t level)
{
	return level >= threshold && level <= CG_LOG_ERROR;
}

static void emit(cg_log_level_t level, const char *suffix, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

static void emit(cg_log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
	char stack[1024];
	char *msg = stack;
	va_list copy;

	va_copy(copy, ap);
	int n = vsnprintf(stack, sizeof(stack), fmt, copy);
	va_end(copy);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(stack)) {
		/* Long line: format again into a heap buffer; if even that fails,
		 * the truncated stack copy is better than nothing. */
		char *heap = malloc((size_t)n + 1);
		if (heap) {
			vsnprintf(heap, (size_t)n + 1, fmt, ap);
			msg = heap;
		}
	}
	fprintf(stderr, "certgate: %s: %s%s\n", level_names[level], msg, suffix);
	if (msg != stack)
		free(msg);
}

void cg_log(cg_log_level_t level, const char *fmt, ...)
{
	if (!enabled(level))
		return;
	va_list ap;
	va_start(ap, fmt);
	emit(level, "", fmt, ap);
	va_end(ap);
}

/* Monotonic, so a wall-clock step cannot silence a slot for hours. */
static int64_t monotonic_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cg_log_limited(cg_log_limit_t *limit, cg_log_level_t level, const char *fmt, ...)
{
	if (!enabled(level))
		return;

	int64_t now = monotonic_ms();
	/* last_ms == 0 is a fresh slot: let the first line through. Of threads
	 * racing for the same second, the one whose exchange lands logs. */
	int64_t last = atomic_load(&limit->last_ms);
	if ((last != 0 && now - last < 1000) ||
	    !atomic_compare_exchange_strong(&limit->last_ms, &last, now != 0 ? now : 1)) {
		atomic_fetch_add(&limit->suppressed, 1);
		return;
	}
	uint64_t suppressed = atomic_exchange(&limit->suppressed, 0);
	char suffix[64] = "";
	if (suppressed > 0)
		snprintf(suffix, sizeof(suffix), " (%llu similar messages suppressed)",
		         (unsigned long long)suppressed);

	va_list ap;
	va_start(ap, fmt);
	emit(level, suffix, fmt, ap);
	va_end(ap);
}
