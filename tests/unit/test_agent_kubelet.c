/*
 * test_agent_kubelet.c: the kubelet pod list parser and lookup
 * (agent/k8s_podlist.h), the kubelet client's configuration checks
 * (agent/kubelet.h), and the k8s attestor's paths that need no kubelet
 * (agent/attest_k8s.h): not in a pod, PID 0, the process gone, a kubelet
 * that cannot be reached (bounded retries), cancel and close. The fetch
 * itself is covered by tests/integration/fake_kubelet.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "agent/attest_k8s.h"
#include "agent/k8s_podlist.h"
#include "agent/kubelet.h"
#include "lib/caps.h"

#define UID_A "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
#define UID_B "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define UID_C "11111111-2222-4333-8444-555555555555"
#define CID1 "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
#define CID2 "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934"
#define CID3 "8d461fa5765781bcf5f7eb192f101bc3103d4b932e26236f43feecfa20664f96"
#define CID4 "45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814"
#define CID5 "b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2"
#define DIGEST "sha256:bf862e5f5eca0a73e7e538224578c5cf867ce2be91b5eaed22afc153c00363eb"

/* Three pods on node-1, shaped as the kubelet writes them (fields we do not read included). */
static const char PODLIST[] =
    "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":["
    "{\"metadata\":{\"name\":\"web-5d9c\",\"namespace\":\"prod\",\"uid\":\"" UID_A "\","
    "\"labels\":{\"app\":\"web\",\"tier\":\"frontend\",\"app.kubernetes.io/name\":\"web\",\"canary\":\"\"},"
    "\"ownerReferences\":[{\"kind\":\"ReplicaSet\",\"name\":\"web\",\"uid\":\"" UID_C "\"}],"
    "\"annotations\":{\"x\":{\"nested\":[1,2,{\"deep\":true}]}}},"
    "\"spec\":{\"serviceAccountName\":\"web-sa\",\"nodeName\":\"node-1\",\"containers\":[{\"name\":\"web\"}]},"
    "\"status\":{\"phase\":\"Running\",\"containerStatuses\":["
    "{\"name\":\"web\",\"containerID\":\"containerd://" CID1 "\",\"image\":\"docker.io/library/nginx:1.25\","
    "\"imageID\":\"docker.io/library/nginx@" DIGEST "\",\"ready\":true,\"restartCount\":0},"
    "{\"name\":\"sidecar\",\"containerID\":\"cri-o://" CID2 "\",\"image\":\"envoy:v1\",\"imageID\":\"envoy:v1\"}],"
    "\"initContainerStatuses\":["
    "{\"name\":\"init\",\"containerID\":\"docker://" CID3 "\",\"image\":\"busybox:1\",\"imageID\":\"" DIGEST "\"}]}},"
    "{\"metadata\":{\"name\":\"db-0\",\"namespace\":\"data\",\"uid\":\"" UID_B "\",\"labels\":null},"
    "\"spec\":{\"nodeName\":\"node-1\"},"
    "\"status\":{\"containerStatuses\":[{\"name\":\"db\",\"containerID\":\"containerd://" CID4 "\"},"
    "{\"name\":\"starting\",\"image\":\"x:1\"}],\"initContainerStatuses\":null}},"
    "{\"metadata\":{\"name\":\"odd\",\"namespace\":\"Not_A_Label\",\"uid\":\"" UID_C "\","
    "\"labels\":{\"ok\":\"yes\",\"bad key\":\"v\",\"k\":\"-bad-value\"}},"
    "\"spec\":{\"serviceAccountName\":\"UPPER\",\"nodeName\":\"node-1\"},"
    "\"status\":{\"containerStatuses\":[{\"name\":\"c\",\"containerID\":\"containerd://" CID5 "\","
    "\"image\":\"has space:1\"}]}}"
    "]}";

static json_t *
load(const char *text)
{
	json_t *list = NULL;
	struct ly_error err;
	if (ly_k8s_podlist_parse(text, strlen(text), &list, &err) != LY_OK)
		fail_msg("%s", err.msg);
	return list;
}

static bool
has(const struct ly_selector *s, size_t n, const char *value)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s[i].type, "k8s") == 0 && strcmp(s[i].value, value) == 0)
			return true;
	}
	return false;
}

