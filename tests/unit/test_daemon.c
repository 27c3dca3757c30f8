/* test_daemon.c: the daemons' shared scaffolding (lib/daemon.h): -h, the data dir, SIGHUP's log level. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/daemon.h"
#include "lib/log.h"

struct tmp {
	char dir[64];
	char path[128];
};

static int
setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -1;
	(void)snprintf(t->dir, sizeof(t->dir), "/tmp/ly_test_daemon.XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	ly_log_set_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct tmp *t = *state;
	char cmd[160];
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	if (system(cmd) != 0)
		return -1;
	free(t);
	return 0;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void
test_run_flags(void **state)
{
	const char *config = NULL;
	struct ly_flag flags[] = {
		{ "config", LY_FLAG_STRING, &config, "path to a YAML config file", 0, 0, false },
	};
	char f[] = "-config", file[] = "x.yaml", h1[] = "-h", h2[] = "-help", h3[] = "--help", end[] = "--",
	     bad[] = "-nope", stray[] = "stray";
	char *ok[] = { f, file };
	char *h[] = { f, file, h1 };
	char *help[] = { h2 };
	char *dash2[] = { h3 };
	char *after[] = { end, h1 };
	char *unknown[] = { bad };
	char *extra[] = { f, file, stray };
	(void)state;

	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 2, ok), -1);
	assert_string_equal(config, "x.yaml");
	ly_flags_cleanup(flags, 1);
	/* -h anywhere before "--": usage, exit 0, nothing parsed. */
	config = NULL;
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 3, h), 0);
	assert_null(config);
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 1, help), 0);
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 1, dash2), 0);
	/* After "--" it is an argument, and `run` takes none. */
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 2, after), 2);
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 1, unknown), 2);
	assert_int_equal(ly_daemon_run_flags("lanyard-test", "Runs.", flags, 1, 3, extra), 2);
	ly_flags_cleanup(flags, 1);
}

