/*
 * cli_fed.c: the federation verbs (SPEC §9, cli_internal.h) with SPIRE's
 * names and single-dash flags: `bundle set|list|delete|count` for other
 * trust domains' bundles, `federation create|update|list|show|delete|
 * refresh` for relationships. Clients of the Admin service (admin_api_fed.c).
 *
 * The CLI checks what it can judge alone (flags, trust domain names,
 * formats, modes, profiles, the URL's scheme); the server checks
 * everything again, and only it parses the bundle itself, so one parser
 * decides (a malformed bundle comes back as a refusal, exit 1).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/caps.h"
#include "lib/der.h"
#include "lib/spiffeid.h"
#include "server/cli_internal.h"
#include "server/datastore.h"
#include "server/server.h"

#define SOCKET_FLAG(dst) \
	{ "socketPath", LY_FLAG_STRING, (dst), "admin socket of the server (default " LY_SERVER_SOCKET_DEFAULT ")", \
	    0, 0, false }
#define NFLAGS(f) (sizeof(f) / sizeof((f)[0]))
/* A bundle file: what fits in one admin request, with room for the rest of it. */
#define BUNDLE_FILE_MAX (LY_ADMIN_REQUEST_MAX - 4096)

static char empty_str[] = "";

static char *
unconst(const char *s)
{
	return s != NULL ? (char *)(uintptr_t)s : empty_str;
}

/* A trust domain flag: "spiffe://td" (SPIRE's form) or "td", into its bare name. */
static int
td_flag(const char *cmd, const char *flag, const char *value, char *out)
{
	struct ly_error e;

	if (value == NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -%s is required", cmd, flag);
	if (ly_trust_domain_parse(value, true, out, &e) != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -%s \"%s\": %s", cmd, flag, value, e.msg);
	return 0;
}

static int
format_flag(const char *cmd, const char *flag, const char *value, bool *spiffe)
{
	if (value == NULL || strcmp(value, "pem") == 0)
		*spiffe = false;
	else if (strcmp(value, "spiffe") == 0)
		*spiffe = true;
	else
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -%s \"%s\": must be pem or spiffe", cmd, flag, value);
	return 0;
}

