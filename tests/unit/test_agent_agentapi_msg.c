/*
 * test_agent_agentapi_msg.c: the Agent service's answers as the agent
 * takes them (agent/agentapi_msg.h): each message packed here with
 * protobuf-c, decoded by the module, and every rule broken on purpose:
 * hostile lengths, one too many, bytes of another type, answers for IDs
 * we did not ask for. (Entry and Bundle conversion have their own cases
 * in test_agent_sync.c.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/agentapi_msg.h"
#include "lib/caps.h"
#include "lib/log.h"
#include "testutil_x509.h"

/* protobuf-c wants char * for strings it never writes. */
#define S(lit) ((char *)(uintptr_t)(lit))

/* Packs any message into a fresh heap buffer (the caller frees it). */
static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

/* Bytes that are no protobuf message of any type: a field with wire type 7. */
static const uint8_t garbage[] = { 0x0f, 0xff, 0xff, 0xff };
/* A string field (1) whose length runs past the end of the message. */
static const uint8_t truncated[] = { 0x0a, 0x20, 'a', 'b' };

/* ---- EntriesUpdate ---- */

struct refusals {
	unsigned n;
	char last_id[64];
};

static void
on_refused(void *arg, const char *entry_id, const struct ly_error *why)
{
	struct refusals *r = arg;
	assert_non_null(why);
	assert_true(why->msg[0] != '\0');
	r->n++;
	(void)snprintf(r->last_id, sizeof(r->last_id), "%s", entry_id);
}

struct pb_update {
	Lanyard__Agent__V1__EntriesUpdate m;
	Lanyard__Agent__V1__Entry e[3];
	Lanyard__Agent__V1__Entry *ep[3];
	Lanyard__Agent__V1__Selector sel;
	Lanyard__Agent__V1__Selector *selp[1];
	char *del[2];
};

static void
pb_update_init(struct pb_update *p)
{
	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__entries_update__init(&p->m);
	lanyard__agent__v1__selector__init(&p->sel);
	p->sel.type = S("unix");
	p->sel.value = S("uid:1000");
	p->selp[0] = &p->sel;
	for (size_t i = 0; i < 3; i++) {
		lanyard__agent__v1__entry__init(&p->e[i]);
		p->e[i].entry_id = S(i == 0 ? "e-0" : i == 1 ? "e-1" : "e-2");
		p->e[i].spiffe_id = S("spiffe://example.org/w");
		p->e[i].parent_id = S("spiffe://example.org/lanyard/agent/join_token/abc");
		p->e[i].n_selectors = 1;
		p->e[i].selectors = p->selp;
		p->ep[i] = &p->e[i];
	}
	p->m.n_entries = 3;
	p->m.entries = p->ep;
	p->del[0] = S("gone-1");
	p->del[1] = S("gone-2");
	p->m.n_deleted_entry_ids = 2;
	p->m.deleted_entry_ids = p->del;
	p->m.revision = 12;
	p->m.snapshot = 1;
	p->m.bundle_sequence = 5;
}

