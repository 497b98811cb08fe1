/* `certgate health [--admin ADDR:PORT] [--live]`: exit 0 when the local
 * admin API's /readyz (with --live: /healthz) answers 200 — health checks for
 * images without curl. Readiness fails while draining or while the audit log
 * cannot be written; liveness only when the event loop does not answer. Blocking
 * sockets with a 3 s limit: this is a one-shot client, not the gateway. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_addr.h"
#include "cmd/cli.h"

#define HEALTH_TIMEOUT_MS 3000

static int wait_fd(int fd, short events)
{
	struct pollfd p = {.fd = fd, .events = events};
	int rc = poll(&p, 1, HEALTH_TIMEOUT_MS);
	return rc == 1 ? 0 : -1;
}

static int probe(const struct sockaddr_storage *ss, const char *path, char *status, size_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int rc = -1;
	socklen_t sl = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                         : sizeof(struct sockaddr_in);
	if (connect(fd, (const struct sockaddr *)ss, sl) < 0 && errno != EINPROGRESS)
		goto done;
	int err = 0;
	socklen_t el = sizeof(err);
	if (wait_fd(fd, POLLOUT) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 ||
	    err != 0)
		goto done;
	char req[96];
	int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
	if (send(fd, req, (size_t)reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
		goto done;
	size_t got = 0;
	while (got < len - 1 && memchr(status, '\n', got) == NULL) {
		if (wait_fd(fd, POLLIN) < 0)
			goto done;
		ssize_t n = recv(fd, status + got, len - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	status[got] = '\0';
	char *eol = strpbrk(status, "\r\n");
	if (eol != NULL)
		*eol = '\0';
	rc = 0;
done:
	close(fd);
	return rc;
}

int gw_health_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"admin", required_argument, NULL, 'a'},
	        {"live", no_argument, NULL, 'l'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	static const char usage[] =
	        "usage: certgate health [--admin ADDR:PORT] [--live]\n"
	        "Exit 0 if the admin API's /readyz answers 200 (default 127.0.0.1:9090), else 1.\n"
	        "--live asks /healthz instead: the event loop answers (liveness).\n";
	const char *admin = "127.0.0.1:9090";
	const char *path = "/readyz";
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'a':
			admin = optarg;
			break;
		case 'l':
			path = "/healthz";
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	cg_hostport_t hp;
	struct sockaddr_storage ss;
	if (optind != argc || !cg_hostport_parse(admin, &hp) ||
	    !cg_hostport_to_sockaddr(&hp, &ss)) {
		fprintf(stderr, "certgate health: --admin %s: expected IP:PORT\n", admin);
		return 2;
	}
	char status[256];
	if (probe(&ss, path, status, sizeof(status)) < 0) {
		fprintf(stderr, "certgate health: %s: no answer\n", admin);
		return 1;
	}
	if (strncmp(status, "HTTP/1.", 7) == 0 && strncmp(status + 8, " 200", 4) == 0) {
		printf("%s: %s\n", admin, strcmp(path, "/healthz") == 0 ? "alive" : "ready");
		return 0;
	}
	fprintf(stderr, "certgate health: %s: %s\n", admin, status);
	return 1;
}
