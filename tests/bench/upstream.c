/* The benchmark's upstream: one epoll loop, plaintext TCP, the same process
 * behind every proxy under test.
 *
 * The first byte a client sends chooses what the connection does:
 *   'S' + 8-byte big-endian length L: sink — read and discard L bytes, then
 *        answer one byte 'K' (so the client knows every byte got through
 *        without relying on half-close, which proxies treat differently);
 *   'D' + 8-byte big-endian length L: source — send L bytes, then keep the
 *        connection until the client closes it;
 *   'G': an HTTP/1.0 GET (`openssl s_time -www PAGE` sends one) — read the
 *        request up to its empty line (at most 4 KiB), answer 200 with a
 *        128-byte body and close, as an HTTP/1.0 server does: the stock
 *        client reads the answer up to the close;
 *   anything else: echo — every byte read (the first one included) is sent
 *        back. Idle sessions use this too: they sit in epoll costing nothing.
 *
 * usage: upstream [--listen IP] [--port N]
 * Prints "port N" on stdout once listening (N chosen by the kernel when
 * --port is 0 or absent), then runs until SIGTERM/SIGINT. On SIGUSR1 it
 * prints "accepted A open O": connections accepted since it started and
 * connections open now, so the benchmark can tell how many upstream
 * connections a proxy opened for a load (the difference of two reports). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ST_HEAD, ST_ECHO, ST_SINK, ST_SOURCE, ST_DRAIN, ST_HTTP, ST_CLOSING };

typedef struct conn {
	int fd;
	int state;
	unsigned char head[9];
	size_t head_len;
	char *req; /* ST_HTTP: the request read so far (REQ_MAX bytes, allocated then) */
	size_t req_len;
	uint64_t left;      /* sink: bytes still to read; source: bytes still to send */
	unsigned char *out; /* echo: bytes not yet written back */
	size_t out_len, out_off;
	uint32_t events;
} conn_t;

#define BUF (256 * 1024)
static unsigned char buf[BUF];
static unsigned char zeros[BUF];
static volatile sig_atomic_t stop, report;
static int ep;
static unsigned long long accepted, open_now;

#define REQ_MAX       4096
#define HTTP_BODY_LEN 128
static const char http_head[] = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                "Content-Length: 128\r\nConnection: close\r\n\r\n";

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

static void set_events(conn_t *c, uint32_t events)
{
	if (c->events == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->events = events;
}

static void conn_close(conn_t *c)
{
	open_now--;
	close(c->fd); /* removes it from epoll */
	free(c->out);
	free(c->req);
	free(c);
}

/* Writes what it can of c->out; returns -1 on a fatal error. */
static int flush_out(conn_t *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->out_off += (size_t)n;
	}
	c->out_len = c->out_off = 0;
	return 0;
}

