/*
 * test_admin_msg.c: server/admin_msg.h, the Admin API's requests as the
 * server decodes and checks them: malformed bytes and wrong wire types,
 * each cap at its limit and one past it, the trust-domain and
 * reserved-ID rules, and the messages the CLI shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/caps.h"
#include "server/admin_msg.h"

#define TD "example.org"

static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

static char s_web[] = "spiffe://example.org/web";
static char s_parent[] = "spiffe://example.org/lanyard/agent/n1";
static char s_unix[] = "unix";
static char s_uid[] = "uid:1000";

/* Decodes and checks `m` as a create (or update). */
static ly_status
put(const Lanyard__Agent__V1__Entry *m, bool update, struct ly_entry **out, struct ly_error *e)
{
	struct ly_admin_msg_entry rq;
	size_t len;
	uint8_t *b = pack(&m->base, &len);
	ly_status rc = ly_admin_msg_entry_decode(b, len, &rq, e);

	*out = NULL;
	if (rc == LY_OK)
		rc = ly_admin_msg_entry_check(&rq, update, TD, out, e);
	ly_admin_msg_entry_cleanup(&rq);
	free(b);
	return rc;
}

static void
test_entry(void **state)
{
	static const uint8_t wrong_type[] = { 0x12, 0x05, 'a' }; /* a string shorter than it says */
	Lanyard__Agent__V1__Entry m;
	Lanyard__Agent__V1__Selector sel, *sels[LY_SELECTORS_MAX + 1];
	struct ly_admin_msg_entry rq;
	struct ly_entry *e = NULL;
	struct ly_error err;

	(void)state;
	assert_int_equal(ly_admin_msg_entry_decode(wrong_type, sizeof(wrong_type), &rq, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "malformed request");
	ly_admin_msg_entry_cleanup(&rq);

	lanyard__agent__v1__entry__init(&m);
	lanyard__agent__v1__selector__init(&sel);
	sel.type = s_unix;
	sel.value = s_uid;
	for (size_t i = 0; i <= LY_SELECTORS_MAX; i++)
		sels[i] = &sel;
	m.spiffe_id = s_web;
	m.parent_id = s_parent;
	m.selectors = sels;
	m.n_selectors = 1;
	assert_int_equal(put(&m, false, &e, &err), LY_OK);
	assert_string_equal(e->spiffe_id, s_web);
	ly_entry_free(e);
	/* An update must name its entry. */
	assert_int_equal(put(&m, true, &e, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "entry update needs an entry ID");
	assert_null(e);
	m.entry_id = (char[]){ "e1" };
	assert_int_equal(put(&m, true, &e, &err), LY_OK);
	assert_string_equal(e->entry_id, "e1");
	ly_entry_free(e);
	m.entry_id = (char[]){ "" };
	/* One selector too many. */
	m.n_selectors = LY_SELECTORS_MAX + 1;
	assert_int_equal(put(&m, false, &e, &err), LY_E_LIMIT);
	m.n_selectors = 1;
	/* Another trust domain. */
	m.spiffe_id = (char[]){ "spiffe://other.org/web" };
	assert_int_equal(put(&m, false, &e, &err), LY_E_INVALID);
	/* The reserved namespace is not granted. */
	m.spiffe_id = (char[]){ "spiffe://example.org/lanyard/server" };
	assert_int_equal(put(&m, false, &e, &err), LY_E_INVALID);
	m.spiffe_id = s_web;
	/* The TTL floor: just under it refused, at it accepted. */
	m.x509_svid_ttl = LY_X509_SVID_TTL_MIN - 1;
	assert_int_equal(put(&m, false, &e, &err), LY_E_INVALID);
	m.x509_svid_ttl = LY_X509_SVID_TTL_MIN;
	assert_int_equal(put(&m, false, &e, &err), LY_OK);
	ly_entry_free(e);
}

static void
test_delete(void **state)
{
	Lanyard__Admin__V1__EntryID m;
	struct ly_admin_msg_entry_id rq;
	struct ly_error err;
	uint8_t *b;
	size_t len;

	(void)state;
	lanyard__admin__v1__entry_id__init(&m);
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_entry_id_decode(b, len, &rq, &err), LY_OK);
	assert_null(rq.entry_id);
	assert_int_equal(ly_admin_msg_delete_check(&rq, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "entry delete needs an entry ID");
	ly_admin_msg_entry_id_cleanup(&rq);
	free(b);
	m.entry_id = (char[]){ "bad/id" };
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_entry_id_decode(b, len, &rq, &err), LY_OK);
	assert_int_not_equal(ly_admin_msg_delete_check(&rq, &err), LY_OK);
	ly_admin_msg_entry_id_cleanup(&rq);
	free(b);
	m.entry_id = (char[]){ "e-1.x_y" };
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_entry_id_decode(b, len, &rq, &err), LY_OK);
	assert_int_equal(ly_admin_msg_delete_check(&rq, &err), LY_OK);
	assert_string_equal(rq.entry_id, "e-1.x_y");
	ly_admin_msg_entry_id_cleanup(&rq);
	free(b);
	/* entry_id as a varint. */
	static const uint8_t wrong[] = { 0x08, 0x01 };
	assert_int_equal(ly_admin_msg_entry_id_decode(wrong, sizeof(wrong), &rq, &err), LY_E_INVALID);
}

