/*
 * test_buf.c: lib/buf.h, the growable buffer: doubling growth, the hard
 * cap (argument and stored), and secrets wiped on growth and on free,
 * checked at free() itself (linked with -Wl,--wrap=free).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

/* ---- free() watched: were the bytes of one allocation all zero when it was freed? ---- */

void __real_free(void *p);
void __wrap_free(void *p);

static const void *watched;
static size_t watched_len;
static int watched_freed, watched_zero;

void
__wrap_free(void *p)
{
	if (p != NULL && p == watched) {
		const unsigned char *b = p;
		bool zero = true;
		for (size_t i = 0; i < watched_len; i++)
			zero = zero && b[i] == 0;
		watched_freed++;
		watched_zero += zero;
		watched = NULL;
	}
	__real_free(p);
}

static void
watch(const void *p, size_t len)
{
	watched = p;
	watched_len = len;
	watched_freed = watched_zero = 0;
}

/* ---- tests ---- */

static void
test_doubling_growth(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	size_t grows = 0, last = 0;
	uint8_t byte = 'x';

	(void)state;
	for (int i = 0; i < 10000; i++) {
		assert_int_equal(ly_buf_append(&b, &byte, 1, 1u << 20, NULL), LY_OK);
		if (b.alloc != last) {
			grows++;
			last = b.alloc;
		}
	}
	assert_int_equal(b.len, 10000);
	assert_true(b.alloc >= b.len);
	assert_true(grows <= 10); /* 64, 128, ... 16384: doubling, not one realloc per byte */
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], 'x');
	ly_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

/* Hostile: the cap reached exactly, one byte more, a huge length, the stored cap. */
static void
test_cap(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	uint8_t data[100];

	(void)state;
	memset(data, 7, sizeof(data));
	assert_int_equal(ly_buf_append(&b, data, 60, 100, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&b, data, 40, 100, NULL), LY_OK); /* exactly the cap */
	assert_int_equal(b.len, 100);
	assert_true(b.alloc <= 100); /* growth never allocates past the cap */
	assert_int_equal(ly_buf_append(&b, data, 1, 100, &err), LY_E_LIMIT);
	assert_int_equal(b.len, 100); /* unchanged */
	assert_int_equal(ly_buf_append(&b, data, SIZE_MAX, SIZE_MAX, &err), LY_E_LIMIT);
	ly_buf_free(&b);

	ly_buf_init(&b, 10, false);
	assert_int_equal(ly_buf_add(&b, data, 10, NULL), LY_OK);
	assert_int_equal(ly_buf_add(&b, data, 1, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "10 bytes"));
	/* The stored cap wins over a larger argument. */
	assert_int_equal(ly_buf_append(&b, data, 1, 1000, &err), LY_E_LIMIT);
	ly_buf_free(&b);
	assert_int_equal(b.cap, 10); /* kept for reuse */
	assert_int_equal(ly_buf_add(&b, data, 5, NULL), LY_OK);
	ly_buf_free(&b);

	/* No stored cap: ly_buf_add refuses everything but nothing. */
	struct ly_buf none = LY_BUF_INIT;
	assert_int_equal(ly_buf_add(&none, data, 1, &err), LY_E_LIMIT);
	assert_int_equal(ly_buf_add(&none, data, 0, NULL), LY_OK);
	ly_buf_free(&none);
}

