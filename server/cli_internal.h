/*
 * cli_internal.h: what the admin verbs' files share (cli.c has the entry,
 * token, bundle show, agent and healthcheck verbs and the dispatch;
 * cli_fed.c the federation verbs of SPEC §9; cli_audit.c `audit list`;
 * all stand on cli_call.c: the call over the admin socket, a verb's
 * flags, a Bundle message read back). Calls go one way: cli.c ->
 * cli_fed.c, cli_audit.c -> cli_call.c. Not for other modules.
 * Exit codes and the one-line error rule are cli.h's.
 */
#ifndef LANYARD_SERVER_CLI_INTERNAL_H
#define LANYARD_SERVER_CLI_INTERNAL_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "agent.pb-c.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/cmdline.h"
#include "lib/error.h"
#include "lib/flags.h"

#define LY_CLI_EXIT_RUNTIME LY_CMDLINE_EXIT_RUNTIME
#define LY_CLI_EXIT_USAGE LY_CMDLINE_EXIT_USAGE
#define LY_CLI_METHOD(name) "/lanyard.admin.v1.Admin/" name

/* Prints "Error: ..." on one line and returns `code` (lib/cmdline.h). */
#define ly_cli_fail(...) ly_cmdline_fail(__VA_ARGS__)

/*
 * Calls `method` at `socket` with `req`: 0 with the answer in *resp (free
 * with ly_buf_free_secret), or the error printed (prefixed with `what`)
 * and the exit code returned.
 */
int ly_cli_call(const char *socket, const char *what, const char *method, const ProtobufCMessage *req,
    struct ly_buf *resp);

/* -1 to go on, else the exit code (0 after -h). */
int ly_cli_parse_flags(const char *cmd, const char *synopsis, struct ly_flag *flags, size_t n, int argc, char **argv);

/* The Bundle message as a struct ly_bundle (checked as any bundle is); *out is the caller's. */
ly_status ly_cli_bundle_from_pb(const Lanyard__Agent__V1__Bundle *m, struct ly_bundle **out, struct ly_error *err)
    LY_MUST_CHECK;

/* The federation verbs (cli_fed.c). */
int ly_cli_bundle_set(int argc, char **argv);
int ly_cli_bundle_list(int argc, char **argv);
int ly_cli_bundle_delete(int argc, char **argv);
int ly_cli_bundle_count(int argc, char **argv);
int ly_cli_federation_create(int argc, char **argv);
int ly_cli_federation_update(int argc, char **argv);
int ly_cli_federation_list(int argc, char **argv);
int ly_cli_federation_show(int argc, char **argv);
int ly_cli_federation_delete(int argc, char **argv);
int ly_cli_federation_refresh(int argc, char **argv);

/* `audit list`: the shared audit trail (cli_audit.c). */
int ly_cli_audit_list(int argc, char **argv);

#endif /* LANYARD_SERVER_CLI_INTERNAL_H */
