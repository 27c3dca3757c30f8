/*
 * agent_api_limit.c: the agent API's rate limits (SPEC §11;
 * agent_api_internal.h), with SPIRE's figures and config names
 * (server.ratelimit.attestation, server.ratelimit.signing):
 *   - node attestation: AttestAgent calls per source IP, 1 a second with a
 *     burst of LIMIT_ATTEST_BURST (SPIRE: 1/s; the burst lets the two or
 *     three calls of one attestation and a few agents behind one NAT
 *     through). A ticket step is not counted: it only finishes an
 *     attestation that was counted;
 *   - signing, per agent (its SPIFFE ID): X.509-SVIDs (each CSR of a
 *     batch is one token) and JWT-SVIDs, 500 a second each. SPIRE keys
 *     these by source IP too; keying them by agent keeps agents behind one
 *     load balancer or NAT apart (spire#6678), and the caller's identity
 *     is proven by then (mTLS).
 * A refused call ends RESOURCE_EXHAUSTED with the limit in its message;
 * a batch is served as far as the agent's tokens go, its other items are
 * refused one by one (the agent retries them after its per-entry
 * backoff). Refusals are counted in /metrics
 * (lanyard_server_rate_limited_total{limit}) and logged at most once a
 * second per limiter. The clock is the loop's monotonic one (uv_hrtime).
 */
#include "server/agent_api_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "lib/ratelimit.h"

/* SPIRE's figures (pkg/server/api/limits): attestation 1/s, signing 500/s. */
#define LIMIT_ATTEST_RATE 1
#define LIMIT_ATTEST_BURST 10
#define LIMIT_SIGN_RATE 500
#define LIMIT_SIGN_BURST 500
/* Keys each limiter holds (least recently used forgotten first: lib/ratelimit.h). */
#define LIMIT_KEYS 16384
#define LIMIT_LOG_INTERVAL_MS 1000

static const char *const limit_names[AGENT_API_LIMITS] = {
	[AGENT_API_LIMIT_ATTEST] = "attestation",
	[AGENT_API_LIMIT_X509] = "x509_signing",
	[AGENT_API_LIMIT_JWT] = "jwt_signing",
};

static int64_t
limit_now_ms(void)
{
	return (int64_t)(uv_hrtime() / 1000000u);
}

ly_status
agent_api_limit_init(struct ly_agent_api *api, bool attestation, bool signing, struct ly_error *err)
{
	for (int i = 0; i < AGENT_API_LIMITS; i++) {
		bool on = i == AGENT_API_LIMIT_ATTEST ? attestation : signing;
		struct ly_ratelimit_config c = {
			.name = limit_names[i],
			.rate = i == AGENT_API_LIMIT_ATTEST ? LIMIT_ATTEST_RATE : LIMIT_SIGN_RATE,
			.burst = i == AGENT_API_LIMIT_ATTEST ? LIMIT_ATTEST_BURST : LIMIT_SIGN_BURST,
			.max_keys = LIMIT_KEYS,
		};
		if (on)
			LY_TRY(ly_ratelimit_new(&c, &api->limits[i], err));
	}
	return LY_OK;
}

void
agent_api_limit_free(struct ly_agent_api *api)
{
	for (int i = 0; i < AGENT_API_LIMITS; i++) {
		ly_ratelimit_free(api->limits[i]);
		api->limits[i] = NULL;
	}
}

/* The address part of gRPC's peer string: "ipv4:192.0.2.1:5000" -> "192.0.2.1", "ipv6:[::1]:5000" -> "::1". */
void
agent_api_limit_peer_ip(const char *peer, char *out, size_t size)
{
	const char *p = peer != NULL ? peer : "";
	size_t n;

	if (strncmp(p, "ipv4:", 5) == 0) {
		p += 5;
		const char *colon = strrchr(p, ':');
		n = colon != NULL ? (size_t)(colon - p) : strlen(p);
	} else if (strncmp(p, "ipv6:[", 6) == 0) {
		p += 6;
		const char *end = strchr(p, ']');
		n = end != NULL ? (size_t)(end - p) : strlen(p);
	} else {
		n = strlen(p); /* "unix:", "fd:12": one key for all */
	}
	if (n >= size)
		n = size - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

/* Counts `refused` tokens of limiter `which` in /metrics and writes its line when one is due. */
static void
limit_refused(struct ly_agent_api *api, enum agent_api_limit which, const char *key, uint32_t refused)
{
	struct ly_ratelimit *rl = api->limits[which];
	const struct ly_server *srv = api->srv;
	const char *labels[] = { limit_names[which] };
	uint64_t n = 0;

	if (srv->metrics != NULL)
		ly_server_metric_add(srv->metrics->rate_limited, labels, (double)refused);
	if (ly_ratelimit_log_due(rl, limit_now_ms(), LIMIT_LOG_INTERVAL_MS, &n))
		log_warn("rate limit %s (%u/s, burst %u per %s): %" PRIu64 " refused in the last second, latest for %s",
		    limit_names[which], ly_ratelimit_rate(rl), ly_ratelimit_burst(rl),
		    which == AGENT_API_LIMIT_ATTEST ? "source IP" : "agent", n, key);
}

uint32_t
agent_api_limit_take(struct ly_agent_api *api, enum agent_api_limit which, const char *key, uint32_t want,
    bool partial)
{
	struct ly_ratelimit *rl = api->limits[which];

	if (rl == NULL || want == 0)
		return want;
	uint32_t got = ly_ratelimit_take(rl, key, want, partial, limit_now_ms());
	if (got < want)
		limit_refused(api, which, key, want - got);
	return got;
}

void
agent_api_limit_details(enum agent_api_limit which, const struct ly_agent_api *api, char *out, size_t size)
{
	const struct ly_ratelimit *rl = api->limits[which];

	(void)snprintf(out, size, "rate limit: %s over %u/s (burst %u) for this %s; retry later", limit_names[which],
	    rl != NULL ? ly_ratelimit_rate(rl) : 0u, rl != NULL ? ly_ratelimit_burst(rl) : 0u,
	    which == AGENT_API_LIMIT_ATTEST ? "source IP" : "agent");
}

bool
agent_api_limit_attest(struct ly_agent_api *api, struct ly_rpc_call *call)
{
	char ip[128], details[192];

	if (api->limits[AGENT_API_LIMIT_ATTEST] == NULL)
		return true;
	agent_api_limit_peer_ip(ly_rpc_call_peer(call), ip, sizeof(ip));
	if (agent_api_limit_take(api, AGENT_API_LIMIT_ATTEST, ip, 1, false) == 1)
		return true;
	agent_api_limit_details(AGENT_API_LIMIT_ATTEST, api, details, sizeof(details));
	ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, details);
	return false;
}