static void
test_update_ok(void **state)
{
	struct pb_update p;
	struct ly_agentapi_update up;
	struct refusals r = { 0 };
	size_t len;
	(void)state;

	pb_update_init(&p);
	uint8_t *b = pack(&p.m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
	assert_int_equal(r.n, 0);
	assert_int_equal(up.n_refused, 0);
	assert_int_equal(up.u.n_entries, 3);
	assert_string_equal(up.u.entries[1]->entry_id, "e-1");
	assert_null(up.u.entries[3]); /* NULL-terminated */
	assert_int_equal(up.u.n_deleted, 2);
	assert_string_equal(up.u.deleted_ids[1], "gone-2");
	assert_int_equal(up.u.revision, 12);
	assert_true(up.u.snapshot);
	assert_int_equal(up.bundle_sequence, 5);
	ly_agentapi_update_cleanup(&up);
	assert_null(up.msg);
	ly_agentapi_update_cleanup(&up); /* twice is harmless */
	free(b);

	/* The empty update (no field set) is a valid delta. */
	assert_int_equal(ly_agentapi_update_parse((const uint8_t *)"", 0, NULL, NULL, &up, NULL), LY_OK);
	assert_int_equal(up.u.n_entries, 0);
	assert_false(up.u.snapshot);
	ly_agentapi_update_cleanup(&up);
}

static void
test_update_bad_entry_left_out(void **state)
{
	struct pb_update p;
	struct ly_agentapi_update up;
	struct refusals r = { 0 };
	size_t len;
	(void)state;

	/* One entry with a selector too many: left out and reported, the others go on. */
	Lanyard__Agent__V1__Selector *many[LY_SELECTORS_MAX + 1];
	pb_update_init(&p);
	for (size_t i = 0; i <= LY_SELECTORS_MAX; i++)
		many[i] = &p.sel;
	p.e[1].n_selectors = LY_SELECTORS_MAX + 1;
	p.e[1].selectors = many;
	uint8_t *b = pack(&p.m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.last_id, "e-1");
	assert_int_equal(up.n_refused, 1);
	assert_int_equal(up.u.n_entries, 2);
	assert_string_equal(up.u.entries[0]->entry_id, "e-0");
	assert_string_equal(up.u.entries[1]->entry_id, "e-2");
	ly_agentapi_update_cleanup(&up);
	free(b);

	/* Exactly LY_SELECTORS_MAX is fine. */
	p.e[1].n_selectors = LY_SELECTORS_MAX;
	b = pack(&p.m.base, &len);
	r.n = 0;
	assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
	assert_int_equal(r.n, 0);
	assert_int_equal(up.u.n_entries, 3);
	ly_agentapi_update_cleanup(&up);
	free(b);

	/* A selector without a value (protobuf-c unpacks the absent string as ""): refused by the selector rules. */
	pb_update_init(&p);
	Lanyard__Agent__V1__Selector bad;
	Lanyard__Agent__V1__Selector *badp[1] = { &bad };
	lanyard__agent__v1__selector__init(&bad);
	bad.type = S("unix");
	bad.value = NULL;
	p.e[0].selectors = badp;
	p.e[0].entry_id = NULL;
	p.m.n_entries = 1;
	b = pack(&p.m.base, &len);
	r.n = 0;
	assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
	assert_int_equal(r.n, 1);
	assert_int_equal(up.n_refused, 1);
	assert_int_equal(up.u.n_entries, 0);
	ly_agentapi_update_cleanup(&up);
	free(b);

	/* No callback: the entry is left out and counted all the same. */
	b = pack(&p.m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, NULL), LY_OK);
	assert_int_equal(up.n_refused, 1);
	ly_agentapi_update_cleanup(&up);
	free(b);
}

static void
test_update_limits(void **state)
{
	struct ly_agentapi_update up;
	struct ly_error e;
	size_t len;
	(void)state;

	/* One deletion too many: the whole update is refused, before any work. */
	Lanyard__Agent__V1__EntriesUpdate m;
	lanyard__agent__v1__entries_update__init(&m);
	char **ids = calloc(LY_AGENT_ENTRIES_MAX + 1, sizeof(*ids));
	assert_non_null(ids);
	for (size_t i = 0; i <= LY_AGENT_ENTRIES_MAX; i++)
		ids[i] = S("x");
	m.deleted_entry_ids = ids;
	m.n_deleted_entry_ids = LY_AGENT_ENTRIES_MAX + 1;
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, &e), LY_E_LIMIT);
	assert_non_null(strstr(e.msg, "over"));
	assert_null(up.msg);
	assert_null(up.u.entries);
	free(b);

	/* Exactly the cap: accepted. */
	m.n_deleted_entry_ids = LY_AGENT_ENTRIES_MAX;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, &e), LY_OK);
	assert_int_equal(up.u.n_deleted, LY_AGENT_ENTRIES_MAX);
	ly_agentapi_update_cleanup(&up);
	free(b);

	/* One entry too many: refused likewise. */
	Lanyard__Agent__V1__Entry en, **eps = calloc(LY_AGENT_ENTRIES_MAX + 1, sizeof(*eps));
	assert_non_null(eps);
	lanyard__agent__v1__entry__init(&en);
	en.entry_id = S("e");
	for (size_t i = 0; i <= LY_AGENT_ENTRIES_MAX; i++)
		eps[i] = &en;
	lanyard__agent__v1__entries_update__init(&m);
	m.entries = eps;
	m.n_entries = LY_AGENT_ENTRIES_MAX + 1;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, &e), LY_E_LIMIT);
	free(b);
	free(eps);
	free(ids);
}

