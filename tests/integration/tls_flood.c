/* A hostile TLS 1.3 client for the abuse tests (test_abuse.py): completes
 * the handshake with a client certificate, then sends KeyUpdate messages
 * and never reads a byte of what the gateway answers. Python's ssl has no
 * KeyUpdate API; OpenSSL's SSL_key_update has.
 *
 * tls_flood MODE --port N --cert F --key F --ca F [options]
 *   flood       KeyUpdate(update_requested), back to back, until the
 *               gateway closes or --seconds run out
 *   interleave  one application byte, then KeyUpdate(update_requested),
 *               again and again (never over a cap of KeyUpdates in a row)
 *   trickle     KeyUpdate(update_not_requested) every --every-ms
 *               (control traffic only, slow: for idle_timeout)
 * options: --host IP (127.0.0.1), --sni NAME, --seconds S (10),
 *   --every-ms M (100), --batch N (flood, interleave: N rounds gathered
 *   into one socket write, 256), --rcvbuf B (SO_RCVBUF, 4096: what the
 *   gateway answers piles up on its side, not in this one's kernel buffer),
 *   --postgres (an SSLRequest first, as psql sends)
 * Prints one JSON line: {"connected":..,"updates":..,"app_bytes":..,
 * "seconds":..,"ended":"closed"|"time"|..}; exit 0 once connected. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

typedef enum { M_FLOOD, M_INTERLEAVE, M_TRICKLE } flood_mode_t;

typedef struct opts {
	flood_mode_t mode;
	const char *host, *sni, *cert, *key, *ca;
	int port;
	double seconds;
	int every_ms;
	int batch;
	int rcvbuf;
	int mss;
	bool postgres;
} opts_t;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: tls_flood flood|interleave|trickle --port N --cert F --key F "
	                "--ca F [--host IP] [--sni NAME] [--seconds S] [--every-ms M] "
	                "[--batch N] [--rcvbuf B] "
	                "[--mss M] [--postgres]\n");
	exit(2);
}

static void parse(int argc, char **argv, opts_t *o)
{
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->seconds = 10;
	o->every_ms = 100;
	o->batch = 256;
	o->rcvbuf = 4096;
	o->mss = 536;
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "flood") == 0)
		o->mode = M_FLOOD;
	else if (strcmp(argv[1], "interleave") == 0)
		o->mode = M_INTERLEAVE;
	else if (strcmp(argv[1], "trickle") == 0)
		o->mode = M_TRICKLE;
	else
		usage();
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--postgres") == 0) {
			o->postgres = true;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--port") == 0)
			o->port = atoi(v);
		else if (strcmp(a, "--host") == 0)
			o->host = v;
		else if (strcmp(a, "--sni") == 0)
			o->sni = v;
		else if (strcmp(a, "--cert") == 0)
			o->cert = v;
		else if (strcmp(a, "--key") == 0)
			o->key = v;
		else if (strcmp(a, "--ca") == 0)
			o->ca = v;
		else if (strcmp(a, "--seconds") == 0)
			o->seconds = atof(v);
		else if (strcmp(a, "--every-ms") == 0)
			o->every_ms = atoi(v);
		else if (strcmp(a, "--batch") == 0)
			o->batch = atoi(v);
		else if (strcmp(a, "--rcvbuf") == 0)
			o->rcvbuf = atoi(v);
		else if (strcmp(a, "--mss") == 0)
			o->mss = atoi(v);
		else
			usage();
	}
	if (o->port <= 0 || o->batch < 1 || o->cert == NULL || o->key == NULL || o->ca == NULL)
		usage();
}

static int dial(const opts_t *o)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o->rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof(o->rcvbuf));
	if (o->mss > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &o->mss, sizeof(o->mss));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	if (o->postgres) {
		static const uint8_t ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
		char answer = 0;
		if (write(fd, ssl_request, sizeof(ssl_request)) != sizeof(ssl_request) ||
		    read(fd, &answer, 1) != 1 || answer != 'S') {
			close(fd);
			return -1;
		}
	}
	return fd;
}

static void report(const char *ended, bool connected, long updates, long app, double secs)
{
	printf("{\"connected\":%s,\"updates\":%ld,\"app_bytes\":%ld,\"seconds\":%.3f,"
	       "\"ended\":\"%s\"}\n",
	       connected ? "true" : "false", updates, app, secs, ended);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	opts_t o;
	parse(argc, argv, &o);
	signal(SIGPIPE, SIG_IGN);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1) {
		ERR_print_errors_fp(stderr);
		return 2;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int fd = dial(&o);
	if (fd < 0) {
		perror("connect");
		report("connect failed", false, 0, 0, 0);
		return 1;
	}
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (o.sni != NULL)
		SSL_set_tlsext_host_name(ssl, o.sni);
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		report("handshake failed", false, 0, 0, 0);
		return 1;
	}
	/* a TLS 1.3 client learns of a refused certificate only on its first
	 * read: the abuse starts at once, as an attacker's would. Records are
	 * gathered in a memory BIO and written --batch rounds at a time. */
	BIO *mem = BIO_new(BIO_s_mem());
	if (mem == NULL)
		return 2;
	SSL_set0_wbio(ssl, mem);
	int batch = o.mode == M_TRICKLE ? 1 : o.batch;
	double start = now(), next = start;
	long updates = 0, app = 0;
	const char *ended = "time";
	while (strcmp(ended, "time") == 0 && now() - start < o.seconds) {
		for (int i = 0; i < batch; i++) {
			if (o.mode == M_INTERLEAVE) {
				size_t w = 0;
				if (SSL_write_ex(ssl, "x", 1, &w) != 1) {
					ended = "tls error";
					break;
				}
				app++;
			}
			int type = o.mode == M_TRICKLE ? SSL_KEY_UPDATE_NOT_REQUESTED
			                               : SSL_KEY_UPDATE_REQUESTED;
			if (SSL_key_update(ssl, type) != 1 || SSL_do_handshake(ssl) != 1) {
				ended = "tls error";
				break;
			}
			updates++;
		}
		if (o.mode == M_TRICKLE) {
			double wait = next - now();
			if (wait > 0)
				usleep((useconds_t)(wait * 1e6));
			next += o.every_ms / 1000.0;
		}
		char *data = NULL;
		long len = BIO_get_mem_data(mem, &data);
		for (long at = 0; at < len;) {
			ssize_t n = write(fd, data + at, (size_t)(len - at));
			if (n <= 0) {
				ended = "closed";
				break;
			}
			at += n;
		}
		(void)BIO_reset(mem);
	}
	report(ended, true, updates, app, now() - start);
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return 0;
}
