/*
 * test_entry_pb.c: server/entry_pb.h. Entries to protobuf views and back:
 * every field survives pack/unpack, the views borrow (no copies) and free
 * their own arrays, empty lists are fine; ly_entry_from_pb refuses too
 * many selectors or DNS names and names the wrong selector.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "server/entry_pb.h"

static struct ly_entry *
sample_entry(const char *id, size_t nsel)
{
	struct ly_entry *e = NULL;
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->entry_id, id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/web", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agent/n1", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->hint, "web", NULL), LY_OK);
	for (size_t i = 0; i < nsel; i++) {
		char sel[32];
		(void)snprintf(sel, sizeof(sel), "unix:uid:%zu", 1000 + i);
		assert_int_equal(ly_entry_add_selector(e, sel, NULL), LY_OK);
	}
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://b.test", NULL), LY_OK);
	e->x509_svid_ttl = 600;
	e->jwt_svid_ttl = 60;
	e->admin = true;
	e->revision = 42;
	e->created_at = 1700000000;
	return e;
}

/* Packs view message `i`, unpacks it, converts it back. */
static struct ly_entry *
round_trip(const struct ly_entries_pb *pb, size_t i, Lanyard__Agent__V1__Entry **m_out)
{
	size_t len = protobuf_c_message_get_packed_size(&pb->msgs[i].base);
	uint8_t *buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(&pb->ptrs[i]->base, buf), len);
	Lanyard__Agent__V1__Entry *m = lanyard__agent__v1__entry__unpack(NULL, len, buf);
	free(buf);
	assert_non_null(m);
	struct ly_entry *back = NULL;
	assert_int_equal(ly_entry_from_pb(m, &back, NULL), LY_OK);
	*m_out = m;
	return back;
}

static void
test_round_trip(void **state)
{
	(void)state;
	struct ly_entry *a = sample_entry("11111111-1111-4111-8111-111111111111", 3);
	struct ly_entry *b = sample_entry("22222222-2222-4222-8222-222222222222", 1);
	const struct ly_entry *v[2] = { a, b };
	struct ly_entries_pb pb;
	Lanyard__Agent__V1__Entry *m = NULL;

	assert_int_equal(ly_entries_pb_make(v, 2, &pb, NULL), LY_OK);
	assert_int_equal(pb.n, 2);
	/* Borrowed, not copied. */
	assert_ptr_equal(pb.msgs[0].spiffe_id, a->spiffe_id);
	assert_ptr_equal(pb.msgs[1].selectors[0]->value, b->selectors[0].value);
	assert_int_equal(pb.msgs[0].n_selectors, 3);
	assert_int_equal(pb.msgs[1].n_selectors, 1);

	struct ly_entry *back = round_trip(&pb, 0, &m);
	assert_string_equal(back->entry_id, a->entry_id);
	assert_string_equal(back->spiffe_id, a->spiffe_id);
	assert_string_equal(back->parent_id, a->parent_id);
	assert_string_equal(back->hint, "web");
	assert_int_equal(back->n_selectors, 3);
	assert_string_equal(back->selectors[2].type, "unix");
	assert_string_equal(back->selectors[2].value, "uid:1002");
	assert_int_equal(back->n_dns_names, 1);
	assert_string_equal(back->dns_names[0], "web.example.org");
	assert_int_equal(m->n_federates_with, 1);
	assert_string_equal(m->federates_with[0], "b.test");
	assert_int_equal(back->n_federates_with, 1);
	assert_string_equal(back->federates_with[0], "b.test");
	assert_int_equal(back->x509_svid_ttl, 600);
	assert_int_equal(back->jwt_svid_ttl, 60);
	assert_true(back->admin);
	assert_false(back->node);
	/* What a request may not set is not taken from it. */
	assert_int_equal(m->revision, 42);
	assert_int_equal(back->revision, 0);
	assert_int_equal(back->created_at, 0);
	ly_entry_free(back);
	lanyard__agent__v1__entry__free_unpacked(m, NULL);

	ly_entries_pb_cleanup(&pb);
	assert_null(pb.msgs);
	ly_entries_pb_cleanup(&pb); /* twice is harmless */

	/* No entries: a valid, empty view. */
	assert_int_equal(ly_entries_pb_make(NULL, 0, &pb, NULL), LY_OK);
	assert_int_equal(pb.n, 0);
	assert_non_null(pb.ptrs);
	ly_entries_pb_cleanup(&pb);

	struct ly_selectors_pb sp;
	assert_int_equal(ly_selectors_pb_make(a->selectors, a->n_selectors, &sp, NULL), LY_OK);
	assert_int_equal(sp.n, 3);
	assert_ptr_equal(sp.ptrs[1]->type, a->selectors[1].type);
	ly_selectors_pb_cleanup(&sp);
	ly_entry_free(a);
	ly_entry_free(b);
}

