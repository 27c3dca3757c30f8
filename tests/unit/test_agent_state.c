/*
 * test_agent_state.c: the agent's persisted state (agent/state.h): round
 * trips of both files, expired SVIDs dropped on load, every damaged or
 * truncated file refused (and each format rule broken on purpose with a
 * valid checksum), file and directory modes, and a writer SIGKILLed in the
 * middle of writing: the reader always finds the old or the new state,
 * whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/state.h"
#include "lib/log.h"
#include "testutil_agent.h"

#define AGENT_ID "spiffe://example.org/lanyard/agent/join_token/abc"
#define NOW ((int64_t)TU_NOW)

struct fixture {
	struct tu_pki pki;
	struct ly_cache *c;
	char dir[64];
};

static void
rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			rm_rf(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	assert_int_equal(ly_cache_new(TA_TD, &f->c, NULL), LY_OK);
	snprintf(f->dir, sizeof(f->dir), "/tmp/ly-state-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	ly_log_set_level(LY_LOG_ERROR);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	rm_rf(f->dir);
	ly_cache_free(f->c);
	tu_pki_free(&f->pki);
	free(f);
	return 0;
}

/* An agent state: its SVID, our bundle (X.509 + JWT authority) and a federated one. */
static void
agent_state(struct fixture *f, struct ly_agent_state *st, long na)
{
	struct ta_svid s;
	ly_agent_state_init(st);
	snprintf(st->trust_domain, sizeof(st->trust_domain), "%s", TA_TD);
	ta_svid_make(&f->pki, f->pki.leaf_key, AGENT_ID, -60, na, &s);
	st->has_svid = true;
	snprintf(st->spiffe_id, sizeof(st->spiffe_id), "%s", AGENT_ID);
	ly_buf_take(&st->chain, &s.chain);
	ly_buf_take(&st->key, &s.key);
	st->not_before = s.nb;
	st->not_after = s.na;
	st->renew_at_ms = (s.nb + s.na) * 500;
	struct ly_bundle *b = NULL, *fed = NULL;
	EVP_PKEY *jk = tu_key(LY_KEY_EC_P256);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "kid-1", jk, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, 7, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_refresh_hint(b, 300, NULL), LY_OK);
	assert_int_equal(ly_bundle_new("other.org", &fed, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(fed, "kid-f", jk, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_new(&st->bundles, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(st->bundles, b, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(st->bundles, fed, NULL), LY_OK);
	EVP_PKEY_free(jk);
	ta_svid_free(&s);
}

static void
test_agent_round_trip(void **state)
{
	struct fixture *f = *state;
	struct ly_agent_state st, got;
	struct ly_buf enc = LY_BUF_INIT;
	struct ly_error err;
	agent_state(f, &st, 3600);
	assert_int_equal(ly_state_encode_agent(&st, NOW, &enc, NULL), LY_OK);
	assert_int_equal(ly_state_decode_agent(enc.data, enc.len, TA_TD, NOW, &got, &err), LY_OK);
	assert_string_equal(got.trust_domain, TA_TD);
	assert_int_equal(got.saved_at, NOW);
	assert_true(got.has_svid);
	assert_string_equal(got.spiffe_id, AGENT_ID);
	assert_int_equal(got.chain.len, st.chain.len);
	assert_memory_equal(got.chain.data, st.chain.data, st.chain.len);
	assert_int_equal(got.key.len, st.key.len);
	assert_memory_equal(got.key.data, st.key.data, st.key.len);
	assert_int_equal(got.not_before, st.not_before);
	assert_int_equal(got.not_after, st.not_after);
	assert_int_equal(got.renew_at_ms, st.renew_at_ms);
	assert_int_equal(ly_bundle_set_count(got.bundles), 2);
	for (size_t i = 0; i < 2; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(st.bundles, i);
		const struct ly_bundle *g = ly_bundle_set_find(got.bundles, ly_bundle_trust_domain(b));
		assert_non_null(g);
		assert_true(ly_bundle_equal(b, g));
	}
	ly_agent_state_cleanup(&got);

	/* Another trust domain's agent refuses it; NULL takes any. */
	assert_int_equal(ly_state_decode_agent(enc.data, enc.len, "other.org", NOW, &got, &err), LY_E_INVALID);
	assert_false(got.has_svid);
	assert_null(got.bundles);
	assert_int_equal(ly_state_decode_agent(enc.data, enc.len, NULL, NOW, &got, NULL), LY_OK);
	ly_agent_state_cleanup(&got);

	/* Expired at load time: the SVID is dropped, the bundles kept. */
	assert_int_equal(ly_state_decode_agent(enc.data, enc.len, TA_TD, st.not_after, &got, NULL), LY_OK);
	assert_false(got.has_svid);
	assert_int_equal(got.key.len, 0);
	assert_int_equal(ly_bundle_set_count(got.bundles), 2);
	ly_agent_state_cleanup(&got);

	/* Without an SVID or bundles. */
	ly_buf_free_secret(&enc);
	struct ly_agent_state bare;
	ly_agent_state_init(&bare);
	snprintf(bare.trust_domain, sizeof(bare.trust_domain), "%s", TA_TD);
	assert_int_equal(ly_state_encode_agent(&bare, NOW, &enc, NULL), LY_OK);
	assert_int_equal(ly_state_decode_agent(enc.data, enc.len, TA_TD, NOW, &got, NULL), LY_OK);
	assert_false(got.has_svid);
	assert_null(got.bundles);
	ly_buf_free_secret(&enc);
	/* Encoding refuses what it could not read back. */
	bare.has_svid = true;
	assert_int_equal(ly_state_encode_agent(&bare, NOW, &enc, NULL), LY_E_INVALID);
	snprintf(bare.trust_domain, sizeof(bare.trust_domain), "Bad");
	assert_int_equal(ly_state_encode_agent(&bare, NOW, &enc, NULL), LY_E_INVALID);
	ly_agent_state_cleanup(&st);
}

/* A cache with every kind of entry. */
static void
fill_cache(struct fixture *f, struct ly_cache *c)
{
	struct ly_entry *es[5] = {
		ta_entry("a", "spiffe://example.org/a", 10, NULL, "unix:uid:1", NULL),
		ta_entry("b", "spiffe://example.org/b", 20, "web", "unix:uid:2", "unix:gid:2", NULL),
		ta_entry("c", "spiffe://example.org/c", 30, NULL, "k8s:ns:prod", "k8s:sa:web", NULL),
		ta_entry("n", "spiffe://example.org/node", 40, NULL, "join_token:abc", NULL),
		ta_entry("d", "spiffe://example.org/d", 50, NULL, "unix:uid:4", NULL),
	};
	es[1]->x509_svid_ttl = 600;
	es[1]->jwt_svid_ttl = 60;
	es[1]->admin = true;
	es[1]->downstream = true;
	es[1]->revision = 9;
	assert_int_equal(ly_entry_add_dns_name(es[1], "web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(es[1], "*.web.example.org", NULL), LY_OK);
	es[3]->node = true;
	/* Federation (SPEC §9): kept across a restart (record ENTRY_FED), so the server need not be up. */
	assert_int_equal(ly_entry_add_federates_with(es[2], "b.test", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(es[2], "c.test", NULL), LY_OK);
	ta_apply(c, true, 42, es, 5, NULL, 0, NULL);
	ta_set_svid(c, &f->pki, "a", -60, 3600, NULL);
	ta_set_svid(c, &f->pki, "b", -60, 7200, NULL);
	ta_set_svid(c, &f->pki, "d", -7200, 60, NULL);
	assert_true(ly_cache_mark_stale(c, "b"));
}

static bool
str_same(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

static void
assert_same_item(const struct ly_cache_item *x, const struct ly_cache_item *y)
{
	const struct ly_entry *a = x->entry, *b = y->entry;
	assert_string_equal(a->entry_id, b->entry_id);
	assert_string_equal(a->spiffe_id, b->spiffe_id);
	assert_string_equal(a->parent_id, b->parent_id);
	assert_true(str_same(a->hint, b->hint));
	assert_true(ly_selectors_same_set(a->selectors, a->n_selectors, b->selectors, b->n_selectors));
	assert_int_equal(a->n_dns_names, b->n_dns_names);
	for (size_t i = 0; i < a->n_dns_names; i++)
		assert_string_equal(a->dns_names[i], b->dns_names[i]);
	assert_int_equal(a->n_federates_with, b->n_federates_with);
	for (size_t i = 0; i < a->n_federates_with; i++)
		assert_string_equal(a->federates_with[i], b->federates_with[i]);
	assert_int_equal(a->x509_svid_ttl, b->x509_svid_ttl);
	assert_int_equal(a->jwt_svid_ttl, b->jwt_svid_ttl);
	assert_int_equal(a->node, b->node);
	assert_int_equal(a->admin, b->admin);
	assert_int_equal(a->downstream, b->downstream);
	assert_int_equal(a->revision, b->revision);
	assert_int_equal(a->created_at, b->created_at);
	assert_int_equal(x->has_svid, y->has_svid);
	assert_int_equal(x->stale, y->stale);
	if (!x->has_svid)
		return;
	assert_int_equal(x->leaf.len, y->leaf.len);
	assert_memory_equal(x->leaf.der, y->leaf.der, x->leaf.len);
	assert_int_equal(x->intermediates.len, y->intermediates.len);
	assert_memory_equal(x->intermediates.der, y->intermediates.der, x->intermediates.len);
	assert_int_equal(x->key.len, y->key.len);
	assert_memory_equal(x->key.der, y->key.der, x->key.len);
	assert_int_equal(x->not_before, y->not_before);
	assert_int_equal(x->not_after, y->not_after);
	assert_int_equal(x->renew_at_ms, y->renew_at_ms);
}

static void
test_cache_round_trip(void **state)
{
	struct fixture *f = *state;
	struct ly_buf enc = LY_BUF_INIT;
	struct ly_error err;
	fill_cache(f, f->c);
	assert_int_equal(ly_state_encode_cache(f->c, NOW, &enc, NULL), LY_OK);

	struct ly_cache *got = NULL;
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, &err), LY_OK);
	assert_int_equal(ly_cache_count(got), 5);
	assert_int_equal(ly_cache_svid_count(got), 3);
	assert_int_equal(ly_cache_revision(got), 42);
	struct ly_cache_item fc;
	assert_true(ly_cache_get(got, "c", &fc));
	assert_int_equal(fc.entry->n_federates_with, 2);
	assert_string_equal(fc.entry->federates_with[1], "c.test");
	for (size_t i = 0; i < ly_cache_count(f->c); i++) {
		struct ly_cache_item x, y;
		ly_cache_item_at(f->c, i, &x);
		assert_true(ly_cache_get(got, x.entry->entry_id, &y));
		assert_same_item(&x, &y);
	}
	/* Loading into a cache that holds something: refused, and it is left alone. */
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, &err), LY_E_INVALID);
	assert_int_equal(ly_cache_count(got), 5);
	ly_cache_free(got);

	/* Later: d's SVID has expired: dropped, its entry kept. */
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW + 60, NULL, got, &err), LY_OK);
	struct ly_cache_item it;
	assert_true(ly_cache_get(got, "d", &it));
	assert_false(it.has_svid);
	assert_int_equal(ly_cache_svid_count(got), 2);
	ly_cache_free(got);

	/* Another trust domain's cache refuses the file. */
	assert_int_equal(ly_cache_new("other.org", &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trust domain"));
	assert_int_equal(ly_cache_count(got), 0);
	ly_cache_free(got);
	ly_buf_free_secret(&enc);

	/* An empty cache round-trips too (revision kept). */
	struct ly_cache *empty = NULL;
	assert_int_equal(ly_cache_new(TA_TD, &empty, NULL), LY_OK);
	ta_apply(empty, true, 5, NULL, 0, NULL, 0, NULL);
	assert_int_equal(ly_state_encode_cache(empty, NOW, &enc, NULL), LY_OK);
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, NULL), LY_OK);
	assert_int_equal(ly_cache_count(got), 0);
	assert_int_equal(ly_cache_revision(got), 5);
	ly_cache_free(got);
	ly_cache_free(empty);
	ly_buf_free_secret(&enc);
}

/* With a verifier, a stored SVID that no longer verifies is dropped on load. */
static void
test_cache_verify_on_load(void **state)
{
	struct fixture *f = *state;
	ta_put(f->c, ta_entry("a", "spiffe://example.org/a", 1, NULL, "unix:uid:1", NULL), NULL);
	ta_put(f->c, ta_entry("b", "spiffe://example.org/b", 1, NULL, "unix:uid:1", NULL), NULL);
	ta_set_svid(f->c, &f->pki, "a", -60, 3600, NULL);
	/* b holds a certificate for another key than the one stored (the cache does not check). */
	struct ta_svid s;
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	ta_svid_make(&f->pki, other, "spiffe://example.org/b", -60, 3600, &s);
	ly_buf_free_secret(&s.key);
	assert_int_equal(ly_key_to_pkcs8_der(f->pki.leaf_key, &s.key, NULL), LY_OK);
	assert_int_equal(ly_cache_set_svid(f->c, "b", "spiffe://example.org/b", &s.chain, &s.key, s.nb, s.na,
	    s.na * 1000, NULL, NULL), LY_OK);
	ta_svid_free(&s);
	EVP_PKEY_free(other);

	struct ly_buf enc = LY_BUF_INIT;
	assert_int_equal(ly_state_encode_cache(f->c, NOW, &enc, NULL), LY_OK);
	struct ly_verifier *v = NULL;
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_verifier_new(TA_TD, &v, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(v, b, NULL, NULL), LY_OK);

	struct ly_cache *got = NULL;
	struct ly_error err;
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	ly_status rc = ly_state_decode_cache(enc.data, enc.len, NOW, v, got, &err);
	if (rc != LY_OK)
		fail_msg("%s", err.msg);
	assert_int_equal(ly_cache_count(got), 2);
	assert_int_equal(ly_cache_svid_count(got), 1);
	struct ly_cache_item it;
	assert_true(ly_cache_get(got, "a", &it));
	assert_true(it.has_svid);
	struct ly_verify_counters vc;
	ly_verifier_counters(v, &vc);
	assert_int_equal(vc.x509[LY_VERIFY_KEY_MISMATCH], 1);
	ly_cache_free(got);
	/* Without a verifier both come back. */
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, NULL), LY_OK);
	assert_int_equal(ly_cache_svid_count(got), 2);
	ly_cache_free(got);
	ly_verifier_free(v);
	ly_bundle_free(b);
	ly_buf_free_secret(&enc);
}

