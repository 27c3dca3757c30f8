/*
 * fuzz_pg_notify.c: arbitrary bytes as a NOTIFY payload another server's
 * write sent (server/pg_notify.h). An accepted payload must be one of the
 * four forms, with a positive revision or a printable "spiffe://" agent ID
 * within LY_SPIFFE_ID_MAX, and must read the same when written back in its
 * form (abort otherwise); a refused one leaves the kind 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "server/pg_notify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_pg_notice n;
	char back[LY_PG_NOTIFY_PAYLOAD_MAX + 32];
	int len = -1;

	if (ly_pg_notify_parse((const char *)data, size, &n, NULL) != LY_OK) {
		if (n.kind != 0)
			abort();
		return 0;
	}
	switch (n.kind) {
	case LY_PG_NOTICE_BUNDLE: len = snprintf(back, sizeof(back), "b"); break;
	case LY_PG_NOTICE_ENTRIES:
		if (n.revision <= 0)
			abort();
		len = snprintf(back, sizeof(back), "e %lld", (long long)n.revision);
		break;
	case LY_PG_NOTICE_AGENT_EVICTED:
	case LY_PG_NOTICE_AGENT_BANNED:
		if (strncmp(n.agent_id, "spiffe://", 9) != 0 || strlen(n.agent_id) > LY_SPIFFE_ID_MAX)
			abort();
		len = snprintf(back, sizeof(back), "a %s %s", n.kind == LY_PG_NOTICE_AGENT_BANNED ? "banned" : "evicted",
		    n.agent_id);
		break;
	default: abort();
	}
	if (len < 0 || (size_t)len != size || memcmp(back, data, size) != 0)
		abort();
	return 0;
}