static ly_status
filter(const Lanyard__Admin__V1__EntryFilter *m, struct ly_admin_msg_filter *rq, struct ly_error *e)
{
	size_t len;
	uint8_t *b = pack(&m->base, &len);
	ly_status rc = ly_admin_msg_filter_decode(b, len, rq, e);
	free(b);
	return rc;
}

static void
test_filter(void **state)
{
	Lanyard__Admin__V1__EntryFilter m;
	Lanyard__Agent__V1__Selector sel, bad, *sels[LY_SELECTORS_MAX + 1];
	struct ly_admin_msg_filter rq;
	struct ly_error err;

	(void)state;
	lanyard__admin__v1__entry_filter__init(&m);
	lanyard__agent__v1__selector__init(&sel);
	lanyard__agent__v1__selector__init(&bad);
	sel.type = s_unix;
	sel.value = s_uid;
	bad.type = (char[]){ "" };
	bad.value = s_uid;
	for (size_t i = 0; i <= LY_SELECTORS_MAX; i++)
		sels[i] = &sel;
	m.selectors = sels;
	/* Empty: everything. */
	assert_int_equal(filter(&m, &rq, &err), LY_OK);
	assert_null(rq.entry_id);
	assert_null(rq.filter.spiffe_id);
	assert_int_equal(rq.filter.n_selectors, 0);
	assert_int_equal(rq.filter.match, LY_MATCH_SUPERSET);
	ly_admin_msg_filter_cleanup(&rq);
	/* The most selectors, one too many, a bad one named by its place. */
	m.n_selectors = LY_SELECTORS_MAX;
	assert_int_equal(filter(&m, &rq, &err), LY_OK);
	assert_int_equal(rq.filter.n_selectors, LY_SELECTORS_MAX);
	assert_string_equal(rq.filter.selectors[0].type, "unix");
	ly_admin_msg_filter_cleanup(&rq);
	m.n_selectors = LY_SELECTORS_MAX + 1;
	assert_int_equal(filter(&m, &rq, &err), LY_E_LIMIT);
	assert_string_equal(err.msg, "filter has too many selectors");
	sels[1] = &bad;
	m.n_selectors = 3;
	assert_int_not_equal(filter(&m, &rq, &err), LY_OK);
	assert_true(strncmp(err.msg, "selector 2: ", 12) == 0);
	sels[1] = &sel;
	/* IDs. */
	m.n_selectors = 0;
	m.spiffe_id = (char[]){ "not-an-id" };
	assert_int_equal(filter(&m, &rq, &err), LY_E_INVALID);
	assert_true(strncmp(err.msg, "spiffe_id: ", 11) == 0);
	m.spiffe_id = s_web;
	m.parent_id = (char[]){ "spiffe://" };
	assert_int_equal(filter(&m, &rq, &err), LY_E_INVALID);
	assert_true(strncmp(err.msg, "parent_id: ", 11) == 0);
	m.parent_id = s_parent;
	assert_int_equal(filter(&m, &rq, &err), LY_OK);
	assert_string_equal(rq.filter.spiffe_id, s_web);
	assert_string_equal(rq.filter.parent_id, s_parent);
	ly_admin_msg_filter_cleanup(&rq);
	/* An entry ID wins: the other filters are not even checked. */
	m.parent_id = (char[]){ "spiffe://" };
	m.entry_id = (char[]){ "e1" };
	assert_int_equal(filter(&m, &rq, &err), LY_OK);
	assert_string_equal(rq.entry_id, "e1");
	ly_admin_msg_filter_cleanup(&rq);
	m.entry_id = (char[]){ "bad/id" };
	assert_int_not_equal(filter(&m, &rq, &err), LY_OK);
}

