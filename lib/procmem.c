/* procmem.c: see procmem.h. */
#include "lib/procmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

uint64_t
ly_procmem_rss_bytes(void)
{
	char text[128];
	unsigned long size = 0, resident = 0;
	long page = sysconf(_SC_PAGESIZE);
	ssize_t n;

	/* open and read, not stdio: the memory guard asks at every handover. */
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	while ((n = read(fd, text, sizeof(text) - 1)) < 0 && errno == EINTR)
		;
	(void)close(fd);
	if (n <= 0 || page <= 0)
		return 0;
	text[n] = '\0';
	if (sscanf(text, "%lu %lu", &size, &resident) != 2)
		return 0;
	return (uint64_t)resident * (uint64_t)page;
}
