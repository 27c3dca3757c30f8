/*
 * agent.h: the state of a running lanyard-agent, shared by its parts.
 *
 * Threads: one libuv loop thread owns everything here (the cache, the
 * bundle, the streams, the timers). rpc/ delivers Workload API calls and
 * the answers of the agent's own calls to the server on that thread.
 * Blocking work (hashing executables, kubelet HTTP through libcurl multi,
 * writing the persisted state, generating keys in bulk) runs on
 * uv_queue_work or libcurl's multi interface and hands results back to the
 * loop.
 *
 * Parts and who owns what:
 *   agent.c       config (flags over the YAML file), start-up, signals,
 *                 shutdown; owns struct ly_agent (agent_ctx.h).
 *   sync*.c       the server side (sync.h; its parts in sync_internal.h):
 *                 node attestation and the agent's own SVID, the entry
 *                 watch, periodic resync with backoff, workload SVID
 *                 issuance and rotation (batched), JWT-SVID minting on
 *                 demand, the bundle, state persistence.
 *   wapi.c        the Workload API: the Unix socket, peer credentials and
 *                 pidfd, workload attestation, the five RPCs, open streams.
 *   sds.c         Envoy SDS v3 on wapi.c's socket and attestation (sds.h):
 *                 its streams follow the same cache changes.
 *   cli.c         `api fetch|validate|watch`, `healthcheck`: Workload API
 *                 clients like any other.
 *   cache.c (and its parts behind cache_internal.h), rotation.c, verify.c,
 *                 state.c, workload_msg.c, agentapi_msg.c, sds_msg.c: pure
 *                 modules.
 *   attest_unix.c, attest_k8s.c, cgroup.c, kubelet.c: workload attestors.
 *
 * sync and wapi.c do not call each other: sync reports changes through
 * its change callbacks (sync.h), wapi.c reads the cache, readiness and
 * JWT-SVIDs through its source interface (wapi.h); agent.c wires the two
 * at start-up. What agent.c hands its parts is agent_ctx.h. None of these
 * calls block.
 */
#ifndef LANYARD_AGENT_AGENT_H
#define LANYARD_AGENT_AGENT_H

#include "agent/agent_ctx.h"

/* agent.c: `lanyard-agent run ARGS` (argv[0] is the first flag); returns the exit code. */
int ly_agent_run(int argc, char **argv);
/* cli.c: every other verb; returns the exit code. */
int ly_agent_cli_main(int argc, char **argv);

#endif /* LANYARD_AGENT_AGENT_H */
