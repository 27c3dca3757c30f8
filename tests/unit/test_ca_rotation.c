/*
 * test_ca_rotation.c: the server's CA (server/ca.h) on disk and over time,
 * on real files in a mkdtemp directory (testutil_ca.h): the data
 * directory's and slot files' modes, persistence across a reopen, one CA
 * per directory, refused slot files and configurations; then the rotation
 * of X.509 and JWT authorities step by step (a successor published at 50%,
 * signing after the propagation delay, the old slot retired and its root
 * kept until it expires; a successor held until a publish covers it; a
 * restart after everything expired), and JWT-SVID minting and its
 * refusals. Time is passed explicitly, so rotation is tested without
 * waiting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/b64.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "testutil_ca.h"

/* Reads <dir>/ca/<name> into a NUL-terminated string (caller frees); NULL when absent. */
static char *
read_ca_file(const struct fx *f, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/ca/%.100s", f->dir, name);
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		return NULL;
	char *s = calloc(1, 70000);
	assert_non_null(s);
	size_t n = fread(s, 1, 69999, fp);
	s[n] = '\0';
	fclose(fp);
	return s;
}

/* Names of the slot files in <dir>/ca, as one string "a,b,". */
static void
list_slots(const struct fx *f, char *out, size_t size, int *count)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	out[0] = '\0';
	*count = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strstr(e->d_name, ".slot") == NULL)
			continue;
		strncat(out, e->d_name, size - strlen(out) - 2);
		strcat(out, ",");
		(*count)++;
	}
	closedir(d);
}

/* ---- persistence ---- */

static void
test_open_persists(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat st;

	/* A data dir as the operator made it stays so; an existing ca/ that is too open is closed. */
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(chmod(path, 0755), 0);
	ly_log_set_fd(-1);
	open_ca(f, T0);
	ly_log_set_fd(2);
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_non_null(b);
	assert_string_equal(ly_ca_trust_domain(f->ca), TD);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 1);
	uint64_t seq = ly_bundle_sequence(b);
	assert_true(seq >= 1);
	/* min(24 h / 6, 10 min): a poller sees a successor before it signs. */
	assert_int_equal(ly_bundle_refresh_hint(b), 600);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY / 2);

	struct ly_buf root = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&root, ly_bundle_x509_authority(b, 0)->data, ly_bundle_x509_authority(b, 0)->len,
	    NULL), LY_OK);
	char kid[64];
	snprintf(kid, sizeof(kid), "%s", ly_bundle_jwt_authority_kid(b, 0));
	assert_int_equal(strlen(kid), LY_CA_KID_LEN);

	/* The directory 0700, every file in it 0600. */
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	int files = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char p2[512];
		snprintf(p2, sizeof(p2), "%s/%s", path, e->d_name);
		assert_int_equal(stat(p2, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		files++;
	}
	closedir(d);
	assert_int_equal(files, 3); /* x509 slot, jwt slot, bundle-sequence */

	/* A second CA on the same directory is refused while the first holds it. */
	struct ly_ca *other = NULL;
	struct ly_ca_config c = config(f);
	struct ly_error err;
	assert_int_equal(ly_ca_open(&c, T0, &other, &err), LY_E_IO);
	assert_null(other);

	/* Reopened: the same root and kid, a higher sequence. */
	ly_ca_free(f->ca);
	f->ca = NULL;
	open_ca(f, T0 + 60);
	b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root));
	assert_string_equal(ly_bundle_jwt_authority_kid(b, 0), kid);
	assert_true(ly_bundle_sequence(b) > seq);
	ly_buf_free(&root);
}

static void
test_refuses_bad_files(void **state)
{
	struct fx *f = *state;
	char list[1024], path[512];
	int n = 0;
	struct ly_error err;
	struct ly_ca_config c = config(f);

	open_ca(f, T0);
	ly_ca_free(f->ca);
	f->ca = NULL;
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 2);
	*strchr(list, ',') = '\0';
	assert_true(snprintf(path, sizeof(path), "%s/ca/%.200s", f->dir, list) < (int)sizeof(path));

	/* Readable by others: refused. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "0600"));
	assert_int_equal(chmod(path, 0600), 0);

	/* Another trust domain: refused. */
	c.trust_domain = "other.org";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trust domain"));
	c.trust_domain = TD;

	/* A changed line: refused. */
	char *text = read_ca_file(f, list);
	assert_non_null(text);
	char *at = strstr(text, "issued_at ");
	assert_non_null(at);
	at[0] = 'X';
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "unknown field"));
	at[0] = 'i';
	fp = fopen(path, "w");
	fputs(text, fp);
	fclose(fp);
	free(text);
	open_ca(f, T0);
}