static int queue_out(conn_t *c, const unsigned char *data, size_t len)
{
	if (c->out_len == 0) { /* try directly first: the usual case */
		while (len > 0) {
			ssize_t n = write(c->fd, data, len);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					break;
				return -1;
			}
			data += n;
			len -= (size_t)n;
		}
		if (len == 0)
			return 0;
	}
	unsigned char *grown = realloc(c->out, c->out_len + len);
	if (!grown)
		return -1;
	c->out = grown;
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Sends as much of the source stream as the socket takes. */
static int pump_source(conn_t *c)
{
	while (c->left > 0) {
		size_t want = c->left < BUF ? (size_t)c->left : BUF;
		ssize_t n = write(c->fd, zeros, want);
		if (n < 0) {
			if (errno == EAGAIN) {
				set_events(c, EPOLLIN | EPOLLOUT);
				return 0;
			}
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->left -= (uint64_t)n;
	}
	c->state = ST_DRAIN;
	set_events(c, EPOLLIN);
	return 0;
}

/* ST_HTTP: collects the request; once its empty line is in, queues the
 * answer and moves to ST_CLOSING (closed once the answer is written).
 * Returns -1 to close at once (a request over 4 KiB). */
static int on_http(conn_t *c, const unsigned char *p, size_t n)
{
	if (!c->req && !(c->req = malloc(REQ_MAX)))
		return -1;
	if (n > REQ_MAX - 1 - c->req_len)
		return -1;
	memcpy(c->req + c->req_len, p, n);
	c->req_len += n;
	c->req[c->req_len] = 0;
	if (!strstr(c->req, "\r\n\r\n"))
		return 0;
	unsigned char answer[sizeof(http_head) - 1 + HTTP_BODY_LEN];
	memcpy(answer, http_head, sizeof(http_head) - 1);
	memset(answer + sizeof(http_head) - 1, 'b', HTTP_BODY_LEN);
	c->state = ST_CLOSING;
	return queue_out(c, answer, sizeof(answer));
}

/* Handles bytes read in state ST_HEAD / ST_ECHO / ST_SINK / ST_DRAIN / ST_HTTP. */
static int on_data(conn_t *c, const unsigned char *p, size_t n)
{
	while (n > 0) {
		switch (c->state) {
		case ST_HEAD:
			if (c->head_len == 0 && p[0] == 'G') {
				c->state = ST_HTTP;
				continue;
			}
			if (c->head_len == 0 && p[0] != 'S' && p[0] != 'D') {
				c->state = ST_ECHO;
				continue;
			}
			while (n > 0 && c->head_len < 9) {
				c->head[c->head_len++] = *p++;
				n--;
			}
			if (c->head_len < 9)
				return 0;
			c->left = be64(c->head + 1);
			if (c->head[0] == 'S') {
				c->state = ST_SINK;
				if (c->left == 0 && queue_out(c, (const unsigned char *)"K", 1) < 0)
					return -1;
			} else {
				c->state = ST_SOURCE;
				return pump_source(c);
			}
			break;
		case ST_ECHO:
			if (queue_out(c, p, n) < 0)
				return -1;
			if (c->out_len > 0)
				set_events(c, EPOLLOUT); /* stop reading until drained */
			return 0;
		case ST_SINK: {
			size_t take = (uint64_t)n < c->left ? n : (size_t)c->left;
			c->left -= take;
			p += take;
			n -= take;
			if (c->left == 0 && take > 0) {
				if (queue_out(c, (const unsigned char *)"K", 1) < 0)
					return -1;
				c->state = ST_DRAIN;
			}
			break;
		}
		case ST_HTTP:
			return on_http(c, p, n);
		default: /* ST_SOURCE, ST_DRAIN, ST_CLOSING: ignore what comes */
			return 0;
		}
	}
	return 0;
}

static void on_event(conn_t *c, uint32_t events)
{
	if (events & EPOLLOUT) {
		if (c->state == ST_SOURCE) {
			if (pump_source(c) < 0)
				goto fail;
		} else {
			if (flush_out(c) < 0)
				goto fail;
			if (c->out_len == 0 && c->state == ST_CLOSING)
				goto fail; /* the HTTP answer is out: close, as HTTP/1.0 does */
			if (c->out_len == 0)
				set_events(c, EPOLLIN);
		}
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (c->events & EPOLLOUT && c->state == ST_ECHO && c->out_len > 0)
			return; /* back-pressure: read again once the echo is written */
		for (int i = 0; i < 16; i++) {
			ssize_t n = read(c->fd, buf, BUF);
			if (n == 0)
				goto fail; /* EOF: the client (through the proxy) closed */
			if (n < 0) {
				if (errno == EAGAIN)
					break;
				if (errno == EINTR)
					continue;
				goto fail;
			}
			if (on_data(c, buf, (size_t)n) < 0)
				goto fail;
			if (c->state == ST_CLOSING) {
				if (c->out_len == 0)
					goto fail; /* answered in full: close */
				set_events(c, EPOLLOUT);
				return;
			}
			if (c->out_len > 0 || c->state == ST_SOURCE)
				break;
			if ((size_t)n < BUF)
				break;
		}
	}
	return;
fail:
	conn_close(c);
}

int main(int argc, char **argv)
{
	const char *ip = "127.0.0.1";
	int port = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
			ip = argv[++i];
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
			port = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: upstream [--listen IP] [--port N]\n");
			return 2;
		}
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 4096) < 0) {
		perror("upstream: listen");
		return 1;
	}
	socklen_t sl = sizeof(sin);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	printf("port %d\n", ntohs(sin.sin_port));
	fflush(stdout);

	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
	struct epoll_event evs[256];
	while (!stop) {
		if (report) {
			report = 0;
			printf("accepted %llu open %llu\n", accepted, open_now);
			fflush(stdout);
		}
		int n = epoll_wait(ep, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			conn_t *c = evs[i].data.ptr;
			if (c) {
				on_event(c, evs[i].events);
				continue;
			}
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0)
					break;
				accepted++;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				conn_t *nc = calloc(1, sizeof(*nc));
				if (!nc) {
					close(fd);
					continue;
				}
				open_now++;
				nc->fd = fd;
				nc->state = ST_HEAD;
				nc->events = EPOLLIN;
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
					conn_close(nc);
			}
		}
	}
	close(ep);
	close(lfd);
	return 0;
}