static ly_status
decode_any(const uint8_t *d, size_t n, struct ly_error *err)
{
	struct ly_agent_state st;
	ly_status rc = ly_state_decode_agent(d, n, TA_TD, NOW, &st, err);
	ly_agent_state_cleanup(&st);
	return rc;
}

static ly_status
decode_cache(const uint8_t *d, size_t n, struct ly_error *err)
{
	struct ly_cache *c = NULL;
	TU_CHECK(ly_cache_new(TA_TD, &c, NULL) == LY_OK);
	ly_status rc = ly_state_decode_cache(d, n, NOW, NULL, c, err);
	/* On failure the cache is left empty. */
	if (rc != LY_OK)
		TU_CHECK(ly_cache_count(c) == 0);
	ly_cache_free(c);
	return rc;
}

/* Every flipped bit, every truncation, a byte too many: refused. */
static void
test_damaged_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_agent_state st;
	struct ly_buf enc = LY_BUF_INIT;
	agent_state(f, &st, 3600);
	assert_int_equal(ly_state_encode_agent(&st, NOW, &enc, NULL), LY_OK);
	for (size_t i = 0; i < enc.len; i++) {
		enc.data[i] ^= 0x10;
		assert_int_not_equal(decode_any(enc.data, enc.len, NULL), LY_OK);
		enc.data[i] ^= 0x10;
	}
	for (size_t n = 0; n < enc.len; n++)
		assert_int_not_equal(decode_any(enc.data, n, NULL), LY_OK);
	struct ly_error err;
	assert_int_equal(decode_any(enc.data, enc.len, &err), LY_OK);
	enc.data[enc.len / 2] ^= 1;
	assert_int_equal(decode_any(enc.data, enc.len, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "checksum"));
	enc.data[enc.len / 2] ^= 1;
	assert_int_equal(ly_buf_append(&enc, "\0", 1, 1 << 24, NULL), LY_OK);
	assert_int_equal(decode_any(enc.data, enc.len, &err), LY_E_INVALID);
	/* A cache file is not an agent file, and the other way round. */
	enc.len--;
	assert_int_equal(decode_cache(enc.data, enc.len, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "kind"));
	ly_buf_free_secret(&enc);
	ly_agent_state_cleanup(&st);

	fill_cache(f, f->c);
	assert_int_equal(ly_state_encode_cache(f->c, NOW, &enc, NULL), LY_OK);
	for (size_t n = 0; n < enc.len; n += 7)
		assert_int_not_equal(decode_cache(enc.data, n, NULL), LY_OK);
	for (size_t i = 0; i < enc.len; i += 3) {
		enc.data[i] ^= 0x80;
		assert_int_not_equal(decode_cache(enc.data, enc.len, NULL), LY_OK);
		enc.data[i] ^= 0x80;
	}
	assert_int_equal(decode_cache(enc.data, enc.len, NULL), LY_OK);
	ly_buf_free_secret(&enc);
}

