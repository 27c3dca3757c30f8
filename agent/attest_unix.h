/*
 * attest_unix.h: the unix workload attestor (SPEC §5).
 *
 * From the peer credentials of a Workload API connection (SO_PEERCRED:
 * pid, uid, gid), plus a pidfd and the start time the caller recorded at
 * accept (procfs.h), it makes, in this order:
 *   unix:uid:N, unix:gid:N               always (the SO_PEERCRED values)
 *   unix:user:NAME, unix:group:NAME      getpwuid_r / getgrgid_r in the
 *                                        agent's own user database; omitted
 *                                        when there is no name or the name
 *                                        is not a POSIX portable name
 *   unix:path:/abs/exe                   readlink(/proc/<pid>/exe)
 *   unix:sha256:HEX                      SHA-256 of the running executable
 * The executable is read through /proc/<pid>/exe (the inode the process
 * runs), never by its path, so replacing the file at that path cannot fool
 * the hash. No path and no sha256 selector when the executable was deleted
 * or replaced (the link reads "... (deleted)" or the inode has no link
 * left), when the agent may not read it (a non-root agent and another
 * user's process), or when the path is not canonical (lib/entry.h rules);
 * no sha256 selector when the file is larger than `hash_max` (logged).
 * A missing selector can only take entitlements away (SPEC §1).
 *
 * unix:path is given only when that path, in the agent's own mount
 * namespace, is the very inode the process runs (device and inode of
 * stat(path) equal those of /proc/<pid>/exe): the link's text is the path
 * in the caller's mount namespace, where the caller may have bind-mounted
 * any binary of its own over a trusted path. So a caller in another mount
 * namespace (a container) whose path names another file here, or nothing,
 * gets no unix:path (unix:sha256 still names what it runs; SPIRE gives the
 * caller's path as is).
 *
 * Exec (procfs.h struct ly_proc_exe): the executable recorded at accept
 * (peer->exe) must be the one attested (LY_E_UNTRUSTED otherwise: the
 * process exec'd between connecting and being attested), and
 * ly_unix_peer_verify checks it again with the PID before every answer.
 * What these selectors cannot promise (docs/security.md): a process of the
 * same uid can ptrace or LD_PRELOAD into the attested binary, or exec it
 * after connecting and before the agent accepts; uid is the boundary.
 *
 * PID reuse (procfs.h): ly_unix_attest reads the start time first (and
 * refuses when it differs from the one recorded at accept), gathers, then
 * runs ly_proc_verify; any change is LY_E_UNTRUSTED and no selector is
 * returned. PID 0 is LY_E_UNSUPPORTED. Callers that run several attestors
 * must run ly_proc_verify once more after the last one.
 *
 * The hash cache: keyed by (st_dev, st_ino, st_size, st_mtime, st_ctime) of
 * the executable's inode, so a repeated call costs a stat, not a read of the
 * binary. ctime is in the key because a process cannot set it: rewriting a
 * file in place and restoring its mtime still changes ctime. A file that
 * changes while it is hashed is not cached and gets no sha256 selector.
 * LRU of at most `cache_max` entries.
 *
 * Threads: ly_unix_attest does blocking work (it may read 256 MiB): run it
 * on a libuv worker (ly_unix_attest_start does so). It is thread-safe: the
 * cache and counters are behind a mutex, hashing runs outside it (two
 * threads hashing the same new file both hash it; both results agree).
 * ly_unix_attestor_new / _free are for the loop thread, with no attestation
 * running.
 *
 * Ownership: the attestor is a heap object (ly_unix_attestor_new, freed with
 * ly_unix_attestor_free). Selectors returned are a heap array owned by the
 * caller: ly_selectors_free(sels, n) (lib/entry.h).
 */
#ifndef LANYARD_AGENT_ATTEST_UNIX_H
#define LANYARD_AGENT_ATTEST_UNIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "agent/procfs.h"
#include "lib/entry.h"
#include "lib/error.h"

