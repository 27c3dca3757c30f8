/*
 * procfs.h: what the agent reads about a local process from /proc, and the
 * guard against PID reuse (SPEC §5: selectors "guarded against PID reuse").
 *
 * A Workload API caller is known by the PID that SO_PEERCRED gave at
 * connect time. By the time the agent reads /proc/<pid>/..., that process
 * may have exited and its PID been given to another one, which would then
 * be attested in its place. The guard (the caller's side, in order):
 *   1. at accept: pidfd_open(pid) (or SO_PEERPIDFD, Linux 6.5) and
 *      ly_proc_start_time(), kept with the connection;
 *   2. gather selectors (every attestor, /proc reads included);
 *   3. ly_proc_verify(): the pidfd still names a live process and the
 *      start time (field 22 of /proc/<pid>/stat) is unchanged; otherwise
 *      LY_E_UNTRUSTED and the call is refused: no identity leaks to
 *      whoever holds the PID now.
 * A live pidfd proves the PID was not reused (a PID is only reused after
 * its process is reaped); the start time covers kernels without pidfds
 * (pidfd -1) and the window before the pidfd was opened. Start times are
 * in clock ticks since boot, so two processes started in the same tick
 * with the same PID are not told apart without a pidfd: open one.
 *
 * `proc_root` is "/proc" in production (NULL means "/proc"); tests point
 * it at a fixture directory laid out like /proc/<pid>/.
 *
 * Ownership: ly_proc_read_file returns a heap buffer the caller frees with
 * free(). Everything here is blocking file I/O on procfs (fast, but run it
 * from uv_queue_work in the agent, DESIGN "Threads and ownership") and
 * thread-safe (no shared state).
 */
#ifndef LANYARD_AGENT_PROCFS_H
#define LANYARD_AGENT_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/error.h"

#define LY_PROC_ROOT_DEFAULT "/proc"

/*
 * Reads <proc_root>/<pid>/<name> whole into *out (NUL-terminated, *len
 * bytes without the NUL). LY_E_LIMIT when longer than `cap`, LY_E_NOT_FOUND
 * when the process (or file) is gone, LY_E_IO otherwise. pid must be > 0.
 */
ly_status ly_proc_read_file(const char *proc_root, pid_t pid, const char *name, size_t cap, char **out,
    size_t *len, struct ly_error *err) LY_MUST_CHECK;

/*
 * Writes "<proc_root>/<pid>/<name>" into `buf` (LY_E_LIMIT when it does not
 * fit). pid must be > 0.
 */
ly_status ly_proc_path(const char *proc_root, pid_t pid, const char *name, char *buf, size_t size,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Parses the text of /proc/<pid>/stat (`len` bytes, need not be
 * NUL-terminated) and returns field 22, starttime. The command name
 * (field 2) may hold spaces, parentheses and any byte but NUL: it is
 * skipped to the LAST ')' of the text. Pure: LY_E_INVALID for anything
 * malformed (pid not decimal, no " (", too few fields, starttime not a
 * decimal that fits in 64 bits).
 */
ly_status ly_proc_parse_start_time(const char *stat, size_t len, uint64_t *out, struct ly_error *err)
    LY_MUST_CHECK;

/* Reads <proc_root>/<pid>/stat and returns its start time (as above). */
ly_status ly_proc_start_time(const char *proc_root, pid_t pid, uint64_t *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The PID reuse check (step 3 above): LY_OK when `pidfd` (if >= 0) still
 * names a live process (pidfd_send_signal with signal 0: success or EPERM)
 * and the start time of <proc_root>/<pid> equals `start_time`. LY_E_UNTRUSTED
 * when the process exited or the PID now names another process;
 * LY_E_UNSUPPORTED for pid <= 0 (PID 0: the caller lives in a PID namespace
 * the agent cannot see; the agent needs hostPID in Kubernetes).
 */
ly_status ly_proc_verify(const char *proc_root, pid_t pid, int pidfd, uint64_t start_time, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The executable a process runs, by the kernel's own reference: stat()
 * through the magic link <proc_root>/<pid>/exe gives the inode the process
 * maps, whatever mount namespace it sees it in and whatever is at its path
 * now. An exec changes it; nothing else does. Recorded at accept and
 * compared before every answer (the same place as ly_proc_verify), so a
 * process that connected and then exec'd another binary gets nothing more.
 */
struct ly_proc_exe {
	bool known; /* false: unreadable at accept (another user's process and a non-root agent) */
	dev_t dev;
	ino_t ino;
};

/*
 * Fills *out from <proc_root>/<pid>/exe: LY_OK with known set; LY_OK with
 * known false when the agent may not read it (EACCES, EPERM) or the
 * process has no executable (ENOENT on a live process: a kernel thread);
 * LY_E_NOT_FOUND when the process is gone (ESRCH or no <pid> directory).
 */
ly_status ly_proc_exe_id(const char *proc_root, pid_t pid, struct ly_proc_exe *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * LY_OK when `exe` is not known, or <proc_root>/<pid>/exe is still that
 * inode; LY_E_UNTRUSTED when it changed (an exec) or can no longer be read
 * (an exec of a set-uid binary makes it unreadable to a non-root agent).
 */
ly_status ly_proc_verify_exe(const char *proc_root, pid_t pid, const struct ly_proc_exe *exe, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_AGENT_PROCFS_H */