static void
test_from_pb_refusals(void **state)
{
	(void)state;
	Lanyard__Agent__V1__Entry m;
	Lanyard__Agent__V1__Selector s[LY_SELECTORS_MAX + 1], *sp[LY_SELECTORS_MAX + 1];
	char *dns[LY_DNS_NAMES_MAX + 1];
	struct ly_entry *e = NULL;
	struct ly_error err;

	lanyard__agent__v1__entry__init(&m);
	m.spiffe_id = (char *)(uintptr_t)"spiffe://example.org/web";
	m.parent_id = (char *)(uintptr_t)"spiffe://example.org/n1";
	for (size_t i = 0; i <= LY_SELECTORS_MAX; i++) {
		lanyard__agent__v1__selector__init(&s[i]);
		s[i].type = (char *)(uintptr_t)"unix";
		s[i].value = (char *)(uintptr_t)"uid:1";
		sp[i] = &s[i];
	}
	m.selectors = sp;
	m.n_selectors = LY_SELECTORS_MAX + 1;
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_E_LIMIT);
	assert_null(e);
	m.n_selectors = 2;
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_OK);
	ly_entry_free(e);
	e = NULL;

	/* The second selector is wrong: the message says which. */
	s[1].type = (char *)(uintptr_t)"";
	assert_int_not_equal(ly_entry_from_pb(&m, &e, &err), LY_OK);
	assert_null(e);
	assert_non_null(strstr(err.msg, "selector 2"));
	s[1].type = (char *)(uintptr_t)"unix";

	for (size_t i = 0; i <= LY_DNS_NAMES_MAX; i++)
		dns[i] = (char *)(uintptr_t)"a.example.org";
	m.dns_names = dns;
	m.n_dns_names = LY_DNS_NAMES_MAX + 1;
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_E_LIMIT);
	/* A bad DNS name is carried over; the whole-entry rules refuse it (the caller's next step). */
	m.n_dns_names = 1;
	dns[0] = (char *)(uintptr_t)"not a name";
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_OK);
	assert_int_not_equal(ly_entry_validate(e, "example.org", &err), LY_OK);
	ly_entry_free(e);
	e = NULL;
	m.n_dns_names = 0;

	/* federates_with: capped, and a malformed name named. */
	char *tds[LY_ENTRY_FEDERATES_WITH_MAX + 1];
	for (size_t i = 0; i <= LY_ENTRY_FEDERATES_WITH_MAX; i++)
		tds[i] = (char *)(uintptr_t)"b.test";
	m.federates_with = tds;
	m.n_federates_with = LY_ENTRY_FEDERATES_WITH_MAX + 1;
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_E_LIMIT);
	assert_null(e);
	m.n_federates_with = 1;
	tds[0] = (char *)(uintptr_t)"spiffe://B.TEST";
	assert_int_equal(ly_entry_from_pb(&m, &e, &err), LY_E_INVALID);
	assert_null(e);
	assert_non_null(strstr(err.msg, "federates_with"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_from_pb_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
