/*
 * attest_k8s_psat.c: k8s_psat node attestation (SPEC §6, NOTES-k8s.md),
 * see attest.h.
 *
 * Two halves: the response parsers (ly_psat_parse_*), pure functions of
 * the bytes they are given, and the control flow (ly_attest_k8s_psat),
 * which talks HTTPS to the cluster's API server with libcurl's easy
 * interface (blocking: a worker thread's job) and decides.
 *
 * Secrets: the agent's token and the server's own token. Both are checked
 * to be [A-Za-z0-9._-] (so neither can inject a header or break out of a
 * JSON string), and each lives only in buffers we wipe: the request body
 * and the Authorization header are built by hand in exact-size heap
 * buffers (no jansson or curl_slist copies: the header list is made of our
 * own nodes, which libcurl only reads), and the TokenReview response, which
 * echoes spec.token, has every copy of the token overwritten before
 * jansson sees it. libcurl's and OpenSSL's internal buffers are beyond our
 * reach. No message holds a token.
 */
#include "server/attest.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "lib/buf.h"
#include "lib/caps.h"
#include "lib/der.h"
#include "lib/json.h"

#define PSAT_PATH LY_AGENT_ID_PATH "k8s_psat/"
#define SA_PREFIX "system:serviceaccount:"
#define EXTRA_POD_NAME "authentication.kubernetes.io/pod-name"
#define EXTRA_POD_UID "authentication.kubernetes.io/pod-uid"

#define URL_MAX (LY_K8S_API_URL_MAX + 512) /* + "/api/v1/namespaces/NS/pods/NAME" */
#define CONNECT_TIMEOUT_MS 5000L
#define REQUEST_TIMEOUT_MS 10000L

struct cluster {
	char *name;
	char **allow; /* "ns:sa" */
	size_t n_allow;
	char *audience;
	char *api_url; /* without a trailing '/' */
	char *ca_file;
	char *token_file;
};

struct ly_attest_k8s_psat {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	struct cluster *clusters;
	size_t n_clusters;
	bool curl_initialized;
};

/* ---- names ---- */

static bool
is_lower_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
is_lower_hex(unsigned char c)
{
	return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9');
}

static bool
is_token_char(unsigned char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-';
}

/* DNS-1123 label, [a-z0-9]([-a-z0-9]*[a-z0-9])?, of n bytes (1..max). */
static bool
label_ok(const char *s, size_t n, size_t max)
{
	if (n == 0 || n > max || !is_lower_alnum((unsigned char)s[0]) || !is_lower_alnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_lower_alnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	}
	return true;
}

/* Kubernetes IsDNS1123Label: what a namespace is. */
static bool
dns_label_ok(const char *s, size_t n)
{
	return label_ok(s, n, LY_K8S_NS_MAX);
}

/* Kubernetes IsDNS1123Subdomain: what service-account, pod and node names are. */
static bool
dns_subdomain_ok(const char *s, size_t n)
{
	if (n == 0 || n > LY_K8S_NAME_MAX)
		return false;
	size_t i = 0;
	for (;;) {
		size_t j = i;
		while (j < n && s[j] != '.')
			j++;
		if (!label_ok(s + i, j - i, 63))
			return false;
		if (j == n)
			return true;
		i = j + 1;
	}
}

