/*
 * cli.h: the admin verbs of `lanyard-server` (SPEC §2, §9): entry, token,
 * bundle (show; set, list, delete, count for federation), federation,
 * agent and healthcheck, with SPIRE's verbs and single-dash flags
 * (lib/flags.h). Each is a client of the running server's Admin service
 * (admin_api.c) over its Unix socket (-socketPath, default
 * LY_SERVER_SOCKET_DEFAULT). Output formats are documented in
 * docs/server.md.
 *
 * Exit codes: 0 success; 1 runtime failure (the server refused, or cannot
 * be reached; also `healthcheck` when the server is not healthy); 2 bad
 * usage (unknown flag, missing required flag, malformed value). Every
 * error is one line on stderr: "Error: <what and why>".
 */
#ifndef LANYARD_SERVER_CLI_H
#define LANYARD_SERVER_CLI_H

/*
 * Runs one admin command: argv[0] is the verb ("entry", "token", ...),
 * then its sub-command and flags. Returns the exit code. Output goes to
 * stdout, errors to stderr. A token printed by `token generate` is wiped
 * from our memory once written.
 */
int ly_cli_main(int argc, char **argv);

/* Prints the list of commands (for `lanyard-server -h`). */
void ly_cli_usage(void);

#endif /* LANYARD_SERVER_CLI_H */