static void
test_config_refused(void **state)
{
	struct fx *f = *state;
	struct ly_ca_config c = config(f);
	struct ly_error err;

	c.trust_domain = "Example.org";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.ca_ttl = 30;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.propagation_delay = DAY / 2;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.x509_svid_ttl = LY_X509_SVID_TTL_MAX + 1;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.upstream_cert_path = "/nonexistent";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.data_dir = "/nonexistent/dir/below";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_IO);
	assert_null(f->ca);
	/* The propagation delay by default: min(10 min, TTL / 10). */
	c = config(f);
	c.ca_ttl = 3000;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	assert_int_equal(ly_bundle_refresh_hint(ly_ca_bundle(f->ca)), 300);
}


/* ---- rotation ---- */

/*
 * Several servers (ly_ca_set_published): a successor made after the last
 * publish into the shared bundle does not sign at its activation time; it
 * signs once a publish covers it. Nothing is held before the first call.
 */
static void
test_unpublished_successor_held(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, c0 = LY_BUF_INIT, c1 = LY_BUF_INIT, c2 = LY_BUF_INIT;
	struct ly_buf ca0 = LY_BUF_INIT, ca1 = LY_BUF_INIT, ca2 = LY_BUF_INIT;
	struct ly_error err;
	bool changed = false;
	const time_t half = T0 + DAY / 2, delay = 600;

	open_ca(f, T0);
	ly_ca_set_published(f->ca, T0);
	lib_csr(f->key, WL, &csr);
	assert_int_equal(sign(f, &csr, WL, T0, &c0, &err), LY_OK);
	chain_der(&c0, 1, &ca0);
	/* The successor is made at 50% (the publish of the server fails: no call). */
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	/* Its activation time passes: it is held, and the next event is not its activation. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay + 5, &changed, &err), LY_OK);
	assert_int_equal(sign(f, &csr, WL, half + delay + 5, &c1, &err), LY_OK);
	chain_der(&c1, 1, &ca1);
	assert_true(bufs_equal(&ca0, &ca1));
	assert_true(ly_ca_next_event(f->ca) > half + delay + 5);
	/* Published now: at the next tick it signs. */
	ly_ca_set_published(f->ca, half + delay + 6);
	assert_true(ly_ca_next_event(f->ca) <= half + delay + 6);
	assert_int_equal(ly_ca_tick(f->ca, half + delay + 6, &changed, &err), LY_OK);
	assert_int_equal(sign(f, &csr, WL, half + delay + 6, &c2, &err), LY_OK);
	chain_der(&c2, 1, &ca2);
	assert_false(bufs_equal(&ca0, &ca2));
	/* A publish time going back changes nothing. */
	ly_ca_set_published(f->ca, T0);
	ly_buf_free(&csr);
	ly_buf_free(&c0);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
	ly_buf_free(&ca0);
	ly_buf_free(&ca1);
	ly_buf_free(&ca2);
}