static void
test_update_wrong_bytes(void **state)
{
	struct ly_agentapi_update up;
	struct ly_error e;
	(void)state;

	assert_int_equal(ly_agentapi_update_parse(garbage, sizeof(garbage), NULL, NULL, &up, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "malformed"));
	assert_null(up.msg);
	assert_int_equal(ly_agentapi_update_parse(truncated, sizeof(truncated), NULL, NULL, &up, &e), LY_E_INVALID);
	/* Field 3 (entries, a message) sent as a varint: the wrong wire type. */
	static const uint8_t wrong_type[] = { 0x18, 0x01 };
	assert_int_equal(ly_agentapi_update_parse(wrong_type, sizeof(wrong_type), NULL, NULL, &up, &e), LY_E_INVALID);
	ly_agentapi_update_cleanup(&up);
}

/* ---- AgentSVID ---- */

static void
test_svid_check(void **state)
{
	Lanyard__Agent__V1__AgentSVID m, *got = NULL;
	struct ly_error e;
	uint8_t chain[16] = { 0x30 };
	size_t len;
	(void)state;

	lanyard__agent__v1__agent_svid__init(&m);
	m.spiffe_id = S("spiffe://example.org/agent");
	m.cert_chain.data = chain;
	m.cert_chain.len = sizeof(chain);
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent", &e), LY_OK);
	/* Another ID, a prefix of ours, none. */
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent2", &e), LY_E_UNTRUSTED);
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agen", &e), LY_E_UNTRUSTED);
	m.spiffe_id = NULL;
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent", &e), LY_E_UNTRUSTED);
	assert_int_equal(ly_agentapi_svid_check(NULL, "spiffe://example.org/agent", &e), LY_E_INVALID);
	m.spiffe_id = S("spiffe://example.org/agent");
	/* Empty chain; one byte over the cap; exactly the cap. */
	m.cert_chain.len = 0;
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent", &e), LY_E_LIMIT);
	uint8_t *big = calloc(LY_CHAIN_DER_MAX + 1, 1);
	assert_non_null(big);
	m.cert_chain.data = big;
	m.cert_chain.len = LY_CHAIN_DER_MAX + 1;
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent", &e), LY_E_LIMIT);
	m.cert_chain.len = LY_CHAIN_DER_MAX;
	assert_int_equal(ly_agentapi_svid_check(&m, "spiffe://example.org/agent", &e), LY_OK);

	/* The RenewAgent answer: packed, parsed, checked. */
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_agent_svid_parse(b, len, "spiffe://example.org/agent", &got, &e), LY_OK);
	assert_non_null(got);
	assert_int_equal(got->cert_chain.len, LY_CHAIN_DER_MAX);
	ly_agentapi_agent_svid_free(got);
	assert_int_equal(ly_agentapi_agent_svid_parse(b, len, "spiffe://example.org/other", &got, &e), LY_E_UNTRUSTED);
	assert_null(got);
	free(b);
	m.cert_chain.len = LY_CHAIN_DER_MAX + 1;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_agent_svid_parse(b, len, "spiffe://example.org/agent", &got, &e), LY_E_LIMIT);
	assert_null(got);
	free(b);
	assert_int_equal(ly_agentapi_agent_svid_parse(garbage, sizeof(garbage), "spiffe://example.org/agent", &got, &e),
	    LY_E_INVALID);
	assert_null(got);
	free(big);
}

/* ---- AttestAgentResponse ---- */

