/* procmem.c: see procmem.h. */
#include "lib/procmem.h"

#include <stdio.h>
#include <unistd.h>

uint64_t
ly_procmem_rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	long page = sysconf(_SC_PAGESIZE);
	FILE *f = fopen("/proc/self/statm", "re");

	if (f == NULL || page <= 0) {
		if (f != NULL)
			(void)fclose(f);
		return 0;
	}
	int n = fscanf(f, "%lu %lu", &size, &resident);
	(void)fclose(f);
	return n == 2 ? (uint64_t)resident * (uint64_t)page : 0;
}