static void
test_x509_rotation(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, c0 = LY_BUF_INIT, c1 = LY_BUF_INIT, c2 = LY_BUF_INIT;
	struct ly_buf ca0 = LY_BUF_INIT, ca1 = LY_BUF_INIT, ca2 = LY_BUF_INIT;
	struct ly_error err;
	bool changed = true;
	const time_t half = T0 + DAY / 2, delay = 600;
	char list[1024];
	int n = 0;

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);
	uint64_t seq = ly_bundle_sequence(ly_ca_bundle(f->ca));
	struct ly_buf root0 = LY_BUF_INIT;
	const struct ly_buf *r0 = ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0);
	assert_int_equal(ly_buf_set(&root0, r0->data, r0->len, NULL), LY_OK);
	assert_int_equal(sign(f, &csr, WL, T0, &c0, &err), LY_OK);
	chain_der(&c0, 1, &ca0);

	/* At 49%: nothing. */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY * 49 / 100, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);

	/* At 50%: the successor is published (2 roots, sequence raised)... */
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq + 1);
	assert_int_equal(ly_ca_next_event(f->ca), half + delay);
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 4);
	struct ly_bundle *published = NULL;
	assert_int_equal(ly_bundle_clone(ly_ca_bundle(f->ca), &published, NULL), LY_OK);

	/* ...but it does not sign until the propagation delay has passed. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay - 1, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(sign(f, &csr, WL, half + delay - 1, &c1, &err), LY_OK);
	chain_der(&c1, 1, &ca1);
	assert_true(bufs_equal(&ca0, &ca1));

	/* After it: the new signing CA signs; the bundle does not change. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(sign(f, &csr, WL, half + delay, &c2, &err), LY_OK);
	chain_der(&c2, 1, &ca2);
	assert_false(bufs_equal(&ca0, &ca2));
	/* Its chain verifies against the bundle as it was when the successor was published... */
	if (verify(published, &c2, half + delay, f->key, &err) != LY_OK)
		fail_msg("new leaf against the published bundle: %s", err.msg);
	/* ...and what the old CA signed still verifies against the current bundle. */
	assert_int_equal(verify(ly_ca_bundle(f->ca), &c1, half + delay, f->key, NULL), LY_OK);
	ly_bundle_free(published);

	/* The old slot is retired: its file holds no private key any more. */
	list_slots(f, list, sizeof(list), &n);
	int with_keys = 0;
	for (char *name = strtok(list, ","); name != NULL; name = strtok(NULL, ",")) {
		if (strncmp(name, "x509-", 5) != 0)
			continue;
		char *text = read_ca_file(f, name);
		assert_non_null(text);
		if (strstr(text, "signing_key") != NULL) {
			with_keys++;
			assert_non_null(strstr(text, "root_key"));
			assert_non_null(strstr(text, "retired 0"));
		} else {
			assert_null(strstr(text, "root_key"));
			assert_non_null(strstr(text, "retired 1"));
		}
		free(text);
	}
	assert_int_equal(with_keys, 1);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY);

	/* A restart in between keeps all of it. */
	ly_ca_free(f->ca);
	f->ca = NULL;
	open_ca(f, half + delay + 5);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	struct ly_buf c3 = LY_BUF_INIT, ca3 = LY_BUF_INIT;
	assert_int_equal(sign(f, &csr, WL, half + delay + 5, &c3, &err), LY_OK);
	chain_der(&c3, 1, &ca3);
	assert_true(bufs_equal(&ca2, &ca3));
	seq = ly_bundle_sequence(ly_ca_bundle(f->ca));

	/* Just before it expires, the old root is still there. */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY - 1, &changed, &err), LY_OK);
	assert_false(changed);
	assert_true(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &root0));

	/*
	 * At T0 + 1 day the old root expires: dropped, its files deleted. That
	 * is also 50% of the current slot's life: its successor is published
	 * in the same tick (one sequence step for both).
	 */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq + 1);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	for (size_t i = 0; i < 2; i++)
		assert_false(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), i), &root0));
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 4);
	struct ly_buf c4 = LY_BUF_INIT;
	assert_int_equal(sign(f, &csr, WL, T0 + DAY, &c4, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &c4, T0 + DAY, f->key, NULL), LY_OK);
	ly_buf_free(&c4);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY + delay);
	ly_buf_free(&root0);

	ly_buf_free(&csr);
	ly_buf_free(&c0);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
	ly_buf_free(&c3);
	ly_buf_free(&ca0);
	ly_buf_free(&ca1);
	ly_buf_free(&ca2);
	ly_buf_free(&ca3);
}

static void
test_restart_after_expiry(void **state)
{
	struct fx *f = *state;
	struct ly_buf root = LY_BUF_INIT, csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	char list[1024];
	int n = 0;

	open_ca(f, T0);
	const struct ly_buf *r = ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0);
	assert_int_equal(ly_buf_set(&root, r->data, r->len, NULL), LY_OK);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* Down for two days: everything expired; fresh authorities, used at once. */
	open_ca(f, T0 + 2 * DAY);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_false(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &root));
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 2);
	lib_csr(f->key, WL, &csr);
	struct ly_error err;
	assert_int_equal(sign(f, &csr, WL, T0 + 2 * DAY, &chain, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0 + 2 * DAY, f->key, NULL), LY_OK);
	ly_buf_free(&root);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
}

/* ---- JWT ---- */

