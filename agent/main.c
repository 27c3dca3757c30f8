/*
 * main.c: the lanyard-agent program (SPEC §2): `run` starts the daemon
 * (agent.c); every other command is a Workload API client (cli.c).
 */
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "Error: no command given (see lanyard-agent -h)\n");
		return 2;
	}
	if (strcmp(argv[1], "run") == 0)
		return ly_agent_run(argc - 2, argv + 2);
	return ly_agent_cli_main(argc - 1, argv + 1);
}