static bool
uuid_ok(const char *s, size_t n)
{
	if (n != LY_UUID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !is_lower_hex((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* A token: 1..LY_K8S_TOKEN_MAX of [A-Za-z0-9._-] (a JWT's alphabet). */
static ly_status
token_check(const char *what, const char *s, size_t n, struct ly_error *err)
{
	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "%s is empty", what);
	if (n > LY_K8S_TOKEN_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s is longer than %d bytes", what, LY_K8S_TOKEN_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!is_token_char((unsigned char)s[i]))
			return ly_error_set(err, LY_E_INVALID, "%s must use [A-Za-z0-9._-] (a JWT)", what);
	}
	return LY_OK;
}

/* "ns:sa", as in an allow list. */
static bool
allow_entry_ok(const char *s)
{
	const char *colon = strchr(s, ':');
	if (colon == NULL)
		return false;
	return dns_label_ok(s, (size_t)(colon - s)) && dns_subdomain_ok(colon + 1, strlen(colon + 1));
}

/* ---- configuration ---- */

static void
cluster_cleanup(struct cluster *c)
{
	free(c->name);
	for (size_t i = 0; i < c->n_allow; i++)
		free(c->allow[i]);
	free(c->allow);
	free(c->audience);
	free(c->api_url);
	free(c->ca_file);
	free(c->token_file);
	memset(c, 0, sizeof(*c));
}

void
ly_attest_k8s_psat_free(struct ly_attest_k8s_psat *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->n_clusters; i++)
		cluster_cleanup(&cfg->clusters[i]);
	free(cfg->clusters);
	if (cfg->curl_initialized)
		curl_global_cleanup();
	free(cfg);
}

ly_status
ly_attest_k8s_psat_new(const char *trust_domain, struct ly_attest_k8s_psat **out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "k8s_psat: no output");
	*out = NULL;
	struct ly_attest_k8s_psat *cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL)
		return ly_error_set(err, LY_E_NOMEM, "k8s_psat: out of memory");
	ly_status rc = ly_trust_domain_parse(trust_domain, false, cfg->trust_domain, err);
	if (rc != LY_OK) {
		ly_attest_k8s_psat_free(cfg);
		return ly_error_wrap(err, rc, "k8s_psat");
	}
	/* Reference-counted by libcurl: balanced in ly_attest_k8s_psat_free. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		ly_attest_k8s_psat_free(cfg);
		return ly_error_set(err, LY_E_INTERNAL, "k8s_psat: libcurl initialisation failed");
	}
	cfg->curl_initialized = true;
	*out = cfg;
	return LY_OK;
}

static ly_status
check_cluster_name(const char *name, struct ly_error *err)
{
	if (name == NULL || name[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster name is empty");
	size_t n = strnlen(name, LY_K8S_CLUSTER_NAME_MAX + 1);
	if (n > LY_K8S_CLUSTER_NAME_MAX)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster name is longer than %d bytes", LY_K8S_CLUSTER_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!is_token_char((unsigned char)name[i]))
			return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster name must use [A-Za-z0-9._-]");
	}
	/* It becomes a path segment of the agent ID (SPIFFE-ID §2.2). */
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster name must not be '.' or '..'");
	return LY_OK;
}

static ly_status
check_audience(const char *aud, struct ly_error *err)
{
	size_t n = strnlen(aud, LY_K8S_AUDIENCE_MAX + 1);
	if (n == 0 || n > LY_K8S_AUDIENCE_MAX)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: audience must be 1..%d bytes", LY_K8S_AUDIENCE_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)aud[i];
		if (!is_token_char(c) && c != ':' && c != '/')
			return ly_error_set(err, LY_E_INVALID, "k8s_psat: audience must use [A-Za-z0-9._:/-]");
	}
	return LY_OK;
}

/* https://host[:port][/path]: no user info, query, fragment, space or control character. */
static ly_status
check_api_url(const char *url, struct ly_error *err)
{
	size_t n = strnlen(url, LY_K8S_API_URL_MAX + 1);
	if (n > LY_K8S_API_URL_MAX)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: API server URL is longer than %d bytes", LY_K8S_API_URL_MAX);
	if (strncmp(url, "https://", 8) != 0)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: API server URL must start with https://");
	if (n == 8 || url[8] == '/' || url[8] == ':')
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: API server URL has no host");
	for (size_t i = 8; i < n; i++) {
		unsigned char c = (unsigned char)url[i];
		bool ok = is_token_char(c) || c == ':' || c == '/' || c == '[' || c == ']' || c == '~' || c == '%';
		if (!ok)
			return ly_error_set(err, LY_E_INVALID,
			    "k8s_psat: API server URL has a character outside [A-Za-z0-9._~:/[]%%-] at offset %zu", i);
	}
	return LY_OK;
}

static char *
dup_or(const char *s, const char *def)
{
	return strdup(s != NULL ? s : def);
}

ly_status
ly_attest_k8s_psat_add_cluster(struct ly_attest_k8s_psat *cfg, const struct ly_psat_cluster_config *c,
    struct ly_error *err)
{
	struct cluster cl;
	ly_status rc;

	memset(&cl, 0, sizeof(cl));
	if (cfg == NULL || c == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "k8s_psat: no configuration");
	LY_TRY(check_cluster_name(c->name, err));
	for (size_t i = 0; i < cfg->n_clusters; i++) {
		if (strcmp(cfg->clusters[i].name, c->name) == 0)
			return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster %s is configured twice", c->name);
	}
	if (cfg->n_clusters >= LY_K8S_CLUSTERS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "k8s_psat: more than %d clusters", LY_K8S_CLUSTERS_MAX);
	if (c->n_allow == 0 || c->allow == NULL)
		return ly_error_set(err, LY_E_INVALID,
		    "k8s_psat: cluster %s: service_account_allow_list is empty (no agent could attest)", c->name);
	if (c->n_allow > LY_K8S_ALLOW_MAX)
		return ly_error_set(err, LY_E_LIMIT, "k8s_psat: cluster %s: more than %d allowed service accounts",
		    c->name, LY_K8S_ALLOW_MAX);
	for (size_t i = 0; i < c->n_allow; i++) {
		if (c->allow[i] == NULL || !allow_entry_ok(c->allow[i]))
			return ly_error_set(err, LY_E_INVALID,
			    "k8s_psat: cluster %s: allow list entry %zu must be \"namespace:serviceaccount\" "
			    "(DNS-1123 label and subdomain)",
			    c->name, i);
	}
	if (c->audience != NULL) {
		rc = check_audience(c->audience, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "cluster %s", c->name);
	}
	if (c->api_url != NULL) {
		rc = check_api_url(c->api_url, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "cluster %s", c->name);
	}
	if ((c->ca_file != NULL && c->ca_file[0] == '\0') || (c->token_file != NULL && c->token_file[0] == '\0'))
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster %s: an empty file name", c->name);

