/* `certgate status [--dir DIR]`: the login certificate in the login folder
 * (login_files.h) and what it says — user, groups, device, trust — read
 * from the certificate itself with the gateway's default claim places, and
 * how long it has left. Exit 0 while it is valid and its key is beside it;
 * 1 when there is none, it has expired or the key does not match (with
 * the hint to run certgate login); 2 on usage errors. */
#include "cmd/cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "cg_time.h"
#include "cmd/login_files.h"
#include "tls/pem_io.h"
#include "tls/x509_info.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: certgate status [--dir DIR]\n"
	             "Shows the login certificate certgate login wrote: user, groups, device,\n"
	             "trust and when it expires. Exit 1 when there is none or it has expired.\n"
	             "\n"
	             "  --dir DIR   the login folder (default $XDG_CONFIG_HOME/certgate, else\n"
	             "              ~/.config/certgate)\n");
}

static int status_of(const char *dir)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX], err[512];
	if (!login_dir_file(dir, LOGIN_CERT_FILE, cert_path, sizeof(cert_path)) ||
	    !login_dir_file(dir, LOGIN_KEY_FILE, key_path, sizeof(key_path))) {
		fprintf(stderr, "certgate status: %s: path too long\n", dir);
		return 1;
	}
	if (access(cert_path, F_OK) < 0 && errno == ENOENT) {
		fprintf(stderr, "certgate status: no login certificate in %s: run certgate login\n",
		        dir);
		return 1;
	}
	X509 *cert = gw_pem_read_cert(cert_path, err, sizeof(err));
	if (cert == NULL) {
		fprintf(stderr, "certgate status: %s: %s: run certgate login\n", cert_path, err);
		return 1;
	}
	int rc = 1;
	login_record_t rec, saved;
	memset(&rec, 0, sizeof(rec));
	EVP_PKEY *key = gw_pem_read_key(key_path, err, sizeof(err));
	if (key == NULL) {
		fprintf(stderr, "certgate status: %s: %s: run certgate login\n", key_path, err);
		goto done;
	}
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		fprintf(stderr, "certgate status: %s is not the key of %s: run certgate login\n",
		        key_path, cert_path);
		goto done;
	}
	if (!login_record_from_cert(&rec, cert)) {
		fprintf(stderr, "certgate status: out of memory\n");
		goto done;
	}
	/* login.json only says where the certificate came from */
	if (login_record_load(dir, &saved, err, sizeof(err)) == 0) {
		if (saved.issuer != NULL)
			printf("issuer:  %s\n", saved.issuer);
		login_record_finish(&saved);
	}
	int64_t not_after = gw_cert_not_after_ms(cert), now = cg_wall_ms();
	login_record_print(stdout, &rec, not_after, now);
	printf("files:   %s\n", dir);
	fflush(stdout);
	if (not_after <= now) {
		char ago[32];
		login_human_duration(now - not_after, ago, sizeof(ago));
		fprintf(stderr,
		        "certgate status: the login certificate expired %s ago: run certgate "
		        "login\n",
		        ago);
		goto done;
	}
	rc = 0;
done:
	login_record_finish(&rec);
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

int gw_status_main(int argc, char **argv)
{
	static const struct option options[] = {
	        {"dir", required_argument, NULL, 'd'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *given = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			given = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr,
		        "certgate status: unexpected argument \"%s\" (certgate status "
		        "--help)\n",
		        argv[optind]);
		return 2;
	}
	char dir[PATH_MAX];
	if (!login_dir_default(given, dir, sizeof(dir))) {
		fprintf(stderr, "certgate status: no login folder (HOME unset?): give --dir\n");
		return 1;
	}
	return status_of(dir);
}