static void
test_attest_answers(void **state)
{
	Lanyard__Agent__V1__AttestAgentResponse m, *got = NULL;
	struct ly_error e;
	char id[LY_SPIFFE_ID_MAX + 1];
	uint8_t nonce[32] = { 1 }, ticket[16] = { 2 };
	size_t len;
	(void)state;

	/* A challenge. */
	lanyard__agent__v1__attest_agent_response__init(&m);
	m.challenge_nonce.data = nonce;
	m.challenge_nonce.len = sizeof(nonce);
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_true(ly_agentapi_attest_has_challenge(got));
	assert_false(ly_agentapi_attest_has_ticket(got));
	assert_null(got->svid);
	ly_agentapi_attest_free(got);
	free(b);

	/* A ticket with its agent ID. */
	lanyard__agent__v1__attest_agent_response__init(&m);
	m.agent_id = S("spiffe://example.org/lanyard/agent/k8s_psat/c/n");
	m.ticket.data = ticket;
	m.ticket.len = sizeof(ticket);
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_false(ly_agentapi_attest_has_challenge(got));
	assert_true(ly_agentapi_attest_has_ticket(got));
	assert_int_equal(ly_agentapi_attest_ticket_id(got, id, sizeof(id), &e), LY_OK);
	assert_string_equal(id, "spiffe://example.org/lanyard/agent/k8s_psat/c/n");
	/* A buffer one byte short of the ID. */
	assert_int_equal(ly_agentapi_attest_ticket_id(got, id, strlen(m.agent_id), &e), LY_E_LIMIT);
	assert_string_equal(id, "");
	ly_agentapi_attest_free(got);
	free(b);

	/* A ticket without an ID, or an ID without a ticket: neither is a ticket. */
	m.ticket.len = 0;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_false(ly_agentapi_attest_has_ticket(got));
	ly_agentapi_attest_free(got);
	free(b);
	m.ticket.len = sizeof(ticket);
	m.agent_id = S("");
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_false(ly_agentapi_attest_has_ticket(got));
	assert_int_equal(ly_agentapi_attest_ticket_id(got, id, sizeof(id), &e), LY_E_INVALID);
	ly_agentapi_attest_free(got);
	free(b);

	/* An agent ID one byte over LY_SPIFFE_ID_MAX; exactly the cap fits. */
	char *longid = malloc(LY_SPIFFE_ID_MAX + 2);
	assert_non_null(longid);
	memset(longid, 'a', LY_SPIFFE_ID_MAX + 1);
	longid[LY_SPIFFE_ID_MAX + 1] = '\0';
	m.agent_id = longid;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_true(ly_agentapi_attest_has_ticket(got));
	assert_int_equal(ly_agentapi_attest_ticket_id(got, id, sizeof(id), &e), LY_E_LIMIT);
	ly_agentapi_attest_free(got);
	free(b);
	longid[LY_SPIFFE_ID_MAX] = '\0';
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_attest_parse(b, len, &got, &e), LY_OK);
	assert_int_equal(ly_agentapi_attest_ticket_id(got, id, sizeof(id), &e), LY_OK);
	assert_int_equal(strlen(id), LY_SPIFFE_ID_MAX);
	ly_agentapi_attest_free(got);
	free(b);
	free(longid);

	/* Not an AttestAgentResponse. */
	assert_int_equal(ly_agentapi_attest_parse(garbage, sizeof(garbage), &got, &e), LY_E_INVALID);
	assert_null(got);
	/* Field 2 (svid, a message) as a varint. */
	static const uint8_t wrong_type[] = { 0x10, 0x05 };
	assert_int_equal(ly_agentapi_attest_parse(wrong_type, sizeof(wrong_type), &got, &e), LY_E_INVALID);
	ly_agentapi_attest_free(NULL);
}

/* ---- BatchNewX509SVIDResponse ---- */

static void
result_init(Lanyard__Agent__V1__X509SVIDResult *r, const char *id, int32_t code)
{
	lanyard__agent__v1__x509_svidresult__init(r);
	r->entry_id = S(id);
	r->status_code = code;
}

