/*
 * daemon.c: the two daemons' shared scaffolding (daemon.h).
 */
#include "lib/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/config.h"
#include "lib/fsperm.h"
#include "lib/log.h"
#include "lib/spiffeid.h"

ly_status
ly_daemon_data_dir_prepare(const char *path, struct ly_error *err)
{
	ly_status rc;

	/* A link is refused, not followed: we would chmod its target (fsperm.h). */
	if ((rc = ly_fsperm_private_dir(AT_FDCWD, path, LY_FSPERM_PARENTS, NULL, err)) != LY_OK)
		return ly_error_wrap(err, rc, "cannot use data directory");
	return LY_OK;
}

static bool
help_asked(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "-help") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
		if (strcmp(argv[i], "--") == 0)
			break;
	}
	return false;
}

int
ly_daemon_run_flags(const char *prog, const char *about, struct ly_flag *flags, size_t n, int argc, char **argv)
{
	struct ly_error e;
	int rest = 0;

	if (help_asked(argc, argv)) {
		printf("Usage: %s run [flags]\n\n%s\n\nFlags:\n", prog, about);
		ly_flags_usage(stdout, flags, n);
		return 0;
	}
	if (ly_flags_parse(flags, n, argc, (const char *const *)argv, &rest, &e) != LY_OK) {
		fprintf(stderr, "%s: run: %s\n", prog, e.msg);
		return 2;
	}
	if (rest < argc) {
		fprintf(stderr, "%s: run: unexpected argument \"%s\"\n", prog, argv[rest]);
		return 2;
	}
	return -1;
}

void
ly_daemon_log_apply(const char *level_name, const char *format_name)
{
	enum ly_log_level level = LY_LOG_INFO;
	enum ly_log_format format = LY_LOG_TEXT;

	if (ly_log_level_parse(level_name, &level) == LY_OK)
		ly_log_set_level(level);
	if (ly_log_format_parse(format_name, &format) == LY_OK)
		ly_log_set_format(format);
}

void
ly_daemon_reload_log_level(const char *flag_level, const char *config_path, const char *key)
{
	struct ly_config *file = NULL;
	struct ly_error e;
	const char *name = NULL;
	enum ly_log_level level;

	if (flag_level != NULL) {
		log_info("SIGHUP: log level stays %s (set by -logLevel)", flag_level);
		return;
	}
	if (config_path == NULL) {
		log_info("SIGHUP: no config file to re-read");
		return;
	}
	if (ly_config_load_file(config_path, &file, &e) != LY_OK ||
	    ly_config_get_string(file, key, "info", &name, &e) != LY_OK) {
		log_error("SIGHUP: log level not changed: %s", e.msg);
		goto out;
	}
	if (ly_log_level_parse(name, &level) != LY_OK) {
		log_error("SIGHUP: log level not changed: %s:%zu: key %s: \"%s\" is not one of error, warn, info, debug",
		    config_path, ly_config_line(file, key), key, name);
		goto out;
	}
	ly_log_set_level(level);
	log_info("SIGHUP: log level is now %s", name);
out:
	ly_config_free(file);
}

bool
ly_daemon_on_signal(int signum, const char *flag_level, const char *config_path, const char *key)
{
	if (signum == SIGHUP) {
		ly_daemon_reload_log_level(flag_level, config_path, key);
		return false;
	}
	log_info("%s received: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	return true;
}

ly_status
ly_daemon_setting_trust_domain(const struct ly_config *file, const char *key, const char *flag,
    char out[LY_TRUST_DOMAIN_MAX + 1], struct ly_error *err)
{
	const char *s = NULL;

	LY_TRY(ly_config_setting_string(file, key, flag, NULL, &s, err));
	if (s == NULL)
		return ly_error_set(err, LY_E_INVALID, "no trust domain: give -trustDomain or %s in the config file", key);
	if (ly_trust_domain_parse(s, true, out, err) != LY_OK)
		return ly_config_setting_wrap(file, key, flag, "trustDomain", err, LY_E_INVALID);
	return LY_OK;
}

ly_status
ly_daemon_setting_socket_path(const struct ly_config *file, const char *key, const char *flag, const char *def,
    const char **out, struct ly_error *err)
{
	LY_TRY(ly_config_setting_string(file, key, flag, def, out, err));
	if (ly_config_check_socket_path(*out, err) != LY_OK)
		return ly_config_setting_wrap(file, key, flag, "socketPath", err, LY_E_INVALID);
	return LY_OK;
}

ly_status
ly_daemon_setting_data_dir(const struct ly_config *file, const char *key, const char *flag, const char *def,
    const char **out, struct ly_error *err)
{
	LY_TRY(ly_config_setting_string(file, key, flag, def, out, err));
	if (ly_config_check_path(*out, "data directory", err) != LY_OK)
		return ly_config_setting_wrap(file, key, flag, "dataDir", err, LY_E_INVALID);
	return LY_OK;
}

ly_status
ly_daemon_setting_log_level(const struct ly_config *file, const char *key, const char *flag, const char **out,
    struct ly_error *err)
{
	enum ly_log_level level;

	LY_TRY(ly_config_setting_string(file, key, flag, "info", out, err));
	if (ly_log_level_parse(*out, &level) != LY_OK) {
		ly_error_set(err, LY_E_INVALID, "log level \"%s\" is not one of error, warn, info, debug", *out);
		return ly_config_setting_wrap(file, key, flag, "logLevel", err, LY_E_INVALID);
	}
	return LY_OK;
}

ly_status
ly_daemon_setting_log_format(const struct ly_config *file, const char *key, const char **out, struct ly_error *err)
{
	enum ly_log_format format;

	LY_TRY(ly_config_get_string(file, key, "text", out, err));
	if (ly_log_format_parse(*out, &format) != LY_OK) {
		ly_error_set(err, LY_E_INVALID, "must be text or json");
		return ly_config_wrap(file, key, err, LY_E_INVALID);
	}
	return LY_OK;
}

/* "<prefix>.<name>" in `key` (LY_CONFIG_KEY_MAX + 1 bytes), for one call. */
static const char *
subkey(char *key, const char *prefix, const char *name)
{
	(void)snprintf(key, LY_CONFIG_KEY_MAX + 1, "%s.%s", prefix, name);
	return key;
}

ly_status
ly_daemon_setting_health(const struct ly_config *file, const char *prefix, uint16_t *port, const char **live,
    const char **ready, struct ly_error *err)
{
	char key[LY_CONFIG_KEY_MAX + 1];

	LY_TRY(ly_config_get_port(file, subkey(key, prefix, "bind_port"), 8080, port, err));
	LY_TRY(ly_config_get_string(file, subkey(key, prefix, "live_path"), "/live", live, err));
	LY_TRY(ly_config_get_string(file, subkey(key, prefix, "ready_path"), "/ready", ready, err));
	if ((*live)[0] != '/' || (*ready)[0] != '/' || strcmp(*live, *ready) == 0) {
		ly_error_set(err, LY_E_INVALID, "live_path and ready_path must start with / and differ");
		return ly_config_wrap(file, subkey(key, prefix, "live_path"), err, LY_E_INVALID);
	}
	return LY_OK;
}
