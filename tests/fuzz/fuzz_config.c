/* Fuzzes policy/pol_config.c (and through it cg_json.c, pol_claims.c's map
 * compiler, pol_decide.c's index and pol_show.c): the whole configuration
 * load, from files, as `certgate serve`, `check` and a reload do it.
 *
 * Input: one flag byte, then the configuration text.
 *   flag bit 0   the text is split at its first NUL byte: before it is
 *                certgate.json, after it policy.json (the file a
 *                "policy_file": "policy.json" names); without the bit no
 *                policy.json exists
 *   flag bit 1   load with pol_snapshot_load_partial (what `certgate check`
 *                uses), whose half-filled snapshots must free cleanly too
 * Both files live in a directory of this process's own (under /dev/shm when
 * it exists), removed at exit. A snapshot that loads is then asked for each
 * of its services by name and SNI, and for a decision on each, so that rules
 * the loader accepted are also evaluated.
 *
 * A policy_file that names anything outside that directory (an absolute
 * path, a '/' past "./") is skipped rather than loaded: the loader would
 * read it, and /dev/kmsg or a FIFO would only hang the fuzzer. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cg_errors.h"
#include "cg_log.h"
#include "fuzz_util.h"
#include "pol_claims.h"
#include "pol_config.h"
#include "pol_decide.h"

#define FLAG_SPLIT   0x01
#define FLAG_PARTIAL 0x02

static char work_dir[256];
static char config_path[300];
static char policy_path[300];
static bool verbose; /* CERTGATE_FUZZ_VERBOSE=1: print what each load says */

static void work_dir_remove(void)
{
	if (!work_dir[0])
		return;
	unlink(config_path);
	unlink(policy_path);
	rmdir(work_dir);
	work_dir[0] = '\0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct stat st;
	const char *base = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	else if (!base || !*base)
		base = "/tmp";
	snprintf(work_dir, sizeof(work_dir), "%s/certgate-fuzz-config-XXXXXX", base);
	FUZZ_CHECK(mkdtemp(work_dir) != NULL);
	snprintf(config_path, sizeof(config_path), "%s/certgate.json", work_dir);
	snprintf(policy_path, sizeof(policy_path), "%s/policy.json", work_dir);
	atexit(work_dir_remove);
	/* the loader warns about legal but odd rules on stderr: keep the
	 * fuzzer's output readable */
	cg_log_set_level(CG_LOG_ERROR);
	verbose = getenv("CERTGATE_FUZZ_VERBOSE") != NULL;
	return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	while (size > 0) {
		ssize_t n = write(fd, data, size);
		if (n < 0 && errno == EINTR)
			continue;
		FUZZ_CHECK(n > 0);
		data += n;
		size -= (size_t)n;
	}
	FUZZ_CHECK(close(fd) == 0);
}

/* Does the text name a policy_file that resolves outside the work dir? Only
 * then is the document parsed here: a key spelling "policy_file" contains
 * "policy" or a \u escape. */
static bool names_outside(const uint8_t *text, size_t size)
{
	json_t *root, *value;
	const char *name;
	bool outside = false;

	if (!memmem(text, size, "policy", 6) && !memmem(text, size, "\\u", 2))
		return false;
	root = json_loadb((const char *)text, size, JSON_REJECT_DUPLICATES, NULL);
	if (!root)
		return false;
	value = json_object_get(root, "policy_file");
	if (json_is_string(value)) {
		name = json_string_value(value);
		/* path_join drops leading "./" (and the slashes after it) */
		while (name[0] == '.' && name[1] == '/') {
			name += 2;
			while (name[0] == '/')
				name++;
		}
		outside = strchr(name, '/') != NULL;
	}
	json_decref(root);
	return outside;
}

/* What `certgate explain` prints for each rule considered. */
static void trace_rule(void *arg, const pol_rule_t *rule, const char *why_not)
{
	size_t *considered = arg;

	FUZZ_CHECK(rule != NULL && rule->name != NULL);
	FUZZ_CHECK(why_not == NULL || why_not[0] != '\0');
	(*considered)++;
}

