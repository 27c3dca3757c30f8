/*
 * fuzz_wapi_health.c: grpc.health.v1.HealthCheckRequest as the agent reads
 * it by hand (ly_wmsg_parse_health_request, agent/workload_msg.h, called by
 * agent/wapi.c's Health/Check). Whatever it accepts must hold to its rules:
 * at most LY_WORKLOAD_REQUEST_MAX bytes; "known" only for the two names,
 * checked against an independent walk of the same bytes when the input is
 * exactly one `service` field; nothing known on a refusal.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/workload_msg.h"
#include "lib/caps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool known = true;
	ly_status rc = ly_wmsg_parse_health_request(data, size, &known, NULL);

	if (rc != LY_OK) {
		if (known)
			abort();
		return 0;
	}
	if (size > LY_WORKLOAD_REQUEST_MAX)
		abort();
	/* One field 1 with a one-byte length: the name is data[2..]. */
	if (size >= 2 && data[0] == 0x0a && data[1] < 0x80 && (size_t)data[1] + 2 == size) {
		size_t n = data[1];
		bool want = n == 0 || (n == 17 && memcmp(data + 2, "SpiffeWorkloadAPI", 17) == 0);
		if (known != want)
			abort();
	}
	if (size == 0 && !known)
		abort();
	return 0;
}
