/* `certgate serve --config FILE`: load, bind, run the loop until drained.
 *
 * Signals: SIGTERM/SIGINT drain (every session ends with "shutdown", then
 * exit 0), SIGHUP reloads, SIGUSR1 reopens the audit file. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "admin/admin.h"
#include "admin/metrics.h"
#include "certgate_config.h"
#include "cg_time.h"
#include "cmd/cli.h"
#include "core/access.h"
#include "core/control.h"
#include "core/gateway.h"
#include "core/listener.h"
#include "core/notify.h"
#include "issuer/issuer.h"
#include "pg/pg_front.h"

static void on_signal(uv_signal_t *handle, int signum)
{
	gw_gateway_t *gw = handle->data;
	switch (signum) {
	case SIGTERM:
	case SIGINT:
		cg_log(CG_LOG_INFO, "%s: shutting down", strsignal(signum));
		gw_drain(gw);
		break;
	case SIGHUP: {
		if (gw->draining) {
			/* a reload would bind the listeners the drain just closed */
			cg_log(CG_LOG_WARN, "SIGHUP while draining: ignored");
			break;
		}
		cg_errors_t errs;
		cg_errors_init(&errs);
		(void)gw_reload(gw, "signal", &errs);
		cg_errors_finish(&errs);
		break;
	}
	case SIGUSR1:
		if (gw_audit_reopen(gw) < 0)
			cg_log(CG_LOG_ERROR, "audit: cannot reopen %s", cg_audit_path(gw->audit));
		break;
	}
}

/* --- the run-time state beside the gateway ------------------------------------ */

/* How long a start waits for a shared state store: a gateway that does
 * not know the locks must not serve (a service manager restarts it). */
#define STATE_LOAD_TIMEOUT_MS 30000

/* A change another gateway made that tightens access: the live sessions
 * it touches are checked again, exactly as after an admin's change here. */
static void on_state_change(void *ctx, const gw_state_change_t *change)
{
	gw_reauthorize_matching(ctx, change->user, change->device, change->reason);
	/* a grant approved or ended elsewhere: the next expiry may have moved */
	if (strcmp(change->kind, "requests") == 0)
		gw_access_rearm(ctx);
}

/* An extension only for the drain: the store's connection and timers close
 * (after what waits is written) so the loop runs dry. */
typedef struct state_ext {
	gw_extension_t ext;
	gw_gateway_t *gw;
} state_ext_t;

static void state_prepare(gw_extension_t *ext, const gw_runtime_t *rt, cg_errors_t *errs)
{
	(void)ext;
	(void)rt;
	(void)errs;
}

static void state_nothing(gw_extension_t *ext)
{
	(void)ext;
}

static void state_stop(gw_extension_t *ext)
{
	gw_state_stop(((state_ext_t *)ext)->gw->state);
}

static const gw_extension_ops_t state_ext_ops = {
        .prepare = state_prepare,
        .commit = state_nothing,
        .rollback = state_nothing,
        .stop = state_stop,
        .destroy = state_nothing,
};

/* Opens the state the configuration names; a shared store is reached and
 * loaded before anything listens. */
static gw_state_t *state_open(gw_gateway_t *gw, const pol_snapshot_t *snap, cg_errors_t *errs)
{
	char err[512];
	const pol_state_cfg_t *cfg = &snap->state;
	bool shared = cfg->enabled && cfg->backend != NULL && strcmp(cfg->backend, "postgres") == 0;
	gw_state_t *st =
	        shared ? gw_state_open_postgres(gw->loop, cfg->dsn, cfg->schema, err, sizeof(err))
	               : gw_state_open(gw->loop, cfg->enabled ? cfg->dir : NULL, err, sizeof(err));
	if (st == NULL) {
		cg_errors_add(errs, "%s: state: %s", snap->config_path, err);
		return NULL;
	}
	gw_state_set_observer(st, on_state_change, gw);
	if (shared) {
		cg_log(CG_LOG_INFO, "state: reaching the store (schema %s) before serving",
		       cfg->schema);
		if (gw_state_wait_loaded(st, STATE_LOAD_TIMEOUT_MS, err, sizeof(err)) < 0)
			cg_errors_add(errs, "%s: state: %s", snap->config_path, err);
	}
	return st;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: certgate serve --config FILE [--log-level debug|info|warn|error]\n"
	             "Runs the gateway in the foreground until SIGTERM/SIGINT.\n"
	             "SIGHUP reloads the configuration, SIGUSR1 reopens the audit log.\n");
}

static int parse_level(const char *text, cg_log_level_t *out)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++)
		if (strcmp(text, names[i]) == 0) {
			*out = (cg_log_level_t)i;
			return 0;
		}
	return -1;
}

static int start(gw_gateway_t *gw)
{
	cg_errors_t errs;
	cg_errors_init(&errs);
	gw->rt = gw_runtime_load(gw->config_path, &errs);
	if (gw->rt != NULL) {
		const pol_snapshot_t *snap = gw->rt->snap;
		char err[512];
		gw->state = state_open(gw, snap, &errs);
		cg_audit_t *audit = gw_audit_open(snap, err, sizeof(err));
		if (audit == NULL) {
			cg_errors_add(&errs, "%s: audit.path: %s", snap->config_path, err);
		} else {
			gw_audit_use(gw, audit);
			gw_syslog_configure(gw->syslog, &snap->audit.syslog);
			gw_listeners_prepare(gw, snap, &errs);
		}
		if (errs.count == 0)
			gw_extensions_prepare(gw, gw->rt, &errs);
	}
	for (size_t i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.items[i]);
	int failed = errs.count > 0;
	cg_errors_finish(&errs);
	if (failed) {
		gw_extensions_rollback(gw);
		gw_listeners_rollback(gw);
		gw_state_stop(gw->state); /* its handles close with the rest */
		return -1;
	}
	gw_listeners_commit(gw);
	gw_extensions_commit(gw);
	return 0;
}

