/*
 * fuzz_agent_podlist.c: the kubelet's pod list (agent/k8s_podlist.h). The
 * first line of the input is "CONTAINER_ID" or "CONTAINER_ID POD_UID", the
 * rest a pod list: parsed, then searched. Every selector found must pass
 * the entry rules (abort otherwise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/k8s_podlist.h"
#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nl = memchr(data, '\n', size < 128 ? size : 128);
	if (nl == NULL)
		return 0;
	size_t head = (size_t)(nl - (const char *)data);
	char *line = strndup((const char *)data, head);
	json_t *list = NULL;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	if (line == NULL)
		return 0;
	ly_log_set_level(LY_LOG_ERROR); /* skipped values are logged as warnings */
	char *pod = strchr(line, ' ');
	if (pod != NULL)
		*pod++ = '\0';
	if (ly_k8s_podlist_parse(nl + 1, size - head - 1, &list, NULL) == LY_OK &&
	    ly_k8s_podlist_find(list, pod, line, &sels, &n, NULL) == LY_OK) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(sels[i].type, "k8s") != 0 || ly_selector_check(sels[i].type, sels[i].value, NULL) != LY_OK)
				abort();
		}
	}
	ly_selectors_free(sels, n);
	json_decref(list);
	free(line);
	return 0;
}
