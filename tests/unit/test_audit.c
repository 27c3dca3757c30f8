/*
 * test_audit.c: the server's audit lines (server/audit.h): the exact line
 * format, refusals of incomplete records, the secret scrubbing (a join
 * token never reaches a line, whatever field it hides in), the file's mode
 * and append behaviour, and the log sink.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/log.h"
#include "server/audit.h"

#define TOKEN "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static char *
format(const struct ly_audit_record *rec, time_t now)
{
	char *line = NULL;
	struct ly_error e;
	assert_int_equal(ly_audit_format(rec, now, &line, &e), LY_OK);
	assert_non_null(line);
	return line;
}

static void
test_format_ok_line(void **state)
{
	struct ly_audit_record rec = {
		.caller = "uid:1000",
		.action = "entry.create",
		.entry_id = "e1",
		.spiffe_id = "spiffe://example.org/web",
		.result = "ok",
	};
	char *line = format(&rec, 0);
	assert_string_equal(line, "{\"time\":\"1970-01-01T00:00:00Z\",\"caller\":\"uid:1000\",\"action\":\"entry.create\","
	    "\"entry_id\":\"e1\",\"spiffe_id\":\"spiffe://example.org/web\",\"result\":\"ok\"}\n");
	free(line);
}

/* Federation lines name the other trust domain, after the SPIFFE ID. */
static void
test_format_trust_domain(void **state)
{
	struct ly_audit_record rec = {
		.caller = "uid:1000",
		.action = "bundle.delete",
		.trust_domain = "b.test",
		.result = "ok",
		.detail = "mode dissociate",
	};
	char *line = format(&rec, 0);
	assert_string_equal(line, "{\"time\":\"1970-01-01T00:00:00Z\",\"caller\":\"uid:1000\",\"action\":\"bundle.delete\","
	    "\"trust_domain\":\"b.test\",\"result\":\"ok\",\"detail\":\"mode dissociate\"}\n");
	free(line);
	(void)state;
}

static void
test_format_refusal_has_detail(void **state)
{
	struct ly_audit_record rec = {
		.caller = "admin-socket",
		.action = "entry.delete",
		.entry_id = "nope",
		.result = "NOT_FOUND",
		.detail = "entry nope not found",
	};
	char *line = format(&rec, 1700000000);
	assert_string_equal(line, "{\"time\":\"2023-11-14T22:13:20Z\",\"caller\":\"admin-socket\",\"action\":"
	    "\"entry.delete\",\"entry_id\":\"nope\",\"result\":\"NOT_FOUND\",\"detail\":\"entry nope not found\"}\n");
	free(line);
}

static void
test_format_needs_action_and_result(void **state)
{
	struct ly_audit_record rec = { .caller = "uid:0", .result = "ok" };
	char *line = (char *)1;
	struct ly_error e;

	assert_int_equal(ly_audit_format(&rec, 0, &line, &e), LY_E_INVALID);
	assert_null(line);
	rec.action = "entry.create";
	rec.result = NULL;
	assert_int_equal(ly_audit_format(&rec, 0, &line, &e), LY_E_INVALID);
	assert_null(line);
}

/* The default join-token agent ID embeds the token (SPEC §2): it must go. */
static void
test_secret_never_written(void **state)
{
	struct ly_audit_record rec = {
		.caller = "uid:0",
		.action = "token.generate",
		.entry_id = "x" TOKEN,
		.spiffe_id = "spiffe://example.org/lanyard/agent/join_token/" TOKEN,
		.result = "INVALID_ARGUMENT",
		.detail = "token " TOKEN " refused",
		.secret = TOKEN,
	};
	char *line = format(&rec, 0);
	assert_null(strstr(line, TOKEN));
	/* Not even a long piece of it. */
	assert_null(strstr(line, "9f86d081884c7d65"));
	assert_non_null(strstr(line, "\"spiffe_id\":\"spiffe://example.org/lanyard/agent/join_token/[redacted]\""));
	assert_non_null(strstr(line, "\"detail\":\"token [redacted] refused\""));
	free(line);

	/* Without the secret named, the same ID is written as is: the rule is the scrub. */
	rec.secret = NULL;
	rec.detail = NULL;
	line = format(&rec, 0);
	assert_non_null(strstr(line, TOKEN));
	free(line);
}

