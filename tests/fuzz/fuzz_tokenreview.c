/*
 * fuzz_tokenreview.c: the k8s_psat response parsers (server/attest.h) on
 * arbitrary bytes. The first byte picks the parser (mod 3: TokenReview,
 * Pod, Node), the rest is the JSON. Whatever a parser accepts must make
 * a valid k8s_psat selector (and so a safe URL path segment).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/attest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
must_select(const char *key, const char *arg)
{
	char value[LY_SELECTOR_MAX];
	(void)snprintf(value, sizeof(value), "%s:%s", key, arg);
	if (ly_selector_check("k8s_psat", value, NULL) != LY_OK)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_psat_review rv;
	char node[LY_K8S_NAME_MAX + 1], uid[LY_UUID_LEN + 1];
	if (size < 1)
		return 0;
	const char *json = (const char *)data + 1;
	if (data[0] % 3 == 0 && ly_psat_parse_tokenreview(json, size - 1, "lanyard-server", &rv, NULL) == LY_OK) {
		must_select("agent_ns", rv.ns);
		must_select("agent_sa", rv.sa);
		must_select("agent_node_name", rv.pod_name); /* same rule as a pod name */
		must_select("agent_node_uid", rv.pod_uid);
	} else if (data[0] % 3 == 1 &&
	    ly_psat_parse_pod(json, size - 1, "ns", "pod", "1b4e28ba-2fa1-41d2-883f-0016d3cca427", node, NULL) == LY_OK) {
		must_select("agent_node_name", node);
	} else if (data[0] % 3 == 2 && ly_psat_parse_node(json, size - 1, "node", uid, NULL) == LY_OK) {
		must_select("agent_node_uid", uid);
	}
	return 0;
}
