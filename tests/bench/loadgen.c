/* The benchmark's mTLS client: epoll loops of non-blocking OpenSSL client
 * connections, the same for every proxy under test.
 *
 * Every connection is forced to TLS 1.3, TLS_AES_128_GCM_SHA256 and X25519,
 * presents the client certificate, has no session cache and no tickets
 * (every handshake is a full one), and talks to tests/bench/upstream.c
 * through the proxy.
 *
 * loadgen MODE --port N --cert F --key F [options]
 *   probe      one connection: handshake, one-byte round trip; prints
 *              {"ok":..,"version":..,"cipher":..,"group":..}; exit 0 if ok
 *              (with --no-cert: exit 0 if the proxy REFUSED the connection)
 *   handshake  --count N --concurrency C --threads T: connect, full
 *              handshake, one-byte round trip, close; N in all, C in flight
 *   stream     --conns K --bytes B --dir up|down: K connections moving B
 *              bytes in all (B/K each) into the upstream's sink (up) or out
 *              of its source (down)
 *   idle       --conns N --concurrency C: opens N sessions (each proven by a
 *              round trip), prints the result line, then obeys stdin:
 *              "ping" (a round trip on every session still held; prints
 *              "alive OK dropped N", N = sessions the proxy closed so far),
 *              "quit" or EOF (closes everything, exits)
 * options: --host IP (127.0.0.1), --sni NAME[,NAME...] (rotated), --ca F
 *   (verify the proxy's chain), --src-ips K (bind the client side to
 *   127.0.0.2 .. 127.0.0.(K+1), for more source ports), --no-cert
 * Results are one JSON line on stdout; errors are counted and the first few
 * reasons printed on stderr. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum mode { M_PROBE, M_HANDSHAKE, M_STREAM, M_IDLE };
enum state { S_CONNECT, S_HANDSHAKE, S_SEND, S_RECV, S_SHUTDOWN, S_HOLD, S_DONE };

typedef struct opts {
	enum mode mode;
	const char *host;
	int port;
	const char *cert, *key, *ca;
	char **sni;
	int n_sni;
	long count, concurrency, threads, conns;
	uint64_t bytes;
	bool up;
	int src_ips;
	bool no_cert;
} opts_t;

static opts_t o = {.host = "127.0.0.1", .count = 1000, .concurrency = 16, .threads = 1,
                   .conns = 1, .bytes = 64 << 20, .up = true};
static SSL_CTX *ctx;
static atomic_long errors_printed;

typedef struct loop loop_t;

typedef struct conn {
	loop_t *loop;
	int fd;
	SSL *ssl;
	enum state state;
	uint32_t events;
	unsigned char hdr[9]; /* what to send first: 1 byte ping or 'S'/'D' + length */
	size_t hdr_len, hdr_off;
	uint64_t body_left; /* stream up: payload still to send; down: still to read */
	size_t expect;      /* bytes of answer to read in S_RECV (ping, 'K') */
	bool pinging;       /* idle: a ping in progress */
	long held_idx;      /* idle: index in held[], -1 if not held */
} conn_t;

struct loop {
	int ep;
	long to_start, started, in_flight;
	long ok, failed, dropped;
	long conc;
	unsigned seq;
	uint64_t moved;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report_error(const char *what)
{
	if (atomic_fetch_add(&errors_printed, 1) >= 5)
		return;
	unsigned long e = ERR_peek_last_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "loadgen: %s%s%s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "",
	        e ? ": " : "", buf);
}

static void set_events(conn_t *c, uint32_t events)
{
	if (c->events == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(c->loop->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->events = events;
}

static conn_t **held;
static void hold(conn_t *c);

static void conn_free(conn_t *c)
{
	if (c->held_idx >= 0)
		held[c->held_idx] = NULL;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

static void conn_fail(conn_t *c, const char *what)
{
	loop_t *l = c->loop;
	report_error(what);
	ERR_clear_error();
	if (c->state == S_HOLD || c->pinging)
		l->dropped++;
	else
		l->failed++;
	l->in_flight--;
	conn_free(c);
}

static void conn_start(loop_t *l)
{
	conn_t *c = calloc(1, sizeof(*c));
	unsigned seq = l->seq++;
	c->loop = l;
	c->held_idx = -1;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	l->started++;
	l->in_flight++;
	if (c->fd < 0) {
		conn_fail(c, "socket");
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o.src_ips > 0) {
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000002u + (seq % (unsigned)o.src_ips));
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			conn_fail(c, "bind");
			return;
		}
	}
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
	inet_pton(AF_INET, o.host, &sin.sin_addr);
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_connect_state(c->ssl);
	if (o.n_sni > 0)
		SSL_set_tlsext_host_name(c->ssl, o.sni[seq % (unsigned)o.n_sni]);
	if (o.mode == M_STREAM) {
		c->hdr[0] = o.up ? 'S' : 'D';
		uint64_t per = o.bytes / (uint64_t)o.conns;
		for (int i = 0; i < 8; i++)
			c->hdr[1 + i] = (unsigned char)(per >> (56 - 8 * i));
		c->hdr_len = 9;
		c->body_left = per;
		c->expect = o.up ? 1 : 0;
	} else {
		c->hdr[0] = 'x';
		c->hdr_len = 1;
		c->expect = 1;
	}
	c->state = S_CONNECT;
	c->events = EPOLLOUT;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
	epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev);
	if (connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS)
		conn_fail(c, "connect");
}

