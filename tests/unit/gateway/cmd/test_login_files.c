/* The login folder (gateway/cmd/login_files.c): where it is, login.json
 * written and read back (unknown members such as "gateway" kept), the
 * device key made once, 0600, reused and refused when others may read it,
 * the files of a login and their modes, and the human durations status
 * prints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cmd/login_files.h"
#include "tls/device_id.h"
#include "tls/x509_build.h"
#include "tls/x509_issue.h"

static char scratch[256];

static int setup(void **state)
{
	(void)state;
	snprintf(scratch, sizeof(scratch), "/tmp/certgate-login-files-XXXXXX");
	return mkdtemp(scratch) != NULL ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	(void)state;
	return nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_dir_resolution(void **state)
{
	(void)state;
	static const struct {
		const char *given, *xdg, *home, *want;
	} rows[] = {
	        {"/given/dir", "/xdg", "/home/u", "/given/dir"},
	        {"relative/dir", "/xdg", "/home/u", "relative/dir"},
	        {"/given/dir//", NULL, NULL, "/given/dir"},
	        {NULL, "/xdg", "/home/u", "/xdg/certgate"},
	        {"", "/xdg", "/home/u", "/xdg/certgate"},
	        {NULL, "/xdg/", "/home/u", "/xdg/certgate"},
	        {NULL, "relative-xdg", "/home/u", "/home/u/.config/certgate"}, /* XDG: ignored */
	        {NULL, "", "/home/u", "/home/u/.config/certgate"},
	        {NULL, NULL, "/home/u", "/home/u/.config/certgate"},
	        {NULL, NULL, "/home/u/", "/home/u/.config/certgate"},
	        {NULL, NULL, "/", "/.config/certgate"},
	        {NULL, NULL, NULL, NULL},
	        {NULL, NULL, "relative-home", NULL},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char out[256];
		bool ok = login_dir_resolve(rows[i].given, rows[i].xdg, rows[i].home, out,
		                            sizeof(out));
		if (rows[i].want == NULL) {
			assert_false(ok);
			continue;
		}
		assert_true(ok);
		assert_string_equal(out, rows[i].want);
	}
	char tiny[8];
	assert_false(login_dir_resolve(NULL, "/xdg", NULL, tiny, sizeof(tiny)));
}

static void test_record_round_trip(void **state)
{
	(void)state;
	const char *text =
	        "{\"issuer\": \"https://gw.example:8444\", \"issuer_ca\": \"/etc/ca.pem\","
	        " \"user\": \"alice@example.com\", \"groups\": [\"dba\", \"staff\"],"
	        " \"device_id\": \"d-abc\", \"device_trust\": \"low\","
	        " \"not_after\": \"2030-01-01T00:00:00.000Z\","
	        " \"gateway\": \"gw.example:8443\", \"future\": {\"x\": [1, 2]}}";
	json_t *in = json_loads(text, 0, NULL);
	assert_non_null(in);
	login_record_t r;
	char err[256];
	assert_int_equal(login_record_from_json(in, &r, err, sizeof(err)), 0);
	assert_string_equal(r.issuer, "https://gw.example:8444");
	assert_string_equal(r.issuer_ca, "/etc/ca.pem");
	assert_string_equal(r.user, "alice@example.com");
	assert_int_equal(r.n_groups, 2);
	assert_string_equal(r.groups[0], "dba");
	assert_string_equal(r.groups[1], "staff");
	assert_string_equal(r.device_id, "d-abc");
	assert_string_equal(r.device_trust, "low");
	assert_string_equal(r.not_after, "2030-01-01T00:00:00.000Z");
	json_t *out = login_record_to_json(&r);
	assert_true(json_equal(in, out)); /* the members it does not know are kept */
	json_decref(out);
	login_record_finish(&r);
	json_decref(in);

	/* without device claims nothing is made up */
	login_record_t bare = {.issuer = "https://gw", .user = "u"};
	out = login_record_to_json(&bare);
	assert_null(json_object_get(out, "device_id"));
	assert_null(json_object_get(out, "device_trust"));
	assert_int_equal(json_array_size(json_object_get(out, "groups")), 0);
	json_decref(out);

	/* wrong types */
	static const char *const bad[] = {"[]", "{\"user\": 5}", "{\"groups\": \"dba\"}",
	                                  "{\"groups\": [\"a\", 1]}", "{\"issuer\": true}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		assert_non_null(j);
		assert_int_equal(login_record_from_json(j, &r, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "login.json"));
		json_decref(j);
	}
}

