/*
 * cmdline.h: what the two command-line tools (lanyard-server's admin
 * commands, server/cli.c; lanyard-agent's, agent/cli.c) share: the exit
 * codes, the one error line, and a sub-command's flags parsed with -h
 * handled. One copy for both (issue 17, "one copy of each primitive").
 *
 * No state, no allocation that outlives a call. Writes to stdout (usage
 * after -h) and stderr (errors) only.
 */
#ifndef LANYARD_CMDLINE_H
#define LANYARD_CMDLINE_H

#include <stddef.h>

#include "error.h"
#include "flags.h"

#define LY_CMDLINE_EXIT_RUNTIME 1 /* the command ran and failed */
#define LY_CMDLINE_EXIT_USAGE 2   /* a bad flag, argument or value */

/*
 * Prints one line on stderr, "Error: ...", whatever the values in it hold
 * (a newline, a terminal escape: ly_text_error_vprint, lib/text.h), and
 * returns `code`, so that a command can `return ly_cmdline_fail(...)`.
 */
int ly_cmdline_fail(int code, const char *fmt, ...) LY_PRINTF(2, 3);

/*
 * Parses the flags of `prog cmd` (e.g. "lanyard-server", "entry show"):
 * -h prints `synopsis` and the flags on stdout. Returns -1 to go on, else
 * the exit code: 0 after -h, LY_CMDLINE_EXIT_USAGE after a bad flag or a
 * stray argument (the error printed as ly_cmdline_fail does, prefixed
 * with `cmd`).
 */
int ly_cmdline_parse_flags(const char *prog, const char *cmd, const char *synopsis, struct ly_flag *flags, size_t n,
    int argc, char **argv);

#endif