int gw_serve_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"log-level", required_argument, NULL, 'l'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	cg_log_level_t level = CG_LOG_INFO;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'l':
			if (parse_level(optarg, &level) < 0) {
				fprintf(stderr,
				        "certgate serve: --log-level: unknown level \"%s\"\n",
				        optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (config == NULL || optind != argc) {
		fprintf(stderr, "certgate serve: %s\n",
		        config == NULL ? "--config FILE is required" : "unexpected argument");
		usage(stderr);
		return 2;
	}
	cg_log_set_level(level);
	signal(SIGPIPE, SIG_IGN);

	gw_gateway_t gw;
	memset(&gw, 0, sizeof(gw));
	if (gw_gateway_init(&gw, uv_default_loop()) < 0) {
		fprintf(stderr, "certgate: cannot create the gateway's locks\n");
		return 1;
	}
	gw.config_path = realpath(config, NULL);
	if (gw.config_path == NULL) {
		fprintf(stderr, "%s: %s\n", config, strerror(errno));
		return 1;
	}
	gw.user_sessions = cg_strmap_create();
	gw.round_robin = cg_strmap_create();
	gw.cancel_keys = cg_strmap_create();
	gw.handshakes = cg_strmap_create();
	gw.postgres = &pgf_ops;
	gw_metrics_t metrics;
	gw_metrics_init(&metrics);
	gw_metrics_observe(&metrics, &gw);
	gw_admin_t *admin = gw_admin_create(&gw, &metrics);
	gw_issuer_t *issuer = admin != NULL ? gw_issuer_create(&gw) : NULL;
	gw.syslog = gw_syslog_create(gw.loop);
	state_ext_t state_ext = {.ext.ops = &state_ext_ops, .gw = &gw};
	if (admin == NULL || issuer == NULL || gw.syslog == NULL) {
		fprintf(stderr, "certgate: out of memory\n");
		return 1;
	}
	gw_extension_add(&gw, &state_ext.ext); /* after the issuer: its waiting logins end first */
	if (RAND_bytes((unsigned char *)&gw.instance, sizeof(gw.instance)) != 1)
		gw.instance = (uint32_t)cg_wall_ms();
	gw.started_ms = gw.loaded_ms = cg_wall_ms();
	gw.generation = 1;

	int code = 0;
	if (start(&gw) < 0) {
		code = 1;
		gw_syslog_stop(gw.syslog);
		gw_extensions_destroy(&gw);      /* their listeners and timers close */
		uv_run(gw.loop, UV_RUN_DEFAULT); /* let the closes finish */
		goto done;
	}
	int rc = gw_workers_start(&gw, gw.rt->snap->gateway.workers, gw.rt);
	if (rc < 0) {
		fprintf(stderr, "certgate: cannot start %u worker(s): %s\n",
		        gw.rt->snap->gateway.workers, uv_strerror(rc));
		exit(1); /* threads half started: nothing sensible to unwind */
	}
	static const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
	for (int i = 0; i < 4; i++) {
		uv_signal_init(gw.loop, &gw.signals[i]);
		gw.signals[i].data = &gw;
		uv_signal_start(&gw.signals[i], on_signal, signums[i]);
	}
	json_t *f = json_pack("{s:s, s:I, s:s}", "version", CERTGATE_VERSION, "generation",
	                      (json_int_t)gw.generation, "config", gw.config_path);
	if (!gw_audit_or_refuse(&gw, "gateway.start", f)) {
		fprintf(stderr, "certgate: cannot write the audit log %s: refusing to start\n",
		        cg_audit_path(gw.audit));
		code = 1;
		gw_drain(&gw);
	} else {
		for (gw_listener_t *l = gw.listeners; l != NULL; l = l->next)
			cg_log(CG_LOG_INFO, "listening on %s%s%s", l->addr,
			       l->service ? " for service " : " (services by SNI)",
			       l->service ? l->service : "");
		cg_log(CG_LOG_INFO, "%u worker(s)", gw.n_workers);
		if (gw_admin_listening(admin) != NULL)
			cg_log(CG_LOG_INFO, "admin API on %s", gw_admin_listening(admin));
		gw.ready = true;
		gw_access_start(&gw); /* grants that ended while down expire now */
		gw.watchdog_on = gw_watchdog_start(gw.loop, &gw.watchdog);
		gw_audit_probe_start(&gw);
		gw_notify_ready("serving");
	}
	uv_run(gw.loop, UV_RUN_DEFAULT);
	gw_workers_stop(&gw);
done:
	uv_loop_close(gw.loop);
	gw_runtime_unref(gw.rt);
	cg_audit_close(gw.audit);
	gw_syslog_destroy(gw.syslog);
	cg_strmap_destroy(gw.user_sessions, NULL);
	cg_strmap_destroy(gw.round_robin, NULL);
	cg_strmap_destroy(gw.cancel_keys, free);
	cg_strmap_destroy(gw.handshakes, NULL);
	gw_state_close(gw.state);
	gw_extensions_destroy(&gw);
	gw_metrics_finish(&metrics);
	free(gw.config_path);
	gw_gateway_finish(&gw);
	return code;
}