	cl.name = strdup(c->name);
	cl.allow = calloc(c->n_allow, sizeof(*cl.allow));
	cl.audience = dup_or(c->audience, LY_PSAT_DEFAULT_AUDIENCE);
	cl.api_url = dup_or(c->api_url, LY_PSAT_DEFAULT_API_URL);
	cl.ca_file = dup_or(c->ca_file, LY_PSAT_DEFAULT_CA_FILE);
	cl.token_file = dup_or(c->token_file, LY_PSAT_DEFAULT_TOKEN_FILE);
	if (cl.name == NULL || cl.allow == NULL || cl.audience == NULL || cl.api_url == NULL || cl.ca_file == NULL ||
	    cl.token_file == NULL)
		goto nomem;
	for (size_t i = 0; i < c->n_allow; i++) {
		cl.allow[i] = strdup(c->allow[i]);
		if (cl.allow[i] == NULL)
			goto nomem;
		cl.n_allow++;
	}
	size_t ulen = strlen(cl.api_url);
	if (ulen > 0 && cl.api_url[ulen - 1] == '/')
		cl.api_url[ulen - 1] = '\0';
	struct cluster *grown = realloc(cfg->clusters, (cfg->n_clusters + 1) * sizeof(*grown));
	if (grown == NULL)
		goto nomem;
	cfg->clusters = grown;
	cfg->clusters[cfg->n_clusters++] = cl;
	return LY_OK;
nomem:
	/* cl.n_allow counts the strings made so far: cleanup frees exactly those. */
	cluster_cleanup(&cl);
	return ly_error_set(err, LY_E_NOMEM, "k8s_psat: out of memory");
}

/* ---- JSON responses ---- */

/* Parses a Kubernetes object of `kind` and `api_version`; *out: json_decref. */
static ly_status
load_object(const char *json, size_t len, const char *kind, const char *api_version, json_t **out,
    struct ly_error *err)
{