static void
test_find_container(void **state)
{
	(void)state;
	json_t *list = load(PODLIST);
	struct ly_selector *s = NULL;
	size_t n = 0;
	struct ly_error err;

	assert_int_equal(ly_k8s_podlist_find(list, UID_A, CID1, &s, &n, &err), LY_OK);
	const char *want[] = {
		"ns:prod",
		"sa:web-sa",
		"pod-name:web-5d9c",
		("pod-uid:" UID_A),
		"pod-label:app:web",
		"pod-label:tier:frontend",
		"pod-label:app.kubernetes.io/name:web",
		"pod-label:canary:",
		"container-name:web",
		"container-image:docker.io/library/nginx:1.25",
		("container-image:docker.io/library/nginx@" DIGEST),
		"node-name:node-1",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (!has(s, n, want[i]))
			fail_msg("missing k8s:%s", want[i]);
	}
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ly_selector_check(s[i].type, s[i].value, NULL), LY_OK);
	ly_selectors_free(s, n);

	/* Without a pod UID from the cgroup, every pod is searched. */
	assert_int_equal(ly_k8s_podlist_find(list, NULL, CID1, &s, &n, &err), LY_OK);
	assert_true(has(s, n, "pod-uid:" UID_A));
	ly_selectors_free(s, n);

	/* cri-o:// ; image and imageID equal: one selector. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_A, CID2, &s, &n, &err), LY_OK);
	assert_true(has(s, n, "container-name:sidecar"));
	assert_true(has(s, n, "container-image:envoy:v1"));
	assert_int_equal(n, 11);
	ly_selectors_free(s, n);

	/* docker:// in initContainerStatuses. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_A, CID3, &s, &n, &err), LY_OK);
	assert_true(has(s, n, "container-name:init"));
	assert_true(has(s, n, "container-image:busybox:1"));
	assert_true(has(s, n, "container-image:" DIGEST));
	ly_selectors_free(s, n);

	/* No labels (null), no service account, no image: those selectors are absent. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_B, CID4, &s, &n, &err), LY_OK);
	const char *want_b[] = { "ns:data", "pod-name:db-0", ("pod-uid:" UID_B), "container-name:db", "node-name:node-1" };
	for (size_t i = 0; i < sizeof(want_b) / sizeof(want_b[0]); i++)
		assert_true(has(s, n, want_b[i]));
	assert_int_equal(n, 5);
	ly_selectors_free(s, n);
	json_decref(list);
}

static void
test_invalid_values_skipped(void **state)
{
	(void)state;
	json_t *list = load(PODLIST);
	struct ly_selector *s = NULL;
	size_t n = 0;
	struct ly_error err;

	/* A namespace, service account, label and image that break the selector rules give no selector. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_C, CID5, &s, &n, &err), LY_OK);
	assert_true(has(s, n, "pod-label:ok:yes"));
	assert_true(has(s, n, "pod-name:odd"));
	assert_true(has(s, n, "container-name:c"));
	for (size_t i = 0; i < n; i++) {
		assert_null(strstr(s[i].value, "Not_A_Label"));
		assert_null(strstr(s[i].value, "UPPER"));
		assert_null(strstr(s[i].value, "bad key"));
		assert_null(strstr(s[i].value, "-bad-value"));
		assert_null(strstr(s[i].value, "has space"));
	}
	assert_int_equal(n, 5); /* pod-name, pod-uid, pod-label:ok, container-name, node-name */
	ly_selectors_free(s, n);
	json_decref(list);
}

