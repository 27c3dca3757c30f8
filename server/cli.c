/*
 * cli.c: the admin verbs (cli.h), as a gRPC client of the server's Admin
 * service over its Unix socket (rpc/ channel, plaintext: the socket's
 * 0700 directory is the access control).
 *
 * What the CLI checks itself, before calling (exit 2): flags, required
 * flags, and the form of every value it can judge alone (SPIFFE IDs by
 * SPIFFE-ID §2, selectors by lib/entry.h's table, DNS names, entry IDs,
 * TTL ranges). What only the server can judge (the trust domain,
 * duplicates, unknown IDs) comes back as a refusal (exit 1). The server
 * checks everything again: the CLI is a convenience, not the control.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "server/entry_pb.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/cmdline.h"
#include "lib/entry.h"
#include "lib/flags.h"
#include "lib/pbview.h"
#include "lib/spiffeid.h"
#include "lib/text.h"
#include "rpc/rpc.h"
#include "server/admin_msg.h"
#include "server/cli.h"
#include "server/cli_internal.h"
#include "server/server.h"

#define EXIT_RUNTIME LY_CMDLINE_EXIT_RUNTIME
#define EXIT_USAGE LY_CMDLINE_EXIT_USAGE
#define METHOD(name) "/lanyard.admin.v1.Admin/" name

/* lib/cmdline.h and lib/pbview.h, under the short names this file has always used. */
#define fail(...) ly_cmdline_fail(__VA_ARGS__)
#define unconst(s) ly_pbview_str_or_empty(s)

#define SOCKET_FLAG(dst) \
	{ "socketPath", LY_FLAG_STRING, (dst), "admin socket of the server (default " LY_SERVER_SOCKET_DEFAULT ")", \
	    0, 0, false }
#define NFLAGS(f) (sizeof(f) / sizeof((f)[0]))

