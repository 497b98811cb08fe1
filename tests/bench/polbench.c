/* Policy decision time: loads a configuration (made by bench.py with many
 * rules, services and groups) through the policy library, then times
 * pol_decide — the live path, through the per-snapshot index — over a fixed
 * set of requests cycled many times.
 *
 * usage: polbench CONFIG [SECONDS] [TEAMS] [AT]
 * Requests mix: users u<i>@team<t>.example (t < TEAMS, default 100, as
 * bench.py writes "users" globs) and contractors (hit deny rules); 1 to 3
 * groups drawn from the groups the rules name plus "bench"; any service;
 * device trust of every level; client address 127.0.0.2; the time at start,
 * or AT (RFC 3339), for rules with time windows.
 * Prints one JSON line: rules, services, decisions, ns_per_decision,
 * allowed, denied, load_ms. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cg_time.h"
#include "pol_config.h"
#include "pol_decide.h"

#define N_REQ 4096

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: polbench CONFIG [SECONDS] [TEAMS] [AT]\n");
		return 2;
	}
	double seconds = argc > 2 ? atof(argv[2]) : 1.0;
	int teams = argc > 3 ? atoi(argv[3]) : 100;

	cg_errors_t errs;
	cg_errors_init(&errs);
	double t0 = now_s();
	pol_snapshot_t *snap = pol_snapshot_load(argv[1], &errs);
	double load_ms = (now_s() - t0) * 1e3;
	if (!snap) {
		for (size_t i = 0; i < errs.count; i++)
			fprintf(stderr, "%s\n", errs.items[i]);
		return 1;
	}
	cg_errors_finish(&errs);

	/* every group the rules name */
	size_t n_groups = 0, cap = 64;
	const char **groups = malloc(cap * sizeof(*groups));
	groups[n_groups++] = "bench";
	for (size_t r = 0; r < snap->n_rules; r++)
		for (size_t g = 0; g < snap->rules[r].n_groups; g++) {
			if (n_groups == cap)
				groups = realloc(groups, (cap *= 2) * sizeof(*groups));
			groups[n_groups++] = snap->rules[r].groups[g];
		}

	static pol_claims_t claims[N_REQ];
	static pol_request_t reqs[N_REQ];
	static char *group_lists[N_REQ][3];
	/* the gateway decides as of the clock it read for the locks */
	int64_t now_ms = cg_wall_ms();
	if (argc > 4 && !cg_rfc3339_parse(argv[4], &now_ms)) {
		fprintf(stderr, "polbench: AT: expected an RFC 3339 time\n");
		return 2;
	}
	struct sockaddr_in src = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
	for (int i = 0; i < N_REQ; i++) {
		char user[96];
		if (next() % 10 == 0)
			snprintf(user, sizeof(user), "c%d@contractor%d.example",
			         (int)(next() % 1000), (int)(next() % 50));
		else
			snprintf(user, sizeof(user), "u%d@team%d.example", (int)(next() % 100000),
			         (int)(next() % (uint64_t)teams));
		claims[i].user = strdup(user);
		claims[i].n_groups = 1 + next() % 3;
		for (size_t g = 0; g < claims[i].n_groups; g++)
			group_lists[i][g] = (char *)groups[next() % n_groups];
		claims[i].groups = group_lists[i];
		claims[i].device_id = NULL;
		claims[i].device_trust = (pol_trust_t)((int)(next() % 5) - 1); /* NONE .. HIGH */
		reqs[i].service = snap->services[next() % snap->n_services].name;
		reqs[i].claims = &claims[i];
		reqs[i].feed_trust = POL_TRUST_NONE;
		reqs[i].source = (const struct sockaddr *)&src;
		reqs[i].db_user = NULL;
		reqs[i].db_name = NULL;
		reqs[i].at_ms = now_ms;
	}

	pol_decision_t d;
	long allowed = 0, denied = 0;
	for (int i = 0; i < N_REQ; i++) { /* warm up, and count the mix once */
		pol_decide(snap, &reqs[i], &d, NULL, NULL);
		if (d.allow)
			allowed++;
		else
			denied++;
	}
	long decisions = 0;
	double start = now_s(), elapsed;
	do {
		for (int i = 0; i < N_REQ; i++)
			pol_decide(snap, &reqs[i], &d, NULL, NULL);
		decisions += N_REQ;
		elapsed = now_s() - start;
	} while (elapsed < seconds);

	printf("{\"rules\":%zu,\"services\":%zu,\"groups_named\":%zu,\"decisions\":%ld,"
	       "\"ns_per_decision\":%.1f,\"allowed\":%ld,\"denied\":%ld,\"load_ms\":%.1f}\n",
	       snap->n_rules, snap->n_services, n_groups, decisions,
	       elapsed * 1e9 / (double)decisions, allowed, denied, load_ms);
	for (int i = 0; i < N_REQ; i++)
		free(claims[i].user);
	free(groups);
	pol_snapshot_unref(snap);
	return 0;
}