/* ---- files made by hand, with a valid checksum, each breaking one rule ---- */

struct tb {
	uint8_t d[8192];
	size_t n;
};

static void
tb_be(struct tb *b, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b->d[b->n++] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static void
tb_bytes(struct tb *b, const void *p, size_t n)
{
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void
tb_str(struct tb *b, const char *s)
{
	tb_be(b, strlen(s), 2);
	tb_bytes(b, s, strlen(s));
}

static void
tb_blob(struct tb *b, const uint8_t *p, size_t n)
{
	tb_be(b, n, 4);
	tb_bytes(b, p, n);
}

static void
tb_meta(struct tb *b, const char *td)
{
	tb_be(b, 0x01, 1);
	tb_be(b, 16 + 2 + strlen(td), 4);
	tb_be(b, (uint64_t)NOW, 8);
	tb_be(b, 3, 8);
	tb_str(b, td);
}

/* Wraps `body` into a file of `kind` with `version`; the checksum is right. */
static void
seal(const struct tb *body, unsigned version, unsigned kind, struct tb *out)
{
	out->n = 0;
	tb_bytes(out, "LYSTATE\0", 8);
	tb_be(out, version, 2);
	tb_be(out, kind, 2);
	tb_be(out, body->n, 4);
	tb_bytes(out, body->d, body->n);
	unsigned int dl = 0;
	TU_CHECK(EVP_Digest(out->d, out->n, out->d + out->n, &dl, EVP_sha256(), NULL) == 1);
	out->n += dl;
}

struct entry_spec {
	const char *id, *spiffe_id, *sel_type, *sel_value, *dns;
	unsigned flags, has_svid, stale;
	int64_t nb, na, renew;
	bool leaf_trailing, empty_key;
	size_t extra; /* bytes left over in the record */
};

static struct entry_spec
good_entry(void)
{
	struct entry_spec e;
	memset(&e, 0, sizeof(e));
	e.id = "a";
	e.spiffe_id = "spiffe://example.org/a";
	e.sel_type = "unix";
	e.sel_value = "uid:1";
	e.has_svid = 1;
	e.nb = NOW - 60;
	e.na = NOW + 3600;
	e.renew = (NOW + 1000) * 1000;
	return e;
}

static void
tb_entry(struct tb *b, struct fixture *f, const struct entry_spec *e)
{
	struct tb r;
	r.n = 0;
	tb_str(&r, e->id);
	tb_str(&r, e->spiffe_id);
	tb_str(&r, TA_PARENT);
	tb_str(&r, "");
	tb_be(&r, 0, 4);
	tb_be(&r, 0, 4);
	tb_be(&r, e->flags, 1);
	tb_be(&r, 1, 8);
	tb_be(&r, 1, 8);
	tb_be(&r, 1, 2);
	tb_str(&r, e->sel_type);
	tb_str(&r, e->sel_value);
	tb_be(&r, e->dns != NULL ? 1 : 0, 2);
	if (e->dns != NULL)
		tb_str(&r, e->dns);
	tb_be(&r, e->has_svid, 1);
	if (e->has_svid != 0) {
		struct ta_svid s;
		ta_svid_make(&f->pki, f->pki.leaf_key, e->spiffe_id, -60, 3600, &s);
		struct ly_der_span sp[4];
		size_t cnt;
		TU_CHECK(ly_der_split(s.chain.data, s.chain.len, 4, 1 << 20, sp, &cnt, NULL) == LY_OK);
		tb_be(&r, sp[0].len + (e->leaf_trailing ? 1 : 0), 4);
		tb_bytes(&r, s.chain.data, sp[0].len);
		if (e->leaf_trailing)
			tb_be(&r, 0, 1);
		tb_blob(&r, s.chain.data + sp[1].off, sp[1].len);
		tb_blob(&r, s.key.data, e->empty_key ? 0 : s.key.len);
		tb_be(&r, (uint64_t)e->nb, 8);
		tb_be(&r, (uint64_t)e->na, 8);
		tb_be(&r, (uint64_t)e->renew, 8);
		tb_be(&r, e->stale, 1);
		ta_svid_free(&s);
	}
	for (size_t i = 0; i < e->extra; i++)
		tb_be(&r, 0, 1);
	tb_be(b, 0x10, 1);
	tb_be(b, r.n, 4);
	tb_bytes(b, r.d, r.n);
}

static ly_status
cache_file(struct fixture *f, const struct entry_spec *e, struct ly_error *err)
{
	static struct tb body, file;
	body.n = 0;
	tb_meta(&body, TA_TD);
	tb_entry(&body, f, e);
	seal(&body, 1, 2, &file);
	return decode_cache(file.d, file.n, err);
}

static void
expect_entry(struct fixture *f, const struct entry_spec *e, ly_status want, const char *msg)
{
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = cache_file(f, e, &err);
	if (rc != want)
		fail_msg("want %s, got %s: %s", ly_status_str(want), ly_status_str(rc), err.msg);
	if (msg != NULL && strstr(err.msg, msg) == NULL)
		fail_msg("want \"%s\" in \"%s\"", msg, err.msg);
}

static void
test_format_rules(void **state)
{
	struct fixture *f = *state;
	struct entry_spec e = good_entry();
	expect_entry(f, &e, LY_OK, NULL);

	e = good_entry();
	e.extra = 1;
	expect_entry(f, &e, LY_E_INVALID, "left over");
	e = good_entry();
	e.flags = 8;
	expect_entry(f, &e, LY_E_INVALID, "flag");
	e = good_entry();
	e.has_svid = 2;
	expect_entry(f, &e, LY_E_INVALID, "has_svid");
	e = good_entry();
	e.stale = 2;
	expect_entry(f, &e, LY_E_INVALID, "stale");
	e = good_entry();
	e.spiffe_id = "spiffe://other.org/a";
	expect_entry(f, &e, LY_E_INVALID, "trust domain");
	e = good_entry();
	e.id = "bad id";
	expect_entry(f, &e, LY_E_INVALID, "entry ID");
	e = good_entry();
	e.sel_type = "nope";
	expect_entry(f, &e, LY_E_INVALID, NULL);
	e = good_entry();
	e.dns = "-bad-.example.org";
	expect_entry(f, &e, LY_E_INVALID, NULL);
	e = good_entry();
	e.leaf_trailing = true;
	expect_entry(f, &e, LY_E_INVALID, "leaf");
	e = good_entry();
	e.empty_key = true;
	expect_entry(f, &e, LY_E_INVALID, "empty key");
	e = good_entry();
	e.nb = e.na;
	expect_entry(f, &e, LY_E_INVALID, "window");
	e = good_entry();
	e.renew = e.na * 1000 + 1;
	expect_entry(f, &e, LY_E_INVALID, "renewal");
	e = good_entry();
	e.flags = 1; /* a node entry with an SVID (its selectors are workload ones: refused first) */
	expect_entry(f, &e, LY_E_INVALID, NULL);

	/* File-level rules. */
	static struct tb body, file;
	struct ly_error err;
	e = good_entry();
	body.n = 0;
	tb_meta(&body, TA_TD);
	tb_entry(&body, f, &e);
	tb_entry(&body, f, &e);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "twice"));

	body.n = 0;
	tb_meta(&body, TA_TD);
	seal(&body, 2, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "version"));
	seal(&body, 1, 3, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_OK);
	/* Magic. */
	file.d[0] = 'X';
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "magic"));

	/* Two meta records; none; an entry first; an unknown record; an agent record in a cache file. */
	tb_meta(&body, TA_TD);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	body.n = 0;
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "no meta"));
	body.n = 0;
	tb_entry(&body, f, &e);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "first record"));
	body.n = 0;
	tb_meta(&body, TA_TD);
	tb_be(&body, 0x7f, 1);
	tb_be(&body, 0, 4);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	body.n = 0;
	tb_meta(&body, TA_TD);
	tb_be(&body, 0x7f, 1);
	tb_be(&body, 0, 4);
	seal(&body, 1, 1, &file);
	assert_int_equal(decode_any(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "unknown record"));
	/* A record longer than the body. */
	body.n = 0;
	tb_meta(&body, TA_TD);
	tb_be(&body, 0x10, 1);
	tb_be(&body, 1000, 4);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "truncated"));
	/* A string with a NUL byte; a trust domain in upper case. */
	body.n = 0;
	tb_be(&body, 0x01, 1);
	tb_be(&body, 16 + 2 + 12, 4);
	tb_be(&body, 0, 8);
	tb_be(&body, 0, 8);
	tb_be(&body, 12, 2);
	tb_bytes(&body, "example\0.org", 12);
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "NUL"));
	body.n = 0;
	tb_meta(&body, "Example.org");
	seal(&body, 1, 2, &file);
	assert_int_equal(decode_cache(file.d, file.n, &err), LY_E_INVALID);
	/* Agent file: a second agent record; an agent ID in another trust domain. */
	struct ly_agent_state st;
	struct ly_buf enc = LY_BUF_INIT;
	agent_state(f, &st, 3600);
	assert_int_equal(ly_state_encode_agent(&st, NOW, &enc, NULL), LY_OK);
	body.n = 0;
	tb_bytes(&body, enc.data + 16, enc.len - 48);
	/* The agent record follows meta: copy it once more. */
	size_t meta_len = 5 + ((size_t)enc.data[16 + 1] << 24 | (size_t)enc.data[16 + 2] << 16 |
				  (size_t)enc.data[16 + 3] << 8 | enc.data[16 + 4]);
	const uint8_t *ag = enc.data + 16 + meta_len;
	size_t ag_len = 5 + ((size_t)ag[1] << 24 | (size_t)ag[2] << 16 | (size_t)ag[3] << 8 | ag[4]);
	assert_true(body.n + ag_len < sizeof(body.d));
	tb_bytes(&body, ag, ag_len);
	seal(&body, 1, 1, &file);
	assert_int_equal(decode_any(file.d, file.n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "second agent"));
	ly_buf_free_secret(&enc);
	ly_agent_state_cleanup(&st);
}