/* Maps an SSL result to "wait for this event" (0 = fatal). */
static uint32_t want(conn_t *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return EPOLLIN;
	case SSL_ERROR_WANT_WRITE:
		return EPOLLOUT;
	default:
		return 0;
	}
}

static void conn_finish(conn_t *c)
{
	loop_t *l = c->loop;
	l->ok++;
	l->in_flight--;
	if (o.mode == M_IDLE) {
		c->state = S_HOLD;
		hold(c);
		set_events(c, EPOLLIN); /* a readable held session has been closed */
		return;
	}
	/* close_notify, best effort, then close: a full handshake per connection */
	SSL_shutdown(c->ssl);
	conn_free(c);
}

static __thread unsigned char iobuf[64 * 1024];
static unsigned char payload[64 * 1024];

/* Runs the connection as far as it goes without blocking. */
static void conn_step(conn_t *c, uint32_t events)
{
	loop_t *l = c->loop;
	int r;
	for (;;) {
		switch (c->state) {
		case S_CONNECT: {
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err) {
				errno = err;
				conn_fail(c, "connect");
				return;
			}
			c->state = S_HANDSHAKE;
			break;
		}
		case S_HANDSHAKE:
			ERR_clear_error();
			r = SSL_do_handshake(c->ssl);
			if (r == 1) {
				c->state = S_SEND;
				break;
			}
			if (!(events = want(c, r))) {
				errno = 0;
				conn_fail(c, "handshake");
				return;
			}
			set_events(c, events);
			return;
		case S_SEND:
			while (c->hdr_off < c->hdr_len) {
				ERR_clear_error();
				r = SSL_write(c->ssl, c->hdr + c->hdr_off, (int)(c->hdr_len - c->hdr_off));
				if (r <= 0)
					goto io_wait;
				c->hdr_off += (size_t)r;
			}
			if (o.mode == M_STREAM && o.up) {
				while (c->body_left > 0) {
					size_t n = c->body_left < sizeof(payload) ? (size_t)c->body_left
					                                          : sizeof(payload);
					ERR_clear_error();
					r = SSL_write(c->ssl, payload, (int)n);
					if (r <= 0)
						goto io_wait;
					c->body_left -= (uint64_t)r;
					l->moved += (uint64_t)r;
				}
			}
			c->state = S_RECV;
			break;
		case S_RECV:
			while (c->expect > 0 || (o.mode == M_STREAM && !o.up && c->body_left > 0)) {
				ERR_clear_error();
				r = SSL_read(c->ssl, iobuf, sizeof(iobuf));
				if (r <= 0)
					goto io_wait;
				if (o.mode == M_STREAM && !o.up) {
					c->body_left -= (uint64_t)r < c->body_left ? (uint64_t)r : c->body_left;
					l->moved += (uint64_t)r;
				} else {
					c->expect -= (size_t)r < c->expect ? (size_t)r : c->expect;
				}
			}
			if (c->pinging) {
				c->pinging = false;
				c->state = S_HOLD;
				l->ok++;
				l->in_flight--;
				set_events(c, EPOLLIN);
				return;
			}
			conn_finish(c);
			return;
		case S_HOLD:
			/* unsolicited data or EOF on a held session: the proxy closed it */
			ERR_clear_error();
			r = SSL_read(c->ssl, iobuf, sizeof(iobuf));
			if (r > 0)
				return;
			if (want(c, r) == EPOLLIN)
				return;
			errno = 0;
			c->state = S_DONE;
			l->dropped++;
			conn_free(c);
			return;
		default:
			return;
		}
	}
io_wait:
	if (!(events = want(c, r))) {
		int e = SSL_get_error(c->ssl, r);
		errno = 0;
		conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "closed by peer" : "read/write");
		return;
	}
	set_events(c, events);
}

static void ping(conn_t *c)
{
	c->pinging = true;
	c->hdr[0] = 'x';
	c->hdr_len = 1;
	c->hdr_off = 0;
	c->expect = 1;
	c->state = S_SEND;
	c->loop->in_flight++;
	conn_step(c, 0);
}