static void decide_each_service(const pol_snapshot_t *snap)
{
	static const char *const groups[] = {"dba", "analysts"};
	pol_claims_t claims = {
	        .user = (char *)"alice@example.com",
	        .groups = (char **)groups,
	        .n_groups = 2,
	        .device_id = (char *)"laptop-1",
	        .device_trust = POL_TRUST_MEDIUM,
	};
	struct sockaddr_in source = {.sin_family = AF_INET, .sin_port = htons(40000)};
	pol_decision_t decision;

	source.sin_addr.s_addr = htonl(0x0a010203); /* 10.1.2.3 */
	for (size_t i = 0; i < snap->n_services; i++) {
		const pol_service_t *svc = &snap->services[i];
		pol_request_t req = {
		        .service = svc->name,
		        .claims = &claims,
		        .feed_trust = POL_TRUST_NONE,
		        .source = (const struct sockaddr *)&source,
		        .db_user = svc->mode == POL_MODE_POSTGRES ? "alice" : NULL,
		        .db_name = svc->mode == POL_MODE_POSTGRES ? "orders" : NULL,
		        /* every other service with an access grant that runs */
		        .grant_until_ms = i % 2 ? 0 : INT64_MAX,
		};
		FUZZ_CHECK(pol_snapshot_service(snap, svc->name) == svc);
		FUZZ_CHECK(pol_snapshot_service_by_sni(snap, svc->name) == svc);
		for (size_t k = 0; k < svc->n_sni; k++)
			FUZZ_CHECK(pol_snapshot_service_by_sni(snap, svc->sni[k]) == svc);
		size_t considered = 0;
		pol_decide(snap, &req, &decision, i % 2 ? trace_rule : NULL, &considered);
		FUZZ_CHECK(decision.rule != NULL);
		FUZZ_CHECK(considered <= snap->n_rules);
		FUZZ_CHECK(memchr(decision.reason, '\0', sizeof(decision.reason)) != NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *config = data + 1, *policy = NULL, *nul;
	size_t config_size, policy_size = 0;
	uint8_t flags;
	cg_errors_t errs;
	pol_snapshot_t *snap;

	if (size < 1 || size > 256 * 1024)
		return 0;
	flags = data[0];
	config_size = size - 1;
	if ((flags & FLAG_SPLIT) && (nul = memchr(config, '\0', config_size)) != NULL) {
		policy = nul + 1;
		policy_size = config_size - (size_t)(policy - config);
		config_size = (size_t)(nul - config);
	}
	if (names_outside(config, config_size))
		return 0;
	write_file(config_path, config, config_size);
	if (flags & FLAG_SPLIT)
		write_file(policy_path, policy ? policy : (const uint8_t *)"", policy_size);
	else if (unlink(policy_path) != 0)
		FUZZ_CHECK(errno == ENOENT);

	cg_errors_init(&errs);
	if (flags & FLAG_PARTIAL) {
		bool complete = false;
		snap = pol_snapshot_load_partial(config_path, &errs, &complete);
		FUZZ_CHECK(complete == (errs.count == 0));
		if (complete) {
			FUZZ_CHECK(snap != NULL && snap->index != NULL && snap->shown != NULL);
			decide_each_service(snap);
		}
	} else {
		snap = pol_snapshot_load(config_path, &errs);
		/* a snapshot, or the reasons there is none: never both, never neither */
		FUZZ_CHECK((snap != NULL) == (errs.count == 0));
		if (snap) {
			FUZZ_CHECK(snap->index != NULL && snap->shown != NULL);
			FUZZ_CHECK(strlen(snap->sha256) == 64);
			decide_each_service(snap);
		}
	}
	for (size_t i = 0; i < errs.count; i++) {
		FUZZ_CHECK(errs.items[i] != NULL && errs.items[i][0] != '\0');
		if (verbose)
			fprintf(stderr, "%s\n", errs.items[i]);
	}
	if (verbose)
		fprintf(stderr, "-> %s\n", snap ? "snapshot" : "no snapshot");
	pol_snapshot_unref(snap);
	cg_errors_finish(&errs);
	return 0;
}