static void
test_not_found(void **state)
{
	(void)state;
	json_t *list = load(PODLIST);
	struct ly_selector *s = NULL;
	size_t n = 0;
	struct ly_error err;

	/* In another pod than the cgroup says. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_B, CID1, &s, &n, &err), LY_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "not listed in pod"));
	assert_null(s);
	/* A pod the kubelet does not list (yet). */
	assert_int_equal(ly_k8s_podlist_find(list, "99999999-9999-4999-8999-999999999999", CID1, &s, &n, &err),
	    LY_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "is not listed by the kubelet"));
	/* No pod lists the container. */
	const char *other = "0000000000000000000000000000000000000000000000000000000000000000";
	assert_int_equal(ly_k8s_podlist_find(list, NULL, other, &s, &n, &err), LY_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "no pod lists"));
	/* A prefix of an ID is not the ID. */
	assert_int_equal(ly_k8s_podlist_find(list, NULL, "9bca8d63d5fa", &s, &n, &err), LY_E_NOT_FOUND);
	assert_int_equal(ly_k8s_podlist_find(list, NULL, "", &s, &n, &err), LY_E_INVALID);
	json_decref(list);

	/* An empty node: items empty or null. */
	list = load("{\"kind\":\"PodList\",\"items\":null}");
	assert_int_equal(ly_k8s_podlist_find(list, NULL, CID1, &s, &n, &err), LY_E_NOT_FOUND);
	json_decref(list);
	list = load("{\"items\":[]}");
	assert_int_equal(ly_k8s_podlist_find(list, UID_A, CID1, &s, &n, &err), LY_E_NOT_FOUND);
	json_decref(list);
}

static void
test_container_id_forms(void **state)
{
	(void)state;
	struct ly_selector *s = NULL;
	size_t n = 0;
	struct ly_error err;
	const char *forms[] = {
		CID1,                                /* no scheme */
		"containerd:/" CID1,                 /* not "://" */
		"containerd://" CID1 "/x",           /* more after the ID */
		"containerd://9BCA8D63D5FA610783847915BCFF0ECAC1273E5B4BED3F6FA1B07350E0135961", /* case */
		"containerd://x" CID1,
	};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		char doc[512];
		snprintf(doc, sizeof(doc),
		    "{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"uid\":\"" UID_A "\"},"
		    "\"status\":{\"containerStatuses\":[{\"name\":\"c\",\"containerID\":\"%s\"}]}}]}",
		    forms[i]);
		json_t *list = load(doc);
		if (ly_k8s_podlist_find(list, UID_A, CID1, &s, &n, &err) != LY_E_NOT_FOUND)
			fail_msg("matched: %s", forms[i]);
		json_decref(list);
	}
}

static void
test_two_pods_refused(void **state)
{
	(void)state;
	struct ly_selector *s = NULL;
	size_t n = 0;
	struct ly_error err;
	const char *doc =
	    "{\"items\":["
	    "{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"uid\":\"" UID_A "\"},"
	    "\"status\":{\"containerStatuses\":[{\"name\":\"c\",\"containerID\":\"containerd://" CID1 "\"}]}},"
	    "{\"metadata\":{\"name\":\"b\",\"namespace\":\"n\",\"uid\":\"" UID_B "\"},"
	    "\"status\":{\"initContainerStatuses\":[{\"name\":\"c\",\"containerID\":\"cri-o://" CID1 "\"}]}}]}";
	json_t *list = load(doc);
	assert_int_equal(ly_k8s_podlist_find(list, NULL, CID1, &s, &n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "two pods"));
	assert_null(s);
	/* With the pod UID from the cgroup, only that pod is looked at. */
	assert_int_equal(ly_k8s_podlist_find(list, UID_B, CID1, &s, &n, &err), LY_OK);
	assert_true(has(s, n, "pod-name:b"));
	ly_selectors_free(s, n);
	json_decref(list);
}

#define POD(meta, rest) "{\"items\":[{\"metadata\":{" meta "}" rest "}]}"
#define GOOD_META "\"name\":\"p\",\"namespace\":\"n\",\"uid\":\"" UID_A "\""