/* Reads standard input whole, at most BUNDLE_FILE_MAX bytes. */
static int
read_stdin(const char *cmd, struct ly_buf *out)
{
	size_t cap = 64 * 1024, n = 0;
	uint8_t *data = malloc(cap);

	if (data == NULL)
		return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: out of memory", cmd);
	for (;;) {
		if (n == cap) {
			if (cap >= BUNDLE_FILE_MAX) {
				free(data);
				return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the bundle on standard input is over %d bytes",
				    cmd, BUNDLE_FILE_MAX);
			}
			size_t ncap = cap * 2 > BUNDLE_FILE_MAX ? BUNDLE_FILE_MAX : cap * 2;
			uint8_t *grown = realloc(data, ncap);
			if (grown == NULL) {
				free(data);
				return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: out of memory", cmd);
			}
			data = grown;
			cap = ncap;
		}
		ssize_t r = read(STDIN_FILENO, data + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int why = errno;
			free(data);
			return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: cannot read standard input: %s", cmd, strerror(why));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	struct ly_error e;
	ly_status st = ly_buf_set(out, data, n, &e);
	free(data);
	if (st != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: %s", cmd, e.msg);
	return 0;
}

/* The bundle from -path FILE (or standard input), not empty, within the cap. */
static int
read_bundle(const char *cmd, const char *flag, const char *path, struct ly_buf *out)
{
	struct ly_error e;
	int rc;

	if (path != NULL) {
		if (ly_pem_read_file(path, out, &e) != LY_OK)
			return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: -%s: %s", cmd, flag, e.msg);
	} else if ((rc = read_stdin(cmd, out)) != 0) {
		return rc;
	}
	if (out->len == 0)
		return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the bundle is empty", cmd);
	if (out->len > BUNDLE_FILE_MAX)
		return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the bundle is over %d bytes", cmd, BUNDLE_FILE_MAX);
	return 0;
}

/* Prints a Bundle message as PEM or as the SPIFFE bundle (with spiffe_sequence and spiffe_refresh_hint). */
static int
print_bundle(const char *cmd, const Lanyard__Agent__V1__Bundle *m, bool spiffe)
{
	struct ly_bundle *b = NULL;
	struct ly_error e;
	char *text = NULL;
	int rc = 0;

	if (ly_cli_bundle_from_pb(m, &b, &e) != LY_OK ||
	    (spiffe ? ly_bundle_write_jwks(b, LY_JWKS_PRETTY, &text, &e) : ly_bundle_write_pem(b, &text, &e)) != LY_OK) {
		rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: %s", cmd, e.msg);
	} else {
		fputs(text, stdout);
		if (text[0] != '\0' && text[strlen(text) - 1] != '\n')
			fputc('\n', stdout);
	}
	free(text);
	ly_bundle_free(b);
	return rc;
}

/* ---- bundle set|list|delete|count ---- */

int
ly_cli_bundle_set(int argc, char **argv)
{
	const char *cmd = "bundle set";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *id = NULL, *path = NULL, *format = "pem";
	struct ly_flag flags[] = {
		{ "id", LY_FLAG_STRING, &id, "the trust domain, spiffe://<td> (required)", 0, 0, false },
		{ "path", LY_FLAG_STRING, &path, "the bundle file (default: standard input)", 0, 0, false },
		{ "format", LY_FLAG_STRING, &format, "pem (default) or spiffe (the SPIFFE bundle, a JWKS)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	char td[LY_TRUST_DOMAIN_MAX + 1];
	Lanyard__Admin__V1__SetFederatedBundleRequest req;
	Lanyard__Admin__V1__BundleData data;
	struct ly_buf file = LY_BUF_INIT, resp = LY_BUF_INIT;
	bool spiffe;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Sets the bundle of another trust domain (federation).", flags, NFLAGS(flags),
	    argc, argv)) >= 0)
		return rc;
	if ((rc = td_flag(cmd, "id", id, td)) != 0 || (rc = format_flag(cmd, "format", format, &spiffe)) != 0)
		return rc;
	if ((rc = read_bundle(cmd, "path", path, &file)) != 0)
		goto out;
	lanyard__admin__v1__set_federated_bundle_request__init(&req);
	lanyard__admin__v1__bundle_data__init(&data);
	data.format = unconst(spiffe ? "spiffe" : "pem");
	data.data.data = file.data;
	data.data.len = file.len;
	req.trust_domain = td;
	req.bundle = &data;
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("SetFederatedBundle"), &req.base, &resp)) != 0)
		goto out;
	printf("Bundle set for spiffe://%s\n", td);
out:
	ly_buf_free(&file);
	ly_buf_free(&resp);
	return rc;
}

int
ly_cli_bundle_list(int argc, char **argv)
{
	const char *cmd = "bundle list";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *id = NULL, *format = "pem";
	struct ly_flag flags[] = {
		{ "id", LY_FLAG_STRING, &id, "only this trust domain, spiffe://<td>", 0, 0, false },
		{ "format", LY_FLAG_STRING, &format, "pem (default) or spiffe (the SPIFFE bundle, a JWKS)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	char td[LY_TRUST_DOMAIN_MAX + 1] = "";
	Lanyard__Admin__V1__ListFederatedBundlesRequest req;
	Lanyard__Admin__V1__FederatedBundleList *m = NULL;
	struct ly_buf resp = LY_BUF_INIT;
	bool spiffe;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Lists the bundles of other trust domains (federation).", flags, NFLAGS(flags),
	    argc, argv)) >= 0)
		return rc;
	if ((id != NULL && (rc = td_flag(cmd, "id", id, td)) != 0) ||
	    (rc = format_flag(cmd, "format", format, &spiffe)) != 0)
		return rc;
	lanyard__admin__v1__list_federated_bundles_request__init(&req);
	req.trust_domain = td;
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("ListFederatedBundles"), &req.base, &resp)) != 0)
		return rc;
	m = lanyard__admin__v1__federated_bundle_list__unpack(NULL, resp.len, resp.data);
	if (m == NULL) {
		rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
		goto out;
	}
	for (size_t i = 0; rc == 0 && i < m->n_bundles; i++) {
		/* SPIRE's layout: a banner per trust domain, unless one was asked for. */
		if (id == NULL)
			printf("****************************************\n* spiffe://%s\n****************************************\n",
			    m->bundles[i]->trust_domain);
		rc = print_bundle(cmd, m->bundles[i], spiffe);
		if (id == NULL && i + 1 < m->n_bundles)
			printf("\n");
	}
