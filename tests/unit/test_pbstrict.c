/*
 * test_pbstrict.c: ly_pb_unpack_strict, the one check that a peer's
 * message reads as the peer meant: no string with a NUL (protobuf-c would
 * cut it there: an audience "a\0b" signed as "a"), no field sent twice;
 * and ly_pb_count_field, a repeated field counted on the wire before
 * anything is unpacked, with the wire reader under it (ly_pb_field_next).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "agent.pb-c.h"
#include "lib/pbstrict.h"

#define DESC (&lanyard__agent__v1__new_jwtsvidrequest__descriptor)

static ly_status
unpack(const uint8_t *b, size_t n, size_t max, Lanyard__Agent__V1__NewJWTSVIDRequest **out, struct ly_error *err)
{
	ProtobufCMessage *m = NULL;
	ly_status rc = ly_pb_unpack_strict(DESC, b, n, max, NULL, &m, err);
	*out = (Lanyard__Agent__V1__NewJWTSVIDRequest *)(void *)m;
	return rc;
}

static void
test_strict(void **state)
{
	(void)state;
	Lanyard__Agent__V1__NewJWTSVIDRequest *m = NULL;
	struct ly_error err;

	/* entry_id "e1", audience "a" and "bc": what protobuf-c itself packs. */
	static const uint8_t good[] = { 0x0a, 2, 'e', '1', 0x12, 1, 'a', 0x12, 2, 'b', 'c' };
	assert_int_equal(unpack(good, sizeof(good), 1024, &m, &err), LY_OK);
	assert_string_equal(m->entry_id, "e1");
	assert_int_equal(m->n_audience, 2);
	assert_string_equal(m->audience[1], "bc");
	protobuf_c_message_free_unpacked(&m->base, NULL);

	/* An audience "a\0b": protobuf-c alone reads it as "a". */
	static const uint8_t nul[] = { 0x0a, 2, 'e', '1', 0x12, 3, 'a', 0, 'b' };
	Lanyard__Agent__V1__NewJWTSVIDRequest *lax = lanyard__agent__v1__new_jwtsvidrequest__unpack(NULL, sizeof(nul), nul);
	assert_non_null(lax);
	assert_string_equal(lax->audience[0], "a");
	lanyard__agent__v1__new_jwtsvidrequest__free_unpacked(lax, NULL);
	assert_int_equal(unpack(nul, sizeof(nul), 1024, &m, &err), LY_E_INVALID);
	assert_null(m);
	assert_non_null(strstr(err.msg, "a string with a NUL byte"));
	assert_non_null(strstr(err.msg, "NewJWTSVIDRequest"));

	/* A NUL in entry_id too, and a trailing NUL. */
	static const uint8_t nul_id[] = { 0x0a, 3, 'e', 0, '1', 0x12, 1, 'a' };
	assert_int_equal(unpack(nul_id, sizeof(nul_id), 1024, &m, &err), LY_E_INVALID);
	static const uint8_t nul_end[] = { 0x12, 2, 'a', 0 };
	assert_int_equal(unpack(nul_end, sizeof(nul_end), 1024, &m, &err), LY_E_INVALID);

	/* entry_id sent twice: protobuf-c keeps the last. */
	static const uint8_t twice[] = { 0x0a, 1, 'x', 0x0a, 1, 'y', 0x12, 1, 'a' };
	assert_int_equal(unpack(twice, sizeof(twice), 1024, &m, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "a field sent twice"));

	/* Unknown fields are kept and re-encoded: they pass. */
	static const uint8_t unknown[] = { 0x0a, 1, 'x', 0x12, 1, 'a', 0x1a, 1, 'z' };
	assert_int_equal(unpack(unknown, sizeof(unknown), 1024, &m, &err), LY_OK);
	protobuf_c_message_free_unpacked(&m->base, NULL);

	/* Over the cap, not a message, and the empty message. */
	assert_int_equal(unpack(good, sizeof(good), sizeof(good) - 1, &m, &err), LY_E_LIMIT);
	static const uint8_t junk[] = { 0x0a, 9, 'e' };
	assert_int_equal(unpack(junk, sizeof(junk), 1024, &m, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not a valid"));
	assert_int_equal(unpack(NULL, 0, 1024, &m, &err), LY_OK);
	assert_int_equal(m->n_audience, 0);
	protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void
test_count_field(void **state)
{
	(void)state;
	struct ly_error err;
	size_t n = 99;

	/* entry_id "e1", audience "a" and "bc". */
	static const uint8_t good[] = { 0x0a, 2, 'e', '1', 0x12, 1, 'a', 0x12, 2, 'b', 'c' };
	assert_int_equal(ly_pb_count_field(good, sizeof(good), 2, 2, "audiences", &n, &err), LY_OK);
	assert_int_equal(n, 2);
	assert_int_equal(ly_pb_count_field(good, sizeof(good), 1, 2, "ids", &n, &err), LY_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ly_pb_count_field(good, sizeof(good), 7, 0, "none", &n, &err), LY_OK);
	assert_int_equal(n, 0);
	/* One more than the cap. */
	assert_int_equal(ly_pb_count_field(good, sizeof(good), 2, 1, "audiences", &n, &err), LY_E_LIMIT);
	assert_int_equal(n, 0);
	assert_string_equal(err.msg, "audiences: more than 1");
	/* The empty message. */
	assert_int_equal(ly_pb_count_field(NULL, 0, 1, 1, "x", &n, &err), LY_OK);
	assert_int_equal(n, 0);

	/* Other wire types are skipped: a varint (field 3), 64-bit (4) and 32-bit (5) values. */
	static const uint8_t mixed[] = { 0x18, 0x96, 0x01, 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2d, 1, 2, 3, 4, 0x12, 0 };
	assert_int_equal(ly_pb_count_field(mixed, sizeof(mixed), 2, 5, "x", &n, &err), LY_OK);
	assert_int_equal(n, 1);

	/* The reader behind the count: each field's number, wire type and value. */
	size_t pos = 0;
	struct ly_pb_field fl;
	const char *why = NULL;
	assert_true(ly_pb_field_next(mixed, sizeof(mixed), &pos, &fl, &why));
	assert_int_equal(fl.number, 3);
	assert_int_equal(fl.wire, 0);
	assert_int_equal(fl.varint, 150);
	assert_true(ly_pb_field_next(mixed, sizeof(mixed), &pos, &fl, &why));
	assert_int_equal(fl.number, 4);
	assert_int_equal(fl.len, 8);
	assert_int_equal(fl.data[7], 8);
	assert_true(ly_pb_field_next(mixed, sizeof(mixed), &pos, &fl, &why));
	assert_int_equal(fl.number, 5);
	assert_int_equal(fl.len, 4);
	assert_true(ly_pb_field_next(mixed, sizeof(mixed), &pos, &fl, &why));
	assert_int_equal(fl.number, 2);
	assert_int_equal(fl.wire, 2);
	assert_int_equal(fl.len, 0);
	assert_int_equal(pos, sizeof(mixed));
	/* Field number 2^29 - 1 is the largest; 2^29 is refused. */
	static const uint8_t maxf[] = { 0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01 }, overf[] = { 0x80, 0x80, 0x80, 0x80, 0x10, 0x01 };
	pos = 0;
	assert_true(ly_pb_field_next(maxf, sizeof(maxf), &pos, &fl, &why));
	assert_int_equal(fl.number, 536870911);
	pos = 0;
	assert_false(ly_pb_field_next(overf, sizeof(overf), &pos, &fl, &why));
	assert_string_equal(why, "a bad field tag");

	/* Wire damage: each refused, never read past the end. */
	const uint8_t *const bad[] = {
		(const uint8_t[]){ 0x12, 3, 'a' },          /* a length past the end */
		(const uint8_t[]){ 0x12 },                  /* a tag without its length */
		(const uint8_t[]){ 0x18 },                  /* a varint missing */
		(const uint8_t[]){ 0x18, 0x80 },            /* a varint cut short */
		(const uint8_t[]){ 0x21, 1, 2, 3 },         /* a 64-bit value cut short */
		(const uint8_t[]){ 0x2d, 1, 2 },            /* a 32-bit value cut short */
		(const uint8_t[]){ 0x1b, 0x1c },            /* a group (wire types 3, 4) */
		(const uint8_t[]){ 0x0e, 0 },               /* wire type 6 */
		(const uint8_t[]){ 0x02, 0 },               /* field number 0 */
		(const uint8_t[]){ 0x80 },                  /* a tag cut short */
		(const uint8_t[]){ 0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 }, /* 11 bytes */
		(const uint8_t[]){ 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f }, /* a 4 GiB length */
	};
	static const size_t bad_len[] = { 3, 1, 1, 2, 4, 3, 2, 2, 2, 1, 12, 6 };
	for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
		assert_int_equal(ly_pb_count_field(bad[i], bad_len[i], 2, 100, "x", &n, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "malformed protobuf"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strict),
		cmocka_unit_test(test_count_field),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