static void
test_bad_types_refused(void **state)
{
	(void)state;
	struct {
		const char *doc;
		const char *words;
	} bad[] = {
		{ "[]", "not a JSON object" },
		{ "{\"kind\":\"Pod\",\"items\":[]}", "kind must be PodList" },
		{ "{\"kind\":1,\"items\":[]}", "kind must be a string" },
		{ "{\"kind\":\"PodList\"}", "items is missing" },
		{ "{\"items\":{}}", "items must be an array" },
		{ "{\"items\":[1]}", "items[0] must be an object" },
		{ "{\"items\":[{}]}", "items[0].metadata is missing" },
		{ "{\"items\":[{\"metadata\":[]}]}", "metadata must be an object" },
		{ POD("\"name\":\"p\",\"namespace\":\"n\"", ""), "metadata.uid is missing" },
		{ POD("\"name\":\"p\",\"namespace\":\"n\",\"uid\":7", ""), "metadata.uid must be a string" },
		{ POD("\"name\":true,\"namespace\":\"n\",\"uid\":\"u\"", ""), "metadata.name must be a string" },
		{ POD(GOOD_META ",\"labels\":[]", ""), "labels must be an object" },
		{ POD(GOOD_META ",\"labels\":{\"a\":1}", ""), "labels values must be strings" },
		{ POD(GOOD_META, ",\"spec\":[]"), "spec must be an object" },
		{ POD(GOOD_META, ",\"spec\":{\"nodeName\":5}"), "spec.nodeName must be a string" },
		{ POD(GOOD_META, ",\"spec\":{\"serviceAccountName\":{}}"), "serviceAccountName must be a string" },
		{ POD(GOOD_META, ",\"status\":\"Running\""), "status must be an object" },
		{ POD(GOOD_META, ",\"status\":{\"containerStatuses\":{}}"), "containerStatuses must be an array" },
		{ POD(GOOD_META, ",\"status\":{\"containerStatuses\":[\"x\"]}"), "containerStatuses[0] must be an object" },
		{ POD(GOOD_META, ",\"status\":{\"containerStatuses\":[{}]}"), "name is missing" },
		{ POD(GOOD_META, ",\"status\":{\"initContainerStatuses\":[{\"name\":\"c\",\"containerID\":1}]}"),
		    "initContainerStatuses[0].containerID must be a string" },
		{ POD(GOOD_META, ",\"status\":{\"containerStatuses\":[{\"name\":\"c\",\"image\":[]}]}"),
		    "image must be a string" },
		{ POD(GOOD_META, ",\"status\":{\"containerStatuses\":[{\"name\":\"c\",\"imageID\":false}]}"),
		    "imageID must be a string" },
		{ "{\"items\":[]} trailing", "not JSON" },
		{ "{\"items\":[],\"items\":[]}", "not JSON" },
		{ "{\"items\":[", "not JSON" },
		{ "", "not JSON" },
		{ "{\"items\":[{\"metadata\":{\"name\":\"p\\u0000x\",\"namespace\":\"n\",\"uid\":\"u\"}}]}", "not JSON" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *list = NULL;
		struct ly_error err;
		ly_status rc = ly_k8s_podlist_parse(bad[i].doc, strlen(bad[i].doc), &list, &err);
		if (rc != LY_E_INVALID)
			fail_msg("case %zu: %s: got %d", i, bad[i].doc, rc);
		assert_null(list);
		if (strstr(err.msg, bad[i].words) == NULL)
			fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, bad[i].words);
	}
	/* The lookup refuses an unchecked document the same way. */
	json_t *raw = json_loads("{\"items\":[{\"metadata\":{\"uid\":3}}]}", 0, NULL);
	struct ly_selector *s = NULL;
	size_t n = 0;
	assert_int_equal(ly_k8s_podlist_find(raw, NULL, CID1, &s, &n, NULL), LY_E_INVALID);
	json_decref(raw);
}

/* A document with `count` entries "<pre>N<post>" inside `head` ... `tail`. */
static char *
repeat_doc(const char *head, const char *pre, const char *post, size_t count, const char *tail)
{
	size_t cap = strlen(head) + strlen(tail) + count * (strlen(pre) + strlen(post) + 24) + 1;
	char *doc = malloc(cap);
	assert_non_null(doc);
	size_t o = (size_t)snprintf(doc, cap, "%s", head);
	for (size_t i = 0; i < count; i++) {
		if (i > 0)
			doc[o++] = ',';
		o += (size_t)snprintf(doc + o, cap - o, "%s%zu%s", pre, i, post);
	}
	snprintf(doc + o, cap - o, "%s", tail);
	return doc;
}

static void
expect_limit(char *doc, bool refused)
{
	json_t *list = NULL;
	struct ly_error err;
	ly_status rc = ly_k8s_podlist_parse(doc, strlen(doc), &list, &err);
	if (refused) {
		if (rc != LY_E_LIMIT)
			fail_msg("not refused (%d): %.80s", rc, doc);
		assert_null(list);
	} else {
		if (rc != LY_OK)
			fail_msg("refused: %s", err.msg);
		json_decref(list);
	}
	free(doc);
}

