/*
 * test_agent_sync.c: the pure parts of the agent's sync (sync_internal.h):
 * the reconnection backoff, when the Workload API may answer (not before
 * the entries are known), the check of the server's certificate, and the
 * conversion of agent.proto's Entry and Bundle messages (agentapi_msg.h),
 * each rule with a value that must be refused. The control flow with fakes
 * is test_agent_sync_flow.c; the daemon flow (attestation, watch, batches,
 * rotation, restarts) runs against a real server in
 * tests/integration/agent_sync_e2e.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/pem.h>

#include "agent/agentapi_msg.h"
#include "agent/sync_internal.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/entry.h"
#include "lib/x509svid.h"
#include "testutil_x509.h"

#define SERVER_ID "spiffe://example.org/lanyard/server"
/* protobuf-c wants char * for strings it never writes. */
#define S(lit) ((char *)(uintptr_t)(lit))

/* ---- backoff ---- */

static void
test_backoff_bounds(void **state)
{
	(void)state;
	/* Full jitter (agent/servers.h): attempt 0 in [0, 1 s]; each step doubles; never past 30 s. */
	assert_int_equal(ly_sync_chan_backoff_ms(0, 0), 0);
	assert_int_equal(ly_sync_chan_backoff_ms(0, 1000), 1000);
	for (uint32_t r = 0; r < 1000; r++) {
		uint64_t v = ly_sync_chan_backoff_ms(0, r * 7919u);
		assert_true(v <= LY_SYNC_BACKOFF_MIN_MS);
	}
	assert_int_equal(ly_sync_chan_backoff_ms(1, 2000), 2000);
	assert_int_equal(ly_sync_chan_backoff_ms(2, 4000), 4000);
	for (unsigned a = 0; a < 40; a++) {
		for (uint32_t r = 0; r < 200; r++) {
			uint64_t v = ly_sync_chan_backoff_ms(a, r * 2654435761u);
			assert_true(v <= LY_SYNC_BACKOFF_MAX_MS);
		}
	}
	/* The cap: a large attempt stays within [0, 30 s], never overflows. */
	assert_int_equal(ly_sync_chan_backoff_ms(1000, LY_SYNC_BACKOFF_MAX_MS), LY_SYNC_BACKOFF_MAX_MS);
	assert_int_equal(ly_sync_chan_backoff_ms(UINT32_MAX, UINT32_MAX), UINT32_MAX % (LY_SYNC_BACKOFF_MAX_MS + 1));
}

static void
test_backoff_jitter_spreads(void **state)
{
	(void)state;
	/* Full jitter: agents with different random draws spread over the whole step. */
	uint64_t lo = UINT64_MAX, hi = 0;
	for (uint32_t r = 0; r < 5000; r++) {
		uint64_t v = ly_sync_chan_backoff_ms(10, r * 2654435761u);
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
	}
	assert_true(lo < 1000 && hi > 29000);
}

/* ---- when the Workload API answers ---- */

static void
test_wapi_ready_rule(void **state)
{
	(void)state;
	/* Our SVID, the bundle and the entries: it answers (and may say "entitled to nothing"). */
	assert_true(ly_sync_wapi_ready_rule(true, true, 0));
	/* Attested with the bundle, but the server's first snapshot not applied yet: every caller would look
	 * entitled to nothing and be told PERMISSION_DENIED. Not ready: UNAVAILABLE, clients retry. */
	assert_false(ly_sync_wapi_ready_rule(true, false, 0));
	/* Not attested (no SVID of our own or no bundle): not ready, whatever is known of the entries. */
	assert_false(ly_sync_wapi_ready_rule(false, true, 0));
	assert_false(ly_sync_wapi_ready_rule(false, false, 0));
	/* SVIDs cached (a restart with the server down): served at once. */
	assert_true(ly_sync_wapi_ready_rule(false, false, 1));
	assert_true(ly_sync_wapi_ready_rule(true, false, 3));
}

/* ---- the server's certificate ---- */

struct pki {
	struct tu_pki p;
	X509_STORE *store;
};

static char *
pem_of(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	TU_CHECK(b != NULL && PEM_write_bio_X509(b, x) == 1);
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	char *out = strndup(p, (size_t)n);
	BIO_free(b);
	TU_CHECK(out != NULL);
	return out;
}

