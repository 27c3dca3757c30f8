/*
 * test_attest_k8s_psat.c: the server's k8s_psat attestor (server/attest.h,
 * SPEC §6) without an API server: the TokenReview, Pod and Node parsers on
 * canned JSON (with their size and depth caps), the configuration rules,
 * and the refusals made before any request. The HTTP path is driven by
 * tests/integration/fake_k8s_api.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "server/attest.h"

#define TD "example.org"

/* ---- k8s_psat: parsers ---- */

#define POD_UID "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
#define NODE_UID "9d2a7c1e-5b3f-4e8a-a1c2-3d4e5f6a7b8c"

#define REVIEW_HEAD "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\","
#define USER_OK                                                                                  \
	"\"user\":{\"username\":\"system:serviceaccount:lanyard:lanyard-agent\",\"uid\":\"x\","  \
	"\"groups\":[\"system:serviceaccounts\"],\"extra\":{"                                    \
	"\"authentication.kubernetes.io/pod-name\":[\"lanyard-agent-7xk2p\"],"                   \
	"\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}"

static ly_status
review(const char *json, struct ly_psat_review *out, struct ly_error *err)
{
	return ly_psat_parse_tokenreview(json, strlen(json), "lanyard-server", out, err);
}

static void
test_psat_review_good(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	const char *j = REVIEW_HEAD "\"spec\":{\"token\":\"xxxx\",\"audiences\":[\"lanyard-server\"]},"
				    "\"status\":{\"authenticated\":true,\"audiences\":[\"other\",\"lanyard-server\"]," USER_OK
				    "}}";
	if (review(j, &rv, &err) != LY_OK)
		fail_msg("%s", err.msg);
	assert_string_equal(rv.ns, "lanyard");
	assert_string_equal(rv.sa, "lanyard-agent");
	assert_string_equal(rv.pod_name, "lanyard-agent-7xk2p");
	assert_string_equal(rv.pod_uid, POD_UID);
}

static void
test_psat_review_refusals(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	static const struct {
		const char *json;
		ly_status want;
		const char *msg;
	} cases[] = {
		/* not authenticated: false, absent (omitempty), no status at all */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":false,\"audiences\":[\"lanyard-server\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"audiences\":[\"lanyard-server\"]," USER_OK "}}", LY_E_UNTRUSTED,
		    "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"error\":\"invalid bearer token\"}}", LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"spec\":{}}", LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":\"true\"," USER_OK "}}", LY_E_INVALID, "boolean" },
		{ REVIEW_HEAD "\"status\":[]}", LY_E_INVALID, "status" },
		/* audience */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"other\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true," USER_OK "}}", LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server-x\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":\"lanyard-server\"," USER_OK "}}",
		    LY_E_INVALID, "audiences" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[1]," USER_OK "}}", LY_E_INVALID,
		    "audiences[0]" },
		/* user */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"alice\"}}}",
		    LY_E_UNTRUSTED, "not a service-account token" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:Bad_NS:sa\"}}}",
		    LY_E_INVALID, "DNS-1123" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:nscolonless\"}}}",
		    LY_E_INVALID, "username" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":7}}}",
		    LY_E_INVALID, "not a string" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"]}}", LY_E_INVALID,
		    "status.user" },
		/* a legacy (secret) token: no pod binding */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\"}}}",
		    LY_E_UNTRUSTED, "not bound to a pod" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\",\"b\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}}}",
		    LY_E_INVALID, "one string" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"1B4E28BA-2FA1-41D2-883F-0016D3CCA427\"]}}}}",
		    LY_E_INVALID, "UUID" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"../../nodes/x\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}}}",
		    LY_E_INVALID, "DNS-1123" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\"]}}}}",
		    LY_E_UNTRUSTED, "pod-uid" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":[]}}}",
		    LY_E_INVALID, "extra" },
		/* the object itself */
		{ "{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}", LY_E_INVALID, "kind" },
		{ "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1beta1\"}", LY_E_INVALID, "kind" },
		{ "[]", LY_E_INVALID, "object" },
		{ "{\"kind\":\"TokenReview\"", LY_E_INVALID, "JSON" },
		{ REVIEW_HEAD "\"status\":{},\"status\":{}}", LY_E_INVALID, "JSON" },
		{ "", LY_E_INVALID, "JSON" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ly_status rc = review(cases[i].json, &rv, &err);
		if (rc != cases[i].want || strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("case %zu: got %s \"%s\", want %s with \"%s\"", i, ly_status_str(rc), err.msg,
			    ly_status_str(cases[i].want), cases[i].msg);
		assert_string_equal(rv.ns, "");
	}
}