/* A valid pod list whose first pod's metadata holds `levels` nested arrays. */
static char *
deep_doc(size_t levels)
{
	const char *head = "{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"uid\":\"u\",\"x\":";
	char *doc = malloc(strlen(head) + 2 * levels + 8);
	assert_non_null(doc);
	size_t o = (size_t)sprintf(doc, "%s", head);
	memset(doc + o, '[', levels);
	memset(doc + o + levels, ']', levels);
	strcpy(doc + o + 2 * levels, "}}]}");
	return doc;
}

static void
test_caps(void **state)
{
	(void)state;
	const char *pre = "{\"metadata\":{\"name\":\"p", *post = "\",\"namespace\":\"n\",\"uid\":\"u\"}}";
	expect_limit(repeat_doc("{\"items\":[", pre, post, LY_K8S_PODS_MAX, "]}"), false);
	expect_limit(repeat_doc("{\"items\":[", pre, post, LY_K8S_PODS_MAX + 1, "]}"), true);

	const char *lhead = "{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"uid\":\"u\",\"labels\":{";
	expect_limit(repeat_doc(lhead, "\"l", "\":\"v\"", LY_K8S_LABELS_MAX, "}}}]}"), false);
	expect_limit(repeat_doc(lhead, "\"l", "\":\"v\"", LY_K8S_LABELS_MAX + 1, "}}}]}"), true);

	const char *shead = "{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"uid\":\"u\"},"
			    "\"status\":{\"initContainerStatuses\":[";
	expect_limit(repeat_doc(shead, "{\"name\":\"c", "\"}", LY_K8S_CONTAINERS_MAX, "]}}]}"), false);
	expect_limit(repeat_doc(shead, "{\"name\":\"c", "\"}", LY_K8S_CONTAINERS_MAX + 1, "]}}]}"), true);

	/* Nesting, counted even where the lookup never reads (managedFields), and not inside strings. */
	expect_limit(deep_doc(LY_K8S_JSON_DEPTH_MAX - 4), false); /* root, items, item, metadata */
	expect_limit(deep_doc(LY_K8S_JSON_DEPTH_MAX - 3), true);
	expect_limit(strdup("{\"items\":[],\"s\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}"),
	    false);

	/* Size: refused before parsing. */
	size_t big = (size_t)LY_K8S_PODLIST_MAX + 1;
	char *doc = malloc(big);
	assert_non_null(doc);
	memset(doc, ' ', big);
	memcpy(doc, "{\"items\":[]}", 12);
	json_t *list = NULL;
	struct ly_error err;
	assert_int_equal(ly_k8s_podlist_parse(doc, big, &list, &err), LY_E_LIMIT);
	assert_int_equal(ly_k8s_podlist_parse(doc, big - 1, &list, &err), LY_OK);
	json_decref(list);
	free(doc);

	/* Selectors per workload: labels beyond LY_WORKLOAD_SELECTORS_MAX cannot be reached under LY_K8S_LABELS_MAX. */
	assert_true(LY_K8S_LABELS_MAX + 16 <= LY_WORKLOAD_SELECTORS_MAX);
}

/* ---- the kubelet client's configuration ---- */

static void
test_kubelet_config(void **state)
{
	(void)state;
	uv_loop_t loop;
	struct ly_kubelet *k = NULL;
	struct ly_error err;
	char longhost[300];

	assert_int_equal(uv_loop_init(&loop), 0);
	struct ly_kubelet_config good = { "node-1.example", 0, "/var/run/token", "/var/run/ca.crt", false, 0, 0 };
	struct ly_kubelet_config c = good;
	c.host = NULL;
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c.host = "node/1";
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c.host = "node 1";
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c.host = "node@evil";
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	memset(longhost, 'a', 254);
	longhost[254] = '\0';
	c.host = longhost;
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c = good;
	c.port = 65536;
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c = good;
	c.token_file = NULL;
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	c = good;
	c.ca_file = NULL;
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "CA file"));
	assert_null(k);
	/* Verification skipped explicitly: no CA needed. IPv6 literals are fine. */
	c.skip_verify = true;
	c.host = "fd00::1";
	assert_int_equal(ly_kubelet_new(&loop, &c, &k, &err), LY_OK);
	ly_kubelet_close(k);
	assert_int_equal(ly_kubelet_new(&loop, &good, &k, &err), LY_OK);
	struct ly_kubelet_stats st;
	ly_kubelet_stats(k, &st);
	assert_int_equal(st.fetches, 0);
	ly_kubelet_close(k);
	ly_kubelet_close(NULL);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the attestor without a kubelet ---- */