static int
pki_setup(void **state)
{
	struct pki *k = calloc(1, sizeof(*k));
	TU_CHECK(k != NULL);
	tu_pki_init(&k->p);
	TU_CHECK(ly_x509_store_new(k->p.root_der.data, k->p.root_der.len, &k->store, NULL) == LY_OK);
	*state = k;
	return 0;
}

static int
pki_teardown(void **state)
{
	struct pki *k = *state;
	X509_STORE_free(k->store);
	tu_pki_free(&k->p);
	free(k);
	return 0;
}

/* A leaf for `uri` under the intermediate; its PEM and the chain's (leaf, intermediate). */
static void
server_leaf(struct pki *k, const struct tu_spec *spec, char **leaf_pem, char **chain_pem)
{
	X509 *leaf = tu_make(spec, k->p.leaf_key, k->p.inter, k->p.int_key);
	char *a = pem_of(leaf), *b = pem_of(k->p.inter);
	*leaf_pem = a;
	if (chain_pem != NULL) {
		size_t la = strlen(a), lb = strlen(b);
		*chain_pem = malloc(la + lb + 1);
		TU_CHECK(*chain_pem != NULL);
		memcpy(*chain_pem, a, la);
		memcpy(*chain_pem + la, b, lb + 1);
	}
	free(b);
	X509_free(leaf);
}

static void
test_server_cert_ok(void **state)
{
	struct pki *k = *state;
	struct tu_spec spec = tu_leaf_spec(SERVER_ID);
	char *leaf, *chain, *inter = pem_of(k->p.inter);
	struct ly_error e;

	server_leaf(k, &spec, &leaf, &chain);
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, chain, TU_NOW, &e), LY_OK);
	/* A chain that does not start with the leaf (only the intermediates) works too. */
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, inter, TU_NOW, &e), LY_OK);
	/* Without the intermediate the path cannot be built. */
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, NULL, TU_NOW, &e),
	    LY_E_UNTRUSTED);
	free(leaf);
	free(chain);
	free(inter);
}

static void
test_server_cert_wrong_id(void **state)
{
	struct pki *k = *state;
	/* A workload SVID of the same CA is not the server. */
	struct tu_spec spec = tu_leaf_spec("spiffe://example.org/lanyard/server2");
	char *leaf, *chain;
	struct ly_error e;

	server_leaf(k, &spec, &leaf, &chain);
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, chain, TU_NOW, &e),
	    LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "expected " SERVER_ID));
	/* Insecure bootstrap (no store): the ID is still checked. */
	assert_int_equal(ly_sync_chan_check_server(NULL, "example.org", SERVER_ID, leaf, chain, TU_NOW, &e), LY_E_UNTRUSTED);
	free(leaf);
	free(chain);
}

static void
test_server_cert_other_td(void **state)
{
	struct pki *k = *state;
	struct tu_spec spec = tu_leaf_spec("spiffe://other.org/lanyard/server");
	char *leaf, *chain;
	struct ly_error e;

	server_leaf(k, &spec, &leaf, &chain);
	assert_int_not_equal(ly_sync_chan_check_server(k->store, "example.org", "spiffe://other.org/lanyard/server", leaf,
				 chain, TU_NOW, &e),
	    LY_OK);
	free(leaf);
	free(chain);
}

static void
test_server_cert_foreign_ca(void **state)
{
	struct pki *k = *state;
	struct tu_pki other;
	struct tu_spec spec = tu_leaf_spec(SERVER_ID);
	struct ly_error e;

	tu_pki_init(&other);
	X509 *leaf = tu_make(&spec, other.leaf_key, other.inter, other.int_key);
	char *lp = pem_of(leaf), *ip = pem_of(other.inter);
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, lp, ip, TU_NOW, &e), LY_E_UNTRUSTED);
	/* The insecure bootstrap does not check the chain: that is its whole point (logged by the caller). */
	assert_int_equal(ly_sync_chan_check_server(NULL, "example.org", SERVER_ID, lp, ip, TU_NOW, &e), LY_OK);
	free(lp);
	free(ip);
	X509_free(leaf);
	tu_pki_free(&other);
}

