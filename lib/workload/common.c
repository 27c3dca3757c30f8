/*
 * common.c: errors, the Workload API address (Workload Endpoint §4) and
 * SPIFFE ID authorizers. See include/lanyard/workload.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wl_internal.h"

/* The first statuses are ly_status values, one for one. */
_Static_assert((int)LANYARD_E_INVALID == (int)LY_E_INVALID && (int)LANYARD_E_INTERNAL == (int)LY_E_INTERNAL &&
	(int)LANYARD_E_UNSUPPORTED == (int)LY_E_UNSUPPORTED && (int)LANYARD_E_IO == (int)LY_E_IO,
    "lanyard_status must extend ly_status");

/* gRPC status codes we tell apart (grpc/status.h), without including gRPC here. */
#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_PERMISSION_DENIED 7
#define GRPC_UNAVAILABLE 14

const char *
lanyard_status_str(lanyard_status code)
{
	switch (code) {
	case LANYARD_E_UNAVAILABLE: return "unavailable";
	case LANYARD_E_DENIED: return "permission denied";
	case LANYARD_E_RPC: return "rpc error";
	case LANYARD_E_TIMEOUT: return "timeout";
	default: return ly_status_str((ly_status)code);
	}
}

lanyard_status
wl_export(struct lanyard_error *out, ly_status rc, const struct ly_error *e, int rpc_code)
{
	lanyard_status code = (lanyard_status)rc;

	if (rc != LY_OK && rpc_code != 0) {
		if (rpc_code == GRPC_UNAVAILABLE)
			code = LANYARD_E_UNAVAILABLE;
		else if (rpc_code == GRPC_DEADLINE_EXCEEDED)
			code = LANYARD_E_TIMEOUT;
		else if (rpc_code == GRPC_PERMISSION_DENIED)
			code = LANYARD_E_DENIED;
		else
			code = LANYARD_E_RPC;
	}
	if (out != NULL) {
		out->code = code;
		out->rpc_code = rc != LY_OK ? rpc_code : 0;
		if (rc == LY_OK || e == NULL)
			out->msg[0] = '\0';
		else
			(void)snprintf(out->msg, sizeof(out->msg), "%s", e->msg);
	}
	return code;
}

/* ---- the address ------------------------------------------------------------ */

ly_status
wl_endpoint_parse(const char *addr, char *out, struct ly_error *err)
{
	const char *path;

	if (addr == NULL || addr[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "workload API address: empty");
	if (strncmp(addr, "unix:", 5) == 0) {
		path = addr + 5;
		if (strncmp(path, "//", 2) == 0) {
			/* unix://AUTHORITY/path: only an empty authority (Workload Endpoint §4). */
			path += 2;
			if (path[0] != '/')
				return ly_error_set(err, LY_E_INVALID,
				    "workload API address \"%.64s\": a unix: URI must not have an authority (use unix:///path)",
				    addr);
		}
	} else if (addr[0] == '/') {
		path = addr;
	} else {
		const char *colon = strchr(addr, ':');
		if (colon != NULL && (strchr(addr, '/') == NULL || colon < strchr(addr, '/')))
			return ly_error_set(err, LY_E_INVALID,
			    "workload API address \"%.64s\": only unix: addresses are supported", addr);
		return ly_error_set(err, LY_E_INVALID, "workload API address \"%.64s\": the socket path must be absolute",
		    addr);
	}
	if (path[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "workload API address \"%.64s\": the socket path must be absolute",
		    addr);
	if (strpbrk(path, "?#%") != NULL)
		return ly_error_set(err, LY_E_INVALID,
		    "workload API address \"%.64s\": no query, fragment or percent-encoding allowed", addr);
	size_t len = strlen(path);
	if (len > LANYARD_SOCKET_PATH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "workload API address: socket path of %zu bytes (at most %d)", len,
		    LANYARD_SOCKET_PATH_MAX);
	memcpy(out, path, len + 1);
	return LY_OK;
}

lanyard_status
lanyard_endpoint_parse(const char *addr, char *out, struct lanyard_error *err)
{
	struct ly_error e;
	ly_status rc = wl_endpoint_parse(addr, out, &e);
	return wl_export(err, rc, &e, 0);
}

lanyard_status
lanyard_endpoint_resolve(const char *addr, char *out, struct lanyard_error *err)
{
	struct ly_error e;

	if (addr == NULL) {
		addr = getenv("SPIFFE_ENDPOINT_SOCKET");
		if (addr == NULL || addr[0] == '\0')
			return wl_export(err,
			    ly_error_set(&e, LY_E_NOT_FOUND, "no workload API address: SPIFFE_ENDPOINT_SOCKET is not set"), &e,
			    0);
	}
	ly_status rc = wl_endpoint_parse(addr, out, &e);
	return wl_export(err, rc, &e, 0);
}

/* ---- authorizers ---------------------------------------------------------------- */

static ly_status
authz_new(enum wl_authz_kind kind, size_t n, lanyard_authorizer **out, struct ly_error *err)
{
	lanyard_authorizer *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "authorizer: out of memory");
	a->kind = kind;
	a->n = n;
	if (n > 0 && (a->ids = calloc(n, sizeof(*a->ids))) == NULL) {
		free(a);
		return ly_error_set(err, LY_E_NOMEM, "authorizer: out of memory");
	}
	*out = a;
	return LY_OK;
}

void
lanyard_authorizer_free(lanyard_authorizer *a)
{
	if (a == NULL)
		return;
	free(a->ids);
	free(a);
}

lanyard_status
lanyard_authorize_one_of(const char *const *ids, size_t n, lanyard_authorizer **out, struct lanyard_error *err)
{
	lanyard_authorizer *a = NULL;
	struct ly_error e;
	ly_status rc;

	*out = NULL;
	if (ids == NULL || n == 0) {
		rc = ly_error_set(&e, LY_E_INVALID, "authorizer: at least one SPIFFE ID is needed");
		goto out;
	}
	if (n > LY_WL_AUTHZ_IDS_MAX) {
		rc = ly_error_set(&e, LY_E_LIMIT, "authorizer: %zu SPIFFE IDs (at most %d)", n, LY_WL_AUTHZ_IDS_MAX);
		goto out;
	}
	if ((rc = authz_new(n == 1 ? WL_AUTHZ_ID : WL_AUTHZ_ONE_OF, n, &a, &e)) != LY_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] == NULL) {
			rc = ly_error_set(&e, LY_E_INVALID, "authorizer: SPIFFE ID %zu is NULL", i);
			goto out;
		}
		if ((rc = ly_spiffe_id_parse_str(ids[i], &a->ids[i], &e)) != LY_OK) {
			(void)ly_error_wrap(&e, rc, "authorizer: SPIFFE ID %zu", i);
			goto out;
		}
	}
	*out = a;
	a = NULL;