/* A Node object holding `arrays` nested arrays. */
static char *
nested(int arrays)
{
	static const char head[] = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"s\":\"[[[[[[[[\",\"x\":";
	char *out = malloc(sizeof(head) + 2 * (size_t)arrays + 8);
	assert_non_null(out);
	size_t o = strlen(head);
	memcpy(out, head, o);
	for (int i = 0; i < arrays; i++)
		out[o++] = '[';
	if (arrays == 0)
		out[o++] = '0';
	for (int i = 0; i < arrays; i++)
		out[o++] = ']';
	out[o++] = '}';
	out[o] = '\0';
	return out;
}

static void
test_psat_json_caps(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	char node_uid[LY_UUID_LEN + 1];

	/* Nesting: the object itself is one level; LY_K8S_JSON_DEPTH_MAX - 1 arrays inside are parsed
	 * (and refused for their content), one more is refused up front. */
	char *deep = nested(LY_K8S_JSON_DEPTH_MAX);
	assert_int_equal(ly_psat_parse_node(deep, strlen(deep), "n", node_uid, &err), LY_E_LIMIT);
	free(deep);
	deep = nested(LY_K8S_JSON_DEPTH_MAX - 1);
	assert_int_equal(ly_psat_parse_node(deep, strlen(deep), "n", node_uid, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "metadata"));
	free(deep);
	/* Size. */
	size_t big = (size_t)LY_K8S_RESPONSE_MAX + 1;
	char *b = malloc(big);
	assert_non_null(b);
	memset(b, ' ', big);
	assert_int_equal(ly_psat_parse_tokenreview(b, big, "aud", &rv, &err), LY_E_LIMIT);
	free(b);
	/* An embedded NUL in a string. */
	const char nul[] = REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
				       "\"user\":{\"username\":\"system:serviceaccount:ns:sa\\u0000x\"}}}";
	assert_int_equal(review(nul, &rv, &err), LY_E_INVALID);
	assert_int_equal(ly_psat_parse_tokenreview(NULL, 0, "aud", &rv, &err), LY_E_INVALID);
}

#define POD_HEAD "{\"kind\":\"Pod\",\"apiVersion\":\"v1\","

static ly_status
pod(const char *json, char node[LY_K8S_NAME_MAX + 1], struct ly_error *err)
{
	return ly_psat_parse_pod(json, strlen(json), "lanyard", "lanyard-agent-7xk2p", POD_UID, node, err);
}