out:
	if (m != NULL)
		lanyard__admin__v1__federated_bundle_list__free_unpacked(m, NULL);
	ly_buf_free(&resp);
	return rc;
}

int
ly_cli_bundle_delete(int argc, char **argv)
{
	const char *cmd = "bundle delete";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *id = NULL, *mode = "restrict";
	struct ly_flag flags[] = {
		{ "id", LY_FLAG_STRING, &id, "the trust domain, spiffe://<td> (required)", 0, 0, false },
		{ "mode", LY_FLAG_STRING, &mode, "restrict (default: refused while entries federate with it), dissociate "
		    "(those entries lose it) or delete (those entries are deleted)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	char td[LY_TRUST_DOMAIN_MAX + 1];
	Lanyard__Admin__V1__DeleteFederatedBundleRequest req;
	struct ly_buf resp = LY_BUF_INIT;
	enum ly_fed_delete_mode m;
	struct ly_error e;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Deletes the bundle of another trust domain.", flags, NFLAGS(flags), argc,
	    argv)) >= 0)
		return rc;
	if ((rc = td_flag(cmd, "id", id, td)) != 0)
		return rc;
	if (ly_fed_delete_mode_parse(mode, &m, &e) != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -mode \"%s\": must be restrict, dissociate or delete", cmd, mode);
	lanyard__admin__v1__delete_federated_bundle_request__init(&req);
	req.trust_domain = td;
	req.mode = unconst(ly_fed_delete_mode_name(m));
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("DeleteFederatedBundle"), &req.base, &resp)) != 0)
		return rc;
	printf("Deleted the bundle of spiffe://%s (mode %s)\n", td, ly_fed_delete_mode_name(m));
	ly_buf_free(&resp);
	return 0;
}

int
ly_cli_bundle_count(int argc, char **argv)
{
	const char *cmd = "bundle count";
	const char *socket = LY_SERVER_SOCKET_DEFAULT;
	struct ly_flag flags[] = { SOCKET_FLAG(&socket) };
	Lanyard__Admin__V1__CountFederatedBundlesRequest req;
	Lanyard__Admin__V1__Count *m;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Counts the bundles of other trust domains.", flags, NFLAGS(flags), argc,
	    argv)) >= 0)
		return rc;
	lanyard__admin__v1__count_federated_bundles_request__init(&req);
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("CountFederatedBundles"), &req.base, &resp)) != 0)
		return rc;
	m = lanyard__admin__v1__count__unpack(NULL, resp.len, resp.data);
	if (m == NULL) {
		rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	} else {
		printf("%" PRIu64 " federated bundle%s\n", m->count, m->count == 1 ? "" : "s");
		lanyard__admin__v1__count__free_unpacked(m, NULL);
	}
	ly_buf_free(&resp);
	return rc;
}

/* ---- federation create|update|list|show|delete|refresh ---- */

/* SPIRE's relationship block (cmd/spire-server/cli/federation). */
static void
print_rel(const Lanyard__Admin__V1__FederationRelationship *r)
{
	printf("Trust domain              : %s\n", r->trust_domain);
	printf("Bundle endpoint URL       : %s\n", r->bundle_endpoint_url);
	printf("Bundle endpoint profile   : %s\n", r->bundle_endpoint_profile);
	if (r->endpoint_spiffe_id[0] != '\0')
		printf("Endpoint SPIFFE ID        : %s\n", r->endpoint_spiffe_id);
	if (r->bundle != NULL)
		printf("Trust domain bundle       : sequence %" PRIu64 ", %zu X.509 authorit%s, %zu JWT authorit%s\n",
		    r->bundle->sequence, r->bundle->n_x509_authorities, r->bundle->n_x509_authorities == 1 ? "y" : "ies",
		    r->bundle->n_jwt_authorities, r->bundle->n_jwt_authorities == 1 ? "y" : "ies");
	printf("\n");
}