	*out = NULL;
	if (json == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s: no response", kind);
	if (len > LY_K8S_RESPONSE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s: response is over %d bytes", kind, LY_K8S_RESPONSE_MAX);
	json_t *root;
	LY_TRY(ly_json_parse_strict(kind, json, len, LY_K8S_RESPONSE_MAX, LY_K8S_JSON_DEPTH_MAX, &root, err));
	if (!json_is_object(root)) {
		json_decref(root);
		return ly_error_set(err, LY_E_INVALID, "%s: not a JSON object", kind);
	}
	json_t *k = json_object_get(root, "kind");
	json_t *v = json_object_get(root, "apiVersion");
	if (!json_is_string(k) || strcmp(json_string_value(k), kind) != 0 || !json_is_string(v) ||
	    strcmp(json_string_value(v), api_version) != 0) {
		json_decref(root);
		return ly_error_set(err, LY_E_INVALID, "response is not a %s %s object (kind, apiVersion)", api_version,
		    kind);
	}
	*out = root;
	return LY_OK;
}

/* obj[key] as an object, or NULL (absent or of another type: *bad tells which). */
static json_t *
get_object(const json_t *obj, const char *key, bool *bad)
{
	json_t *v = json_object_get(obj, key);
	*bad = v != NULL && !json_is_object(v);
	return json_is_object(v) ? v : NULL;
}

/* obj[key], which must be an object; `what` names it in the message ("<what> is missing"). */
static ly_status
need_object(const json_t *obj, const char *key, const char *what, json_t **out, struct ly_error *err)
{
	bool bad;
	*out = get_object(obj, key, &bad);
	if (*out == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s is %s", what, bad ? "not an object" : "missing");
	return LY_OK;
}

/* obj[key] as a string without NUL bytes into *s / *n; `what` names it in messages. */
static ly_status
get_string(const json_t *obj, const char *key, const char *what, const char **s, size_t *n, struct ly_error *err)
{
	json_t *v = obj != NULL ? json_object_get(obj, key) : NULL;
	if (v == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s is missing", what);
	if (!json_is_string(v))
		return ly_error_set(err, LY_E_INVALID, "%s is not a string", what);
	*s = json_string_value(v);
	*n = json_string_length(v);
	if (memchr(*s, '\0', *n) != NULL)
		return ly_error_set(err, LY_E_INVALID, "%s holds a NUL byte", what);
	return LY_OK;
}

/* Copies n bytes + NUL into out (size > n is the caller's check). */
static void
copy_name(char *out, const char *s, size_t n)
{
	memcpy(out, s, n);
	out[n] = '\0';
}

/* extra[key] must be an array of exactly one string. */
static ly_status
get_extra_one(const json_t *extra, const char *key, const char *what, const char **s, size_t *n,
    struct ly_error *err)
{
	json_t *arr = extra != NULL ? json_object_get(extra, key) : NULL;
	if (arr == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED,
		    "token is not bound to a pod (no %s in status.user.extra): use a projected service-account token",
		    what);
	if (!json_is_array(arr) || json_array_size(arr) != 1 || !json_is_string(json_array_get(arr, 0)))
		return ly_error_set(err, LY_E_INVALID, "status.user.extra %s must be an array of one string", what);
	json_t *v = json_array_get(arr, 0);
	*s = json_string_value(v);
	*n = json_string_length(v);
	if (memchr(*s, '\0', *n) != NULL)
		return ly_error_set(err, LY_E_INVALID, "status.user.extra %s holds a NUL byte", what);
	return LY_OK;
}

static ly_status
parse_review(const json_t *root, const char *audience, struct ly_psat_review *out, struct ly_error *err)
{
	const char *s;
	size_t n;
	bool bad;

	json_t *status = get_object(root, "status", &bad);
	if (bad)
		return ly_error_set(err, LY_E_INVALID, "status is not an object");
	if (status == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED, "token not authenticated (no status)");
	/* Kubernetes omits authenticated when false (omitempty). */
	json_t *authn = json_object_get(status, "authenticated");
	if (authn != NULL && !json_is_boolean(authn))
		return ly_error_set(err, LY_E_INVALID, "status.authenticated is not a boolean");
	if (!json_is_true(authn))
		return ly_error_set(err, LY_E_UNTRUSTED, "token not authenticated by the API server");

	/* The API server returns the requested audiences the token is valid for. */
	json_t *auds = json_object_get(status, "audiences");
	if (auds != NULL && !json_is_array(auds))
		return ly_error_set(err, LY_E_INVALID, "status.audiences is not an array");
	size_t n_auds = json_array_size(auds);
	if (n_auds > LY_K8S_AUDIENCES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "status.audiences has more than %d entries", LY_K8S_AUDIENCES_MAX);
	bool aud_found = false;
	for (size_t i = 0; i < n_auds; i++) {
		json_t *a = json_array_get(auds, i);
		if (!json_is_string(a))
			return ly_error_set(err, LY_E_INVALID, "status.audiences[%zu] is not a string", i);
		if (json_string_length(a) == strlen(audience) && strcmp(json_string_value(a), audience) == 0)
			aud_found = true;
	}
	if (!aud_found)
		return ly_error_set(err, LY_E_UNTRUSTED, "token audience \"%s\" not in status.audiences", audience);

	json_t *user;
	LY_TRY(need_object(status, "user", "status.user", &user, err));
	ly_status rc = get_string(user, "username", "status.user.username", &s, &n, err);
	if (rc != LY_OK)
		return rc;
	size_t plen = sizeof(SA_PREFIX) - 1;
	if (n <= plen || memcmp(s, SA_PREFIX, plen) != 0)
		return ly_error_set(err, LY_E_UNTRUSTED, "token is not a service-account token (username not %sNS:SA)",
		    SA_PREFIX);
	const char *ns = s + plen;
	const char *colon = memchr(ns, ':', n - plen);
	if (colon == NULL)
		return ly_error_set(err, LY_E_INVALID, "status.user.username is not %sNS:SA", SA_PREFIX);
	size_t ns_len = (size_t)(colon - ns);
	const char *sa = colon + 1;
	size_t sa_len = n - plen - ns_len - 1;
	if (!dns_label_ok(ns, ns_len) || !dns_subdomain_ok(sa, sa_len))
		return ly_error_set(err, LY_E_INVALID,
		    "status.user.username: namespace or service account is not a DNS-1123 name");
	copy_name(out->ns, ns, ns_len);
	copy_name(out->sa, sa, sa_len);

	json_t *extra = get_object(user, "extra", &bad);
	if (bad)
		return ly_error_set(err, LY_E_INVALID, "status.user.extra is not an object");
	LY_TRY(get_extra_one(extra, EXTRA_POD_NAME, "pod-name", &s, &n, err));
	if (!dns_subdomain_ok(s, n))
		return ly_error_set(err, LY_E_INVALID, "status.user.extra pod-name is not a DNS-1123 subdomain");
	copy_name(out->pod_name, s, n);
	LY_TRY(get_extra_one(extra, EXTRA_POD_UID, "pod-uid", &s, &n, err));
	if (!uuid_ok(s, n))
		return ly_error_set(err, LY_E_INVALID, "status.user.extra pod-uid is not a UUID (lower-case hex)");
	copy_name(out->pod_uid, s, n);
	return LY_OK;
}

ly_status
ly_psat_parse_tokenreview(const char *json, size_t len, const char *audience, struct ly_psat_review *out,
    struct ly_error *err)
{
	json_t *root = NULL;

	if (audience == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "TokenReview: no audience or output");
	memset(out, 0, sizeof(*out));
	LY_TRY(load_object(json, len, "TokenReview", "authentication.k8s.io/v1", &root, err));
	ly_status rc = parse_review(root, audience, out, err);
	json_decref(root);
	if (rc != LY_OK) {
		memset(out, 0, sizeof(*out));
		return ly_error_wrap(err, rc, "TokenReview");
	}
	return LY_OK;
}

/* metadata.<key> must equal `want`; LY_E_UNTRUSTED when it differs. */
static ly_status
expect_meta(const json_t *meta, const char *key, const char *want, struct ly_error *err)
{
	const char *s;
	size_t n;
	char what[32];

	(void)snprintf(what, sizeof(what), "metadata.%s", key);
	LY_TRY(get_string(meta, key, what, &s, &n, err));
	if (n != strlen(want) || memcmp(s, want, n) != 0)
		return ly_error_set(err, LY_E_UNTRUSTED, "%s is not the expected %s", what, want);
	return LY_OK;
}

static ly_status
parse_pod(const json_t *root, const char *ns, const char *name, const char *uid,
    char node_name[LY_K8S_NAME_MAX + 1], struct ly_error *err)
{
	const char *s;
	size_t n;

	json_t *meta;
	LY_TRY(need_object(root, "metadata", "metadata", &meta, err));
	LY_TRY(expect_meta(meta, "namespace", ns, err));
	LY_TRY(expect_meta(meta, "name", name, err));
	/* A pod deleted and recreated under the same name has a new UID: the token's pod is gone. */
	ly_status rc = expect_meta(meta, "uid", uid, err);
	if (rc == LY_E_UNTRUSTED)
		return ly_error_set(err, LY_E_UNTRUSTED, "pod UID does not match the token's pod UID %s", uid);
	if (rc != LY_OK)
		return rc;
	json_t *spec;
	LY_TRY(need_object(root, "spec", "spec", &spec, err));
	if (json_object_get(spec, "nodeName") == NULL)
		return ly_error_set(err, LY_E_INVALID, "pod is not scheduled on a node (no spec.nodeName)");
	LY_TRY(get_string(spec, "nodeName", "spec.nodeName", &s, &n, err));
	if (!dns_subdomain_ok(s, n))
		return ly_error_set(err, LY_E_INVALID, "spec.nodeName is not a DNS-1123 subdomain");
	copy_name(node_name, s, n);
	return LY_OK;
}

ly_status
ly_psat_parse_pod(const char *json, size_t len, const char *ns, const char *name, const char *uid,
    char node_name[LY_K8S_NAME_MAX + 1], struct ly_error *err)
{
	json_t *root = NULL;

	if (ns == NULL || name == NULL || uid == NULL || node_name == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "Pod: missing expected values or output");
	node_name[0] = '\0';
	LY_TRY(load_object(json, len, "Pod", "v1", &root, err));
	ly_status rc = parse_pod(root, ns, name, uid, node_name, err);
	json_decref(root);
	if (rc != LY_OK) {
		node_name[0] = '\0';
		return ly_error_wrap(err, rc, "Pod %s/%s", ns, name);
	}
	return LY_OK;
}

static ly_status
parse_node(const json_t *root, const char *name, char node_uid[LY_UUID_LEN + 1], struct ly_error *err)
{
	const char *s;
	size_t n;

	json_t *meta;
	LY_TRY(need_object(root, "metadata", "metadata", &meta, err));
	LY_TRY(expect_meta(meta, "name", name, err));
	LY_TRY(get_string(meta, "uid", "metadata.uid", &s, &n, err));
	if (!uuid_ok(s, n))
		return ly_error_set(err, LY_E_INVALID, "metadata.uid is not a UUID (lower-case hex)");
	copy_name(node_uid, s, n);
	return LY_OK;
}

ly_status
ly_psat_parse_node(const char *json, size_t len, const char *name, char node_uid[LY_UUID_LEN + 1],
    struct ly_error *err)
{
	json_t *root = NULL;

	if (name == NULL || node_uid == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "Node: missing expected name or output");
	node_uid[0] = '\0';
	LY_TRY(load_object(json, len, "Node", "v1", &root, err));
	ly_status rc = parse_node(root, name, node_uid, err);
	json_decref(root);
	if (rc != LY_OK) {
		node_uid[0] = '\0';
		return ly_error_wrap(err, rc, "Node %s", name);
	}
	return LY_OK;
}

/* ---- HTTPS to the API server ---- */

/*
 * A response body (lib/buf.h's sink), capped at LY_K8S_RESPONSE_MAX. It
 * may hold the agent's token (a TokenReview echoes spec.token), so it is
 * secret: it grows by copy-and-wipe, never by realloc, which would leave
 * unwiped copies behind.
 */
static void
body_init(struct ly_buf_sink *b)
{
	memset(b, 0, sizeof(*b));
	ly_buf_init(&b->buf, LY_K8S_RESPONSE_MAX, true);
}

static void
body_cleanup(struct ly_buf_sink *b)
{
	ly_buf_free(&b->buf); /* wiped: secret */
	b->over = b->nomem = false;
}

/* One attestation's connection to one cluster's API server. */
struct http {
	const struct cluster *cl;
	CURL *curl;
	struct curl_slist *headers; /* our own nodes: libcurl only reads them */
	char errbuf[CURL_ERROR_SIZE];
};

static ly_status
curl_failure(const struct http *h, CURLcode cc, const struct ly_buf_sink *b, const char *what, struct ly_error *err)
{
	const char *detail = h->errbuf[0] != '\0' ? h->errbuf : curl_easy_strerror(cc);

	if (b->over || cc == CURLE_FILESIZE_EXCEEDED)
		return ly_error_set(err, LY_E_LIMIT, "%s: response is over %d bytes", what, LY_K8S_RESPONSE_MAX);
	if (b->nomem)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", what);
	switch (cc) {
	case CURLE_PEER_FAILED_VERIFICATION:
		return ly_error_set(err, LY_E_IO, "%s: API server %s: TLS certificate not trusted by CA file %s: %s",
		    what, h->cl->api_url, h->cl->ca_file, detail);
	case CURLE_SSL_CACERT_BADFILE:
		return ly_error_set(err, LY_E_IO, "%s: API server CA file %s cannot be used: %s", what,
		    h->cl->ca_file, detail);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
		return ly_error_set(err, LY_E_IO, "%s: API server %s unreachable: %s", what, h->cl->api_url, detail);
	default:
		return ly_error_set(err, LY_E_IO, "%s: request to API server %s failed: %s", what, h->cl->api_url,
		    detail);
	}
}

/* Sets the options every request shares (after curl_easy_reset). */
static bool
set_common(struct http *h, const char *url, struct ly_buf_sink *b)
{
	CURL *c = h->curl;
	h->errbuf[0] = '\0';
	return curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	    /* The API server is reached directly: no proxy from the environment. */
	    curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS) == CURLE_OK &&
	    /* Trust the cluster's CA file and nothing else (no system CA directory). */
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_CAINFO, h->cl->ca_file) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_CAPATH, NULL) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "lanyard-server") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)LY_K8S_RESPONSE_MAX) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ly_buf_sink_write) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, b) == CURLE_OK;
}

