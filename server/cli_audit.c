/*
 * cli_audit.c: `lanyard-server audit list` (cli_internal.h): the shared
 * audit trail (admin_audit.h) through the Admin service's ListAuditLines,
 * with SPIRE's single-dash flags: -socketPath, -since (an RFC 3339 time
 * or a duration back from now), -limit, -output pretty|json. Any server
 * of a trust domain sharing one PostgreSQL shows every server's lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "server/admin_msg_audit.h"
#include "server/cli_internal.h"
#include "server/server.h"

/* The line's time as RFC 3339 UTC into `out` (32 bytes). */
static const char *
when(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		(void)snprintf(out, 32, "%lld", (long long)t);
	return out;
}

/* Sets `key` to `v` when non-empty (the wire's empty string is an absent field). */
static int
put(json_t *o, const char *key, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return 0;
	return json_object_set_new(o, key, json_string(v));
}

/* The audit file's JSON line's keys, in its order, and the server. */
static json_t *
line_json(const Lanyard__Admin__V1__AuditLine *l)
{
	char t[32];
	json_t *o = json_object();

	if (o == NULL || put(o, "time", when(l->time, t)) != 0 || put(o, "server", l->server) != 0 ||
	    put(o, "caller", l->caller) != 0 || put(o, "action", l->action) != 0 || put(o, "entry_id", l->entry_id) != 0 ||
	    put(o, "spiffe_id", l->spiffe_id) != 0 || put(o, "trust_domain", l->trust_domain) != 0 ||
	    put(o, "result", l->result) != 0 || put(o, "detail", l->detail) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void
print_field(const char *label, const char *v)
{
	if (v != NULL && v[0] != '\0')
		printf("%-15s: %s\n", label, v);
}

static void
print_line(const Lanyard__Admin__V1__AuditLine *l)
{
	char t[32];

	print_field("Time", when(l->time, t));
	print_field("Server", l->server);
	print_field("Caller", l->caller);
	print_field("Action", l->action);
	print_field("Entry ID", l->entry_id);
	print_field("SPIFFE ID", l->spiffe_id);
	print_field("Trust domain", l->trust_domain);
	print_field("Result", l->result);
	print_field("Detail", l->detail);
	printf("\n");
}

int
ly_cli_audit_list(int argc, char **argv)
{
	const char *cmd = "audit list";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *since = NULL, *output = NULL;
	int64_t limit = 0;
	struct ly_flag flags[] = {
		{ "since", LY_FLAG_STRING, &since,
		    "lines taken at or after this: an RFC 3339 time or a duration back from now (15m, 2h, 7d)", 0, 0,
		    false },
		{ "limit", LY_FLAG_INT, &limit, "the newest this many lines (default 100)", 1, LY_DS_AUDIT_LIST_MAX, false },
		{ "output", LY_FLAG_STRING, &output, "pretty (default) or json", 0, 0, false },
		{ "socketPath", LY_FLAG_STRING, &socket, "admin socket of the server (default " LY_SERVER_SOCKET_DEFAULT ")",
		    0, 0, false },
	};
	Lanyard__Admin__V1__ListAuditLinesRequest req;
	Lanyard__Admin__V1__AuditLineList *list = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	struct ly_error e;
	bool json = false;
	int64_t from = 0;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd,
	    "Lists the shared audit trail: every server's admin changes and refusals, oldest first.", flags,
	    sizeof(flags) / sizeof(flags[0]), argc, argv)) >= 0)
		return rc;
	if (output != NULL && strcmp(output, "json") == 0)
		json = true;
	else if (output != NULL && strcmp(output, "pretty") != 0 && strcmp(output, "text") != 0)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -output \"%s\": must be json or pretty", cmd, output);
	if (since != NULL && ly_admin_msg_audit_since_parse(since, (int64_t)time(NULL), &from, &e) != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -since \"%s\": %s", cmd, since, e.msg);
	lanyard__admin__v1__list_audit_lines_request__init(&req);
	req.since = from;
	req.limit = (uint32_t)limit;
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("ListAuditLines"), &req.base, &resp)) != 0)
		goto out;
	list = lanyard__admin__v1__audit_line_list__unpack(NULL, resp.len, resp.data);
	if (list == NULL) {
		rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
		goto out;
	}
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; arr != NULL && i < list->n_lines; i++) {
			json_t *o = line_json(list->lines[i]);
			if (o == NULL || json_array_append_new(arr, o) != 0) {
				json_decref(arr);
				arr = NULL;
			}
		}
		char *s = arr != NULL ? json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
		json_decref(arr);
		if (s == NULL) {
			rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: cannot write JSON", cmd);
			goto out;
		}
		printf("%s\n", s);
		free(s);
	} else if (list->n_lines == 0) {
		printf("No audit lines found\n");
	} else {
		printf("Found %zu audit %s:\n\n", list->n_lines, list->n_lines == 1 ? "line" : "lines");
		for (size_t i = 0; i < list->n_lines; i++)
			print_line(list->lines[i]);
	}
out:
	if (list != NULL)
		lanyard__admin__v1__audit_line_list__free_unpacked(list, NULL);
	ly_buf_free(&resp);
	return rc;
}