static ly_status
token(const Lanyard__Admin__V1__TokenRequest *m, int64_t *ttl, struct ly_spiffe_id *id, struct ly_error *e)
{
	struct ly_admin_msg_token rq;
	size_t len;
	uint8_t *b = pack(&m->base, &len);
	ly_status rc = ly_admin_msg_token_decode(b, len, &rq, e);

	if (rc == LY_OK)
		rc = ly_admin_msg_token_ttl(&rq, ttl, e);
	if (rc == LY_OK)
		rc = ly_admin_msg_token_id(&rq, TD, "00ff", id, e);
	ly_admin_msg_token_cleanup(&rq);
	free(b);
	return rc;
}

static void
test_token(void **state)
{
	Lanyard__Admin__V1__TokenRequest m;
	struct ly_spiffe_id id;
	struct ly_error err;
	int64_t ttl = 0;

	(void)state;
	lanyard__admin__v1__token_request__init(&m);
	/* TTL: 0 is the default; 1 and the most; 0 below, one past the most. */
	assert_int_equal(token(&m, &ttl, &id, &err), LY_OK);
	assert_int_equal(ttl, LY_TOKEN_TTL_DEFAULT);
	assert_string_equal(id.id, "spiffe://example.org/lanyard/agent/join_token/00ff");
	m.ttl = 1;
	assert_int_equal(token(&m, &ttl, &id, &err), LY_OK);
	assert_int_equal(ttl, 1);
	m.ttl = LY_TOKEN_TTL_MAX;
	assert_int_equal(token(&m, &ttl, &id, &err), LY_OK);
	m.ttl = LY_TOKEN_TTL_MAX + 1;
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "token TTL must be between 1 and 604800 seconds");
	m.ttl = -1;
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	m.ttl = 0;
	/* IDs: ours with a path; not another trust domain's, not the trust domain, not reserved. */
	m.spiffe_id = (char[]){ "spiffe://example.org/node/a" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org/node/a");
	m.spiffe_id = (char[]){ "spiffe://other.org/node/a" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "SPIFFE ID spiffe://other.org/node/a is not in trust domain example.org");
	m.spiffe_id = (char[]){ "spiffe://example.org" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	assert_true(strstr(err.msg, "has no path") != NULL);
	m.spiffe_id = (char[]){ "spiffe://example.org/lanyard/server" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	assert_true(strncmp(err.msg, "SPIFFE ID spiffe://example.org/lanyard/server: ", 47) == 0);
	m.spiffe_id = (char[]){ "spiffe://example.org/lanyard/agent/x509pop/n1" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_E_INVALID);
	m.spiffe_id = (char[]){ "spiffe://example.org/lanyard/agent/n1" };
	assert_int_equal(token(&m, &ttl, &id, &err), LY_OK);
	/* ttl as a string: the wrong wire type. */
	static const uint8_t wrong[] = { 0x12, 0x01, '1' };
	struct ly_admin_msg_token rq;
	assert_int_equal(ly_admin_msg_token_decode(wrong, sizeof(wrong), &rq, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "malformed request");
}

static void
test_agent_id(void **state)
{
	Lanyard__Admin__V1__AgentID m;
	struct ly_admin_msg_agent_id rq;
	struct ly_error err;
	uint8_t *b;
	size_t len;

	(void)state;
	lanyard__admin__v1__agent_id__init(&m);
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_agent_id_decode(b, len, &rq, &err), LY_OK);
	assert_int_equal(ly_admin_msg_agent_id_check(&rq, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "an agent SPIFFE ID is required");
	ly_admin_msg_agent_id_cleanup(&rq);
	free(b);
	m.spiffe_id = s_parent;
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_agent_id_decode(b, len, &rq, &err), LY_OK);
	assert_int_equal(ly_admin_msg_agent_id_check(&rq, &err), LY_OK);
	assert_string_equal(rq.spiffe_id, s_parent);
	ly_admin_msg_agent_id_cleanup(&rq);
	free(b);
	static const uint8_t junk[] = { 0x0a, 0x09, 's' };
	assert_int_equal(ly_admin_msg_agent_id_decode(junk, sizeof(junk), &rq, &err), LY_E_INVALID);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entry),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_token),
		cmocka_unit_test(test_agent_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