static void *run_loop(void *arg)
{
	loop_t *l = arg;
	struct epoll_event evs[256];
	while (l->started < l->to_start || l->in_flight > 0) {
		while (l->in_flight < l->conc && l->started < l->to_start)
			conn_start(l);
		int n = epoll_wait(l->ep, evs, 256, 1000);
		for (int i = 0; i < n; i++)
			conn_step(evs[i].data.ptr, evs[i].events);
	}
	return NULL;
}

/* idle mode: the sessions held open, for "ping" */
static long n_held, cap_held;

static void hold(conn_t *c)
{
	if (n_held == cap_held) {
		cap_held = cap_held ? cap_held * 2 : 1024;
		held = realloc(held, sizeof(*held) * (size_t)cap_held);
	}
	c->held_idx = n_held;
	held[n_held++] = c;
}

/* After opening: wait for stdin commands while watching the sessions. */
static void idle_commands(loop_t *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(l->ep, EPOLL_CTL_ADD, 0, &ev);
	char line[64];
	size_t line_len = 0;
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(l->ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr) {
				conn_step(evs[i].data.ptr, evs[i].events);
				continue;
			}
			ssize_t got = read(0, line + line_len, sizeof(line) - 1 - line_len);
			if (got <= 0)
				return; /* stdin closed: quit */
			line_len += (size_t)got;
			line[line_len] = 0;
			char *nl = strchr(line, '\n');
			if (!nl) {
				if (line_len >= sizeof(line) - 1)
					line_len = 0;
				continue;
			}
			*nl = 0;
			line_len = 0;
			if (strcmp(line, "quit") == 0)
				return;
			if (strcmp(line, "ping") != 0)
				continue;
			/* a round trip on every session still held */
			l->ok = 0;
			l->in_flight = 0;
			for (long k = 0; k < n_held; k++)
				if (held[k] && held[k]->state == S_HOLD)
					ping(held[k]);
			double end = now_s() + 30;
			while (l->in_flight > 0 && now_s() < end) {
				int m = epoll_wait(l->ep, evs, 256, 1000);
				for (int j = 0; j < m; j++)
					if (evs[j].data.ptr)
						conn_step(evs[j].data.ptr, evs[j].events);
			}
			printf("alive %ld dropped %ld\n", l->ok, l->dropped);
			fflush(stdout);
		}
	}
}

static void usage(void)
{
	fputs("usage: loadgen probe|handshake|stream|idle --port N --cert F --key F [options]\n"
	      "  (see the comment at the top of tests/bench/loadgen.c)\n",
	      stderr);
	exit(2);
}

static void parse(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "probe") == 0)
		o.mode = M_PROBE;
	else if (strcmp(argv[1], "handshake") == 0)
		o.mode = M_HANDSHAKE;
	else if (strcmp(argv[1], "stream") == 0)
		o.mode = M_STREAM;
	else if (strcmp(argv[1], "idle") == 0)
		o.mode = M_IDLE;
	else
		usage();
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--no-cert") == 0) {
			o.no_cert = true;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (strcmp(a, "--host") == 0)
			o.host = v;
		else if (strcmp(a, "--port") == 0)
			o.port = atoi(v);
		else if (strcmp(a, "--cert") == 0)
			o.cert = v;
		else if (strcmp(a, "--key") == 0)
			o.key = v;
		else if (strcmp(a, "--ca") == 0)
			o.ca = v;
		else if (strcmp(a, "--sni") == 0) {
			char *list = strdup(v);
			for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
				o.sni = realloc(o.sni, sizeof(char *) * (size_t)(o.n_sni + 1));
				o.sni[o.n_sni++] = s;
			}
		} else if (strcmp(a, "--count") == 0)
			o.count = atol(v);
		else if (strcmp(a, "--concurrency") == 0)
			o.concurrency = atol(v);
		else if (strcmp(a, "--threads") == 0)
			o.threads = atol(v);
		else if (strcmp(a, "--conns") == 0)
			o.conns = atol(v);
		else if (strcmp(a, "--bytes") == 0)
			o.bytes = strtoull(v, NULL, 10);
		else if (strcmp(a, "--dir") == 0)
			o.up = strcmp(v, "up") == 0;
		else if (strcmp(a, "--src-ips") == 0)
			o.src_ips = atoi(v);
		else
			usage();
	}
	if (!o.port || (!o.no_cert && (!o.cert || !o.key)) || o.threads < 1 || o.conns < 1 ||
	    o.concurrency < 1)
		usage();
}