static void
test_batch_match(void **state)
{
	Lanyard__Agent__V1__BatchNewX509SVIDResponse m, *got = NULL;
	Lanyard__Agent__V1__X509SVIDResult r[7], *rp[7];
	const Lanyard__Agent__V1__X509SVIDResult *answer[5], *refused[5];
	const char *ids[5] = { "a", "b", NULL, "d", "e" };
	struct ly_error e;
	size_t len;
	(void)state;

	/* Out of order, a refusal, a stranger, a second answer for "a", none for "e". */
	result_init(&r[0], "b", 0);
	result_init(&r[1], "a", 0);
	result_init(&r[2], "d", 7 /* PERMISSION_DENIED */);
	result_init(&r[3], "zzz", 0);
	result_init(&r[4], "a", 7);
	result_init(&r[5], "d", 0);
	result_init(&r[6], "", 0);
	for (size_t i = 0; i < 7; i++)
		rp[i] = &r[i];
	lanyard__agent__v1__batch_new_x509_svidresponse__init(&m);
	m.results = rp;
	m.n_results = 7;
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_parse(b, len, &got, &e), LY_OK);
	ly_agentapi_batch_match(got, ids, 5, answer, refused);
	assert_non_null(answer[0]);
	assert_string_equal(answer[0]->entry_id, "a");
	assert_null(refused[0]); /* the first answer stands */
	assert_non_null(answer[1]);
	assert_string_equal(answer[1]->entry_id, "b");
	assert_null(answer[2]); /* not asked for: nothing, even for a result named "" */
	assert_null(refused[2]);
	assert_null(answer[3]);
	assert_non_null(refused[3]);
	assert_int_equal(refused[3]->status_code, 7);
	assert_null(answer[4]);
	assert_null(refused[4]);
	ly_agentapi_batch_free(got);
	free(b);

	/* In request order, the fast path. */
	result_init(&r[0], "a", 0);
	result_init(&r[1], "b", 0);
	m.n_results = 2;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_parse(b, len, &got, &e), LY_OK);
	ly_agentapi_batch_match(got, ids, 2, answer, refused);
	assert_ptr_equal(answer[0], got->results[0]);
	assert_ptr_equal(answer[1], got->results[1]);
	/* No entries asked for: nothing matches, nothing is written. */
	ly_agentapi_batch_match(got, ids, 0, answer, refused);
	ly_agentapi_batch_free(got);
	free(b);

	assert_int_equal(ly_agentapi_batch_parse(garbage, sizeof(garbage), &got, &e), LY_E_INVALID);
	assert_null(got);
	ly_agentapi_batch_free(NULL);
}

/* ---- NewJWTSVIDResponse ---- */

static void
test_jwt_answer(void **state)
{
	Lanyard__Agent__V1__NewJWTSVIDResponse m, *got = NULL;
	struct ly_error e;
	size_t len;
	(void)state;

	lanyard__agent__v1__new_jwtsvidresponse__init(&m);
	m.token = S("eyJhbGciOiJFUzI1NiJ9.e30.sig");
	m.expires_at = 1700000600;
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_jwt_parse(b, len, &got, &e), LY_OK);
	assert_string_equal(got->token, "eyJhbGciOiJFUzI1NiJ9.e30.sig");
	ly_agentapi_jwt_free(got);
	free(b);

	/* No token; an empty one; one byte over LY_JWT_MAX; exactly LY_JWT_MAX. */
	m.token = NULL;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_jwt_parse(b, len, &got, &e), LY_E_INVALID);
	assert_null(got);
	free(b);
	m.token = S("");
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_jwt_parse(b, len, &got, &e), LY_E_INVALID);
	free(b);
	char *tok = malloc(LY_JWT_MAX + 2);
	assert_non_null(tok);
	memset(tok, 'a', LY_JWT_MAX + 1);
	tok[LY_JWT_MAX + 1] = '\0';
	m.token = tok;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_jwt_parse(b, len, &got, &e), LY_E_INVALID);
	assert_null(got);
	free(b);
	tok[LY_JWT_MAX] = '\0';
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_jwt_parse(b, len, &got, &e), LY_OK);
	assert_int_equal(strlen(got->token), LY_JWT_MAX);
	ly_agentapi_jwt_free(got);
	free(b);
	free(tok);

	assert_int_equal(ly_agentapi_jwt_parse(truncated, sizeof(truncated), &got, &e), LY_E_INVALID);
	assert_null(got);
	ly_agentapi_jwt_free(NULL);
}

/* ---- GetBundle ---- */

