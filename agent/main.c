/*
 * main.c: the lanyard-agent program (SPEC §2): `run` starts the daemon
 * (agent.c); every other command is a Workload API client (cli.c).
 */
#include <stdio.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <uv.h>

#include "agent/agent.h"
#include "lib/caps.h"
#include "lib/rlimit.h"

/*
 * The daemon's heap policy. glibc raises its mmap threshold to the size of
 * the largest block freed (up to 32 MiB), so after the first multi-MB
 * buffer (a 10,000-entry snapshot, the encoded SVID cache file) such
 * buffers come from the heap and their pages stay resident once freed:
 * 51 MiB VmRSS after a 10,000-SVID storm with 17 MB in use. Fixing the
 * thresholds turns that off: blocks over 256 KiB are mmapped and unmapped
 * on free, and free heap tops over 1 MiB are returned
 * (docs/benchmarks.md). The rest of the freed memory is returned after
 * bursts (ly_sync_memory_burst).
 */
static void
heap_policy(void)
{
#ifdef __GLIBC__
	(void)mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	(void)mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
#endif
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "Error: no command given (see lanyard-agent -h)\n");
		return 2;
	}
	if (strcmp(argv[1], "run") == 0) {
		struct ly_error e;
		heap_policy();
		/* Three descriptors per Workload API connection, up to the connection cap, and some to spare. */
		if (ly_rlimit_raise_nofile(3u * LY_WAPI_CONNS_MAX + 1024u, NULL, &e) != LY_OK)
			fprintf(stderr, "lanyard-agent: warning: open-files limit left as it is: %s\n", e.msg);
		int rc = ly_agent_run(argc - 2, argv + 2);
		/*
		 * Join libuv's thread pool now, while OpenSSL is still
		 * initialized: each worker's exit then frees its OpenSSL thread
		 * state (error queue, DRBGs). Left to libuv's destructor, the
		 * threads outlive OPENSSL_cleanup (an atexit handler) and that
		 * state is lost (valgrind: definitely lost, one set per worker).
		 */
		uv_library_shutdown();
		return rc;
	}
	return ly_agent_cli_main(argc - 1, argv + 1);
}