/*
 * One request: POST `post` (post_len bytes) when non-NULL, else GET, to
 * api_url + `path`. *status gets the HTTP status; the body goes to `b`.
 */
static ly_status
request(struct http *h, const char *what, const char *path, const char *post, size_t post_len, long *status,
    struct ly_buf_sink *b, struct ly_error *err)
{
	char url[URL_MAX];

	if (snprintf(url, sizeof(url), "%s%s", h->cl->api_url, path) >= (int)sizeof(url))
		return ly_error_set(err, LY_E_INTERNAL, "%s: URL does not fit", what);
	curl_easy_reset(h->curl);
	bool ok = set_common(h, url, b);
	if (ok && post != NULL) {
		/* POSTFIELDS is not copied: the body stays in our wiped buffer. */
		ok = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, post) == CURLE_OK &&
		    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)post_len) == CURLE_OK;
	}
	if (!ok)
		return ly_error_set(err, LY_E_INTERNAL, "%s: setting up libcurl failed", what);
	CURLcode cc = curl_easy_perform(h->curl);
	if (cc != CURLE_OK)
		return curl_failure(h, cc, b, what, err);
	if (curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
		return ly_error_set(err, LY_E_INTERNAL, "%s: no HTTP status", what);
	return LY_OK;
}

/* Anything but the expected statuses: the API server's answer, or ours to fix (credentials, RBAC). */
static ly_status
http_status_error(long status, const char *what, struct ly_error *err)
{
	if (status == 401 || status == 403)
		return ly_error_set(err, LY_E_IO,
		    "%s: the API server refused lanyard-server's own credentials (HTTP %ld): check its token file and "
		    "RBAC (create tokenreviews, get pods and nodes)",
		    what, status);
	return ly_error_set(err, LY_E_IO, "%s: the API server answered HTTP %ld", what, status);
}

