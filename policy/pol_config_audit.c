/* The "audit" section: where the log goes (path, on_failure), its hash
 * chain (chain, state) and its copy to syslog (CONFIG.md, audit). The
 * gateway opens the file and the syslog sender; this only reads the keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "pol_loader.h"

/* RFC 5424 6.2.1 facilities, by the names syslog.conf(5) uses. */
static const struct {
	const char *name;
	int code;
} facilities[] = {
        {"kern", 0},      {"user", 1},    {"mail", 2},    {"daemon", 3},    {"auth", 4},
        {"syslog", 5},    {"lpr", 6},     {"news", 7},    {"uucp", 8},      {"cron", 9},
        {"authpriv", 10}, {"ftp", 11},    {"ntp", 12},    {"security", 13}, {"console", 14},
        {"local0", 16},   {"local1", 17}, {"local2", 18}, {"local3", 19},   {"local4", 20},
        {"local5", 21},   {"local6", 22}, {"local7", 23},
};

static const char *const expect_address =
        "expected \"unix:/PATH\", \"udp:HOST:PORT\" or \"tcp:HOST:PORT\"";

static void load_address(loader_t *ld, const cg_jdoc_t *doc, const char *address,
                         pol_syslog_cfg_t *sl)
{
	if (strncmp(address, "unix:", 5) == 0) {
		const char *path = address + 5;
		if (path[0] != '/' || pol_ld_has_control(path) ||
		    strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			pol_ld_err(ld, doc, "audit.syslog.address",
			           "expected \"unix:\" and an absolute socket path (at most %zu "
			           "bytes)",
			           sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return;
		}
		sl->transport = POL_SYSLOG_UNIX;
		sl->unix_path = pol_ld_xstrdup(ld, path);
	} else if (strncmp(address, "udp:", 4) == 0 || strncmp(address, "tcp:", 4) == 0) {
		if (!cg_hostport_parse(address + 4, &sl->host)) {
			pol_ld_err(ld, doc, "audit.syslog.address", "%s (%s)", expect_address,
			           pol_ld_expect_hostport);
			return;
		}
		sl->transport = address[0] == 'u' ? POL_SYSLOG_UDP : POL_SYSLOG_TCP;
	} else {
		pol_ld_err(ld, doc, "audit.syslog.address", "%s", expect_address);
		return;
	}
	sl->address = pol_ld_xstrdup(ld, address);
}

static void load_syslog(loader_t *ld, const cg_jdoc_t *doc, const json_t *obj)
{
	static const char *const keys[] = {"address", "facility", "format", NULL};
	pol_syslog_cfg_t *sl = &ld->snap->audit.syslog;
	const char *address = NULL, *facility = NULL, *format = NULL;

	sl->facility = 4;
	sl->facility_name = "auth";
	if (!json_is_object(obj)) {
		pol_ld_err(ld, doc, "audit.syslog", "expected an object");
		return;
	}
	pol_ld_check_keys(ld, doc, obj, "audit.syslog", keys);
	if (pol_ld_get_string(ld, doc, obj, "audit.syslog", "facility", false, &facility) &&
	    facility) {
		size_t i = 0, n = sizeof(facilities) / sizeof(facilities[0]);
		while (i < n && strcmp(facilities[i].name, facility) != 0)
			i++;
		if (i == n) {
			pol_ld_err(ld, doc, "audit.syslog.facility",
			           "expected a facility name: auth, authpriv, daemon, user, local0 "
			           "... "
			           "local7, security, ...");
		} else {
			sl->facility = facilities[i].code;
			sl->facility_name = facilities[i].name;
		}
	}
	if (pol_ld_get_string(ld, doc, obj, "audit.syslog", "format", false, &format) && format &&
	    strcmp(format, "rfc5424") != 0)
		pol_ld_err(ld, doc, "audit.syslog.format", "expected \"rfc5424\"");
	if (pol_ld_get_string(ld, doc, obj, "audit.syslog", "address", true, &address) && address)
		load_address(ld, doc, address, sl);
}

void pol_ld_load_audit(loader_t *ld, const cg_jdoc_t *doc, const json_t *aud, const char *dir)
{
	static const char *const keys[] = {"path", "on_failure", "chain", "state", "syslog", NULL};
	pol_audit_cfg_t *a = &ld->snap->audit;
	const char *path = NULL, *on_failure = NULL, *state = NULL;

	a->on_failure = CG_AUDIT_REFUSE;
	a->chain = true;
	if (aud && !json_is_object(aud)) {
		pol_ld_err(ld, doc, "audit", "expected an object");
		aud = NULL;
	}
	if (aud) {
		pol_ld_check_keys(ld, doc, aud, "audit", keys);
		if (pol_ld_get_string(ld, doc, aud, "audit", "path", false, &path) && path &&
		    pol_ld_has_control(path)) {
			pol_ld_err(ld, doc, "audit.path", "expected a file path or \"-\"");
			path = NULL;
		}
		if (pol_ld_get_string(ld, doc, aud, "audit", "on_failure", false, &on_failure) &&
		    on_failure) {
			if (strcmp(on_failure, "refuse") == 0)
				a->on_failure = CG_AUDIT_REFUSE;
			else if (strcmp(on_failure, "continue") == 0)
				a->on_failure = CG_AUDIT_CONTINUE;
			else
				pol_ld_err(ld, doc, "audit.on_failure",
				           "expected \"refuse\" or \"continue\"");
		}
		pol_ld_get_bool(ld, doc, aud, "audit", "chain", true, &a->chain);
		if (pol_ld_get_string(ld, doc, aud, "audit", "state", false, &state) && state &&
		    (*state == '\0' || strcmp(state, "-") == 0 || pol_ld_has_control(state))) {
			pol_ld_err(ld, doc, "audit.state", "expected a file path");
			state = NULL;
		}
		if (state && !a->chain) {
			pol_ld_err(ld, doc, "audit.state", "applies only with audit.chain on");
			state = NULL;
		}
		if (json_object_get(aud, "syslog"))
			load_syslog(ld, doc, json_object_get(aud, "syslog"));
	}
	if (!path || strcmp(path, "-") == 0) {
		a->path = pol_ld_xstrdup(ld, "-");
	} else if (!(a->path = pol_ld_path_join(dir, path))) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
		return;
	}
	if (!a->chain || (!state && strcmp(a->path, "-") == 0))
		return; /* no state file */
	if (state) {
		a->state = pol_ld_path_join(dir, state);
	} else {
		size_t n = strlen(a->path) + sizeof(".state");
		if ((a->state = malloc(n)) != NULL)
			snprintf(a->state, n, "%s.state", a->path);
	}
	if (!a->state) {
		ld->failed = true;
		cg_errors_add(ld->errs, "out of memory");
	} else if (strcmp(a->state, a->path) == 0) {
		pol_ld_err(ld, doc, "audit.state", "must not be the audit log itself");
	}
}