struct fixture {
	char root[64];
	char token[128];
	uv_loop_t loop;
	int port; /* a closed port on 127.0.0.1 */
};

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
add_proc(struct fixture *fx, int pid, const char *cgroup, const char *mountinfo)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%d", fx->root, pid);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/%d/cgroup", fx->root, pid);
	write_file(path, cgroup);
	snprintf(path, sizeof(path), "%s/%d/mountinfo", fx->root, pid);
	write_file(path, mountinfo);
}

static int
closed_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
	close(s);
	return ntohs(sa.sin_port);
}

static int
fx_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	strcpy(fx->root, "/tmp/ly-k8s-XXXXXX");
	if (mkdtemp(fx->root) == NULL)
		return -1;
	snprintf(fx->token, sizeof(fx->token), "%s/token", fx->root);
	write_file(fx->token, "test.token.value\n");
	uv_loop_init(&fx->loop);
	fx->port = closed_port();
	add_proc(fx, 100, "0::/user.slice/user-1000.slice/session-3.scope\n",
	    "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n");
	add_proc(fx, 101, "0::/kubepods/burstable/pod" UID_A "/" CID1 "\n", "");
	add_proc(fx, 102, "not a cgroup file\n", "");
	add_proc(fx, 103, "0::/system.slice/docker-" CID2 ".scope\n", "");
	*state = fx;
	return 0;
}

static int
fx_teardown(void **state)
{
	struct fixture *fx = *state;
	char cmd[128];
	int rc = uv_loop_close(&fx->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->root);
	if (system(cmd) != 0)
		rc = -1;
	free(fx);
	return rc == 0 ? 0 : -1;
}

static struct ly_k8s_attestor *
fx_attestor(struct fixture *fx, unsigned attempts)
{
	struct ly_k8s_attestor_config cfg;
	struct ly_k8s_attestor *a = NULL;
	struct ly_error err;
	memset(&cfg, 0, sizeof(cfg));
	cfg.kubelet.host = "127.0.0.1";
	cfg.kubelet.port = (unsigned)fx->port;
	cfg.kubelet.token_file = fx->token;
	cfg.kubelet.skip_verify = true;
	cfg.kubelet.timeout_ms = 2000;
	cfg.max_attempts = attempts;
	cfg.retry_interval_ms = 10;
	if (ly_k8s_attestor_new(&fx->loop, &cfg, &a, &err) != LY_OK)
		fail_msg("%s", err.msg);
	return a;
}

struct result {
	int calls;
	ly_status rc;
	size_t n;
	char msg[LY_ERROR_MSG_MAX];
};

static void
on_result(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct result *r = arg;
	r->calls++;
	r->rc = rc;
	r->n = n;
	if (rc != LY_OK) {
		assert_non_null(err);
		assert_null(sels);
		snprintf(r->msg, sizeof(r->msg), "%s", err->msg);
	}
	ly_selectors_free(sels, n);
}