/* Overwrites every copy of `token` in `b` (the TokenReview echoes it) before jansson copies the text. */
static void
scrub(struct ly_buf_sink *b, const char *token, size_t n)
{
	char *p = (char *)b->buf.data;
	size_t left = b->buf.len;
	char *hit;
	while (left >= n && (hit = memmem(p, left, token, n)) != NULL) {
		memset(hit, 'x', n);
		left -= (size_t)(hit + n - p);
		p = hit + n;
	}
}

#define REVIEW_FMT                                                             \
	"{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\"," \
	"\"spec\":{\"token\":\"%s\",\"audiences\":[\"%s\"]}}"

/* Step 1: the TokenReview. */
static ly_status
review_token(struct http *h, const char *token, size_t token_len, struct ly_psat_review *review,
    struct ly_error *err)
{
	struct ly_buf_sink b;
	char *post = NULL;
	long status = 0;
	ly_status rc;

	body_init(&b);
	/* Both were checked to need no JSON escaping ([A-Za-z0-9._-] and [A-Za-z0-9._:/-]). */
	size_t post_len = sizeof(REVIEW_FMT) + token_len + strlen(h->cl->audience);
	post = malloc(post_len);
	if (post == NULL)
		return ly_error_set(err, LY_E_NOMEM, "TokenReview: out of memory");
	int n = snprintf(post, post_len, REVIEW_FMT, token, h->cl->audience);
	if (n < 0 || (size_t)n >= post_len) {
		rc = ly_error_set(err, LY_E_INTERNAL, "TokenReview: request does not fit");
		goto out;
	}
	rc = request(h, "TokenReview", "/apis/authentication.k8s.io/v1/tokenreviews", post, (size_t)n, &status, &b,
	    err);
	if (rc != LY_OK)
		goto out;
	if (b.buf.data != NULL)
		scrub(&b, token, token_len);
	if (status != 200 && status != 201) {
		rc = http_status_error(status, "TokenReview", err);
		goto out;
	}
	rc = ly_psat_parse_tokenreview((const char *)b.buf.data, b.buf.len, h->cl->audience, review, err);
out:
	OPENSSL_clear_free(post, post_len);
	body_cleanup(&b);
	return rc;
}