/* The caller of the Workload API as the agent saw it at accept. */
struct ly_unix_peer {
	pid_t pid;             /* SO_PEERCRED; 0 is refused */
	uid_t uid;             /* SO_PEERCRED */
	gid_t gid;             /* SO_PEERCRED */
	int pidfd;             /* pidfd_open(pid) at accept, or -1 where unsupported; not closed here */
	bool has_start_time;   /* start_time was recorded at accept (strongly advised) */
	uint64_t start_time;   /* ly_proc_start_time() at accept */
	struct ly_proc_exe exe; /* ly_proc_exe_id() at accept; known false: not checked */
};

struct ly_unix_attestor_config {
	const char *proc_root; /* NULL: "/proc". Test-only override. Copied. */
	uint64_t hash_max;     /* executables larger get no sha256; 0: LY_UNIX_EXE_HASH_MAX (also the upper bound) */
	size_t cache_max;      /* hash cache entries; 0: LY_UNIX_HASH_CACHE_MAX (also the upper bound) */
};

struct ly_unix_attestor_stats {
	uint64_t hashes;     /* executables hashed (cache misses that read a file) */
	uint64_t cache_hits; /* hashes served from the cache */
};

struct ly_unix_attestor;

/* `cfg` may be NULL (all defaults). LY_E_LIMIT when hash_max or cache_max is over its cap. */
ly_status ly_unix_attestor_new(const struct ly_unix_attestor_config *cfg, struct ly_unix_attestor **out,
    struct ly_error *err) LY_MUST_CHECK;
/* NULL is allowed. No attestation may be running. */
void ly_unix_attestor_free(struct ly_unix_attestor *a);

/*
 * Attests `peer` (blocking; thread-safe). On LY_OK, *out holds *n selectors
 * (never fewer than uid and gid). LY_E_UNTRUSTED: the process exited or
 * its PID names another process (refuse the call); LY_E_UNSUPPORTED: PID 0;
 * LY_E_NOT_FOUND/LY_E_IO: /proc could not be read. On failure *out is NULL
 * and *n 0.
 */
ly_status ly_unix_attest(struct ly_unix_attestor *a, const struct ly_unix_peer *peer, struct ly_selector **out,
    size_t *n, struct ly_error *err) LY_MUST_CHECK;

/*
 * The caller is still what was attested (blocking /proc reads; any
 * thread): ly_proc_verify (alive, PID not reused), then
 * ly_proc_verify_exe (no exec since accept). LY_E_UNTRUSTED otherwise.
 */
ly_status ly_unix_peer_verify(const char *proc_root, const struct ly_unix_peer *peer, struct ly_error *err)
    LY_MUST_CHECK;

/* The counters (a consistent snapshot). */
void ly_unix_attestor_stats(struct ly_unix_attestor *a, struct ly_unix_attestor_stats *out);

/* ---- on the libuv loop ---- */

/*
 * Called once on the loop thread with the result of ly_unix_attest: on
 * LY_OK the callee owns `sels` (ly_selectors_free(sels, n)); otherwise
 * sels is NULL and `err` says why (valid during the call only).
 */
typedef void (*ly_unix_attest_cb)(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels,
    size_t n);

struct ly_unix_attest_req;

/*
 * Runs ly_unix_attest on a libuv worker thread (uv_queue_work) and calls
 * `cb` on the loop. `peer` is copied (the pidfd must stay open until the
 * callback or ly_unix_attest_cancel). On LY_OK the callback will run
 * exactly once, never before this function returns, unless the request is
 * cancelled; on failure it never runs. *req (optional) lets the caller
 * cancel; it is valid until the callback starts or cancel returns.
 * The attestor must outlive every request.
 */
ly_status ly_unix_attest_start(uv_loop_t *loop, struct ly_unix_attestor *a, const struct ly_unix_peer *peer,
    ly_unix_attest_cb cb, void *arg, struct ly_unix_attest_req **req, struct ly_error *err) LY_MUST_CHECK;

/*
 * The callback will not run; the request's memory is freed once its worker
 * is done (the loop must keep running until then). Only before the callback
 * ran.
 */
void ly_unix_attest_cancel(struct ly_unix_attest_req *req);

#endif /* LANYARD_AGENT_ATTEST_UNIX_H */