/* A SPIFFE ID given on the command line: well formed, with a path. */
static int
check_id_flag(const char *cmd, const char *flag, const char *value, struct ly_spiffe_id *out)
{
	struct ly_error e;
	struct ly_spiffe_id tmp;

	if (out == NULL)
		out = &tmp;
	if (ly_spiffe_id_parse_str(value, out, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -%s \"%s\": %s", cmd, flag, value, e.msg);
	if (ly_spiffe_id_is_trust_domain_id(out))
		return fail(EXIT_USAGE, "%s: -%s \"%s\": a SPIFFE ID with a path is required", cmd, flag, value);
	return 0;
}

/* And allowed for `use` by Lanyard's reserved-namespace rule (lib/spiffeid.h). */
static int
check_id_use(const char *cmd, const char *flag, const char *value, enum ly_id_use use)
{
	struct ly_error e;
	struct ly_spiffe_id id;

	if (ly_spiffe_id_parse_str(value, &id, &e) != LY_OK || ly_spiffe_id_check_use(&id, use, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -%s \"%s\": %s", cmd, flag, value, e.msg);
	return 0;
}

static int
output_mode(const char *cmd, const char *output, bool *json)
{
	*json = false;
	if (output == NULL || strcmp(output, "pretty") == 0 || strcmp(output, "text") == 0)
		return 0;
	if (strcmp(output, "json") == 0) {
		*json = true;
		return 0;
	}
	return fail(EXIT_USAGE, "%s: -output \"%s\": must be json or pretty", cmd, output);
}

/* ---- printing ---------------------------------------------------------------------- */

/* SPIRE's entry block (cmd/spire-server/cli/entry/util.go printEntry). */
static void
print_entry(const Lanyard__Agent__V1__Entry *e)
{
	printf("Entry ID         : %s\n", e->entry_id[0] != '\0' ? e->entry_id : "(none)");
	printf("SPIFFE ID        : %s\n", e->spiffe_id);
	printf("Parent ID        : %s\n", e->parent_id);
	printf("Revision         : %" PRId64 "\n", e->revision);
	if (e->downstream)
		printf("Downstream       : true\n");
	if (e->x509_svid_ttl == 0)
		printf("X509-SVID TTL    : default\n");
	else
		printf("X509-SVID TTL    : %" PRId32 "\n", e->x509_svid_ttl);
	if (e->jwt_svid_ttl == 0)
		printf("JWT-SVID TTL     : default\n");
	else
		printf("JWT-SVID TTL     : %" PRId32 "\n", e->jwt_svid_ttl);
	for (size_t i = 0; i < e->n_selectors; i++)
		printf("Selector         : %s:%s\n", e->selectors[i]->type, e->selectors[i]->value);
	for (size_t i = 0; i < e->n_dns_names; i++)
		printf("DNS name         : %s\n", e->dns_names[i]);
	if (e->node)
		printf("Node             : true\n");
	if (e->admin)
		printf("Admin            : true\n");
	if (e->hint[0] != '\0')
		printf("Hint             : %s\n", e->hint);
	for (size_t i = 0; i < e->n_federates_with; i++)
		printf("FederatesWith    : spiffe://%s\n", e->federates_with[i]);
	printf("\n");
}

/* Sets obj[key] = v, taking v; false when v is NULL (not UTF-8) or out of memory. */
static bool
jset(json_t *obj, const char *key, json_t *v)
{
	return v != NULL && json_object_set_new(obj, key, v) == 0;
}

static json_t *
selectors_json(Lanyard__Agent__V1__Selector **sels, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		json_t *s = json_object();
		if (s == NULL || !jset(s, "type", json_string(sels[i]->type)) ||
		    !jset(s, "value", json_string(sels[i]->value)) || json_array_append_new(arr, s) != 0) {
			json_decref(s);
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* An entry as a JSON object with the proto field names (proto/agent.proto Entry). */
static json_t *
entry_json(const Lanyard__Agent__V1__Entry *e)
{
	json_t *o = json_object(), *dns = json_array(), *fed = json_array();
	bool ok = o != NULL && dns != NULL && fed != NULL;

	for (size_t i = 0; ok && i < e->n_dns_names; i++)
		ok = json_array_append_new(dns, json_string(e->dns_names[i])) == 0;
	for (size_t i = 0; ok && i < e->n_federates_with; i++)
		ok = json_array_append_new(fed, json_string(e->federates_with[i])) == 0;
	ok = ok && jset(o, "entry_id", json_string(e->entry_id)) && jset(o, "spiffe_id", json_string(e->spiffe_id)) &&
	    jset(o, "parent_id", json_string(e->parent_id)) &&
	    jset(o, "selectors", selectors_json(e->selectors, e->n_selectors)) &&
	    jset(o, "x509_svid_ttl", json_integer(e->x509_svid_ttl)) &&
	    jset(o, "jwt_svid_ttl", json_integer(e->jwt_svid_ttl)) && jset(o, "dns_names", json_incref(dns)) &&
	    jset(o, "node", json_boolean(e->node)) && jset(o, "admin", json_boolean(e->admin)) &&
	    jset(o, "downstream", json_boolean(e->downstream)) && jset(o, "hint", json_string(e->hint)) &&
	    jset(o, "federates_with", json_incref(fed)) &&
	    jset(o, "revision", json_integer(e->revision)) && jset(o, "created_at", json_integer(e->created_at));
	json_decref(dns);
	json_decref(fed);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void
agent_time(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%d %H:%M:%S +0000 UTC", &tm) == 0)
		(void)snprintf(out, size, "%s", t == 0 ? "(none)" : "?");
}

/* SPIRE's agent block (cmd/spire-server/cli/agent), plus the ban and the selectors. */
static void
print_agent(const Lanyard__Admin__V1__Agent *a)
{
	char when[64];

	agent_time(a->expires_at, when, sizeof(when));
	printf("SPIFFE ID         : %s\n", a->spiffe_id);
	printf("Attestation type  : %s\n", a->attestation_type);
	printf("Expiration time   : %s\n", when);
	printf("Serial number     : %s\n", a->serial_number);
	printf("Banned            : %s\n", a->banned ? "true" : "false");
	for (size_t i = 0; i < a->n_selectors; i++)
		printf("Selectors         : %s:%s\n", a->selectors[i]->type, a->selectors[i]->value);
	printf("\n");
}

static json_t *
agent_json(const Lanyard__Admin__V1__Agent *a)
{
	json_t *o = json_object();
	if (o == NULL || !jset(o, "spiffe_id", json_string(a->spiffe_id)) ||
	    !jset(o, "attestation_type", json_string(a->attestation_type)) ||
	    !jset(o, "serial_number", json_string(a->serial_number)) ||
	    !jset(o, "expires_at", json_integer(a->expires_at)) || !jset(o, "banned", json_boolean(a->banned)) ||
	    !jset(o, "selectors", selectors_json(a->selectors, a->n_selectors))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Prints and frees `v` (indented JSON); fails when NULL. */
static int
print_json(const char *cmd, json_t *v)
{
	char *s = v != NULL ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(v);
	if (s == NULL)
		return fail(EXIT_RUNTIME, "%s: cannot write JSON (the server sent a string that is not UTF-8?)", cmd);
	printf("%s\n", s);
	free(s);
	return 0;
}

/* ---- entry -------------------------------------------------------------------------------- */

struct entry_args {
	const char *socket;
	const char *entry_id, *spiffe_id, *parent_id, *hint, *output;
	struct ly_flag_list selectors, dns, federates_with;
	int64_t x509_ttl, jwt_ttl;
	bool node, admin, downstream;
};

/* The request entry from the flags, checked as far as the CLI can. */
struct entry_req {
	Lanyard__Agent__V1__Entry m;
	struct ly_selectors_pb sel; /* borrows from parsed */
	struct ly_selector parsed[LY_SELECTORS_MAX];
	size_t n_parsed;
	char parent[LY_SPIFFE_ID_MAX + 1];
	char fed[LY_ENTRY_FEDERATES_WITH_MAX][LY_TRUST_DOMAIN_MAX + 1]; /* bare names */
	char *fed_ptrs[LY_ENTRY_FEDERATES_WITH_MAX];
};

static void
entry_req_cleanup(struct entry_req *r)
{
	ly_selectors_pb_cleanup(&r->sel);
	for (size_t i = 0; i < r->n_parsed; i++)
		ly_selector_cleanup(&r->parsed[i]);
	r->n_parsed = 0;
}

static int
entry_req_build(const char *cmd, struct entry_args *a, bool update, struct entry_req *r)
{
	struct ly_error e;
	struct ly_spiffe_id id;
	int rc;

	lanyard__agent__v1__entry__init(&r->m);
	memset(&r->sel, 0, sizeof(r->sel));
	r->n_parsed = 0;
	if (update && a->entry_id == NULL)
		return fail(EXIT_USAGE, "%s: -entryID is required", cmd);
	if (a->entry_id != NULL && ly_entry_id_check(a->entry_id, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -entryID \"%s\": %s", cmd, a->entry_id, e.msg);
	if (a->spiffe_id == NULL)
		return fail(EXIT_USAGE, "%s: -spiffeID is required", cmd);
	if ((rc = check_id_flag(cmd, "spiffeID", a->spiffe_id, &id)) != 0 ||
	    (rc = check_id_use(cmd, "spiffeID", a->spiffe_id, LY_ID_GRANTED)) != 0)
		return rc;
	if (a->parent_id != NULL) {
		if ((rc = check_id_flag(cmd, "parentID", a->parent_id, NULL)) != 0 ||
		    (rc = check_id_use(cmd, "parentID", a->parent_id, LY_ID_PARENT)) != 0)
			return rc;
		(void)snprintf(r->parent, sizeof(r->parent), "%s", a->parent_id);
	} else if (a->node) {
		/* SPIRE's rule: a node entry's parent is the server itself. */
		(void)snprintf(r->parent, sizeof(r->parent), "spiffe://%s" LY_SERVER_ID_PATH, id.trust_domain);
	} else {
		return fail(EXIT_USAGE, "%s: -parentID is required (or -node)", cmd);
	}
	if (a->selectors.count == 0)
		return fail(EXIT_USAGE, "%s: at least one -selector is required", cmd);
	if (a->selectors.count > LY_SELECTORS_MAX)
		return fail(EXIT_USAGE, "%s: more than %d selectors", cmd, LY_SELECTORS_MAX);
	for (size_t i = 0; i < a->selectors.count; i++) {
		if (ly_selector_parse_str(a->selectors.items[i], &r->parsed[i], &e) != LY_OK)
			return fail(EXIT_USAGE, "%s: -selector: %s", cmd, e.msg);
		r->n_parsed++;
	}
	if (ly_selectors_pb_make(r->parsed, r->n_parsed, &r->sel, &e) != LY_OK)
		return fail(EXIT_RUNTIME, "%s: %s", cmd, e.msg);
	if (a->dns.count > LY_DNS_NAMES_MAX)
		return fail(EXIT_USAGE, "%s: more than %d DNS names", cmd, LY_DNS_NAMES_MAX);
	for (size_t i = 0; i < a->dns.count; i++) {
		if (ly_dns_name_check(a->dns.items[i], &e) != LY_OK)
			return fail(EXIT_USAGE, "%s: -dns \"%s\": %s", cmd, a->dns.items[i], e.msg);
	}
	if (a->hint != NULL && strlen(a->hint) > LY_ENTRY_HINT_MAX)
		return fail(EXIT_USAGE, "%s: -hint: over %d bytes", cmd, LY_ENTRY_HINT_MAX);
	if (a->federates_with.count > LY_ENTRY_FEDERATES_WITH_MAX)
		return fail(EXIT_USAGE, "%s: more than %d -federatesWith", cmd, LY_ENTRY_FEDERATES_WITH_MAX);
	for (size_t i = 0; i < a->federates_with.count; i++) {
		const char *v = a->federates_with.items[i];
		/* SPIRE's form: spiffe://<td>; a bare name is taken too. */
		if (ly_trust_domain_parse(v, true, r->fed[i], &e) != LY_OK)
			return fail(EXIT_USAGE, "%s: -federatesWith \"%s\": %s", cmd, v, e.msg);
		if (strcmp(r->fed[i], id.trust_domain) == 0)
			return fail(EXIT_USAGE, "%s: -federatesWith \"%s\": the entry's own trust domain (only other trust "
			    "domains federate)", cmd, v);
		r->fed_ptrs[i] = r->fed[i];
	}
	r->m.entry_id = unconst(a->entry_id);
	r->m.spiffe_id = unconst(a->spiffe_id);
	r->m.parent_id = r->parent;
	r->m.n_selectors = r->sel.n;
	r->m.selectors = r->sel.ptrs;
	r->m.x509_svid_ttl = (int32_t)a->x509_ttl;
	r->m.jwt_svid_ttl = (int32_t)a->jwt_ttl;
	r->m.n_dns_names = a->dns.count;
	r->m.dns_names = (char **)(uintptr_t)a->dns.items;
	r->m.node = a->node;
	r->m.admin = a->admin;
	r->m.downstream = a->downstream;
	r->m.hint = unconst(a->hint);
	r->m.n_federates_with = a->federates_with.count;
	r->m.federates_with = r->fed_ptrs;
	return 0;
}

/* Prints one entry from a response, as text or JSON. */
static int
print_entry_resp(const char *cmd, const struct ly_buf *resp, bool json)
{
	Lanyard__Agent__V1__Entry *m = lanyard__agent__v1__entry__unpack(NULL, resp->len, resp->data);
	int rc = 0;

	if (m == NULL)
		return fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	if (json)
		rc = print_json(cmd, entry_json(m));
	else
		print_entry(m);
	lanyard__agent__v1__entry__free_unpacked(m, NULL);
	return rc;
}

static int
entry_put(int argc, char **argv, bool update)
{
	const char *cmd = update ? "entry update" : "entry create";
	struct entry_args a = { .socket = LY_SERVER_SOCKET_DEFAULT };
	struct ly_flag flags[] = {
		{ "entryID", LY_FLAG_STRING, &a.entry_id,
		    update ? "the entry to update (required)" : "the new entry's ID (default: a random UUID)", 0, 0, false },
		{ "spiffeID", LY_FLAG_STRING, &a.spiffe_id, "the SPIFFE ID the entry grants (required)", 0, 0, false },
		{ "parentID", LY_FLAG_STRING, &a.parent_id, "the agent or node entry that may hand it out (required "
		    "unless -node)", 0, 0, false },
		{ "selector", LY_FLAG_LIST, &a.selectors, "type:value, e.g. unix:uid:1000 (repeat; at least one)", 0, 0,
		    false },
		{ "x509SVIDTTL", LY_FLAG_INT, &a.x509_ttl, "X.509-SVID TTL in seconds (default: the server's)", 0,
		    INT32_MAX, false },
		{ "jwtSVIDTTL", LY_FLAG_INT, &a.jwt_ttl, "JWT-SVID TTL in seconds (default: the server's)", 0, INT32_MAX,
		    false },
		{ "dns", LY_FLAG_LIST, &a.dns, "a DNS name for the X.509-SVID (repeat)", 0, 0, false },
		{ "node", LY_FLAG_BOOL, &a.node, "a node entry: its selectors are node selectors", 0, 0, false },
		{ "admin", LY_FLAG_BOOL, &a.admin, "the SVID may call the admin API", 0, 0, false },
		{ "downstream", LY_FLAG_BOOL, &a.downstream, "the SVID may sign (downstream server)", 0, 0, false },
		{ "hint", LY_FLAG_STRING, &a.hint, "an operator's hint for workloads with several SVIDs", 0, 0, false },
		{ "federatesWith", LY_FLAG_LIST, &a.federates_with, "spiffe://<td> whose bundle the workloads get (repeat; "
		    "the bundle must exist: bundle set or federation create)", 0, 0, false },
		{ "output", LY_FLAG_STRING, &a.output, "pretty (default) or json", 0, 0, false },
		SOCKET_FLAG(&a.socket),
	};
	struct entry_req *r = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	bool json;
	int rc;

	rc = ly_cli_parse_flags(cmd, update ? "Replaces every field of an entry." : "Creates a registration entry.", flags,
	    NFLAGS(flags), argc, argv);
	if (rc >= 0)
		goto out;
	if ((rc = output_mode(cmd, a.output, &json)) != 0)
		goto out;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		rc = fail(EXIT_RUNTIME, "out of memory");
		goto out;
	}
	if ((rc = entry_req_build(cmd, &a, update, r)) != 0)
		goto out;
	rc = ly_cli_call(a.socket, cmd, update ? METHOD("UpdateEntry") : METHOD("CreateEntry"), &r->m.base, &resp);
	if (rc == 0)
		rc = print_entry_resp(cmd, &resp, json);
out:
	if (r != NULL)
		entry_req_cleanup(r);
	free(r);
	ly_buf_free(&resp);
	ly_flags_cleanup(flags, NFLAGS(flags));
	return rc;
}

static int
entry_create(int argc, char **argv)
{
	return entry_put(argc, argv, false);
}

static int
entry_update(int argc, char **argv)
{
	return entry_put(argc, argv, true);
}

static int
entry_delete(int argc, char **argv)
{
	const char *cmd = "entry delete";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *entry_id = NULL;
	struct ly_flag flags[] = {
		{ "entryID", LY_FLAG_STRING, &entry_id, "the entry to delete (required)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__EntryID req;
	struct ly_buf resp = LY_BUF_INIT;
	struct ly_error e;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Deletes a registration entry.", flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if (entry_id == NULL)
		return fail(EXIT_USAGE, "%s: -entryID is required", cmd);
	if (ly_entry_id_check(entry_id, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -entryID \"%s\": %s", cmd, entry_id, e.msg);
	lanyard__admin__v1__entry_id__init(&req);
	req.entry_id = unconst(entry_id);
	if ((rc = ly_cli_call(socket, cmd, METHOD("DeleteEntry"), &req.base, &resp)) != 0)
		return rc;
	printf("Deleted entry %s\n", entry_id);
	ly_buf_free(&resp);
	return 0;
}

static int
entry_show(int argc, char **argv)
{
	const char *cmd = "entry show";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *entry_id = NULL, *spiffe_id = NULL, *parent_id = NULL,
		   *output = NULL;
	struct ly_flag_list selectors = { NULL, 0 };
	struct ly_flag flags[] = {
		{ "entryID", LY_FLAG_STRING, &entry_id, "only this entry", 0, 0, false },
		{ "spiffeID", LY_FLAG_STRING, &spiffe_id, "only entries with this SPIFFE ID", 0, 0, false },
		{ "parentID", LY_FLAG_STRING, &parent_id, "only entries with this parent ID", 0, 0, false },
		{ "selector", LY_FLAG_LIST, &selectors, "only entries with this selector (repeat: with all of them)", 0, 0,
		    false },
		{ "output", LY_FLAG_STRING, &output, "pretty (default) or json", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__EntryFilter req;
	Lanyard__Admin__V1__EntryList *list = NULL;
	struct ly_selectors_pb sel = { NULL, NULL, 0 };
	struct ly_selector *parsed = NULL;
	size_t n_parsed = 0;
	struct ly_buf resp = LY_BUF_INIT;
	struct ly_error e;
	bool json;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Shows registration entries (all, or those that match every filter given).",
	    flags, NFLAGS(flags), argc, argv)) >= 0)
		goto out;
	if ((rc = output_mode(cmd, output, &json)) != 0)
		goto out;
	if (entry_id != NULL && ly_entry_id_check(entry_id, &e) != LY_OK) {
		rc = fail(EXIT_USAGE, "%s: -entryID \"%s\": %s", cmd, entry_id, e.msg);
		goto out;
	}
	if ((spiffe_id != NULL && (rc = check_id_flag(cmd, "spiffeID", spiffe_id, NULL)) != 0) ||
	    (parent_id != NULL && (rc = check_id_flag(cmd, "parentID", parent_id, NULL)) != 0))
		goto out;
	if (selectors.count > LY_SELECTORS_MAX) {
		rc = fail(EXIT_USAGE, "%s: more than %d selectors", cmd, LY_SELECTORS_MAX);
		goto out;
	}
	if (selectors.count > 0 && (parsed = calloc(selectors.count, sizeof(*parsed))) == NULL) {
		rc = fail(EXIT_RUNTIME, "out of memory");
		goto out;
	}
	for (; n_parsed < selectors.count; n_parsed++) {
		if (ly_selector_parse_str(selectors.items[n_parsed], &parsed[n_parsed], &e) != LY_OK) {
			rc = fail(EXIT_USAGE, "%s: -selector: %s", cmd, e.msg);
			goto out;
		}
	}
	if (ly_selectors_pb_make(parsed, n_parsed, &sel, &e) != LY_OK) {
		rc = fail(EXIT_RUNTIME, "%s: %s", cmd, e.msg);
		goto out;
	}
	lanyard__admin__v1__entry_filter__init(&req);
	req.entry_id = unconst(entry_id);
	req.spiffe_id = unconst(spiffe_id);
	req.parent_id = unconst(parent_id);
	req.n_selectors = sel.n;
	req.selectors = sel.ptrs;
	if ((rc = ly_cli_call(socket, cmd, METHOD("ListEntries"), &req.base, &resp)) != 0)
		goto out;
	list = lanyard__admin__v1__entry_list__unpack(NULL, resp.len, resp.data);
	if (list == NULL) {
		rc = fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
		goto out;
	}
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; arr != NULL && i < list->n_entries; i++) {
			json_t *o = entry_json(list->entries[i]);
			if (o == NULL || json_array_append_new(arr, o) != 0) {
				json_decref(arr);
				arr = NULL;
			}
		}
		rc = print_json(cmd, arr);
		goto out;
	}
	printf("Found %zu %s\n\n", list->n_entries, list->n_entries == 1 ? "entry" : "entries");
	for (size_t i = 0; i < list->n_entries; i++)
		print_entry(list->entries[i]);
	rc = 0;
out:
	if (list != NULL)
		lanyard__admin__v1__entry_list__free_unpacked(list, NULL);
	ly_selectors_free(parsed, n_parsed);
	ly_selectors_pb_cleanup(&sel);
	ly_buf_free(&resp);
	ly_flags_cleanup(flags, NFLAGS(flags));
	return rc;
}

/* ---- token ------------------------------------------------------------------------------------ */

static int
token_generate(int argc, char **argv)
{
	const char *cmd = "token generate";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *spiffe_id = NULL;
	int64_t ttl = 0;
	struct ly_flag flags[] = {
		{ "spiffeID", LY_FLAG_STRING, &spiffe_id,
		    "the agent's SPIFFE ID (default spiffe://TD/lanyard/agent/join_token/TOKEN)", 0, 0, false },
		{ "ttl", LY_FLAG_INT, &ttl, "seconds the token is valid (default 600)", 1, LY_TOKEN_TTL_MAX, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__TokenRequest req;
	Lanyard__Admin__V1__Token *tok = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Makes a single-use join token for one agent.", flags, NFLAGS(flags), argc,
	    argv)) >= 0)
		return rc;
	if (spiffe_id != NULL && ((rc = check_id_flag(cmd, "spiffeID", spiffe_id, NULL)) != 0 ||
	    (rc = check_id_use(cmd, "spiffeID", spiffe_id, LY_ID_JOIN_TOKEN)) != 0))
		return rc;
	lanyard__admin__v1__token_request__init(&req);
	req.spiffe_id = unconst(spiffe_id);
	req.ttl = (int32_t)ttl;
	if ((rc = ly_cli_call(socket, cmd, METHOD("GenerateToken"), &req.base, &resp)) != 0)
		return rc;
	tok = lanyard__admin__v1__token__unpack(NULL, resp.len, resp.data);
	if (tok == NULL || tok->token[0] == '\0') {
		rc = fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	} else {
		printf("Token: %s\n", tok->token);
		fflush(stdout);
		OPENSSL_cleanse(tok->token, strlen(tok->token));
	}
	if (tok != NULL)
		lanyard__admin__v1__token__free_unpacked(tok, NULL);
	ly_buf_free_secret(&resp);
	return rc;
}

/* ---- bundle ------------------------------------------------------------------------------------- */

static int
bundle_show(int argc, char **argv)
{
	const char *cmd = "bundle show";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *format = "pem";
	struct ly_flag flags[] = {
		{ "format", LY_FLAG_STRING, &format, "pem (default) or spiffe (the SPIFFE bundle, a JWKS)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Agent__V1__GetBundleRequest req;
	Lanyard__Agent__V1__Bundle *m = NULL;
	struct ly_bundle *b = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	struct ly_error e;
	char *text = NULL;
	bool spiffe;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Shows the trust bundle of the server's trust domain.", flags, NFLAGS(flags), argc,
	    argv)) >= 0)
		return rc;
	if (strcmp(format, "pem") == 0)
		spiffe = false;
	else if (strcmp(format, "spiffe") == 0)
		spiffe = true;
	else
		return fail(EXIT_USAGE, "%s: -format \"%s\": must be pem or spiffe", cmd, format);
	lanyard__agent__v1__get_bundle_request__init(&req);
	if ((rc = ly_cli_call(socket, cmd, METHOD("GetBundle"), &req.base, &resp)) != 0)
		return rc;
	m = lanyard__agent__v1__bundle__unpack(NULL, resp.len, resp.data);
	if (m == NULL) {
		rc = fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
		goto out;
	}
	if (ly_cli_bundle_from_pb(m, &b, &e) != LY_OK ||
	    (spiffe ? ly_bundle_write_jwks(b, LY_JWKS_PRETTY, &text, &e) : ly_bundle_write_pem(b, &text, &e)) != LY_OK) {
		rc = fail(EXIT_RUNTIME, "%s: %s", cmd, e.msg);
		goto out;
	}
	fputs(text, stdout);
	if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
		fputc('\n', stdout);
	rc = 0;
out:
	free(text);
	ly_bundle_free(b);
	if (m != NULL)
		lanyard__agent__v1__bundle__free_unpacked(m, NULL);
	ly_buf_free(&resp);
	return rc;
}

/* ---- agent -------------------------------------------------------------------------------------------- */

static int
list_agents(const char *cmd, const char *socket, Lanyard__Admin__V1__AgentList **out)
{
	Lanyard__Admin__V1__ListAgentsRequest req;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	*out = NULL;
	lanyard__admin__v1__list_agents_request__init(&req);
	if ((rc = ly_cli_call(socket, cmd, METHOD("ListAgents"), &req.base, &resp)) != 0)
		return rc;
	*out = lanyard__admin__v1__agent_list__unpack(NULL, resp.len, resp.data);
	ly_buf_free(&resp);
	if (*out == NULL)
		return fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	return 0;
}

static int
agent_list(int argc, char **argv)
{
	const char *cmd = "agent list";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *output = NULL;
	struct ly_flag flags[] = {
		{ "output", LY_FLAG_STRING, &output, "pretty (default) or json", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__AgentList *list = NULL;
	bool json;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Lists attested agents.", flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if ((rc = output_mode(cmd, output, &json)) != 0 || (rc = list_agents(cmd, socket, &list)) != 0)
		return rc;
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; arr != NULL && i < list->n_agents; i++) {
			json_t *o = agent_json(list->agents[i]);
			if (o == NULL || json_array_append_new(arr, o) != 0) {
				json_decref(arr);
				arr = NULL;
			}
		}
		rc = print_json(cmd, arr);
	} else if (list->n_agents == 0) {
		printf("No attested agents found\n");
	} else {
		printf("Found %zu attested %s:\n\n", list->n_agents, list->n_agents == 1 ? "agent" : "agents");
		for (size_t i = 0; i < list->n_agents; i++)
			print_agent(list->agents[i]);
	}
	lanyard__admin__v1__agent_list__free_unpacked(list, NULL);
	return rc;
}

static int
agent_show(int argc, char **argv)
{
	const char *cmd = "agent show";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *spiffe_id = NULL, *output = NULL;
	struct ly_flag flags[] = {
		{ "spiffeID", LY_FLAG_STRING, &spiffe_id, "the agent's SPIFFE ID (required)", 0, 0, false },
		{ "output", LY_FLAG_STRING, &output, "pretty (default) or json", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__AgentList *list = NULL;
	const Lanyard__Admin__V1__Agent *found = NULL;
	bool json;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Shows one attested agent.", flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if (spiffe_id == NULL)
		return fail(EXIT_USAGE, "%s: -spiffeID is required", cmd);
	if ((rc = check_id_flag(cmd, "spiffeID", spiffe_id, NULL)) != 0 || (rc = output_mode(cmd, output, &json)) != 0 ||
	    (rc = list_agents(cmd, socket, &list)) != 0)
		return rc;
	for (size_t i = 0; i < list->n_agents && found == NULL; i++) {
		if (strcmp(list->agents[i]->spiffe_id, spiffe_id) == 0)
			found = list->agents[i];
	}
	if (found == NULL) {
		rc = fail(EXIT_RUNTIME, "%s: no attested agent with SPIFFE ID %s (NOT_FOUND)", cmd, spiffe_id);
	} else if (json) {
		rc = print_json(cmd, agent_json(found));
	} else {
		printf("Found an attested agent given its SPIFFE ID\n\n");
		print_agent(found);
	}
	lanyard__admin__v1__agent_list__free_unpacked(list, NULL);
	return rc;
}

static int
agent_remove(int argc, char **argv, bool ban)
{
	const char *cmd = ban ? "agent ban" : "agent evict";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *spiffe_id = NULL;
	struct ly_flag flags[] = {
		{ "spiffeID", LY_FLAG_STRING, &spiffe_id, "the agent's SPIFFE ID (required)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__AgentID req;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd,
	    ban ? "Bans an agent: it is refused until the ban is lifted." : "Evicts an agent: it must attest again.",
	    flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if (spiffe_id == NULL)
		return fail(EXIT_USAGE, "%s: -spiffeID is required", cmd);
	if ((rc = check_id_flag(cmd, "spiffeID", spiffe_id, NULL)) != 0)
		return rc;
	lanyard__admin__v1__agent_id__init(&req);
	req.spiffe_id = unconst(spiffe_id);
	if ((rc = ly_cli_call(socket, cmd, ban ? METHOD("BanAgent") : METHOD("EvictAgent"), &req.base, &resp)) != 0)
		return rc;
	ly_buf_free(&resp);
	printf(ban ? "Agent banned successfully\n" : "Agent evicted successfully\n");
	return 0;
}

static int
agent_evict(int argc, char **argv)
{
	return agent_remove(argc, argv, false);
}

static int
agent_ban(int argc, char **argv)
{
	return agent_remove(argc, argv, true);
}

/* ---- healthcheck ------------------------------------------------------------------------------------------ */

static int
healthcheck(int argc, char **argv)
{
	const char *cmd = "healthcheck";
	const char *socket = LY_SERVER_SOCKET_DEFAULT;
	bool verbose = false;
	struct ly_flag flags[] = {
		{ "verbose", LY_FLAG_BOOL, &verbose, "say what is checked", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	Lanyard__Admin__V1__HealthRequest req;
	Lanyard__Admin__V1__HealthResponse *h = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Checks that the server is up and serving (exit 0) or not (exit 1).", flags,
	    NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if (verbose)
		printf("Checking server health at %s...\n", socket);
	lanyard__admin__v1__health_request__init(&req);
	if ((rc = ly_cli_call(socket, cmd, METHOD("Health"), &req.base, &resp)) != 0)
		return rc;
	h = lanyard__admin__v1__health_response__unpack(NULL, resp.len, resp.data);
	ly_buf_free(&resp);
	if (h == NULL)
		return fail(EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	if (h->serving) {
		printf("Server is healthy.\n");
		rc = 0;
	} else {
		rc = fail(EXIT_RUNTIME, "server is unhealthy: %s", h->detail[0] != '\0' ? h->detail : "not serving");
	}
	lanyard__admin__v1__health_response__free_unpacked(h, NULL);
	return rc;
}

/* ---- dispatch ---------------------------------------------------------------------------------------------------- */

struct command {
	const char *verb, *sub;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
};

static const struct command commands[] = {
	{ "entry", "create", entry_create, "create a registration entry" },
	{ "entry", "show", entry_show, "show registration entries" },
	{ "entry", "update", entry_update, "replace a registration entry" },
	{ "entry", "delete", entry_delete, "delete a registration entry" },
	{ "token", "generate", token_generate, "make a single-use join token" },
	{ "bundle", "show", bundle_show, "show the trust bundle (pem or spiffe)" },
	{ "bundle", "set", ly_cli_bundle_set, "set another trust domain's bundle (federation)" },
	{ "bundle", "list", ly_cli_bundle_list, "list federated bundles" },
	{ "bundle", "delete", ly_cli_bundle_delete, "delete a federated bundle" },
	{ "bundle", "count", ly_cli_bundle_count, "count federated bundles" },
	{ "federation", "create", ly_cli_federation_create, "create a federation relationship" },
	{ "federation", "update", ly_cli_federation_update, "replace a federation relationship" },
	{ "federation", "list", ly_cli_federation_list, "list federation relationships" },
	{ "federation", "show", ly_cli_federation_show, "show one federation relationship" },
	{ "federation", "delete", ly_cli_federation_delete, "delete a federation relationship" },
	{ "federation", "refresh", ly_cli_federation_refresh, "fetch a relationship's bundle now" },
	{ "agent", "list", agent_list, "list attested agents" },
	{ "agent", "show", agent_show, "show one attested agent" },
	{ "agent", "evict", agent_evict, "make an agent attest again" },
	{ "agent", "ban", agent_ban, "refuse an agent" },
	{ "audit", "list", ly_cli_audit_list, "list the shared audit trail (every server's admin changes)" },
	{ "healthcheck", NULL, healthcheck, "exit 0 when the server is healthy" },
};

void
ly_cli_usage(void)
{
	printf("Usage: lanyard-server <command> [flags]   (-h after a command: its flags)\n\nCommands:\n");
	printf("  %-22s %s\n", "run", "run the server");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char name[64];
		(void)snprintf(name, sizeof(name), "%s%s%s", commands[i].verb, commands[i].sub != NULL ? " " : "",
		    commands[i].sub != NULL ? commands[i].sub : "");
		printf("  %-22s %s\n", name, commands[i].synopsis);
	}
}

int
ly_cli_main(int argc, char **argv)
{
	bool verb_known = false;

	if (argc < 1)
		return fail(EXIT_USAGE, "no command given (see lanyard-server -h)");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *c = &commands[i];
		if (strcmp(argv[0], c->verb) != 0)
			continue;
		verb_known = true;
		if (c->sub == NULL)
			return c->fn(argc - 1, argv + 1);
		if (argc >= 2 && strcmp(argv[1], c->sub) == 0)
			return c->fn(argc - 2, argv + 2);
	}
	if (!verb_known)
		return fail(EXIT_USAGE, "unknown command \"%s\" (see lanyard-server -h)", argv[0]);
	if (argc < 2)
		return fail(EXIT_USAGE, "%s: a sub-command is required (see lanyard-server -h)", argv[0]);
	return fail(EXIT_USAGE, "%s: unknown sub-command \"%s\" (see lanyard-server -h)", argv[0], argv[1]);
}