/* GET `path` expecting 200 and a body; 404 is LY_E_NOT_FOUND. */
static ly_status
get_object_body(struct http *h, const char *what, const char *path, struct ly_buf_sink *b, struct ly_error *err)
{
	long status = 0;

	LY_TRY(request(h, what, path, NULL, 0, &status, b, err));
	if (status == 404)
		return ly_error_set(err, LY_E_NOT_FOUND, "%s not found", what);
	if (status != 200)
		return http_status_error(status, what, err);
	if (b->buf.data == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s: empty response", what);
	return LY_OK;
}

/* Steps 2 and 3: the token's pod, then its node. */
static ly_status
lookup_node(struct http *h, const struct ly_psat_review *review, char node_name[LY_K8S_NAME_MAX + 1],
    char node_uid[LY_UUID_LEN + 1], struct ly_error *err)
{
	char path[URL_MAX];
	char what[LY_K8S_NS_MAX + LY_K8S_NAME_MAX + 16];
	struct ly_buf_sink b;
	ly_status rc;

	body_init(&b);
	/* Names were validated as DNS-1123 by the parser: safe in a URL path as they are. */
	(void)snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", review->ns, review->pod_name);
	(void)snprintf(what, sizeof(what), "pod %s/%s", review->ns, review->pod_name);
	rc = get_object_body(h, what, path, &b, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_psat_parse_pod((const char *)b.buf.data, b.buf.len, review->ns, review->pod_name, review->pod_uid,
	    node_name, err);
	if (rc != LY_OK)
		goto out;
	body_cleanup(&b);
	(void)snprintf(path, sizeof(path), "/api/v1/nodes/%s", node_name);
	(void)snprintf(what, sizeof(what), "node %s", node_name);
	rc = get_object_body(h, what, path, &b, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_psat_parse_node((const char *)b.buf.data, b.buf.len, node_name, node_uid, err);
out:
	body_cleanup(&b);
	return rc;
}

/*
 * Reads the server's own service-account token (re-read each time: the
 * kubelet rotates it) and builds "Authorization: Bearer <token>" in an
 * exact-size buffer; *out: ly_free_secret_str.
 */
static ly_status
auth_header(const struct cluster *cl, char **out, struct ly_error *err)
{
	static const char prefix[] = "Authorization: Bearer ";
	struct ly_buf file = LY_BUF_INIT;
	ly_status rc;

	*out = NULL;
	rc = ly_pem_read_file(cl->token_file, &file, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "k8s_psat: cluster %s: server token file", cl->name);
	size_t n = file.len;
	const char *t = (const char *)file.data;
	while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t'))
		n--;
	rc = token_check("server token", t, n, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "k8s_psat: cluster %s: %s", cl->name, cl->token_file);
		goto out;
	}
	char *h = malloc(sizeof(prefix) + n);
	if (h == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "k8s_psat: out of memory");
		goto out;
	}
	memcpy(h, prefix, sizeof(prefix) - 1);
	memcpy(h + sizeof(prefix) - 1, t, n);
	h[sizeof(prefix) - 1 + n] = '\0';
	*out = h;
	rc = LY_OK;
out:
	ly_buf_free_secret(&file);
	return rc;
}

static const struct cluster *
find_cluster(const struct ly_attest_k8s_psat *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_clusters; i++) {
		if (strcmp(cfg->clusters[i].name, name) == 0)
			return &cfg->clusters[i];
	}
	return NULL;
}

