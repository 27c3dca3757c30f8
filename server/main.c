/*
 * main.c: the lanyard-server program (SPEC §2): `run` starts the daemon
 * (server.c); every other command is an admin verb that talks to a
 * running server over its admin socket (cli.c).
 */
#include <stdio.h>
#include <string.h>

#include "lib/rlimit.h"
#include "server/cli.h"
#include "server/server.h"

/* One or two descriptors per agent connection: room for tens of thousands of agents. */
#define SERVER_NOFILE_MAX 65536

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "Error: no command given (see lanyard-server -h)\n");
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "-help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		ly_cli_usage();
		return 0;
	}
	if (strcmp(argv[1], "run") == 0) {
		struct ly_error e;
		if (ly_rlimit_raise_nofile(SERVER_NOFILE_MAX, NULL, &e) != LY_OK)
			fprintf(stderr, "lanyard-server: warning: open-files limit left as it is: %s\n", e.msg);
		return ly_server_run(argc - 2, argv + 2);
	}
	return ly_cli_main(argc - 1, argv + 1);
}
