/*
 * cli_helper.h: the pieces of `lanyard-agent api watch -write DIR
 * [-signal NAME] [-pidFile FILE]` (the helper mode for programs that read
 * their certificates from files: nginx, Envoy, databases; SPEC §2 `api
 * watch`, with spiffe-helper's job done in SPIRE's flag style) that do not
 * need the Workload API: the signal table and the pid file (the set of
 * files replaced together is agent/fileset.h).
 *
 * Signals: a fixed table of names (HUP, INT, QUIT, USR1, USR2, TERM,
 * WINCH, with or without the SIG prefix, upper case). Numbers, KILL, STOP
 * and anything else are refused: the helper asks a program to reload, it
 * does not kill it.
 *
 * Pid files: exactly one decimal process ID, optionally followed by one
 * newline; nothing else (no sign, no leading zero, no space, no second
 * line), at most LY_PID_FILE_MAX bytes, a regular file. 0 and 1 are
 * refused (kill(0) signals our own process group; 1 is init), as is a
 * value over PID_MAX_LIMIT (4194304) and, when sending, our own pid. The
 * file is read afresh before every signal: the program may have restarted
 * with another pid.
 *
 * File sets live in agent/fileset.h.
 */
#ifndef LANYARD_AGENT_CLI_HELPER_H
#define LANYARD_AGENT_CLI_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/caps.h"
#include "lib/error.h"

/* LY_PID_VALUE_MAX: lib/caps.h. */

/*
 * The signal named `name` ("HUP", "SIGHUP", ...; see the table above) in
 * *signum. LY_E_INVALID, naming the accepted names, for anything else.
 */
ly_status ly_cli_helper_signal_parse(const char *name, int *signum, struct ly_error *err) LY_MUST_CHECK;

/* "SIGHUP" for SIGHUP; "signal" for a number outside the table. Static storage. */
const char *ly_cli_helper_signal_name(int signum);

/*
 * Parses pid file contents (`len` bytes, need not be NUL-terminated) by
 * the rules above. LY_E_LIMIT over LY_PID_FILE_MAX bytes; LY_E_INVALID for
 * anything else that is not one pid.
 */
ly_status ly_cli_helper_pid_parse(const char *text, size_t len, pid_t *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Reads and parses the pid file at `path` (a regular file; symlinks are
 * followed, as for any pid file). LY_E_NOT_FOUND when it does not exist,
 * LY_E_IO when it cannot be read, else as ly_cli_helper_pid_parse.
 */
ly_status ly_cli_helper_pid_file_read(const char *path, pid_t *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Reads the pid file at `path` and sends `signum` to that process;
 * *sent (may be NULL) receives the pid signalled. Refuses our own pid
 * (LY_E_INVALID); a process that does not exist (a stale pid file) is
 * LY_E_NOT_FOUND; kill() refused is LY_E_IO. Nothing is sent on any error.
 */
ly_status ly_cli_helper_signal_pid_file(const char *path, int signum, pid_t *sent, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_AGENT_CLI_HELPER_H */