static void
test_attest_without_kubelet(void **state)
{
	struct fixture *fx = *state;
	struct ly_k8s_attestor *a = fx_attestor(fx, 3);
	struct result not_pod = { 0 }, gone = { 0 }, bad = { 0 }, down = { 0 }, docker = { 0 };
	struct ly_error err;

	assert_int_equal(ly_k8s_attest_start(a, 100, fx->root, on_result, &not_pod, NULL, &err), LY_OK);
	assert_int_equal(ly_k8s_attest_start(a, 999, fx->root, on_result, &gone, NULL, &err), LY_OK);
	assert_int_equal(ly_k8s_attest_start(a, 102, fx->root, on_result, &bad, NULL, &err), LY_OK);
	assert_int_equal(ly_k8s_attest_start(a, 101, fx->root, on_result, &down, NULL, &err), LY_OK);
	assert_int_equal(ly_k8s_attest_start(a, 103, fx->root, on_result, &docker, NULL, &err), LY_OK);
	/* PID 0: refused at once, no callback. */
	struct result zero = { 0 };
	assert_int_equal(ly_k8s_attest_start(a, 0, fx->root, on_result, &zero, NULL, &err), LY_E_UNSUPPORTED);
	assert_int_equal(not_pod.calls + gone.calls + bad.calls + down.calls, 0); /* never from inside start */
	while (not_pod.calls + gone.calls + bad.calls + down.calls + docker.calls < 5)
		uv_run(&fx->loop, UV_RUN_ONCE);

	assert_int_equal(not_pod.rc, LY_OK);
	assert_int_equal(not_pod.n, 0);
	assert_int_equal(gone.rc, LY_E_NOT_FOUND);
	assert_int_equal(bad.rc, LY_E_INVALID);
	/* The kubelet is down: bounded retries, then the error. */
	assert_int_equal(down.rc, LY_E_IO);
	assert_non_null(strstr(down.msg, "lookup 3 of 3"));
	assert_non_null(strstr(down.msg, "unreachable"));
	/* Down is down for a container without pod too: an error, not "no selectors". */
	assert_int_equal(docker.rc, LY_E_IO);
	struct ly_kubelet_stats st;
	ly_k8s_attestor_kubelet_stats(a, &st);
	/* The not-in-a-pod, gone and malformed cases never asked the kubelet; the two others share fetches. */
	assert_true(st.fetches >= 3 && st.fetches <= 6);
	assert_int_equal(st.failures, st.fetches);
	assert_int_equal(zero.calls, 0);
	ly_k8s_attestor_close(a);
	assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
}

static void
test_cancel_and_close(void **state)
{
	struct fixture *fx = *state;
	struct ly_k8s_attestor *a = fx_attestor(fx, 20);
	struct result cancelled = { 0 }, pending = { 0 };
	struct ly_k8s_attest *req = NULL;
	struct ly_error err;

	/* Cancelled before its worker ran: no callback. */
	assert_int_equal(ly_k8s_attest_start(a, 101, fx->root, on_result, &cancelled, &req, &err), LY_OK);
	assert_non_null(req);
	ly_k8s_attest_cancel(req);
	/* Waiting on a kubelet that is down (20 lookups), then the attestor closes: one callback, LY_E_IO. */
	assert_int_equal(ly_k8s_attest_start(a, 101, fx->root, on_result, &pending, &req, &err), LY_OK);
	for (int i = 0; i < 20; i++)
		uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(pending.calls, 0);
	ly_k8s_attestor_close(a);
	assert_int_equal(pending.calls, 1);
	assert_int_equal(pending.rc, LY_E_IO);
	assert_non_null(strstr(pending.msg, "closing"));
	assert_int_equal(cancelled.calls, 0);
	assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pending.calls, 1);
	assert_int_equal(cancelled.calls, 0);
}

static void
test_attestor_config(void **state)
{
	struct fixture *fx = *state;
	struct ly_k8s_attestor_config cfg;
	struct ly_k8s_attestor *a = NULL;
	struct ly_error err;

	memset(&cfg, 0, sizeof(cfg));
	cfg.kubelet.host = "127.0.0.1";
	cfg.kubelet.token_file = fx->token;
	cfg.kubelet.skip_verify = true;
	cfg.max_attempts = LY_K8S_ATTEMPTS_MAX + 1;
	assert_int_equal(ly_k8s_attestor_new(&fx->loop, &cfg, &a, &err), LY_E_LIMIT);
	cfg.max_attempts = 0;
	cfg.kubelet.skip_verify = false;
	assert_int_equal(ly_k8s_attestor_new(&fx->loop, &cfg, &a, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "k8s attestor"));
	assert_null(a);
	ly_k8s_attestor_close(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_container),
		cmocka_unit_test(test_invalid_values_skipped),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_container_id_forms),
		cmocka_unit_test(test_two_pods_refused),
		cmocka_unit_test(test_bad_types_refused),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_kubelet_config),
		cmocka_unit_test_setup_teardown(test_attest_without_kubelet, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_and_close, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_attestor_config, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