out:
	lanyard_authorizer_free(a);
	return wl_export(err, rc, &e, 0);
}

lanyard_status
lanyard_authorize_id(const char *id, lanyard_authorizer **out, struct lanyard_error *err)
{
	const char *ids[1] = { id };
	return lanyard_authorize_one_of(ids, 1, out, err);
}

lanyard_status
lanyard_authorize_member_of(const char *td, lanyard_authorizer **out, struct lanyard_error *err)
{
	lanyard_authorizer *a = NULL;
	char name[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_error e;
	ly_status rc;

	*out = NULL;
	if (td == NULL) {
		rc = ly_error_set(&e, LY_E_INVALID, "authorizer: trust domain is NULL");
		goto out;
	}
	if ((rc = ly_trust_domain_parse(td, true, name, &e)) != LY_OK) {
		(void)ly_error_wrap(&e, rc, "authorizer");
		goto out;
	}
	if ((rc = authz_new(WL_AUTHZ_MEMBER_OF, 0, &a, &e)) != LY_OK)
		goto out;
	memcpy(a->td, name, sizeof(a->td));
	*out = a;
	a = NULL;
out:
	lanyard_authorizer_free(a);
	return wl_export(err, rc, &e, 0);
}

ly_status
wl_authorizer_clone(const lanyard_authorizer *a, lanyard_authorizer **out, struct ly_error *err)
{
	lanyard_authorizer *c = NULL;

	LY_TRY(authz_new(a->kind, a->n, &c, err));
	if (a->n > 0)
		memcpy(c->ids, a->ids, a->n * sizeof(*a->ids));
	memcpy(c->td, a->td, sizeof(c->td));
	*out = c;
	return LY_OK;
}

ly_status
wl_authorizer_check(const lanyard_authorizer *a, const struct ly_spiffe_id *id, struct ly_error *err)
{
	switch (a->kind) {
	case WL_AUTHZ_ID:
	case WL_AUTHZ_ONE_OF:
		for (size_t i = 0; i < a->n; i++) {
			if (ly_spiffe_id_equal(&a->ids[i], id))
				return LY_OK;
		}
		if (a->kind == WL_AUTHZ_ID)
			return ly_error_set(err, LY_E_UNTRUSTED, "peer %s is not authorized: expected %s", id->id,
			    a->ids[0].id);
		return ly_error_set(err, LY_E_UNTRUSTED, "peer %s is not authorized: not one of the %zu expected IDs",
		    id->id, a->n);
	case WL_AUTHZ_MEMBER_OF:
		if (ly_spiffe_id_member_of(id, a->td))
			return LY_OK;
		return ly_error_set(err, LY_E_UNTRUSTED, "peer %s is not authorized: not a member of trust domain %s",
		    id->id, a->td);
	}
	return ly_error_set(err, LY_E_INTERNAL, "authorizer: unknown kind");
}

lanyard_status
lanyard_authorizer_check(const lanyard_authorizer *a, const char *id, struct lanyard_error *err)
{
	struct ly_spiffe_id parsed;
	struct ly_error e;
	ly_status rc;

	if (a == NULL || id == NULL)
		rc = ly_error_set(&e, LY_E_INVALID, "authorizer: NULL argument");
	else if ((rc = ly_spiffe_id_parse_str(id, &parsed, &e)) == LY_OK)
		rc = wl_authorizer_check(a, &parsed, &e);
	return wl_export(err, rc, &e, 0);
}

const char *
lanyard_version(void)
{
	return LANYARD_WORKLOAD_VERSION;
}
