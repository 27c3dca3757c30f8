/*
 * cgroup.h: which Kubernetes pod and container a process runs in, from its
 * cgroup membership (SPEC §5; NOTES-k8s "Finding the pod of a caller").
 *
 * Input: the text of /proc/<pid>/cgroup, lines "ID:CONTROLLERS:PATH"
 * (cgroup v1; the path may itself hold ':') or "0::PATH" (v2); and, only
 * when that file names no container, /proc/<pid>/mountinfo, whose cgroup
 * and cgroup2 mounts with a root other than "/" are read the same way
 * (the cgroup file wins: a workload controls its own mount namespace).
 *
 * One path is split into segments at '/' and ':' (the containerd form
 * "/kubepods-...-pod<uid>.slice:cri-containerd:<id>"), then walked from the
 * end:
 *  - the first segment, less a ".scope" suffix, that is 64 lower-case hex
 *    digits or ends with "-" and 64 of them ("docker-", "crio-",
 *    "cri-containerd-") is the container ID; an earlier 64-hex segment is
 *    ignored (kind: "/docker/<node>/kubepods/.../pod<uid>/<id>": the last
 *    ID wins);
 *  - then, further back, the first segment, less a ".slice" suffix, that is
 *    "pod<uuid>" or ends with "-pod<uuid>" gives the pod UID; systemd
 *    writes '_' for '-' in the UUID (all four separators the same): turned
 *    back into '-'. Hex must be lower case (as Kubernetes writes UIDs).
 * Shapes covered: cgroupfs v1 ("/kubepods[/QOS]/pod<uid>/<id>"), systemd
 * with docker, cri-o and containerd ("...-pod<uid>.slice/crio-<id>.scope"),
 * the containerd colon form, kind inside docker, cgroup v2 seen through a
 * cgroup namespace ("/../../pod<uid>/<id>"), and runtimes that write no pod
 * UID (container ID only: the caller then searches every pod on the node).
 *
 * Lines combine: a line with a pod UID beats a line without one (a hybrid
 * host's unified line may name the kind node's container); lines of the
 * winning kind must agree, else LY_E_INVALID (two pods or two containers
 * for one process: refuse rather than guess). No container anywhere: not in
 * a pod, LY_OK with has_container false (no k8s selectors, no error).
 *
 * Hazard: a process with a delegated cgroup subtree (cgroup v2 delegation
 * to a user) can name a sub-cgroup "pod<uid>/<id>" after another pod's
 * container. The kubelet lookup then finds that pod. SPIRE has the same
 * exposure; pair k8s selectors with unix:uid in entries on nodes that
 * delegate cgroups to untrusted users.
 *
 * Malformed input (a line without two ':', a path not starting with '/', a
 * hierarchy ID that is not decimal, a NUL byte, a mountinfo line without
 * its " - " separator) is LY_E_INVALID: both files come from the kernel.
 *
 * Everything here but ly_cgroup_read is pure and fuzzable; ly_cgroup_read
 * does blocking file I/O (run it on a worker). No heap result: struct
 * ly_cgroup_ids is a caller-owned value.
 */
#ifndef LANYARD_AGENT_CGROUP_H
#define LANYARD_AGENT_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "lib/entry.h"
#include "lib/error.h"

#define LY_CONTAINER_ID_LEN 64

struct ly_cgroup_ids {
	bool has_container;
	bool has_pod;
	char container_id[LY_CONTAINER_ID_LEN + 1]; /* 64 lower-case hex digits when has_container */
	char pod_uid[LY_UUID_LEN + 1];              /* canonical UUID when has_pod */
};

/*
 * Looks at one cgroup path (`len` bytes). Returns true when it names a
 * container; then fills `out` (has_pod tells whether a pod UID was found
 * before it). Pure; never fails.
 */
bool ly_cgroup_path_ids(const char *path, size_t len, struct ly_cgroup_ids *out);

/* Parses the text of /proc/<pid>/cgroup (`len` bytes, capped at LY_PROC_CGROUP_MAX). */
ly_status ly_cgroup_parse(const char *text, size_t len, struct ly_cgroup_ids *out, struct ly_error *err)
    LY_MUST_CHECK;

/* Parses the text of /proc/<pid>/mountinfo (capped at LY_PROC_MOUNTINFO_MAX), cgroup mounts only. */
ly_status ly_cgroup_parse_mountinfo(const char *text, size_t len, struct ly_cgroup_ids *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Reads <proc_root>/<pid>/cgroup and, when it names no container,
 * <proc_root>/<pid>/mountinfo (procfs.h; blocking). LY_E_NOT_FOUND when the
 * process is gone.
 */
ly_status ly_cgroup_read(const char *proc_root, pid_t pid, struct ly_cgroup_ids *out, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_AGENT_CGROUP_H */