static SSL_CTX *make_ctx(void)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
	if (SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256") != 1 ||
	    SSL_CTX_set1_groups_list(c, "X25519") != 1) {
		ERR_print_errors_fp(stderr);
		exit(1);
	}
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                            SSL_MODE_RELEASE_BUFFERS);
	if (!o.no_cert && (SSL_CTX_use_certificate_chain_file(c, o.cert) != 1 ||
	                   SSL_CTX_use_PrivateKey_file(c, o.key, SSL_FILETYPE_PEM) != 1)) {
		ERR_print_errors_fp(stderr);
		exit(1);
	}
	if (o.ca) {
		if (SSL_CTX_load_verify_locations(c, o.ca, NULL) != 1) {
			ERR_print_errors_fp(stderr);
			exit(1);
		}
		SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	}
	return c;
}

/* One blocking-style connection driven by poll, for the probe. */
static int probe(void)
{
	loop_t l = {.ep = epoll_create1(EPOLL_CLOEXEC), .to_start = 1, .conc = 1};
	/* keep the SSL object after success to read what was negotiated */
	conn_t *c;
	struct epoll_event evs[4];
	conn_start(&l);
	c = NULL;
	/* find the connection: it is the only one registered */
	double end = now_s() + 10;
	int rc = 1;
	char version[32] = "", cipher[64] = "", group[32] = "";
	o.mode = M_IDLE; /* hold the session after the round trip so it can be inspected */
	while (now_s() < end) {
		int n = epoll_wait(l.ep, evs, 4, 200);
		for (int i = 0; i < n; i++) {
			c = evs[i].data.ptr;
			conn_step(c, evs[i].events);
		}
		if (l.ok || l.failed)
			break;
	}
	if (l.ok && c) {
		snprintf(version, sizeof(version), "%s", SSL_get_version(c->ssl));
		snprintf(cipher, sizeof(cipher), "%s", SSL_get_cipher_name(c->ssl));
		int nid = SSL_get_negotiated_group(c->ssl);
		snprintf(group, sizeof(group), "%s", nid ? OBJ_nid2sn(nid & ~TLSEXT_nid_unknown) : "");
		conn_free(c);
	}
	bool ok = l.ok == 1;
	printf("{\"ok\":%s,\"version\":\"%s\",\"cipher\":\"%s\",\"group\":\"%s\"}\n",
	       ok ? "true" : "false", version, cipher, group);
	if (o.no_cert)
		rc = ok ? 1 : 0;
	else
		rc = ok ? 0 : 1;
	close(l.ep);
	return rc;
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(payload, 'p', sizeof(payload));
	ctx = make_ctx();
	int rc = 0;

	if (o.mode == M_PROBE) {
		rc = probe();
		SSL_CTX_free(ctx);
		return rc;
	}

	long nthreads = o.mode == M_HANDSHAKE ? o.threads : 1;
	long total = o.mode == M_HANDSHAKE ? o.count : o.conns;
	long conc = o.mode == M_HANDSHAKE ? o.concurrency : o.mode == M_STREAM ? o.conns
	                                                                        : o.concurrency;
	loop_t *loops = calloc((size_t)nthreads, sizeof(*loops));
	for (long t = 0; t < nthreads; t++) {
		loops[t].ep = epoll_create1(EPOLL_CLOEXEC);
		loops[t].to_start = total / nthreads + (t < total % nthreads ? 1 : 0);
		loops[t].conc = conc / nthreads + (t < conc % nthreads ? 1 : 0);
		if (loops[t].conc < 1)
			loops[t].conc = 1;
		loops[t].seq = (unsigned)t * 7919u;
	}
	double t0 = now_s();
	if (nthreads == 1) {
		run_loop(&loops[0]);
	} else {
		pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
		for (long t = 0; t < nthreads; t++)
			pthread_create(&th[t], NULL, run_loop, &loops[t]);
		for (long t = 0; t < nthreads; t++)
			pthread_join(th[t], NULL);
		free(th);
	}
	double elapsed = now_s() - t0;
	long ok = 0, failed = 0;
	uint64_t moved = 0;
	for (long t = 0; t < nthreads; t++) {
		ok += loops[t].ok;
		failed += loops[t].failed + loops[t].dropped;
		moved += loops[t].moved;
	}
	printf("{\"ok\":%ld,\"failed\":%ld,\"seconds\":%.6f,\"bytes\":%llu}\n", ok, failed, elapsed,
	       (unsigned long long)moved);
	fflush(stdout);
	if (o.mode == M_IDLE) {
		idle_commands(&loops[0]);
		for (long k = 0; k < n_held; k++)
			if (held[k])
				conn_free(held[k]);
		free(held);
		failed = 0; /* the opening phase was reported already */
	}
	for (long t = 0; t < nthreads; t++)
		close(loops[t].ep);
	free(loops);
	SSL_CTX_free(ctx);
	return failed ? 1 : rc;
}
