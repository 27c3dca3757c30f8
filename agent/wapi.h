/*
 * wapi.h: the Workload API (wapi.c, wapi_conn.c, wapi_call.c: their parts
 * in wapi_internal.h): the Unix socket, peer credentials and pidfd,
 * workload attestation, the five RPCs, open streams.
 *
 * The Workload API knows nothing of sync: it serves from a source
 * (struct ly_wapi_source: the cache, readiness, JWT-SVIDs, a memory hint)
 * that agent.c fills from sync.h at start-up, and is told about changes
 * through ly_wapi_cache_changed / ly_wapi_bundle_changed, which agent.c
 * hands sync as its change callbacks.
 *
 * Threads: the loop thread (agent.h).
 */
#ifndef LANYARD_AGENT_WAPI_H
#define LANYARD_AGENT_WAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/agent_ctx.h"
#include "lib/error.h"

struct ly_wapi;
struct ly_cache;

/* A JWT-SVID's answer: `token` (borrowed during the call) or `err`; runs once, on the loop. */
typedef void (*ly_wapi_jwt_cb)(void *arg, const char *token, const struct ly_error *err);

/*
 * Where the Workload API's answers come from. Every function gets `arg`.
 * Each may be called at any time from the loop thread; none blocks.
 */
struct ly_wapi_source {
	void *arg;
	/* The cache to serve from (borrowed), NULL while there is none. */
	struct ly_cache *(*cache)(void *arg);
	/* True when the Workload API may answer (SPEC §3: our SVID, the bundle, the entries known). */
	bool (*ready)(void *arg);
	/*
	 * A JWT-SVID for `entry_id` and `audiences`: `cb` runs once, later
	 * (never from inside this call), unless an error is returned.
	 */
	ly_status (*fetch_jwt)(void *arg, const char *entry_id, const char *const *audiences, size_t naud,
	    ly_wapi_jwt_cb cb, void *cb_arg, struct ly_error *err);
	/* A burst of allocations just ended (connections closed): memory may be handed back. */
	void (*memory_burst)(void *arg);
};

/* A Workload API for `agent` (borrowed: outlives it) serving from `src` (copied). */
ly_status ly_wapi_new(struct ly_agent *agent, const struct ly_wapi_source *src, struct ly_wapi **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Creates the socket (directory first, right modes) and starts serving. */
ly_status ly_wapi_start(struct ly_wapi *w, struct ly_error *err) LY_MUST_CHECK;
/* Stops accepting and ends open streams (shutdown). */
void ly_wapi_stop(struct ly_wapi *w);
void ly_wapi_free(struct ly_wapi *w);
/*
 * The cache changed (entries, SVIDs): every open stream whose response
 * would differ gets a new full response; a stream whose caller has no
 * identity left ends with PERMISSION_DENIED.
 */
void ly_wapi_cache_changed(struct ly_wapi *w);
/* The bundle changed: bundle streams and X.509-SVID streams get it. */
void ly_wapi_bundle_changed(struct ly_wapi *w);
/* Calls refused by agent.ratelimit.workload_api since start, for the metrics. */
uint64_t ly_wapi_rate_limited(const struct ly_wapi *w);
/* Open connections and open streams (every kind), for the metrics. */
void ly_wapi_counts(const struct ly_wapi *w, size_t *conns, size_t *streams);

#endif /* LANYARD_AGENT_WAPI_H */
