/*
 * daemon.h: what lanyard-server and lanyard-agent do alike around their
 * event loops: the private data directory, `run`'s flags (and its -h),
 * the settings both read alike (socket path, data dir, log level and
 * format), the log level and format applied, and the log level re-read on
 * SIGHUP. One copy for both daemons
 * (issue 17, "one copy of each primitive"); each daemon keeps its own
 * handles, stop order and configuration keys.
 *
 * Nothing here allocates memory that outlives a call; no function keeps a
 * pointer it is given. Single-threaded: call from the loop's thread.
 */
#ifndef LANYARD_DAEMON_H
#define LANYARD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caps.h"
#include "config.h"
#include "error.h"
#include "flags.h"

/*
 * Creates `path` (parents 0755 as needed) and makes it a directory of ours
 * with mode 0700 (SPEC §2): it holds keys. A link is refused, not followed
 * (fsperm.h). The error says "cannot use data directory" and why.
 */
ly_status ly_daemon_data_dir_prepare(const char *path, struct ly_error *err) LY_MUST_CHECK;

/*
 * Parses the flags of `prog run` (argv: the words after `run`). -h, -help
 * or --help before a "--" prints "Usage: <prog> run [flags]", `about` and
 * the flags on stdout, nothing parsed. Returns -1 to go on, else the exit
 * code: 0 after -h, 2 after a bad flag or a stray argument (one line on
 * stderr, "<prog>: run: ..."). The caller still owes ly_flags_cleanup.
 */
int ly_daemon_run_flags(const char *prog, const char *about, struct ly_flag *flags, size_t n, int argc, char **argv);

/*
 * Sets the log level and format from their names. Both must have been
 * checked already (the daemon's config loader did): a name that does not
 * parse leaves that setting as it is.
 */
void ly_daemon_log_apply(const char *level, const char *format);

/*
 * SIGHUP: re-reads `key` (e.g. "server.log_level") from the config file at
 * `config_path` and sets the log level from it. Nothing changes when the
 * level came from the -logLevel flag (`flag_level` not NULL) or there is no
 * config file (`config_path` NULL); an unreadable file or a bad value is
 * logged as an error and the level stays. Every outcome is one log line.
 */
void ly_daemon_reload_log_level(const char *flag_level, const char *config_path, const char *key);

/*
 * A daemon's signal handler's decision: SIGHUP re-reads the log level as
 * above and returns false; SIGTERM and SIGINT are logged ("SIGTERM received:
 * stopping") and return true: the caller begins its orderly stop.
 */
bool ly_daemon_on_signal(int signum, const char *flag_level, const char *config_path, const char *key);

/*
 * The settings both daemons read alike, each a flag over a config-file key
 * (ly_config_setting_string) checked as the daemons always have: a socket
 * path (ly_config_check_socket_path), a data directory (ly_config_check_path),
 * a log level (error, warn, info, debug; default info) and, from the file
 * only, a log format (text or json; default text). `key` is the daemon's
 * ("agent.socket_path", "server.log_level"...). On error the message names
 * the flag (-socketPath, -dataDir, -logLevel) or the file's key and line.
 * *out points into `file` or at the flag's or default's string.
 */
/*
 * The trust domain (-trustDomain over `key`), with no default: it names
 * everything the daemon serves or signs. Parsed as lib/spiffeid.h does
 * (a spiffe:// form allowed) into `out`.
 */
ly_status ly_daemon_setting_trust_domain(const struct ly_config *file, const char *key, const char *flag,
    char out[LY_TRUST_DOMAIN_MAX + 1], struct ly_error *err) LY_MUST_CHECK;
ly_status ly_daemon_setting_socket_path(const struct ly_config *file, const char *key, const char *flag,
    const char *def, const char **out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_daemon_setting_data_dir(const struct ly_config *file, const char *key, const char *flag, const char *def,
    const char **out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_daemon_setting_log_level(const struct ly_config *file, const char *key, const char *flag,
    const char **out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_daemon_setting_log_format(const struct ly_config *file, const char *key, const char **out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * The health listener's port and paths under `prefix` (e.g.
 * "server.health_checks"): bind_port (default 8080), live_path ("/live") and
 * ready_path ("/ready"); the two paths must start with / and differ (the
 * error names <prefix>.live_path). The enabled flag and the bind address
 * stay with each daemon (the server checks its address is an IP).
 */
ly_status ly_daemon_setting_health(const struct ly_config *file, const char *prefix, uint16_t *port, const char **live,
    const char **ready, struct ly_error *err) LY_MUST_CHECK;

#endif