static void
test_bundle_answer(void **state)
{
	struct tu_pki pki;
	Lanyard__Agent__V1__Bundle m;
	ProtobufCBinaryData x509[1];
	struct ly_bundle *got = NULL;
	struct ly_error e;
	size_t len;
	(void)state;

	tu_pki_init(&pki);
	lanyard__agent__v1__bundle__init(&m);
	m.trust_domain = S("example.org");
	x509[0].data = pki.root_der.data;
	x509[0].len = pki.root_der.len;
	m.x509_authorities = x509;
	m.n_x509_authorities = 1;
	m.sequence = 9;
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_bundle_parse(b, len, "example.org", &got, &e), LY_OK);
	assert_int_equal(ly_bundle_sequence(got), 9);
	assert_int_equal(ly_bundle_x509_authority_count(got), 1);
	ly_bundle_free(got);
	/* For another trust domain: converted, refused. */
	assert_int_equal(ly_agentapi_bundle_parse(b, len, "other.org", &got, &e), LY_E_INVALID);
	assert_null(got);
	assert_non_null(strstr(e.msg, "bundle refused"));
	free(b);
	/* One X.509 authority too many. */
	ProtobufCBinaryData *many = calloc(LY_BUNDLE_CERTS_MAX + 1, sizeof(*many));
	assert_non_null(many);
	for (size_t i = 0; i <= LY_BUNDLE_CERTS_MAX; i++)
		many[i] = x509[0];
	m.x509_authorities = many;
	m.n_x509_authorities = LY_BUNDLE_CERTS_MAX + 1;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_bundle_parse(b, len, "example.org", &got, &e), LY_E_LIMIT);
	assert_null(got);
	free(b);
	free(many);
	/* Not a Bundle. */
	assert_int_equal(ly_agentapi_bundle_parse(garbage, sizeof(garbage), "example.org", &got, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "malformed"));
	tu_pki_free(&pki);
}

/* ---- Entry.federates_with ---- */

static void
test_entry_federates_with(void **state)
{
	struct pb_update p;
	struct ly_agentapi_update up;
	struct refusals r = { 0 };
	size_t len;
	(void)state;

	/* Bare names and trust domain IDs are taken, kept bare. */
	pb_update_init(&p);
	char *ok[] = { S("b.test"), S("spiffe://c.test") };
	p.e[0].federates_with = ok;
	p.e[0].n_federates_with = 2;
	/* Each rule broken on one entry; those are left out, the others go on. */
	char *own[] = { S("example.org") };
	p.e[1].federates_with = own;
	p.e[1].n_federates_with = 1;
	char *twice[] = { S("b.test"), S("spiffe://b.test") };
	p.e[2].federates_with = twice;
	p.e[2].n_federates_with = 2;
	uint8_t *b = pack(&p.m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
	assert_int_equal(up.u.n_entries, 1);
	assert_int_equal(up.n_refused, 2);
	assert_int_equal(up.u.entries[0]->n_federates_with, 2);
	assert_string_equal(up.u.entries[0]->federates_with[0], "b.test");
	assert_string_equal(up.u.entries[0]->federates_with[1], "c.test");
	ly_agentapi_update_cleanup(&up);
	free(b);

	/* Not a trust domain name (upper case, a path, empty), or one too many. */
	static const char *const bad[] = { "B.test", "spiffe://b.test/path", "", "b test" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pb_update_init(&p);
		char *one[] = { S(bad[i]) };
		p.e[0].federates_with = one;
		p.e[0].n_federates_with = 1;
		p.m.n_entries = 1;
		memset(&r, 0, sizeof(r));
		b = pack(&p.m.base, &len);
		assert_int_equal(ly_agentapi_update_parse(b, len, on_refused, &r, &up, NULL), LY_OK);
		assert_int_equal(up.u.n_entries, 0);
		assert_int_equal(r.n, 1);
		ly_agentapi_update_cleanup(&up);
		free(b);
	}
	char **many = calloc(LY_ENTRY_FEDERATES_WITH_MAX + 1, sizeof(*many));
	char names[LY_ENTRY_FEDERATES_WITH_MAX + 1][16];
	assert_non_null(many);
	for (size_t i = 0; i <= LY_ENTRY_FEDERATES_WITH_MAX; i++) {
		(void)snprintf(names[i], sizeof(names[i]), "t%zu.test", i);
		many[i] = names[i];
	}
	for (size_t n = LY_ENTRY_FEDERATES_WITH_MAX; n <= LY_ENTRY_FEDERATES_WITH_MAX + 1; n++) {
		pb_update_init(&p);
		p.e[0].federates_with = many;
		p.e[0].n_federates_with = n;
		p.m.n_entries = 1;
		b = pack(&p.m.base, &len);
		assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, NULL), LY_OK);
		/* The cap itself passes; one more is refused. */
		assert_int_equal(up.u.n_entries, n == LY_ENTRY_FEDERATES_WITH_MAX ? 1 : 0);
		ly_agentapi_update_cleanup(&up);
		free(b);
	}
	free(many);

	/* federated_sequence comes through. */
	pb_update_init(&p);
	p.m.federated_sequence = 77;
	b = pack(&p.m.base, &len);
	assert_int_equal(ly_agentapi_update_parse(b, len, NULL, NULL, &up, NULL), LY_OK);
	assert_int_equal(up.federated_sequence, 77);
	ly_agentapi_update_cleanup(&up);
	free(b);
}