static void
test_server_cert_expired(void **state)
{
	struct pki *k = *state;
	struct tu_spec spec = tu_leaf_spec(SERVER_ID);
	char *leaf, *chain;
	struct ly_error e;

	server_leaf(k, &spec, &leaf, &chain);
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, chain, TU_NOW + 7200, &e),
	    LY_E_EXPIRED);
	free(leaf);
	free(chain);
}

static void
test_server_cert_not_a_leaf(void **state)
{
	struct pki *k = *state;
	struct tu_spec spec = tu_leaf_spec(SERVER_ID);
	char *leaf, *chain;
	struct ly_error e;

	/* A CA certificate carrying the server's ID is refused (X509-SVID §4.1). */
	spec.bc = TU_BC_TRUE;
	spec.ku = "keyCertSign,digitalSignature";
	server_leaf(k, &spec, &leaf, &chain);
	assert_int_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, leaf, chain, TU_NOW, &e),
	    LY_E_INVALID);
	assert_int_equal(ly_sync_chan_check_server(NULL, "example.org", SERVER_ID, leaf, chain, TU_NOW, &e), LY_E_INVALID);
	free(leaf);
	free(chain);
	/* No certificate, or not PEM. */
	assert_int_not_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, NULL, NULL, TU_NOW, &e), LY_OK);
	assert_int_not_equal(ly_sync_chan_check_server(k->store, "example.org", SERVER_ID, "garbage", NULL, TU_NOW, &e),
	    LY_OK);
}

/* ---- Entry messages ---- */

struct pb_entry {
	Lanyard__Agent__V1__Entry m;
	Lanyard__Agent__V1__Selector sels[LY_SELECTORS_MAX + 2];
	Lanyard__Agent__V1__Selector *sel_ptrs[LY_SELECTORS_MAX + 2];
	char *dns[LY_DNS_NAMES_MAX + 2];
	char values[LY_SELECTORS_MAX + 2][32];
};

static void
pb_entry_init(struct pb_entry *p, size_t nsel)
{
	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__entry__init(&p->m);
	p->m.entry_id = S("e-1");
	p->m.spiffe_id = S("spiffe://example.org/w1");
	p->m.parent_id = S("spiffe://example.org/lanyard/agent/join_token/abc");
	p->m.hint = S("");
	for (size_t i = 0; i < nsel; i++) {
		lanyard__agent__v1__selector__init(&p->sels[i]);
		(void)snprintf(p->values[i], sizeof(p->values[i]), "uid:%zu", 1000 + i);
		p->sels[i].type = S("unix");
		p->sels[i].value = p->values[i];
		p->sel_ptrs[i] = &p->sels[i];
	}
	p->m.n_selectors = nsel;
	p->m.selectors = p->sel_ptrs;
	p->m.x509_svid_ttl = 20;
	p->m.jwt_svid_ttl = 30;
	p->m.revision = 7;
	p->m.created_at = 1700000000;
}

static void
test_entry_ok(void **state)
{
	struct pb_entry p;
	struct ly_entry *e = NULL;
	(void)state;

	pb_entry_init(&p, 2);
	p.dns[0] = S("w1.example.org");
	p.m.n_dns_names = 1;
	p.m.dns_names = p.dns;
	p.m.hint = S("front");
	p.m.admin = 1;
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_OK);
	assert_string_equal(e->entry_id, "e-1");
	assert_string_equal(e->spiffe_id, "spiffe://example.org/w1");
	assert_string_equal(e->parent_id, "spiffe://example.org/lanyard/agent/join_token/abc");
	assert_int_equal(e->n_selectors, 2);
	assert_string_equal(e->selectors[1].type, "unix");
	assert_string_equal(e->selectors[1].value, "uid:1001");
	assert_int_equal(e->n_dns_names, 1);
	assert_string_equal(e->dns_names[0], "w1.example.org");
	assert_string_equal(e->hint, "front");
	assert_int_equal(e->x509_svid_ttl, 20);
	assert_int_equal(e->jwt_svid_ttl, 30);
	assert_true(e->admin);
	assert_false(e->node);
	assert_int_equal(e->revision, 7);
	assert_int_equal(e->created_at, 1700000000);
	assert_int_equal(ly_entry_validate(e, "example.org", NULL), LY_OK);
	ly_entry_free(e);

	/* An empty hint is no hint. */
	pb_entry_init(&p, 1);
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_OK);
	assert_null(e->hint);
	ly_entry_free(e);
}

