/*
 * sync.h: the agent's server side (sync.c and its parts, sync_internal.h):
 * node attestation and the agent's own SVID, the entry watch, workload
 * SVID issuance and rotation, JWT-SVIDs on demand, the bundle, the
 * persisted state.
 *
 * Sync knows nothing of the Workload API: it reports what changed through
 * the change callbacks it is given (struct ly_sync_changes), which agent.c
 * points at wapi.h's ly_wapi_cache_changed / ly_wapi_bundle_changed.
 * The callbacks run on the loop thread, after the change is in the cache,
 * and must not call back into ly_sync_stop or ly_sync_free.
 *
 * Threads: the loop thread (agent.h).
 */
#ifndef LANYARD_AGENT_SYNC_H
#define LANYARD_AGENT_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "agent/agent_ctx.h"
#include "lib/error.h"

struct ly_sync;
struct ly_cache;
struct ly_bundle;

/* What sync tells its user about (either function may be NULL). */
struct ly_sync_changes {
	void *arg;
	/* The cache changed (entries, SVIDs): in the same loop iteration as the update that carried it. */
	void (*cache_changed)(void *arg);
	/* The bundle changed. */
	void (*bundle_changed)(void *arg);
};

/*
 * A sync engine for `agent` (borrowed: outlives it) that reports through
 * `changes` (copied). Nothing runs before ly_sync_start.
 */
ly_status ly_sync_new(struct ly_agent *agent, const struct ly_sync_changes *changes, struct ly_sync **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Loads persisted state, attests or resumes, opens the watch. */
ly_status ly_sync_start(struct ly_sync *s, struct ly_error *err) LY_MUST_CHECK;
/* Persists state and ends calls to the server; `cb` runs once all are done. */
void ly_sync_stop(struct ly_sync *s, void (*cb)(void *arg), void *arg);
void ly_sync_free(struct ly_sync *s);
/* True once the agent holds an SVID of its own and the server's bundle. */
bool ly_sync_ready(const struct ly_sync *s);
/*
 * True when the Workload API may answer (SPEC §3): ready as above AND the
 * entries known (the server's first snapshot of this run applied, or the
 * persisted SVID cache loaded), or some SVID cached to serve. Before the
 * entries are known every caller would look entitled to nothing and be told
 * PERMISSION_DENIED for good; until then it gets UNAVAILABLE and retries.
 */
bool ly_sync_wapi_ready(const struct ly_sync *s);
/* Counters of the sync engine since start, for /metrics (a copy). */
struct ly_sync_stats {
	uint64_t svids_issued, renewals, jwt_minted;
	uint64_t svids_failed; /* workload SVIDs not issued (refused, unanswered, or failing verification): retried */
	time_t last_sync;  /* wall time of the last update from the server's watch; 0: none yet */
	bool reachable;    /* connected, and the watch answered within two sync intervals */
	size_t federated_bundles;  /* federated trust domains held */
	uint64_t federated_failed; /* GetFederatedBundles calls failed or refused */
};
void ly_sync_stats_get(const struct ly_sync *s, struct ly_sync_stats *out);
/* The verifier's counters (verify.h: struct ly_verify_counters), by kind and reason. */
struct ly_verify_counters;
void ly_sync_verify_counters(const struct ly_sync *s, struct ly_verify_counters *out);
/* The cache and bundle wapi.c serves from (borrowed; valid until ly_sync_free). */
struct ly_cache *ly_sync_cache(struct ly_sync *s);
const struct ly_bundle *ly_sync_bundle(const struct ly_sync *s);
/*
 * A JWT-SVID for `entry_id` and `audiences`: from the cache when one is
 * still fresh, else minted by the server (NewJWTSVID), verified, cached.
 * `cb` runs once, on the loop, with the token (borrowed during the call)
 * or an error; never from inside this call.
 */
typedef void (*ly_sync_jwt_cb)(void *arg, const char *token, const struct ly_error *err);
ly_status ly_sync_fetch_jwt(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud,
    ly_sync_jwt_cb cb, void *arg, struct ly_error *err) LY_MUST_CHECK;

/*
 * A burst of allocations just ended (a batch of SVIDs, a connection
 * closed): freed memory is handed back to the system once the agent has
 * been quiet for 250 ms (malloc_trim). Cheap; call it freely.
 */
void ly_sync_memory_burst(struct ly_sync *s);

#endif /* LANYARD_AGENT_SYNC_H */