static void
test_data_dir(void **state)
{
	struct tmp *t = *state;
	struct ly_error e;
	struct stat st;

	(void)snprintf(t->path, sizeof(t->path), "%s/a/b", t->dir);
	assert_int_equal(ly_daemon_data_dir_prepare(t->path, &e), LY_OK);
	assert_int_equal(stat(t->path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	/* A link is refused, not followed. */
	(void)snprintf(t->path, sizeof(t->path), "%s/link", t->dir);
	assert_int_equal(symlink("a/b", t->path), 0);
	assert_int_not_equal(ly_daemon_data_dir_prepare(t->path, &e), LY_OK);
	assert_non_null(strstr(e.msg, "cannot use data directory"));
}

static void
test_reload_log_level(void **state)
{
	struct tmp *t = *state;

	(void)snprintf(t->path, sizeof(t->path), "%s/c.yaml", t->dir);
	ly_log_set_level(LY_LOG_INFO);
	write_file(t->path, "server:\n  log_level: debug\n");
	/* -logLevel wins, and no file means nothing to re-read. */
	ly_daemon_reload_log_level("info", t->path, "server.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_INFO);
	ly_daemon_reload_log_level(NULL, NULL, "server.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_INFO);
	ly_daemon_reload_log_level(NULL, t->path, "server.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_DEBUG);
	/* A bad value or an unreadable file leaves the level as it is. */
	write_file(t->path, "server:\n  log_level: loud\n");
	ly_daemon_reload_log_level(NULL, t->path, "server.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_DEBUG);
	ly_daemon_reload_log_level(NULL, "/nonexistent/c.yaml", "server.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_DEBUG);
	/* The key is the caller's: the agent's file is read by its own. */
	write_file(t->path, "agent:\n  log_level: warn\n");
	ly_daemon_reload_log_level(NULL, t->path, "agent.log_level");
	assert_int_equal(ly_log_get_level(), LY_LOG_WARN);
}

static void
test_on_signal(void **state)
{
	(void)state;
	/* SIGHUP reloads (nothing to re-read here) and keeps running; SIGTERM and SIGINT stop. */
	assert_false(ly_daemon_on_signal(SIGHUP, NULL, NULL, "server.log_level"));
	assert_true(ly_daemon_on_signal(SIGTERM, NULL, NULL, "server.log_level"));
	assert_true(ly_daemon_on_signal(SIGINT, NULL, NULL, "server.log_level"));
}

static void
test_log_apply(void **state)
{
	(void)state;
	ly_daemon_log_apply("error", "json");
	assert_int_equal(ly_log_get_level(), LY_LOG_ERROR);
	/* An unparsable name leaves that setting alone. */
	ly_daemon_log_apply("bogus", "text");
	assert_int_equal(ly_log_get_level(), LY_LOG_ERROR);
	ly_daemon_log_apply("info", "text");
	assert_int_equal(ly_log_get_level(), LY_LOG_INFO);
}

static struct ly_config *
load(const char *text)
{
	struct ly_config *c = NULL;
	struct ly_error e;
	assert_int_equal(ly_config_load_buf("t.yaml", text, strlen(text), &c, &e), LY_OK);
	return c;
}

static void
test_settings(void **state)
{
	struct ly_config *c = load("server:\n  socket_path: /run/x.sock\n  log_level: debug\n  log_format: json\n");
	struct ly_error e;
	const char *v = NULL;
	(void)state;

	/* The flag over the file over the default. */
	assert_int_equal(ly_daemon_setting_socket_path(c, "server.socket_path", NULL, "/d.sock", &v, &e), LY_OK);
	assert_string_equal(v, "/run/x.sock");
	assert_int_equal(ly_daemon_setting_socket_path(c, "server.socket_path", "/run/f.sock", "/d.sock", &v, &e), LY_OK);
	assert_string_equal(v, "/run/f.sock");
	assert_int_equal(ly_daemon_setting_data_dir(c, "server.data_dir", NULL, "/var/lib/x", &v, &e), LY_OK);
	assert_string_equal(v, "/var/lib/x");
	assert_int_equal(ly_daemon_setting_log_level(c, "server.log_level", NULL, &v, &e), LY_OK);
	assert_string_equal(v, "debug");
	assert_int_equal(ly_daemon_setting_log_format(c, "server.log_format", &v, &e), LY_OK);
	assert_string_equal(v, "json");
	assert_int_equal(ly_daemon_setting_log_format(c, "agent.log_format", &v, &e), LY_OK);
	assert_string_equal(v, "text");
	char td[LY_TRUST_DOMAIN_MAX + 1];
	assert_int_equal(ly_daemon_setting_trust_domain(c, "server.trust_domain", "spiffe://example.org", td, &e), LY_OK);
	assert_string_equal(td, "example.org");
	assert_int_equal(ly_daemon_setting_trust_domain(c, "agent.trust_domain", NULL, td, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "no trust domain: give -trustDomain or agent.trust_domain in the config file");
	assert_int_equal(ly_daemon_setting_trust_domain(c, "server.trust_domain", "Bad_TD", td, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "flag -trustDomain"));
	/* Refusals name the flag, or the file's key. */
	assert_int_equal(ly_daemon_setting_socket_path(c, "server.socket_path", "rel.sock", "/d.sock", &v, &e),
	    LY_E_INVALID);
	assert_non_null(strstr(e.msg, "flag -socketPath"));
	assert_int_equal(ly_daemon_setting_data_dir(c, "server.data_dir", "", "/d", &v, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "flag -dataDir"));
	assert_int_equal(ly_daemon_setting_log_level(c, "server.log_level", "loud", &v, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "flag -logLevel"));
	assert_non_null(strstr(e.msg, "is not one of error, warn, info, debug"));
	uint16_t port;
	const char *live, *ready;
	assert_int_equal(ly_daemon_setting_health(c, "server.health_checks", &port, &live, &ready, &e), LY_OK);
	assert_int_equal(port, 8080);
	assert_string_equal(live, "/live");
	assert_string_equal(ready, "/ready");
	ly_config_free(c);
	c = load("agent:\n  log_format: xml\n  log_level: loud\n");
	assert_int_equal(ly_daemon_setting_log_format(c, "agent.log_format", &v, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "t.yaml:2: key agent.log_format"));
	assert_int_equal(ly_daemon_setting_log_level(c, "agent.log_level", NULL, &v, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "key agent.log_level"));
	ly_config_free(c);
	c = load("agent:\n  health_checks:\n    bind_port: 9090\n    live_path: /x\n    ready_path: /x\n");
	assert_int_equal(ly_daemon_setting_health(c, "agent.health_checks", &port, &live, &ready, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "key agent.health_checks.live_path"));
	assert_non_null(strstr(e.msg, "must start with / and differ"));
	ly_config_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_run_flags),
		cmocka_unit_test_setup_teardown(test_data_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_log_level, setup, teardown),
		cmocka_unit_test(test_on_signal),
		cmocka_unit_test(test_log_apply),
		cmocka_unit_test(test_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