static void
test_entry_limits(void **state)
{
	struct pb_entry p;
	struct ly_entry *e = (struct ly_entry *)&p; /* must be reset to NULL on failure */
	(void)state;

	pb_entry_init(&p, LY_SELECTORS_MAX);
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_OK);
	ly_entry_free(e);
	pb_entry_init(&p, LY_SELECTORS_MAX + 1);
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_E_LIMIT);
	assert_null(e);

	pb_entry_init(&p, 1);
	for (size_t i = 0; i < LY_DNS_NAMES_MAX + 1; i++)
		p.dns[i] = S("a.example.org");
	p.m.dns_names = p.dns;
	p.m.n_dns_names = LY_DNS_NAMES_MAX + 1;
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_E_LIMIT);
	assert_null(e);
}

static void
test_entry_bad_selectors(void **state)
{
	struct pb_entry p;
	struct ly_entry *e = NULL;
	struct ly_error err;
	(void)state;

	pb_entry_init(&p, 1);
	p.sels[0].value = S("uid:abc"); /* not a number */
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, &err), LY_E_INVALID);
	assert_null(e);
	assert_non_null(strstr(err.msg, "selector 0"));

	pb_entry_init(&p, 2);
	p.sels[1].type = S("nosuch");
	assert_int_not_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_OK);
	assert_null(e);

	pb_entry_init(&p, 2);
	p.sel_ptrs[1] = NULL;
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_E_INVALID);

	pb_entry_init(&p, 1);
	p.sels[0].value = NULL;
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_E_INVALID);

	pb_entry_init(&p, 1);
	p.dns[0] = NULL;
	p.m.dns_names = p.dns;
	p.m.n_dns_names = 1;
	assert_int_equal(ly_agentapi_entry_from_pb(&p.m, &e, NULL), LY_E_INVALID);

	assert_int_equal(ly_agentapi_entry_from_pb(NULL, &e, NULL), LY_E_INVALID);
}

/* ---- Bundle messages ---- */

struct pb_bundle {
	Lanyard__Agent__V1__Bundle m;
	ProtobufCBinaryData x509[2];
	Lanyard__Agent__V1__JWTAuthority jwt[2];
	Lanyard__Agent__V1__JWTAuthority *jwt_ptrs[2];
	unsigned char *spki;
	int spki_len;
	EVP_PKEY *jwt_key;
};

static void
pb_bundle_init(struct pb_bundle *p, const struct tu_pki *pki)
{
	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__bundle__init(&p->m);
	p->m.trust_domain = S("example.org");
	p->x509[0].data = pki->root_der.data;
	p->x509[0].len = pki->root_der.len;
	p->m.x509_authorities = p->x509;
	p->m.n_x509_authorities = 1;
	p->jwt_key = tu_key(LY_KEY_EC_P256);
	p->spki_len = i2d_PUBKEY(p->jwt_key, &p->spki);
	TU_CHECK(p->spki_len > 0);
	lanyard__agent__v1__jwtauthority__init(&p->jwt[0]);
	p->jwt[0].kid = S("kid-1");
	p->jwt[0].public_key.data = p->spki;
	p->jwt[0].public_key.len = (size_t)p->spki_len;
	p->jwt_ptrs[0] = &p->jwt[0];
	p->m.jwt_authorities = p->jwt_ptrs;
	p->m.n_jwt_authorities = 1;
	p->m.sequence = 42;
	p->m.refresh_hint = 10;
}

static void
pb_bundle_cleanup(struct pb_bundle *p)
{
	OPENSSL_free(p->spki);
	EVP_PKEY_free(p->jwt_key);
}

static void
test_bundle_ok(void **state)
{
	struct pki *k = *state;
	struct pb_bundle p;
	struct ly_bundle *b = NULL;

	pb_bundle_init(&p, &k->p);
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, NULL), LY_OK);
	assert_string_equal(ly_bundle_trust_domain(b), "example.org");
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 1);
	assert_non_null(ly_bundle_find_jwt_authority(b, "kid-1"));
	assert_int_equal(ly_bundle_sequence(b), 42);
	assert_int_equal(ly_bundle_refresh_hint(b), 10);
	ly_bundle_free(b);
	pb_bundle_cleanup(&p);
}