/* ---- GetFederatedBundles ---- */

struct fed_refusals {
	unsigned n;
	char last_td[64];
};

static void
on_fed_refused(void *arg, const char *td, const struct ly_error *why)
{
	struct fed_refusals *r = arg;
	assert_true(why->msg[0] != '\0');
	r->n++;
	(void)snprintf(r->last_td, sizeof(r->last_td), "%s", td);
}

static void
fed_bundle(Lanyard__Agent__V1__Bundle *m, const char *td, ProtobufCBinaryData *x509, size_t n, uint64_t seq)
{
	lanyard__agent__v1__bundle__init(m);
	m->trust_domain = S(td);
	m->x509_authorities = x509;
	m->n_x509_authorities = n;
	m->sequence = seq;
}

/* Packs a FederatedBundles of `n` bundles and parses it for example.org. */
static ly_status
fed_parse(Lanyard__Agent__V1__Bundle **bs, size_t n, uint64_t seq, struct fed_refusals *r,
    struct ly_agentapi_federated *out, struct ly_error *e)
{
	Lanyard__Agent__V1__FederatedBundles m;
	size_t len;
	lanyard__agent__v1__federated_bundles__init(&m);
	m.bundles = bs;
	m.n_bundles = n;
	m.sequence = seq;
	uint8_t *b = pack(&m.base, &len);
	ly_status rc = ly_agentapi_federated_parse(b, len, "example.org", on_fed_refused, r, out, e);
	free(b);
	return rc;
}