static ly_status
validate(const struct ly_bundle *b, const char *token, const char *aud, time_t now, struct ly_spiffe_id *sub,
    struct ly_error *err)
{
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *copy = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_clone(b, &copy, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, copy, NULL), LY_OK);
	ly_status rc = ly_jwt_validate(token, strlen(token), aud, set, now, sub, NULL, err);
	ly_bundle_set_free(set);
	return rc;
}

static void
token_kid(const char *token, char *kid, size_t size)
{
	struct ly_buf hdr = LY_BUF_INIT;
	struct ly_jwt_header h;
	const char *dot = strchr(token, '.');
	assert_non_null(dot);
	assert_int_equal(ly_b64url_decode(token, (size_t)(dot - token), &hdr, NULL), LY_OK);
	assert_int_equal(ly_jwt_header_parse((const char *)hdr.data, hdr.len, &h, NULL), LY_OK);
	assert_true(strlen(h.kid) < size);
	memcpy(kid, h.kid, strlen(h.kid) + 1);
	ly_buf_free(&hdr);
}

static void
test_jwt(void **state)
{
	struct fx *f = *state;
	struct ly_spiffe_id id = sid(WL), sub;
	const char *aud[] = { "db", "cache" };
	char *t0 = NULL, *t1 = NULL, *t2 = NULL;
	char k0[64], k1[64], k2[64];
	struct ly_error err;
	time_t exp = 0;
	const time_t half = T0 + DAY / 2, delay = 600;

	open_ca(f, T0);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 2, 0, T0, &t0, &exp, &err), LY_OK);
	assert_int_equal(exp, T0 + 300);
	if (validate(ly_ca_bundle(f->ca), t0, "cache", T0 + 1, &sub, &err) != LY_OK)
		fail_msg("validate: %s", err.msg);
	assert_string_equal(sub.id, WL);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t0, "other", T0 + 1, NULL, NULL), LY_E_INVALID);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t0, "db", T0 + 301 + LY_JWT_LEEWAY_SECONDS, NULL, NULL),
	    LY_E_EXPIRED);
	token_kid(t0, k0, sizeof(k0));
	assert_string_equal(k0, ly_bundle_jwt_authority_kid(ly_ca_bundle(f->ca), 0));

	/* Refusals: TTL, subject outside the trust domain or without a path, no audience. */
	char *t = NULL;
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, -5, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, LY_JWT_SVID_TTL_MAX + 1, T0, &t, NULL, &err),
	    LY_E_LIMIT);
	struct ly_spiffe_id other = sid("spiffe://other.org/x"), tdid = sid("spiffe://example.org");
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &other, aud, 1, 0, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &tdid, aud, 1, 0, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_not_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 0, 0, T0, &t, NULL, &err), LY_OK);
	assert_null(t);

	/* Rotation: published at 50%, signing after the delay, the old key kept until it expires. */
	bool changed = false;
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_jwt_authority_count(ly_ca_bundle(f->ca)), 2);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 3600, half + 1, &t1, NULL, &err), LY_OK);
	token_kid(t1, k1, sizeof(k1));
	assert_string_equal(k1, k0);
	assert_int_equal(ly_ca_tick(f->ca, half + delay, &changed, &err), LY_OK);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 0, half + delay, &t2, NULL, &err), LY_OK);
	token_kid(t2, k2, sizeof(k2));
	assert_string_not_equal(k2, k0);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t1, "db", half + delay, NULL, NULL), LY_OK);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t2, "db", half + delay, NULL, NULL), LY_OK);

	/* A token ends with its key: minted 100 s before the key expires, asking for 1000 s. */
	char *t3 = NULL;
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY, &changed, &err), LY_OK);
	assert_true(changed);
	/* The first key is gone (and at the same time, 50% of the second's life, a third is published). */
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 2);
	assert_null(ly_bundle_find_jwt_authority(b, k0));
	assert_non_null(ly_bundle_find_jwt_authority(b, k2));
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 1000, half + DAY - 100, &t3, &exp, &err), LY_OK);
	assert_int_equal(exp, half + DAY);

	ly_free_secret_str(t0);
	ly_free_secret_str(t1);
	ly_free_secret_str(t2);
	ly_free_secret_str(t3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_persists, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unpublished_successor_held, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_refuses_bad_files, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_config_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_x509_rotation, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restart_after_expiry, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_jwt, fx_setup, fx_teardown),
	};
	ly_log_set_level(LY_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