static void test_record_load(void **state)
{
	(void)state;
	char dir[300], path[400], err[512];
	login_record_t r;
	snprintf(dir, sizeof(dir), "%s/record", scratch);
	assert_int_equal(login_dir_make(dir, err, sizeof(err)), 0);
	assert_int_equal(login_record_load(dir, &r, err, sizeof(err)), 1); /* missing */
	snprintf(path, sizeof(path), "%s/login.json", dir);
	FILE *f = fopen(path, "w");
	fputs("{\"user\": \"a\",\n \"user\": \"b\"}", f);
	fclose(f);
	assert_int_equal(login_record_load(dir, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "login.json:2:"));
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void test_dir_made_0700(void **state)
{
	(void)state;
	char dir[300], err[256];
	snprintf(dir, sizeof(dir), "%s/a/b/certgate", scratch);
	mode_t old = umask(0);
	int rc = login_dir_make(dir, err, sizeof(err));
	umask(old);
	assert_int_equal(rc, 0);
	assert_int_equal(mode_of(dir), 0700);
	/* a file in the way */
	char file[320];
	snprintf(file, sizeof(file), "%s/plain", scratch);
	fclose(fopen(file, "w"));
	assert_int_equal(login_dir_make(file, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a folder"));
	/* a folder others may write to is refused: they could swap ca.pem */
	char open_dir[320];
	snprintf(open_dir, sizeof(open_dir), "%s/open", scratch);
	assert_int_equal(mkdir(open_dir, 0700), 0);
	assert_int_equal(chmod(open_dir, 0777), 0);
	assert_int_equal(login_dir_make(open_dir, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not writable by others"));
	assert_int_equal(chmod(open_dir, 0775), 0);
	assert_int_equal(login_dir_make(open_dir, err, sizeof(err)), -1);
	assert_int_equal(chmod(open_dir, 0755), 0);
	assert_int_equal(login_dir_make(open_dir, err, sizeof(err)), 0);
	/* another user's folder is refused too */
	assert_int_equal(chown(open_dir, 4242, 4242), 0);
	assert_int_equal(login_dir_make(open_dir, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "must be yours"));
}

static void test_device_key_once(void **state)
{
	(void)state;
	char dir[300], path[400], err[512];
	snprintf(dir, sizeof(dir), "%s/device", scratch);
	assert_int_equal(login_dir_make(dir, err, sizeof(err)), 0);
	bool created = false;
	EVP_PKEY *first = login_device_key(dir, &created, err, sizeof(err));
	assert_non_null(first);
	assert_true(created);
	snprintf(path, sizeof(path), "%s/device-key.pem", dir);
	assert_int_equal(mode_of(path), 0600);
	EVP_PKEY *second = login_device_key(dir, &created, err, sizeof(err));
	assert_non_null(second);
	assert_false(created);
	char id1[GW_DEVICE_ID_LEN + 1], id2[GW_DEVICE_ID_LEN + 1];
	assert_true(gw_device_id(first, id1));
	assert_true(gw_device_id(second, id2));
	assert_string_equal(id1, id2);
	EVP_PKEY_free(first);
	EVP_PKEY_free(second);
	/* no leftovers beside it */
	char fresh[420];
	snprintf(fresh, sizeof(fresh), "%s.%ld", path, (long)getpid());
	assert_int_not_equal(access(fresh, F_OK), 0);

	/* readable by others: refused, not silently used */
	assert_int_equal(chmod(path, 0644), 0);
	assert_null(login_device_key(dir, &created, err, sizeof(err)));
	assert_non_null(strstr(err, "mode 0644"));
	assert_int_equal(chmod(path, 0600), 0);

	/* not P-256: refused */
	FILE *f = fopen(path, "w");
	fputs("not a key\n", f);
	fclose(f);
	assert_null(login_device_key(dir, &created, err, sizeof(err)));
}

static void test_files_write(void **state)
{
	(void)state;
	char dir[300], path[400], err[512];
	snprintf(dir, sizeof(dir), "%s/files", scratch);
	assert_int_equal(login_dir_make(dir, err, sizeof(err)), 0);
	EVP_PKEY *key = gw_x509_key_new(0);
	const char *groups[] = {"dba", "staff"};
	gw_cert_spec_t spec = {.profile = GW_CERT_LOGIN,
	                       .cn = "alice@example.com",
	                       .email = "alice@example.com",
	                       .groups = groups,
	                       .n_groups = 2,
	                       .device_id = "d-abcdefghijklmnopqrstuvwxyz",
	                       .device_trust = "medium",
	                       .key = key,
	                       .issuer_key = key,
	                       .ttl_s = 3600};
	X509 *cert = gw_x509_issue(&spec, err, sizeof(err));
	assert_non_null(cert);
	login_record_t r = {0};
	assert_true(login_record_from_cert(&r, cert));
	assert_string_equal(r.user, "alice@example.com");
	assert_int_equal(r.n_groups, 2);
	assert_string_equal(r.groups[1], "staff");
	assert_string_equal(r.device_id, "d-abcdefghijklmnopqrstuvwxyz");
	assert_string_equal(r.device_trust, "medium");
	assert_non_null(r.not_after);
	r.issuer = strdup("https://gw");
	assert_int_equal(
	        login_files_write(dir, key, "CERT PEM\n", "CA PEM\n", &r, err, sizeof(err)), 0);
	static const struct {
		const char *name;
		mode_t mode;
	} files[] = {{"login-key.pem", 0600},
	             {"login-key.pk8", 0600},
	             {"login-cert.pem", 0644},
	             {"ca.pem", 0644},
	             {"login.json", 0600}};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		assert_int_equal(mode_of(path), files[i].mode);
	}
	/* the certificate is written after its keys: when a key cannot be
	 * written, no certificate appears (certgate connect watches it) */
	char dir2[320], blocker[420];
	static const char *const keys[] = {"login-key.pem", "login-key.pk8"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(dir2, sizeof(dir2), "%s/files-blocked-%zu", scratch, i);
		assert_int_equal(login_dir_make(dir2, err, sizeof(err)), 0);
		/* a non-empty folder where the key goes: the rename fails */
		snprintf(blocker, sizeof(blocker), "%s/%s", dir2, keys[i]);
		assert_int_equal(mkdir(blocker, 0700), 0);
		snprintf(blocker, sizeof(blocker), "%s/%s/x", dir2, keys[i]);
		fclose(fopen(blocker, "w"));
		assert_int_equal(login_files_write(dir2, key, "CERT PEM\n", "CA PEM\n", &r, err,
		                                   sizeof(err)),
		                 -1);
		assert_non_null(strstr(err, keys[i]));
		snprintf(path, sizeof(path), "%s/login-cert.pem", dir2);
		assert_int_not_equal(access(path, F_OK), 0);
		snprintf(path, sizeof(path), "%s/login.json", dir2);
		assert_int_not_equal(access(path, F_OK), 0);
	}

	login_record_t back;
	assert_int_equal(login_record_load(dir, &back, err, sizeof(err)), 0);
	assert_string_equal(back.user, "alice@example.com");
	assert_string_equal(back.issuer, "https://gw");
	login_record_finish(&back);
	login_record_finish(&r);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void test_human_duration(void **state)
{
	(void)state;
	static const struct {
		int64_t ms;
		const char *want;
	} rows[] = {{8 * 3600 * 1000 - 1, "7h59m"},
	            {3600 * 1000, "1h"},
	            {59 * 60 * 1000 + 30999, "59m30s"},
	            {45 * 1000 + 999, "45s"},
	            {0, "0s"},
	            {-5, "0s"},
	            {49 * 3600 * 1000, "2d1h"}};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char out[32];
		login_human_duration(rows[i].ms, out, sizeof(out));
		assert_string_equal(out, rows[i].want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_dir_resolution),  cmocka_unit_test(test_record_round_trip),
	        cmocka_unit_test(test_record_load),     cmocka_unit_test(test_dir_made_0700),
	        cmocka_unit_test(test_device_key_once), cmocka_unit_test(test_files_write),
	        cmocka_unit_test(test_human_duration),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