static int
print_rel_resp(const char *cmd, const struct ly_buf *resp)
{
	Lanyard__Admin__V1__FederationRelationship *m =
	    lanyard__admin__v1__federation_relationship__unpack(NULL, resp->len, resp->data);
	if (m == NULL)
		return ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	print_rel(m);
	lanyard__admin__v1__federation_relationship__free_unpacked(m, NULL);
	return 0;
}

static int
federation_put(int argc, char **argv, bool update)
{
	const char *cmd = update ? "federation update" : "federation create";
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *td_s = NULL, *url = NULL, *profile = NULL, *endpoint_id = NULL;
	const char *bundle_path = NULL, *bundle_format = NULL;
	struct ly_flag flags[] = {
		{ "trustDomain", LY_FLAG_STRING, &td_s, "the other trust domain (required)", 0, 0, false },
		{ "bundleEndpointURL", LY_FLAG_STRING, &url, "https://... where its bundle is served (required)", 0, 0,
		    false },
		{ "bundleEndpointProfile", LY_FLAG_STRING, &profile, "https_spiffe or https_web (required)", 0, 0, false },
		{ "endpointSpiffeID", LY_FLAG_STRING, &endpoint_id, "https_spiffe: the SPIFFE ID of the endpoint's server",
		    0, 0, false },
		{ "trustDomainBundlePath", LY_FLAG_STRING, &bundle_path, "a bundle to start from (https_spiffe's bootstrap)",
		    0, 0, false },
		{ "trustDomainBundleFormat", LY_FLAG_STRING, &bundle_format, "pem (default) or spiffe", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	char td[LY_TRUST_DOMAIN_MAX + 1];
	Lanyard__Admin__V1__FederationRelationship req;
	Lanyard__Admin__V1__BundleData data;
	struct ly_buf file = LY_BUF_INIT, resp = LY_BUF_INIT;
	struct ly_spiffe_id sid;
	enum ly_fed_profile p;
	struct ly_error e;
	bool spiffe;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, update ? "Replaces a federation relationship." :
	    "Creates a federation relationship with another trust domain.", flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if ((rc = td_flag(cmd, "trustDomain", td_s, td)) != 0 ||
	    (rc = format_flag(cmd, "trustDomainBundleFormat", bundle_format, &spiffe)) != 0)
		return rc;
	if (url == NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -bundleEndpointURL is required", cmd);
	if (strncmp(url, "https://", 8) != 0)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -bundleEndpointURL \"%s\": must start with https://", cmd, url);
	if (profile == NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -bundleEndpointProfile is required (https_spiffe or https_web)",
		    cmd);
	if (ly_fed_profile_parse(profile, &p, &e) != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -bundleEndpointProfile \"%s\": must be https_spiffe or https_web",
		    cmd, profile);
	if (p == LY_FED_PROFILE_HTTPS_SPIFFE && endpoint_id == NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -endpointSpiffeID is required with https_spiffe", cmd);
	if (p == LY_FED_PROFILE_HTTPS_WEB && endpoint_id != NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -endpointSpiffeID is for https_spiffe only", cmd);
	if (endpoint_id != NULL && ly_spiffe_id_parse_str(endpoint_id, &sid, &e) != LY_OK)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -endpointSpiffeID \"%s\": %s", cmd, endpoint_id, e.msg);
	if (bundle_format != NULL && bundle_path == NULL)
		return ly_cli_fail(LY_CLI_EXIT_USAGE, "%s: -trustDomainBundleFormat needs -trustDomainBundlePath", cmd);
	lanyard__admin__v1__federation_relationship__init(&req);
	lanyard__admin__v1__bundle_data__init(&data);
	if (bundle_path != NULL) {
		if ((rc = read_bundle(cmd, "trustDomainBundlePath", bundle_path, &file)) != 0)
			goto out;
		data.format = unconst(spiffe ? "spiffe" : "pem");
		data.data.data = file.data;
		data.data.len = file.len;
		req.trust_domain_bundle = &data;
	}
	req.trust_domain = td;
	req.bundle_endpoint_url = unconst(url);
	req.bundle_endpoint_profile = unconst(ly_fed_profile_name(p));
	req.endpoint_spiffe_id = unconst(endpoint_id);
	rc = ly_cli_call(socket, cmd,
	    update ? LY_CLI_METHOD("UpdateFederationRelationship") : LY_CLI_METHOD("CreateFederationRelationship"),
	    &req.base, &resp);
	if (rc == 0)
		rc = print_rel_resp(cmd, &resp);
out:
	ly_buf_free(&file);
	ly_buf_free(&resp);
	return rc;
}

int
ly_cli_federation_create(int argc, char **argv)
{
	return federation_put(argc, argv, false);
}

int
ly_cli_federation_update(int argc, char **argv)
{
	return federation_put(argc, argv, true);
}

int
ly_cli_federation_list(int argc, char **argv)
{
	const char *cmd = "federation list";
	const char *socket = LY_SERVER_SOCKET_DEFAULT;
	struct ly_flag flags[] = { SOCKET_FLAG(&socket) };
	Lanyard__Admin__V1__ListFederationRelationshipsRequest req;
	Lanyard__Admin__V1__FederationRelationshipList *m;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, "Lists federation relationships.", flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	lanyard__admin__v1__list_federation_relationships_request__init(&req);
	if ((rc = ly_cli_call(socket, cmd, LY_CLI_METHOD("ListFederationRelationships"), &req.base, &resp)) != 0)
		return rc;
	m = lanyard__admin__v1__federation_relationship_list__unpack(NULL, resp.len, resp.data);
	if (m == NULL) {
		rc = ly_cli_fail(LY_CLI_EXIT_RUNTIME, "%s: the server's answer is malformed", cmd);
	} else {
		printf("Found %zu federation relationship%s\n\n", m->n_relationships, m->n_relationships == 1 ? "" : "s");
		for (size_t i = 0; i < m->n_relationships; i++)
			print_rel(m->relationships[i]);
		lanyard__admin__v1__federation_relationship_list__free_unpacked(m, NULL);
	}
	ly_buf_free(&resp);
	return rc;
}

/* show, delete and refresh: one trust domain flag, one call. */
static int
federation_one(int argc, char **argv, const char *cmd, const char *flag, const char *synopsis, const char *method)
{
	const char *socket = LY_SERVER_SOCKET_DEFAULT, *td_s = NULL;
	struct ly_flag flags[] = {
		{ flag, LY_FLAG_STRING, &td_s, "the other trust domain (required)", 0, 0, false },
		SOCKET_FLAG(&socket),
	};
	char td[LY_TRUST_DOMAIN_MAX + 1];
	Lanyard__Admin__V1__TrustDomain req;
	struct ly_buf resp = LY_BUF_INIT;
	int rc;

	if ((rc = ly_cli_parse_flags(cmd, synopsis, flags, NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if ((rc = td_flag(cmd, flag, td_s, td)) != 0)
		return rc;
	lanyard__admin__v1__trust_domain__init(&req);
	req.trust_domain = td;
	if ((rc = ly_cli_call(socket, cmd, method, &req.base, &resp)) != 0)
		return rc;
	if (strcmp(method, LY_CLI_METHOD("GetFederationRelationship")) == 0)
		rc = print_rel_resp(cmd, &resp);
	else if (strcmp(method, LY_CLI_METHOD("DeleteFederationRelationship")) == 0)
		printf("Deleted the federation relationship with %s\n", td);
	else
		printf("Bundle of %s refreshed\n", td);
	ly_buf_free(&resp);
	return rc;
}

int
ly_cli_federation_show(int argc, char **argv)
{
	return federation_one(argc, argv, "federation show", "trustDomain", "Shows a federation relationship.",
	    LY_CLI_METHOD("GetFederationRelationship"));
}

int
ly_cli_federation_delete(int argc, char **argv)
{
	return federation_one(argc, argv, "federation delete", "id",
	    "Deletes a federation relationship (its bundle stays: bundle delete).",
	    LY_CLI_METHOD("DeleteFederationRelationship"));
}

int
ly_cli_federation_refresh(int argc, char **argv)
{
	return federation_one(argc, argv, "federation refresh", "id", "Fetches a relationship's bundle now.",
	    LY_CLI_METHOD("RefreshBundle"));
}