static void
test_federated_answer(void **state)
{
	struct tu_pki pki;
	Lanyard__Agent__V1__Bundle m[3], *mp[3] = { &m[0], &m[1], &m[2] };
	ProtobufCBinaryData x509[1], junk[1];
	struct ly_agentapi_federated fed;
	struct fed_refusals r = { 0 };
	struct ly_error e;
	(void)state;

	tu_pki_init(&pki);
	x509[0].data = pki.root_der.data;
	x509[0].len = pki.root_der.len;
	static uint8_t junk_der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
	junk[0].data = junk_der;
	junk[0].len = sizeof(junk_der);

	/* Two trust domains; one JWT-only (no X.509 authority) is fine for a federated bundle. */
	fed_bundle(&m[0], "b.test", x509, 1, 4);
	fed_bundle(&m[1], "c.test", NULL, 0, 1);
	assert_int_equal(fed_parse(mp, 2, 9, &r, &fed, &e), LY_OK);
	assert_int_equal(ly_bundle_set_count(fed.set), 2);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(fed.set, "b.test")), 4);
	assert_int_equal(fed.sequence, 9);
	assert_int_equal(fed.n_refused, 0);
	ly_agentapi_federated_cleanup(&fed);
	ly_agentapi_federated_cleanup(&fed); /* twice is harmless */

	/* The empty answer: no federation. */
	assert_int_equal(fed_parse(NULL, 0, 0, &r, &fed, &e), LY_OK);
	assert_int_equal(ly_bundle_set_count(fed.set), 0);
	ly_agentapi_federated_cleanup(&fed);

	/* A bundle whose content does not convert: left out, named, the others go on. */
	fed_bundle(&m[2], "d.test", junk, 1, 1);
	assert_int_equal(fed_parse(mp, 3, 10, &r, &fed, &e), LY_OK);
	assert_int_equal(ly_bundle_set_count(fed.set), 2);
	assert_null(ly_bundle_set_find(fed.set, "d.test"));
	assert_int_equal(fed.n_refused, 1);
	assert_string_equal(fed.refused[0], "d.test");
	assert_int_equal(r.n, 1);
	assert_string_equal(r.last_td, "d.test");
	ly_agentapi_federated_cleanup(&fed);

	/* What names a bundle wrong refuses the answer as a whole, leaving nothing behind. */
	static const char *const bad_td[] = { "example.org", "spiffe://b.test", "B.test", "", "b.test/x" };
	for (size_t i = 0; i < sizeof(bad_td) / sizeof(bad_td[0]); i++) {
		fed_bundle(&m[1], bad_td[i], x509, 1, 1);
		assert_int_equal(fed_parse(mp, 2, 1, &r, &fed, &e), LY_E_INVALID);
		assert_null(fed.set);
		assert_int_equal(fed.n_refused, 0);
	}
	/* No trust domain at all. */
	fed_bundle(&m[1], "c.test", NULL, 0, 1);
	m[1].trust_domain = NULL;
	assert_int_equal(fed_parse(mp, 2, 1, &r, &fed, &e), LY_E_INVALID);
	/* A trust domain twice: also when the first of them was refused for its content. */
	fed_bundle(&m[1], "b.test", x509, 1, 5);
	assert_int_equal(fed_parse(mp, 2, 1, &r, &fed, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "twice"));
	fed_bundle(&m[0], "d.test", junk, 1, 1);
	fed_bundle(&m[1], "d.test", x509, 1, 1);
	assert_int_equal(fed_parse(mp, 2, 1, &r, &fed, &e), LY_E_INVALID);
	assert_null(fed.set);

	/* At most LY_BUNDLE_SET_MAX - 1 bundles (one slot is ours). */
	Lanyard__Agent__V1__Bundle **many = calloc(LY_BUNDLE_SET_MAX, sizeof(*many));
	Lanyard__Agent__V1__Bundle *mb = calloc(LY_BUNDLE_SET_MAX, sizeof(*mb));
	char (*names)[24] = calloc(LY_BUNDLE_SET_MAX, sizeof(*names));
	assert_non_null(many);
	assert_non_null(mb);
	assert_non_null(names);
	for (size_t i = 0; i < LY_BUNDLE_SET_MAX; i++) {
		(void)snprintf(names[i], sizeof(names[i]), "t%zu.test", i);
		fed_bundle(&mb[i], names[i], NULL, 0, 1);
		many[i] = &mb[i];
	}
	assert_int_equal(fed_parse(many, LY_BUNDLE_SET_MAX - 1, 1, &r, &fed, &e), LY_OK);
	assert_int_equal(ly_bundle_set_count(fed.set), LY_BUNDLE_SET_MAX - 1);
	ly_agentapi_federated_cleanup(&fed);
	assert_int_equal(fed_parse(many, LY_BUNDLE_SET_MAX, 1, &r, &fed, &e), LY_E_LIMIT);
	assert_null(fed.set);
	free(names);
	free(mb);
	free(many);

	/* Not a FederatedBundles. */
	assert_int_equal(ly_agentapi_federated_parse(garbage, sizeof(garbage), "example.org", NULL, NULL, &fed, &e),
	    LY_E_INVALID);
	assert_int_equal(ly_agentapi_federated_parse(truncated, sizeof(truncated), "example.org", NULL, NULL, &fed, &e),
	    LY_E_INVALID);
	tu_pki_free(&pki);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_update_ok),
		cmocka_unit_test(test_update_bad_entry_left_out),
		cmocka_unit_test(test_update_limits),
		cmocka_unit_test(test_update_wrong_bytes),
		cmocka_unit_test(test_svid_check),
		cmocka_unit_test(test_attest_answers),
		cmocka_unit_test(test_batch_match),
		cmocka_unit_test(test_jwt_answer),
		cmocka_unit_test(test_bundle_answer),
		cmocka_unit_test(test_entry_federates_with),
		cmocka_unit_test(test_federated_answer),
	};
	ly_log_set_level(LY_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