static mode_t
mode_of(const char *p)
{
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 07777;
}

static void
test_files_and_modes(void **state)
{
	struct fixture *f = *state;
	char dir[128], path[256];
	snprintf(dir, sizeof(dir), "%s/data", f->dir);
	struct ly_error err;

	/* Created 0700. */
	assert_int_equal(ly_state_dir_prepare(dir, &err), LY_OK);
	assert_int_equal(mode_of(dir), 0700);
	/* Too wide: narrowed. */
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(ly_state_dir_prepare(dir, &err), LY_OK);
	assert_int_equal(mode_of(dir), 0700);
	/* Not a directory. */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	int fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ly_state_dir_prepare(path, &err), LY_E_INVALID);

	/* Nothing saved yet: NOT_FOUND (first start). */
	struct ly_agent_state st, got;
	assert_int_equal(ly_state_load_agent(dir, TA_TD, NOW, &got, &err), LY_E_NOT_FOUND);
	agent_state(f, &st, 3600);
	assert_int_equal(ly_state_save_agent(dir, &st, NOW, &err), LY_OK);
	snprintf(path, sizeof(path), "%s/%s", dir, LY_STATE_AGENT_FILE);
	assert_int_equal(mode_of(path), 0600);
	assert_int_equal(ly_state_load_agent(dir, TA_TD, NOW, &got, &err), LY_OK);
	assert_true(got.has_svid);
	ly_agent_state_cleanup(&got);

	/* Even under a permissive umask the file is 0600. */
	mode_t old = umask(0);
	assert_int_equal(ly_state_save_agent(dir, &st, NOW, &err), LY_OK);
	umask(old);
	assert_int_equal(mode_of(path), 0600);

	/* Readable by others: refused. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(ly_state_load_agent(dir, TA_TD, NOW, &got, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "mode"));
	assert_int_equal(chmod(path, 0600), 0);
	/* A symlink in its place: refused. */
	char link[256];
	snprintf(link, sizeof(link), "%s/%s", dir, LY_STATE_CACHE_FILE);
	assert_int_equal(symlink(path, link), 0);
	assert_int_not_equal(ly_state_load_cache(dir, NOW, NULL, f->c, &err), LY_OK);
	unlink(link);

	/* Cache file: save, load. */
	fill_cache(f, f->c);
	assert_int_equal(ly_state_save_cache(dir, f->c, NOW, &err), LY_OK);
	assert_int_equal(mode_of(link), 0600);
	struct ly_cache *c2 = NULL;
	assert_int_equal(ly_cache_new(TA_TD, &c2, NULL), LY_OK);
	assert_int_equal(ly_state_load_cache(dir, NOW, NULL, c2, &err), LY_OK);
	assert_int_equal(ly_cache_count(c2), 5);
	ly_cache_free(c2);

	/* Leftovers of a crash are removed by prepare; real files stay. */
	snprintf(path, sizeof(path), "%s/.%s.tmp.abcdef", dir, LY_STATE_CACHE_FILE);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ly_state_dir_prepare(dir, &err), LY_OK);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(link, F_OK), 0);

	/* Bad names. */
	assert_int_equal(ly_state_write_file(dir, "a/b", (const uint8_t *)"x", 1, &err), LY_E_INVALID);
	assert_int_equal(ly_state_write_file(dir, "..", (const uint8_t *)"x", 1, &err), LY_E_INVALID);
	assert_int_equal(ly_state_write_file("/nonexistent/dir", "x", (const uint8_t *)"x", 1, &err), LY_E_IO);
	ly_agent_state_cleanup(&st);
}