static void
test_detail_goes_through_the_redactor(void **state)
{
	struct ly_audit_record rec = {
		.action = "entry.create",
		.result = "INVALID_ARGUMENT",
		.detail = "bad hint eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here",
	};
	char *line = format(&rec, 0);
	assert_null(strstr(line, "eyJhbGci"));
	assert_non_null(strstr(line, "[redacted]"));
	free(line);
}

static void
test_control_bytes_are_replaced(void **state)
{
	struct ly_audit_record rec = {
		.action = "entry.create",
		.entry_id = "a\nb\x1b[31m\xff",
		.result = "ok",
	};
	char *line = format(&rec, 0);
	json_error_t je;
	json_t *v;

	/* One line, valid JSON, the odd bytes shown as '?'. */
	assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
	v = json_loads(line, 0, &je);
	assert_non_null(v);
	assert_string_equal(json_string_value(json_object_get(v, "entry_id")), "a?b?[31m?");
	json_decref(v);
	free(line);
}

static void
test_long_fields_fit(void **state)
{
	char id[2049], detail[4000], td[256];
	memcpy(id, "spiffe://example.org/", 21);
	memset(id + 21, '"', sizeof(id) - 22); /* escaped: twice as long */
	id[sizeof(id) - 1] = '\0';
	memset(td, '"', sizeof(td) - 1);
	td[sizeof(td) - 1] = '\0';
	memset(detail, '\\', sizeof(detail) - 1);
	detail[sizeof(detail) - 1] = '\0';
	struct ly_audit_record rec = {
		.caller = "uid:1", .action = "entry.create", .entry_id = "e", .spiffe_id = id, .trust_domain = td,
		.result = "ok", .detail = detail,
	};
	char *line = format(&rec, 0);
	assert_true(strlen(line) < LY_AUDIT_LINE_MAX);
	free(line);
}

static void
test_scrub(void **state)
{
	char out[64];

	ly_audit_scrub("a-SECRET-b-SECRET", "SECRET", out, sizeof(out));
	assert_string_equal(out, "a-[redacted]-b-[redacted]");
	ly_audit_scrub("nothing here", "SECRET", out, sizeof(out));
	assert_string_equal(out, "nothing here");
	ly_audit_scrub("no secret given", NULL, out, sizeof(out));
	assert_string_equal(out, "no secret given");
	ly_audit_scrub("empty secret", "", out, sizeof(out));
	assert_string_equal(out, "empty secret");
	/* Cut short: the occurrence is found before copying, so no piece of it leaks. */
	ly_audit_scrub("abSECRET", "SECRET", out, 6);
	assert_string_equal(out, "ab[re");
	ly_audit_scrub("abSECRE", "SECRET", out, sizeof(out));
	assert_string_equal(out, "abSECRE"); /* not the secret */
}

static void
tmp_path(char *path, size_t size, const char *name)
{
	(void)snprintf(path, size, "/tmp/lanyard-test-audit-%ld-%s", (long)getpid(), name);
	(void)unlink(path);
}