static void
test_bundle_refused(void **state)
{
	struct pki *k = *state;
	struct pb_bundle p;
	struct ly_bundle *b = NULL;
	struct ly_error e;

	pb_bundle_init(&p, &k->p);
	/* Another trust domain's bundle. */
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "other.org", &b, &e), LY_E_INVALID);
	assert_null(b);
	p.m.trust_domain = NULL;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	p.m.trust_domain = S("example.org");

	/* No X.509 authority. */
	p.m.n_x509_authorities = 0;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	/* Over the caps: refused before anything is read. */
	p.m.n_x509_authorities = LY_BUNDLE_CERTS_MAX + 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_LIMIT);
	p.m.n_x509_authorities = 1;
	p.m.n_jwt_authorities = LY_JWKS_KEYS_MAX + 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_LIMIT);
	p.m.n_jwt_authorities = 1;
	p.m.sequence = (uint64_t)INT64_MAX + 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_LIMIT);
	p.m.sequence = 42;

	/* An X.509 authority that is not a CA certificate (the intermediate is; a leaf is not). */
	struct tu_spec ls = tu_leaf_spec("spiffe://example.org/w");
	X509 *leaf = tu_make(&ls, k->p.leaf_key, k->p.inter, k->p.int_key);
	struct ly_buf ld = LY_BUF_INIT;
	tu_der(leaf, &ld);
	p.x509[0].data = ld.data;
	p.x509[0].len = ld.len;
	assert_int_not_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_OK);
	assert_null(b);
	/* Trailing bytes after the certificate. */
	uint8_t junk[4096];
	memcpy(junk, k->p.root_der.data, k->p.root_der.len);
	junk[k->p.root_der.len] = 0;
	p.x509[0].data = junk;
	p.x509[0].len = k->p.root_der.len + 1;
	assert_int_not_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_OK);
	p.x509[0].data = k->p.root_der.data;
	p.x509[0].len = k->p.root_der.len;
	ly_buf_free(&ld);
	X509_free(leaf);

	/* JWT authority: trailing byte after the SubjectPublicKeyInfo, empty, no kid, over the cap. */
	unsigned char *spki2 = malloc((size_t)p.spki_len + 1);
	memcpy(spki2, p.spki, (size_t)p.spki_len);
	spki2[p.spki_len] = 0;
	p.jwt[0].public_key.data = spki2;
	p.jwt[0].public_key.len = (size_t)p.spki_len + 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	p.jwt[0].public_key.len = (size_t)p.spki_len - 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	p.jwt[0].public_key.len = 0;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	p.jwt[0].public_key.len = LY_CERT_DER_MAX + 1;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_LIMIT);
	p.jwt[0].public_key.data = p.spki;
	p.jwt[0].public_key.len = (size_t)p.spki_len;
	p.jwt[0].kid = NULL;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	p.jwt[0].kid = S("");
	assert_int_not_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_OK);
	p.jwt[0].kid = S("kid-1");
	p.jwt_ptrs[0] = NULL;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	/* Two keys with one kid. */
	p.jwt_ptrs[0] = &p.jwt[0];
	p.jwt[1] = p.jwt[0];
	p.jwt_ptrs[1] = &p.jwt[1];
	p.m.n_jwt_authorities = 2;
	assert_int_equal(ly_agentapi_bundle_from_pb(&p.m, "example.org", &b, &e), LY_E_INVALID);
	assert_null(b);
	free(spki2);

	assert_int_equal(ly_agentapi_bundle_from_pb(NULL, "example.org", &b, &e), LY_E_INVALID);
	pb_bundle_cleanup(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_bounds),
		cmocka_unit_test(test_backoff_jitter_spreads),
		cmocka_unit_test(test_wapi_ready_rule),
		cmocka_unit_test_setup_teardown(test_server_cert_ok, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_server_cert_wrong_id, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_server_cert_other_td, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_server_cert_foreign_ca, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_server_cert_expired, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_server_cert_not_a_leaf, pki_setup, pki_teardown),
		cmocka_unit_test(test_entry_ok),
		cmocka_unit_test(test_entry_limits),
		cmocka_unit_test(test_entry_bad_selectors),
		cmocka_unit_test_setup_teardown(test_bundle_ok, pki_setup, pki_teardown),
		cmocka_unit_test_setup_teardown(test_bundle_refused, pki_setup, pki_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
