/*
 * cmdline.c: the command-line tools' shared parts (cmdline.h).
 */
#include "lib/cmdline.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "lib/text.h"

int
ly_cmdline_fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ly_text_error_vprint(fmt, ap);
	va_end(ap);
	return code;
}

int
ly_cmdline_parse_flags(const char *prog, const char *cmd, const char *synopsis, struct ly_flag *flags, size_t n,
    int argc, char **argv)
{
	struct ly_error e;
	char command[128];
	bool help = false;

	(void)snprintf(command, sizeof(command), "%s %s", prog, cmd);
	if (ly_flags_parse_command(command, synopsis, flags, n, argc, (const char *const *)argv, stdout, &help, &e) !=
	    LY_OK)
		return ly_cmdline_fail(LY_CMDLINE_EXIT_USAGE, "%s: %s", cmd, e.msg);
	return help ? 0 : -1;
}
