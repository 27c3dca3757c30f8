/* test_pbpack.c: a message packed under a cap (lib/pbpack.h): the bytes, the cap to the byte, the message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "agent.pb-c.h"
#include "lib/pbpack.h"
#include "lib/pbview.h"

static void
test_pack_and_cap(void **state)
{
	Lanyard__Agent__V1__NewJWTSVIDRequest req;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;
	(void)state;
	lanyard__agent__v1__new_jwtsvidrequest__init(&req);

	req.entry_id = ly_pbview_str("entry-1");
	size_t size = protobuf_c_message_get_packed_size(&req.base);
	/* Exactly at the cap: packed, and it unpacks to the same. */
	assert_int_equal(ly_pbpack(&req.base, size, &out, &e), LY_OK);
	assert_int_equal(out.len, size);
	Lanyard__Agent__V1__NewJWTSVIDRequest *back = lanyard__agent__v1__new_jwtsvidrequest__unpack(NULL, out.len,
	    out.data);
	assert_non_null(back);
	assert_string_equal(back->entry_id, "entry-1");
	lanyard__agent__v1__new_jwtsvidrequest__free_unpacked(back, NULL);
	ly_buf_free(&out);
	/* One byte over: refused, naming the type, the size and the cap; nothing adopted. */
	assert_int_equal(ly_pbpack(&req.base, size - 1, &out, &e), LY_E_LIMIT);
	assert_null(out.data);
	assert_non_null(strstr(e.msg, "lanyard.agent.v1.NewJWTSVIDRequest of "));
	assert_non_null(strstr(e.msg, "-byte message cap"));
}

static void
test_empty_message(void **state)
{
	Lanyard__Agent__V1__NewJWTSVIDRequest req;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;
	(void)state;
	lanyard__agent__v1__new_jwtsvidrequest__init(&req);

	/* Zero bytes on the wire is a message too. */
	assert_int_equal(ly_pbpack(&req.base, 0, &out, &e), LY_OK);
	assert_int_equal(out.len, 0);
	ly_buf_free(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pack_and_cap),
		cmocka_unit_test(test_empty_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
