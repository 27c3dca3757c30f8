/*
 * fuzz_agent_cli_helper.c: arbitrary bytes as a pid file (agent/cli_helper.h)
 * and, up to the first NUL, as a -signal name. An accepted pid is in
 * [2, LY_PID_VALUE_MAX] and the text is its decimal form plus at most one
 * newline; an accepted signal is one of the table's (abort otherwise).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cli_helper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char canon[32], name[64];
	pid_t pid = 0;
	int sig = 0;

	if (ly_cli_helper_pid_parse((const char *)data, size, &pid, NULL) == LY_OK) {
		int n = snprintf(canon, sizeof(canon), "%d\n", (int)pid);
		if (pid < 2 || pid > LY_PID_VALUE_MAX || (size != (size_t)n && size != (size_t)n - 1) ||
		    memcmp(canon, data, size) != 0)
			abort();
	}
	size_t len = strnlen((const char *)data, size < sizeof(name) - 1 ? size : sizeof(name) - 1);
	memcpy(name, data, len);
	name[len] = '\0';
	if (ly_cli_helper_signal_parse(name, &sig, NULL) == LY_OK && strcmp(ly_cli_helper_signal_name(sig), "signal") == 0)
		abort();
	return 0;
}
