/*
 * fuzz_agent_cgroup.c: arbitrary bytes as /proc/<pid>/cgroup text (up to
 * the first NUL) and as mountinfo text (after it), and the whole input as
 * /proc/<pid>/stat (agent/cgroup.h, agent/procfs.h). Whatever is found must
 * make valid selectors: a 64-hex container ID and a canonical pod UID
 * (abort otherwise).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cgroup.h"
#include "agent/procfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A container ID is 64 lower-case hex digits (as unix:sha256 checks them); a pod UID a canonical UUID. */
static void
check(const struct ly_cgroup_ids *ids)
{
	char v[128];
	if (ids->has_pod && !ids->has_container)
		abort();
	snprintf(v, sizeof(v), "sha256:%s", ids->container_id);
	if (ids->has_container && ly_selector_check("unix", v, NULL) != LY_OK)
		abort();
	snprintf(v, sizeof(v), "pod-uid:%s", ids->pod_uid);
	if (ids->has_pod && ly_selector_check("k8s", v, NULL) != LY_OK)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *nul = memchr(text, '\0', size);
	size_t n1 = nul != NULL ? (size_t)(nul - text) : size;
	struct ly_cgroup_ids ids;
	uint64_t start;

	if (ly_cgroup_parse(text, n1, &ids, NULL) == LY_OK)
		check(&ids);
	if (nul != NULL && ly_cgroup_parse_mountinfo(nul + 1, size - n1 - 1, &ids, NULL) == LY_OK)
		check(&ids);
	if (ly_cgroup_path_ids(text, n1, &ids))
		check(&ids);
	if (ly_proc_parse_start_time(text, size, &start, NULL) != LY_OK && start != 0)
		abort(); /* a refused stat leaves 0 */
	return 0;
}
