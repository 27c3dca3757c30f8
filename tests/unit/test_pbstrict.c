/*
 * test_pbstrict.c: ly_pb_unpack_strict, the one check that a peer's
 * message reads as the peer meant: no string with a NUL (protobuf-c would
 * cut it there: an audience "a\0b" signed as "a"), no field sent twice.
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strict),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