/* A secret buffer wipes the old allocation when it grows, and the whole allocation when freed. */
static void
test_secret_wiped(void **state)
{
	struct ly_buf b;
	uint8_t key[48];

	(void)state;
	memset(key, 0xA5, sizeof(key));
	ly_buf_init(&b, 1 << 16, true);
	assert_int_equal(ly_buf_add(&b, key, sizeof(key), NULL), LY_OK);
	const uint8_t *first = b.data;
	size_t first_alloc = b.alloc;
	watch(first, first_alloc);
	for (int i = 0; i < 4; i++) /* grows past the first allocation */
		assert_int_equal(ly_buf_add(&b, key, sizeof(key), NULL), LY_OK);
	assert_int_equal(watched_freed, 1);
	assert_int_equal(watched_zero, 1);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], 0xA5); /* the bytes moved intact */
	watch(b.data, b.alloc);
	ly_buf_free(&b); /* secret: wiped even by plain free */
	assert_int_equal(watched_freed, 1);
	assert_int_equal(watched_zero, 1);

	/* ly_buf_free_secret wipes an ordinary buffer, all of its allocation. */
	struct ly_buf o = LY_BUF_INIT;
	assert_int_equal(ly_buf_append(&o, key, sizeof(key), 1024, NULL), LY_OK);
	watch(o.data, o.alloc);
	ly_buf_free_secret(&o);
	assert_int_equal(watched_zero, 1);

	/* An ordinary buffer is not wiped by ly_buf_free (nothing to check but that it is freed). */
	assert_int_equal(ly_buf_append(&o, key, sizeof(key), 1024, NULL), LY_OK);
	watch(o.data, 1);
	ly_buf_free(&o);
	assert_int_equal(watched_freed, 1);
	assert_int_equal(watched_zero, 0);
}

/* Bytes made elsewhere: adopted, then grown and wiped by their real length. */
static void
test_adopt_set_take(void **state)
{
	struct ly_buf b, c = LY_BUF_INIT;
	uint8_t *p = malloc(4);

	(void)state;
	memcpy(p, "abcd", 4);
	memset(&b, 0x5A, sizeof(b)); /* garbage: adopt must not read it */
	ly_buf_adopt(&b, p, 4);
	assert_int_equal(b.len, 4);
	assert_int_equal(ly_buf_append(&b, "e", 1, 16, NULL), LY_OK);
	assert_memory_equal(b.data, "abcde", 5);
	ly_buf_take(&c, &b);
	assert_null(b.data);
	assert_int_equal(c.len, 5);
	watch(c.data, c.len);
	ly_buf_free_secret(&c);
	assert_int_equal(watched_zero, 1);

	memset(&b, 0x5A, sizeof(b));
	assert_int_equal(ly_buf_set(&b, "xy", 2, NULL), LY_OK);
	assert_int_equal(b.len, 2);
	assert_int_equal(b.cap, 0);
	ly_buf_free(&b);
	assert_int_equal(ly_buf_set(&b, NULL, 0, NULL), LY_OK);
	assert_non_null(b.data);
	ly_buf_free(&b);
}

/* The libcurl write sink: bytes within the cap, then `over` and a stop (0); a secret sink wipes as it grows. */
static void
test_sink(void **state)
{
	struct ly_buf_sink k;
	char chunk[40];

	(void)state;
	memset(chunk, 'z', sizeof(chunk));
	memset(&k, 0, sizeof(k));
	ly_buf_init(&k.buf, 100, true);
	assert_int_equal(ly_buf_sink_write(chunk, 1, sizeof(chunk), &k), sizeof(chunk));
	assert_int_equal(ly_buf_sink_write(chunk, 1, sizeof(chunk), &k), sizeof(chunk));
	assert_false(k.over);
	assert_int_equal(ly_buf_sink_write(chunk, 1, sizeof(chunk), &k), 0); /* 120 > 100 */
	assert_true(k.over);
	assert_false(k.nomem);
	assert_int_equal(k.buf.len, 80);
	assert_int_equal(ly_buf_sink_write(chunk, 2, 1, &k), 0); /* size must be 1 */
	watch(k.buf.data, k.buf.alloc);
	ly_buf_free(&k.buf);
	assert_int_equal(watched_zero, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_doubling_growth),
		cmocka_unit_test(test_cap),
		cmocka_unit_test(test_secret_wiped),
		cmocka_unit_test(test_adopt_set_take),
		cmocka_unit_test(test_sink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
