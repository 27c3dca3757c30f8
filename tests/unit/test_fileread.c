/* test_fileread.c: a whole small file read into memory (lib/fileread.h): the cap to the byte, the NUL, the refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/fileread.h"

static int
temp_with(const char *text)
{
	char path[] = "/tmp/ly_test_fileread.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static void
test_reads_whole_file(void **state)
{
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;
	int fd = temp_with("hello");
	(void)state;

	/* Exactly at the cap. */
	assert_int_equal(ly_fileread_fd(fd, "f", 5, &out, &e), LY_OK);
	assert_int_equal(out.len, 5);
	assert_memory_equal(out.data, "hello", 6); /* with its NUL */
	ly_buf_free(&out);
	close(fd);
}

static void
test_over_cap(void **state)
{
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;
	int fd = temp_with("hello!");
	(void)state;

	assert_int_equal(ly_fileread_fd(fd, "f", 5, &out, &e), LY_E_LIMIT);
	assert_string_equal(e.msg, "f: 6 bytes, over the cap of 5");
	assert_null(out.data);
	close(fd);
}

static void
test_not_regular(void **state)
{
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;
	int fds[2];
	(void)state;

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(ly_fileread_fd(fds[0], "p", 100, &out, &e), LY_E_IO);
	assert_string_equal(e.msg, "p: not a regular file");
	close(fds[0]);
	close(fds[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads_whole_file),
		cmocka_unit_test(test_over_cap),
		cmocka_unit_test(test_not_regular),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