static bool
allowed(const struct cluster *cl, const struct ly_psat_review *review)
{
	size_t ns_len = strlen(review->ns);
	for (size_t i = 0; i < cl->n_allow; i++) {
		const char *a = cl->allow[i];
		if (strncmp(a, review->ns, ns_len) == 0 && a[ns_len] == ':' && strcmp(a + ns_len + 1, review->sa) == 0)
			return true;
	}
	return false;
}

static ly_status
build_result(const struct ly_attest_k8s_psat *cfg, const struct cluster *cl, const struct ly_psat_review *review,
    const char *node_name, const char *node_uid, struct ly_attest_result *r, struct ly_error *err)
{
	char value[LY_SELECTOR_MAX + 1];
	char id[LY_SPIFFE_ID_MAX + 1];
	const struct {
		const char *key;
		const char *arg;
	} sels[] = {
		{ "cluster", cl->name },
		{ "agent_ns", review->ns },
		{ "agent_sa", review->sa },
		{ "agent_node_name", node_name },
		{ "agent_node_uid", node_uid },
	};

	for (size_t i = 0; i < sizeof(sels) / sizeof(sels[0]); i++) {
		if (snprintf(value, sizeof(value), "%s:%s", sels[i].key, sels[i].arg) >= (int)sizeof(value))
			return ly_error_set(err, LY_E_LIMIT, "k8s_psat: selector %s is too long", sels[i].key);
		LY_TRY(ly_attest_result_add_selector(r, "k8s_psat", value, err));
	}
	if (snprintf(id, sizeof(id), "spiffe://%s%s%s/%s", cfg->trust_domain, PSAT_PATH, cl->name, node_uid) >=
	    (int)sizeof(id))
		return ly_error_set(err, LY_E_LIMIT, "k8s_psat: agent ID is over %d bytes", LY_SPIFFE_ID_MAX);
	return ly_attest_result_finish(r, "k8s_psat", cfg->trust_domain, id, err);
}

ly_status
ly_attest_k8s_psat(const struct ly_attest_k8s_psat *cfg, const char *cluster, const char *token, time_t now,
    struct ly_attest_result *out, struct ly_error *err)
{
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_psat_review review;
	struct http h;
	char *auth = NULL;
	char node_name[LY_K8S_NAME_MAX + 1];
	char node_uid[LY_UUID_LEN + 1];
	char h_ct[] = "Content-Type: application/json";
	char h_accept[] = "Accept: application/json";
	char h_expect[] = "Expect:";
	struct curl_slist n_expect = { h_expect, NULL };
	struct curl_slist n_accept = { h_accept, &n_expect };
	struct curl_slist n_ct = { h_ct, &n_accept };
	struct curl_slist n_auth = { NULL, &n_ct }; /* data: the Authorization header, once built */
	ly_status rc;

	memset(&h, 0, sizeof(h));
	memset(&review, 0, sizeof(review));
	if (cfg == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "k8s_psat: no configuration or output");
	rc = check_cluster_name(cluster, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "k8s_psat attestation");
	const struct cluster *cl = find_cluster(cfg, cluster);
	if (cl == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "k8s_psat attestation: unknown cluster %s", cluster);
	size_t token_len = token != NULL ? strnlen(token, LY_K8S_TOKEN_MAX + 1) : 0;
	rc = token_check("token", token, token_len, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "k8s_psat attestation");

	rc = auth_header(cl, &auth, err);
	if (rc != LY_OK)
		goto out;
	n_auth.data = auth;
	h.cl = cl;
	h.headers = &n_auth;
	h.curl = curl_easy_init();
	if (h.curl == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "k8s_psat: libcurl handle");
		goto out;
	}
	rc = review_token(&h, token, token_len, &review, err);
	if (rc != LY_OK)
		goto out;
	if (!allowed(cl, &review)) {
		rc = ly_error_set(err, LY_E_UNTRUSTED, "service account %s:%s is not on cluster %s's allow list",
		    review.ns, review.sa, cl->name);
		goto out;
	}
	rc = lookup_node(&h, &review, node_name, node_uid, err);
	if (rc != LY_OK)
		goto out;
	rc = build_result(cfg, cl, &review, node_name, node_uid, &r, err);
	if (rc != LY_OK)
		goto out;
	*out = r;
	r = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	rc = LY_OK;
out:
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "k8s_psat attestation (cluster %s)", cl->name);
	if (h.curl != NULL)
		curl_easy_cleanup(h.curl);
	ly_free_secret_str(auth);
	ly_attest_result_cleanup(&r);
	return rc;
}