/*
 * SIGKILL while writing: a child saves the cache in a loop, each time with
 * a higher revision, and is killed at a random moment; the parent must
 * always load a whole state, the old one or a newer one.
 */
static void
test_sigkill_during_write(void **state)
{
	struct fixture *f = *state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/data", f->dir);
	assert_int_equal(ly_state_dir_prepare(dir, NULL), LY_OK);
	/* 300 entries with SVIDs: a file of ~400 KB, so kills land mid-write. */
	struct ly_entry *es[300];
	for (int i = 0; i < 300; i++) {
		char id[32], sid[64], sel[32];
		snprintf(id, sizeof(id), "e%d", i);
		snprintf(sid, sizeof(sid), "spiffe://example.org/w/%d", i);
		snprintf(sel, sizeof(sel), "unix:uid:%d", i);
		es[i] = ta_entry(id, sid, i, NULL, sel, NULL);
	}
	ta_apply(f->c, true, 1, es, 300, NULL, 0, NULL);
	for (int i = 0; i < 300; i++) {
		char id[32];
		snprintf(id, sizeof(id), "e%d", i);
		ta_set_svid(f->c, &f->pki, id, -60, 3600, NULL);
	}
	/*
	 * Kills land in a window a few saves long, measured here: under
	 * valgrind or a loaded machine one save takes far longer than on a
	 * quiet one, and a fixed window would never see the state advance.
	 */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(ly_state_save_cache(dir, f->c, NOW, NULL), LY_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long save_us = (long)(t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000L;
	long window_us = save_us * 4 > 40000 ? save_us * 4 : 40000;

	int64_t last = 1;
	int advanced = 0;
	srand(12345);
	for (int round = 1; round <= 30; round++) {
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			for (int64_t i = 1;; i++) {
				struct ly_cache_update u;
				memset(&u, 0, sizeof(u));
				u.revision = (int64_t)round * 1000000 + i;
				if (ly_cache_apply(f->c, &u, NULL, NULL) != LY_OK ||
				    ly_state_save_cache(dir, f->c, NOW, NULL) != LY_OK)
					_exit(3);
			}
		}
		long wait_us = (long)(rand() % window_us);
		struct timespec ts = { wait_us / 1000000L, (wait_us % 1000000L) * 1000L };
		nanosleep(&ts, NULL);
		assert_int_equal(kill(pid, SIGKILL), 0);
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

		struct ly_cache *c = NULL;
		struct ly_error err;
		assert_int_equal(ly_cache_new(TA_TD, &c, NULL), LY_OK);
		ly_status rc = ly_state_load_cache(dir, NOW, NULL, c, &err);
		if (rc != LY_OK)
			fail_msg("round %d: %s", round, err.msg);
		assert_int_equal(ly_cache_count(c), 300);
		assert_int_equal(ly_cache_svid_count(c), 300);
		int64_t rev = ly_cache_revision(c);
		assert_true(rev >= last);
		assert_true(rev == last || rev / 1000000 == round);
		if (rev != last)
			advanced++;
		last = rev;
		ly_cache_free(c);
		/* What the killed writer left behind goes at the next start. */
		assert_int_equal(ly_state_dir_prepare(dir, NULL), LY_OK);
	}
	printf("SIGKILL during write: 30 rounds, the state advanced in %d, whole every time\n", advanced);
	assert_true(advanced > 0);
}

/* Size and speed of a 10,000-SVID cache file. */
static void
test_size_10000(void **state)
{
	struct fixture *f = *state;
	enum { N = 10000 };
	struct ta_svid s;
	ta_svid_make(&f->pki, f->pki.leaf_key, "spiffe://example.org/x", -60, 3600, &s);
	struct ly_entry **es = calloc(N, sizeof(*es));
	assert_non_null(es);
	for (int i = 0; i < N; i++) {
		char id[64], sid[96], sel[32];
		snprintf(id, sizeof(id), "%08x-4b1e-4c2a-9d3f-%012x", i, i);
		snprintf(sid, sizeof(sid), "spiffe://example.org/ns/prod/sa/workload-%d", i);
		snprintf(sel, sizeof(sel), "unix:uid:%d", 1000 + i);
		es[i] = ta_entry(id, sid, i, NULL, sel, "unix:gid:1000", NULL);
	}
	ta_apply(f->c, true, 1, es, N, NULL, 0, NULL);
	free(es);
	for (int i = 0; i < N; i++) {
		char id[64], sid[96];
		snprintf(id, sizeof(id), "%08x-4b1e-4c2a-9d3f-%012x", i, i);
		snprintf(sid, sizeof(sid), "spiffe://example.org/ns/prod/sa/workload-%d", i);
		struct ly_buf chain = LY_BUF_INIT, key = LY_BUF_INIT;
		assert_int_equal(ly_buf_set(&chain, s.chain.data, s.chain.len, NULL), LY_OK);
		assert_int_equal(ly_buf_set(&key, s.key.data, s.key.len, NULL), LY_OK);
		assert_int_equal(ly_cache_set_svid(f->c, id, sid, &chain, &key, s.nb, s.na, (s.nb + s.na) * 500, NULL,
		    NULL), LY_OK);
	}
	struct timespec t0, t1, t2;
	struct ly_buf enc = LY_BUF_INIT;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(ly_state_encode_cache(f->c, NOW, &enc, NULL), LY_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	struct ly_cache *got = NULL;
	assert_int_equal(ly_cache_new(TA_TD, &got, NULL), LY_OK);
	assert_int_equal(ly_state_decode_cache(enc.data, enc.len, NOW, NULL, got, NULL), LY_OK);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	assert_int_equal(ly_cache_svid_count(got), N);
	printf("cache file with %d SVIDs: %zu bytes (%zu B/SVID); encode %.1f ms, decode %.1f ms\n", N, enc.len,
	    enc.len / N, (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
	    (double)(t2.tv_sec - t1.tv_sec) * 1e3 + (double)(t2.tv_nsec - t1.tv_nsec) / 1e6);
	ly_cache_free(got);
	ly_buf_free_secret(&enc);
	ta_svid_free(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_agent_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_verify_on_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_files_and_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_during_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_10000, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
