/*
 * attest_k8s.h: the k8s workload attestor, on the agent's libuv loop
 * (SPEC §5; NOTES-k8s).
 *
 * One attestation: read /proc/<pid>/cgroup (and, when it names no
 * container, mountinfo) on a libuv worker (cgroup.h); no container means
 * "not in a pod": the callback gets LY_OK and no selector. Otherwise ask the
 * kubelet for its pod list (kubelet.h: cached briefly, one fetch shared by
 * concurrent attestations) and find the container (k8s_podlist.h). When it
 * is not listed (a new pod) or the fetch failed (LY_E_IO: kubelet down,
 * HTTP 5xx), try again after retry_interval_ms with a fresh list, up to
 * max_attempts lookups in all; then the callback gets the last error,
 * except for a container whose cgroup names no pod and that no pod lists:
 * that is one of the node's own containers (plain docker), not a pod, and
 * gets LY_OK with no selector (SPIRE's rule). Any
 * other failure (two pods or containers for one process, a malformed list,
 * an answer over its cap) ends the attestation at once.
 *
 * PID reuse: the cgroup file is read some time after accept. The caller
 * must run ly_proc_verify (procfs.h) after this and every other attestor
 * has answered, and refuse the call on failure.
 *
 * Ownership: struct ly_k8s_attestor is a heap object on one loop (loop
 * thread only). ly_k8s_attestor_close ends every attestation still running
 * (each callback runs once, from inside close, with LY_E_IO "closing"),
 * closes the kubelet client, and frees the attestor once its workers and
 * handles are done: keep running the loop after close. Selectors passed to
 * a callback belong to the callee (ly_selectors_free(sels, n)).
 */
#ifndef LANYARD_AGENT_ATTEST_K8S_H
#define LANYARD_AGENT_ATTEST_K8S_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "agent/kubelet.h"
#include "lib/entry.h"
#include "lib/error.h"

#define LY_K8S_ATTEMPTS_DEFAULT 5
#define LY_K8S_ATTEMPTS_MAX 20
#define LY_K8S_RETRY_MS_DEFAULT 500

struct ly_k8s_attestor_config {
	struct ly_kubelet_config kubelet;
	unsigned max_attempts;      /* pod list lookups per attestation; 0: default; at most LY_K8S_ATTEMPTS_MAX */
	uint64_t retry_interval_ms; /* between lookups; 0: default */
};

struct ly_k8s_attestor;
struct ly_k8s_attest;

/*
 * The result, once, on the loop. LY_OK with n == 0: not in a pod. On LY_OK
 * the callee owns `sels`; otherwise sels is NULL and `err` (valid during the
 * call) says why.
 */
typedef void (*ly_k8s_attest_cb)(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels,
    size_t n);

ly_status ly_k8s_attestor_new(uv_loop_t *loop, const struct ly_k8s_attestor_config *cfg,
    struct ly_k8s_attestor **out, struct ly_error *err) LY_MUST_CHECK;

/* Closes as above. NULL is allowed. */
void ly_k8s_attestor_close(struct ly_k8s_attestor *a);

/*
 * Starts attesting `pid` (0 is refused: LY_E_UNSUPPORTED) with /proc at
 * `proc_root` (NULL: "/proc"; test-only override; copied). On LY_OK `cb`
 * runs exactly once, never from inside this call, unless cancelled; on
 * failure it never runs. *req (optional) is valid until the callback
 * starts or ly_k8s_attest_cancel returns.
 */
ly_status ly_k8s_attest_start(struct ly_k8s_attestor *a, pid_t pid, const char *proc_root, ly_k8s_attest_cb cb,
    void *arg, struct ly_k8s_attest **req, struct ly_error *err) LY_MUST_CHECK;

/* The callback will not run; memory is released once the worker (if any) is done. */
void ly_k8s_attest_cancel(struct ly_k8s_attest *req);

/* The kubelet client's counters (fetches, failures, cache hits). */
void ly_k8s_attestor_kubelet_stats(const struct ly_k8s_attestor *a, struct ly_kubelet_stats *out);

#endif /* LANYARD_AGENT_ATTEST_K8S_H */
