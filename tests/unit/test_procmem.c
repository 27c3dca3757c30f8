/*
 * test_procmem.c: lib/procmem.h. The resident size is the kernel's (VmRSS in
 * /proc/self/status, in KiB, read here the other way), and it follows pages
 * this process touches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "lib/procmem.h"

/* VmRSS from /proc/self/status, in bytes. */
static uint64_t
status_rss(void)
{
	char line[256];
	unsigned long kib = 0;
	FILE *f = fopen("/proc/self/status", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmRSS: %lu kB", &kib) == 1)
			break;
	}
	(void)fclose(f);
	return (uint64_t)kib * 1024;
}

static void
test_matches_status(void **state)
{
	(void)state;
	uint64_t a = ly_procmem_rss_bytes(), b = status_rss(), c = ly_procmem_rss_bytes();

	assert_true(a > 0);
	/* The same counter read three times: b within what changed around it. */
	uint64_t lo = a < c ? a : c, hi = a < c ? c : a;
	assert_in_range(b, lo - 256 * 1024, hi + 256 * 1024);
}

static void
test_follows_touched_pages(void **state)
{
	(void)state;
	const size_t len = 32u << 20;
	uint64_t before = ly_procmem_rss_bytes();
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	memset(p, 0x5a, len);
	uint64_t touched = ly_procmem_rss_bytes();
	assert_int_equal(munmap(p, len), 0);
	uint64_t after = ly_procmem_rss_bytes();

	assert_true(touched >= before + len - (1u << 20));
	assert_true(after + len - (1u << 20) <= touched);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matches_status),
		cmocka_unit_test(test_follows_touched_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