static void
test_psat_pod(void **state)
{
	char node[LY_K8S_NAME_MAX + 1];
	struct ly_error err;
	const char *good = POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
				    "\"uid\":\"" POD_UID "\",\"labels\":{\"app\":\"lanyard-agent\"}},"
				    "\"spec\":{\"nodeName\":\"node-a.cluster.local\",\"serviceAccountName\":\"lanyard-agent\"},"
				    "\"status\":{\"phase\":\"Running\"}}";
	if (pod(good, node, &err) != LY_OK)
		fail_msg("%s", err.msg);
	assert_string_equal(node, "node-a.cluster.local");

	static const struct {
		const char *json;
		ly_status want;
		const char *msg;
	} cases[] = {
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"00000000-0000-4000-8000-000000000000\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "UID" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"other\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "namespace" },
		{ POD_HEAD "\"metadata\":{\"name\":\"other\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "name" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\"},"
			   "\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_INVALID, "uid is missing" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{}}",
		    LY_E_INVALID, "not scheduled" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":42}}",
		    LY_E_INVALID, "not a string" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"Node_A\"}}",
		    LY_E_INVALID, "DNS-1123" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"a/../b\"}}",
		    LY_E_INVALID, "DNS-1123" },
		{ POD_HEAD "\"metadata\":[],\"spec\":{\"nodeName\":\"n\"}}", LY_E_INVALID, "metadata" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"}}",
		    LY_E_INVALID, "spec" },
		{ "{\"kind\":\"Node\",\"apiVersion\":\"v1\"}", LY_E_INVALID, "kind" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ly_status rc = pod(cases[i].json, node, &err);
		if (rc != cases[i].want || strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("case %zu: got %s \"%s\", want %s with \"%s\"", i, ly_status_str(rc), err.msg,
			    ly_status_str(cases[i].want), cases[i].msg);
		assert_string_equal(node, "");
	}
}

static void
test_psat_node(void **state)
{
	char uid[LY_UUID_LEN + 1];
	struct ly_error err;
	const char *good = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			   "\"uid\":\"" NODE_UID "\"},\"status\":{\"images\":[]}}";
	assert_int_equal(ly_psat_parse_node(good, strlen(good), "node-a", uid, &err), LY_OK);
	assert_string_equal(uid, NODE_UID);

	assert_int_equal(ly_psat_parse_node(good, strlen(good), "node-b", uid, &err), LY_E_UNTRUSTED);
	assert_string_equal(uid, "");
	const char *bad_uid = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			      "\"uid\":\"not-a-uuid\"}}";
	assert_int_equal(ly_psat_parse_node(bad_uid, strlen(bad_uid), "node-a", uid, &err), LY_E_INVALID);
	const char *no_uid = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\"}}";
	assert_int_equal(ly_psat_parse_node(no_uid, strlen(no_uid), "node-a", uid, &err), LY_E_INVALID);
	const char *pod_kind = "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			       "\"uid\":\"" NODE_UID "\"}}";
	assert_int_equal(ly_psat_parse_node(pod_kind, strlen(pod_kind), "node-a", uid, &err), LY_E_INVALID);
}

/* ---- k8s_psat: configuration and refusals before any request ---- */

static void
test_psat_config(void **state)
{
	struct ly_attest_k8s_psat *cfg = NULL;
	struct ly_error err;
	const char *allow[] = { "lanyard:lanyard-agent" };
	struct ly_psat_cluster_config c = { "prod", allow, 1, NULL, NULL, NULL, NULL };

	assert_int_equal(ly_attest_k8s_psat_new("Bad TD", &cfg, &err), LY_E_INVALID);
	assert_null(cfg);
	assert_int_equal(ly_attest_k8s_psat_new(TD, &cfg, &err), LY_OK);
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, &err), LY_OK);
	/* Duplicate name. */
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "twice"));

	struct ly_psat_cluster_config b = c;
	static const char *bad_names[] = { "", ".", "..", "has space", "a/b" };
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		b.name = bad_names[i];
		assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	}
	char long_name[130];
	memset(long_name, 'c', 129);
	long_name[129] = '\0';
	b.name = long_name;
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);

	b = c;
	b.name = "b";
	b.n_allow = 0;
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	static const char *bad_allow[] = { "nocolon", "Bad:sa", "ns:Bad_SA", ":sa", "ns:", "ns:sa:x" };
	for (size_t i = 0; i < sizeof(bad_allow) / sizeof(bad_allow[0]); i++) {
		const char *one[] = { bad_allow[i] };
		b.allow = one;
		b.n_allow = 1;
		if (ly_attest_k8s_psat_add_cluster(cfg, &b, &err) != LY_E_INVALID)
			fail_msg("allow entry \"%s\" accepted", bad_allow[i]);
	}
	b = c;
	b.name = "b";
	b.api_url = "http://kubernetes.default.svc";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://user@host";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://host/?q";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://host/\r\nX-Evil: 1";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = NULL;
	b.audience = "has space";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = "quote\"";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = "";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = NULL;
	b.ca_file = "";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);

	/* Good variants: IPv6 host, port, a trailing slash. */
	b = c;
	b.name = "b";
	b.api_url = "https://[::1]:6443/";
	b.audience = "spiffe://example.org/server";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_OK);

	/* Cluster cap. */
	char name[16];
	for (int i = 2; i < LY_K8S_CLUSTERS_MAX; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		b.name = name;
		assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_OK);
	}
	b.name = "one-too-many";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_LIMIT);
	ly_attest_k8s_psat_free(cfg);
}

static void
test_psat_refusals_before_http(void **state)
{
	struct ly_attest_k8s_psat *cfg = NULL;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	const char *allow[] = { "lanyard:lanyard-agent" };
	/* Port 1 on loopback: nothing listens; the token file is missing. */
	struct ly_psat_cluster_config c = { "prod", allow, 1, NULL, "https://127.0.0.1:1", "/nonexistent/ca.crt",
		"/nonexistent/token" };
	assert_int_equal(ly_attest_k8s_psat_new(TD, &cfg, NULL), LY_OK);
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, NULL), LY_OK);

	assert_int_equal(ly_attest_k8s_psat(cfg, "staging", "eyJhbGciOiJSUzI1NiJ9.e30.sig", 0, &r, &err),
	    LY_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "unknown cluster"));
	assert_int_equal(ly_attest_k8s_psat(cfg, "bad cluster", "abc", 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "", 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", NULL, 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "tok\"en", 0, &r, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "tok\"en"));
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "tok\r\nX: y", 0, &r, &err), LY_E_INVALID);
	char *big = malloc(LY_K8S_TOKEN_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', LY_K8S_TOKEN_MAX + 1);
	big[LY_K8S_TOKEN_MAX + 1] = '\0';
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", big, 0, &r, &err), LY_E_LIMIT);
	free(big);
	/* A good-looking token, but the server's own token file is missing. */
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "secret.token.value", 0, &r, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, "token file"));
	assert_null(strstr(err.msg, "secret.token.value"));
	assert_null(r.agent_id);
	ly_attest_k8s_psat_free(cfg);
}

int
main(void)
{
	const struct CMUnitTest psat[] = {
		cmocka_unit_test(test_psat_review_good),
		cmocka_unit_test(test_psat_review_refusals),
		cmocka_unit_test(test_psat_json_caps),
		cmocka_unit_test(test_psat_pod),
		cmocka_unit_test(test_psat_node),
		cmocka_unit_test(test_psat_config),
		cmocka_unit_test(test_psat_refusals_before_http),
	};
	return cmocka_run_group_tests_name("k8s_psat", psat, NULL, NULL);
}