static char *
slurp(const char *path)
{
	static char buf[16384];
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
test_file_sink(void **state)
{
	char path[256];
	struct ly_audit *a = NULL;
	struct ly_error e;
	struct stat st;
	struct ly_audit_record rec = { .caller = "uid:0", .action = "entry.create", .entry_id = "e1", .result = "ok" };

	tmp_path(path, sizeof(path), "file");
	assert_int_equal(ly_audit_open(path, &a, &e), LY_OK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(ly_audit_write(a, &rec, 0, &e), LY_OK);
	rec.entry_id = "e2";
	assert_int_equal(ly_audit_write(a, &rec, 0, &e), LY_OK);
	ly_audit_close(a);

	/* Reopened: appended, not truncated. */
	assert_int_equal(ly_audit_open(path, &a, &e), LY_OK);
	rec.entry_id = "e3";
	assert_int_equal(ly_audit_write(a, &rec, 0, &e), LY_OK);
	ly_audit_close(a);
	const char *text = slurp(path);
	size_t lines = 0;
	for (const char *p = text; *p != '\0'; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
	assert_non_null(strstr(text, "\"entry_id\":\"e1\""));
	assert_non_null(strstr(text, "\"entry_id\":\"e3\""));
	(void)unlink(path);
}

static void
test_file_mode_tightened(void **state)
{
	char path[256];
	struct ly_audit *a = NULL;
	struct ly_error e;
	struct stat st;

	tmp_path(path, sizeof(path), "mode");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0644), 0);
	close(fd);
	assert_int_equal(ly_audit_open(path, &a, &e), LY_OK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	ly_audit_close(a);
	(void)unlink(path);
}

static void
test_file_refused(void **state)
{
	char path[256], link_path[256];
	struct ly_audit *a = (struct ly_audit *)1;
	struct ly_error e;

	/* A symlink (someone else could point it anywhere). */
	tmp_path(path, sizeof(path), "target");
	tmp_path(link_path, sizeof(link_path), "link");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(symlink(path, link_path), 0);
	assert_int_equal(ly_audit_open(link_path, &a, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "symbolic link"));
	assert_null(a);
	/* Another user's file, planted where the log goes (fsperm.h): refused, left as it is. */
	if (geteuid() == 0) {
		a = (struct ly_audit *)1;
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(ly_audit_open(path, &a, &e), LY_E_INVALID);
		assert_non_null(strstr(e.msg, "owned by uid 65534"));
		assert_null(a);
	}
	/* A directory. */
	a = (struct ly_audit *)1;
	assert_int_not_equal(ly_audit_open("/tmp", &a, &e), LY_OK);
	assert_null(a);
	/* A missing directory. */
	assert_int_equal(ly_audit_open("/nonexistent-lanyard/audit.log", &a, &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "/nonexistent-lanyard/audit.log"));
	(void)unlink(link_path);
	(void)unlink(path);
}

static void
test_log_sink(void **state)
{
	char path[256];
	struct ly_audit *a = NULL;
	struct ly_error e;
	struct ly_audit_record rec = { .caller = "uid:7", .action = "agent.ban", .spiffe_id = "spiffe://example.org/a",
		.result = "ok" };

	tmp_path(path, sizeof(path), "log");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	ly_log_set_fd(fd);
	assert_int_equal(ly_audit_open(NULL, &a, &e), LY_OK);
	assert_int_equal(ly_audit_write(a, &rec, 0, &e), LY_OK);
	ly_audit_close(a);
	ly_log_set_fd(2);
	close(fd);
	const char *text = slurp(path);
	assert_non_null(strstr(text, "audit {\"time\":\"1970-01-01T00:00:00Z\",\"caller\":\"uid:7\",\"action\":\"agent.ban\""));
	(void)unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_ok_line),
		cmocka_unit_test(test_format_trust_domain),
		cmocka_unit_test(test_format_refusal_has_detail),
		cmocka_unit_test(test_format_needs_action_and_result),
		cmocka_unit_test(test_secret_never_written),
		cmocka_unit_test(test_detail_goes_through_the_redactor),
		cmocka_unit_test(test_control_bytes_are_replaced),
		cmocka_unit_test(test_long_fields_fit),
		cmocka_unit_test(test_scrub),
		cmocka_unit_test(test_file_sink),
		cmocka_unit_test(test_file_mode_tightened),
		cmocka_unit_test(test_file_refused),
		cmocka_unit_test(test_log_sink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
