#!/usr/bin/python3
"""faults.py: fault injection against a real lanyard-server and lanyard-agent (issue 6, "Faults").

    faults.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR SCENARIO

SCENARIO is one of:
  proxy   the agent<->server connection through a local TCP proxy (modes
          pass, drop: every connection closed and new ones closed at once,
          stall: accepted, nothing forwarded): the agent keeps serving, backs
          off (attempts counted at the proxy), recovers, and converges (an
          entry created and one deleted during the cut are reflected after it);
  sqlite  the server's SQLite file: locked by another process (BEGIN
          EXCLUSIVE), disk full (the data dir on a small tmpfs), corrupted
          while stopped: a clear one-line error on the failing `entry create`,
          the server keeps running, start on a corrupt file fails (exit 1),
          and no acknowledged entry is lost across a restart;
  skew    the agent's clock +3 min and -3 min (libfaketime): the agent
          attests and serves its SVID both ways (the server backdates CA
          certificates by 10 min and SVIDs by a quarter of their TTL, at
          most 5 min: server/ca.h);
  storm   1,000 entries with a 90 s X.509 TTL renewed together; the server
          SIGKILLed in the middle of the renewal burst, down 8 s, restarted on
          the same data dir and port, SIGKILLed again when the agent sends its
          first renewals, down 3 s, restarted: every stream keeps getting
          SVIDs valid at their receive time, every SVID ends renewed and
          verifies (`openssl verify`), the agent never dies; then the agent
          restarted without its SVID cache while the server is down answers
          UNAVAILABLE, never PERMISSION_DENIED;
  sqlite_ro  the data dir on an ext4 image (loop device) made read-only
          under the running server: the files immutable (`chattr +i`, then
          writable again, no restart), then the filesystem forced read-only
          (`mount -o remount,abort`, as ext4 does after an I/O error), fsck'd
          and remounted: writes refused with one line, reads and the agent
          keep working, nothing acknowledged lost.

Everything runs on 127.0.0.1 in a temporary directory. Prints ok/FAIL per
check and a `figures` line; exits 1 on any failure, else 77 (a skip, for
ctest) when a scenario cannot run here (no tmpfs or loop mount without root,
no e2fsprogs).
"""
import datetime
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (PROCS, Daemon, check, openssl_verify, exit_status, figures, finish, free_port, one_error_line,  # noqa: E402
                     protoc, run, skip, split_der, wait_for)

SERVER, AGENT, PROTO_DIR, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
MD = (("workload.spiffe.io", "true"),)


class Env:
    def __init__(self, tmp, data_dir=None):
        self.tmp = tmp
        self.server_sock = os.path.join(tmp, "server", "api.sock")
        self.server_data = data_dir or os.path.join(tmp, "server-data")
        self.agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        self.agent_data = os.path.join(tmp, "agent-data")
        self.bundle_pem = os.path.join(tmp, "bootstrap.pem")
        self.port = free_port()
        self.server = None
        self.agent = None

    def start_server(self, wait=True):
        self.server = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort",
                              str(self.port), "-socketPath", self.server_sock, "-dataDir", self.server_data],
                             os.path.join(self.tmp, "server.log"))
        if not wait:
            return True
        return wait_for(lambda: not self.server.alive() or self.cli("healthcheck")[0] == 0, 30) and \
            self.server.alive()

    def start_agent(self, port, token=None):
        args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(port),
                "-socketPath", self.agent_sock, "-dataDir", self.agent_data, "-logLevel", "debug",
                "-trustBundle", self.bundle_pem]
        if token:
            args += ["-joinToken", token]
        self.agent = Daemon(args, os.path.join(self.tmp, "agent.log"))

    def cli(self, *args, timeout=60):
        return run([SERVER, *args, "-socketPath", self.server_sock], timeout=timeout)

    def entry_create(self, spiffe_id, selector="unix:uid:0", ttl=None):
        args = ["entry", "create", "-spiffeID", spiffe_id, "-parentID", AGENT_ID, "-selector", selector]
        if ttl:
            args += ["-x509SVIDTTL", str(ttl)]
        rc, out, err = self.cli(*args)
        m = re.search(r"Entry ID\s*:\s*(\S+)", out)
        return rc, (m.group(1) if m else None), err

    def entry_ids(self):
        rc, out, err = self.cli("entry", "show")
        return rc, set(re.findall(r"Entry ID\s*:\s*(\S+)", out))


def make_stubs(tmp):
    pb_dir = os.path.join(tmp, "pb")
    os.makedirs(pb_dir)
    protoc(PROTO_DIR, pb_dir, "workload.proto")
    sys.path.insert(0, pb_dir)
    import workload_pb2 as pb
    import workload_pb2_grpc as pb_grpc
    return pb, pb_grpc


def served_ids(env, pb, pb_grpc, timeout=3):
    """The SPIFFE IDs FetchX509SVID gives uid 0, or None when it does not answer."""
    ch = grpc.insecure_channel("unix:" + env.agent_sock)
    try:
        it = pb_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(pb.X509SVIDRequest(), metadata=MD, timeout=timeout)
        r = next(it)
        it.cancel()
        return {s.spiffe_id for s in r.svids}
    except grpc.RpcError:
        return None
    finally:
        ch.close()


def enrol(env, agent_port):
    """Server up, bootstrap bundle, join token, agent attested; True when healthy."""
    check(env.start_server(), "server starts", env.server.text()[-2000:])
    rc, out, err = env.cli("bundle", "show")
    with open(env.bundle_pem, "w") as f:
        f.write(out)
    rc, out, err = env.cli("token", "generate", "-spiffeID", AGENT_ID)
    token = re.search(r"Token: (\S+)", out).group(1)
    env.start_agent(agent_port, token)
    ok = wait_for(lambda: not env.agent.alive() or "attested as" in env.agent.text(), 30)
    return check(ok and env.agent.alive(), "agent attests", env.agent.text()[-2000:])


# ---- the proxy -------------------------------------------------------------------------

class Proxy(threading.Thread):
    """127.0.0.1:listen -> 127.0.0.1:target. Modes: pass, drop (close all, close new at once), stall."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.mode = "pass"
        self.lock = threading.Lock()
        self.conns = []   # sockets of live connections
        self.accepts = []  # accept times

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            if mode != "pass":
                for s in self.conns:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
                self.conns = []

    def run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.accepts.append(time.time())
                mode = self.mode
                if mode == "drop":
                    c.close()
                    continue
                self.conns.append(c)
            if mode == "stall":
                continue  # held open, nothing read or forwarded
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns.append(u)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def attempts_between(self, t0, t1):
        with self.lock:
            return sum(1 for t in self.accepts if t0 <= t < t1)


def scenario_proxy(tmp, pb, pb_grpc):
    env = Env(tmp)
    proxy = Proxy(env.port)
    proxy.start()
    if not enrol(env, proxy.port):
        return
    keep = f"spiffe://{TD}/keep"
    doomed = f"spiffe://{TD}/doomed"
    _, keep_id, _ = env.entry_create(keep)
    _, doomed_id, _ = env.entry_create(doomed)
    check(wait_for(lambda: (served_ids(env, pb, pb_grpc) or set()) >= {keep, doomed}, 20, 0.2),
          "both entries served before the cut")

    for mode, cut_s in (("drop", 30), ("stall", 30)):
        born = f"spiffe://{TD}/born-during-{mode}"
        t0 = time.time()
        proxy.set_mode(mode)
        time.sleep(1)
        rc1, born_id, err1 = env.entry_create(born)
        rc2, _, err2 = env.cli("entry", "delete", "-entryID", doomed_id)
        check(rc1 == 0 and rc2 == 0, f"{mode}: entry created and one deleted during the cut", err1 + err2)
        answers, misses = 0, 0
        while time.time() < t0 + cut_s:
            ids = served_ids(env, pb, pb_grpc)
            if ids is not None and keep in ids:
                answers += 1
            else:
                misses += 1
            time.sleep(1)
        t1 = time.time()
        n = proxy.attempts_between(t0, t1)
        per_min = round(n * 60 / (t1 - t0), 1)
        figures[f"{mode}_cut_s"] = round(t1 - t0, 1)
        figures[f"{mode}_connection_attempts"] = n
        figures[f"{mode}_attempts_per_minute"] = per_min
        check(misses == 0, f"{mode}: the Workload API answered with the cached SVID throughout the cut",
              f"{misses} misses of {answers + misses}")
        # Full jitter from 1 s doubling to 30 s (agent/servers.h): about 6 attempts in 30 s; a tight loop
        # would make hundreds.
        check(1 <= n <= 20, f"{mode}: the agent backs off ({n} attempts in {t1 - t0:.0f} s)")
        check(env.agent.alive(), f"{mode}: the agent is still running")
        proxy.set_mode("pass")
        tr = time.time()
        conv = wait_for(lambda: (lambda ids: ids is not None and born in ids and keep in ids and doomed not in ids)(
            served_ids(env, pb, pb_grpc)), 45, 0.2)
        figures[f"{mode}_recovery_s"] = round(time.time() - tr, 2)
        check(conv, f"{mode}: restored -> converges (entry created during the cut served, deleted one gone) "
              f"in {figures[f'{mode}_recovery_s']} s", env.agent.text()[-2000:])
        # The next round deletes the entry born in this one.
        doomed, doomed_id = born, born_id
    rc = env.agent.stop()
    check(rc == 0, "agent stops cleanly", f"rc={rc}")
    env.server.stop()


# ---- SQLite faults ----------------------------------------------------------------------

def scenario_sqlite(tmp, pb, pb_grpc):
    # The data dir on a small tmpfs so that "disk full" is real (ENOSPC).
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt], capture_output=True,
                       text=True)
    mounted = r.returncode == 0
    if not mounted:
        skip("sqlite: disk full", f"cannot mount a tmpfs (needs root): {r.stderr.strip() or 'mount failed'}")
    env = Env(tmp, os.path.join(mnt, "data"))
    db = os.path.join(env.server_data, "datastore.sqlite3")
    acked = []  # entry IDs printed by a successful `entry create`
    try:
        check(env.start_server(), "server starts", env.server.text()[-2000:])
        for i in range(5):
            rc, eid, err = env.entry_create(f"spiffe://{TD}/pre/{i}")
            if check(rc == 0 and eid, f"entry create pre/{i}", err):
                acked.append(eid)

        # -- locked: another process holds an exclusive lock
        locker = sqlite3.connect(db, timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        t0 = time.time()
        rc, eid, err = env.entry_create(f"spiffe://{TD}/locked")
        dt = time.time() - t0
        figures["locked_create_refused_after_s"] = round(dt, 2)
        check(rc == 1 and eid is None and one_error_line(err) and "lock" in err,
              f"locked: entry create fails, exit 1, one line naming the lock (after {dt:.1f} s)", f"rc={rc} {err!r}")
        print(f"     locked: {err.strip()}", flush=True)
        check(env.server.alive() and env.cli("healthcheck")[0] == 0, "locked: the server keeps running")
        locker.execute("ROLLBACK")
        locker.close()
        rc, eid, err = env.entry_create(f"spiffe://{TD}/after-lock")
        if check(rc == 0 and eid, "lock released: entry create works again", err):
            acked.append(eid)

        # -- disk full: fill the tmpfs, then write until refused
        if mounted:
            filler = os.path.join(mnt, "filler")
            # Unbuffered: a buffered file keeps what the full disk refused and
            # raises ENOSPC again when it is closed.
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            refused = None
            for i in range(200):
                rc, eid, err = env.entry_create(f"spiffe://{TD}/full/{i}")
                if rc == 0 and eid:
                    acked.append(eid)
                    continue
                refused = (rc, err)
                break
            check(refused is not None and refused[0] == 1 and one_error_line(refused[1]),
                  "disk full: entry create fails, exit 1, one line", str(refused))
            if refused:
                print(f"     disk full: {refused[1].strip()}", flush=True)
                figures["disk_full_refused_after_acked_creates"] = len(acked)
            check(env.server.alive(), "disk full: the server keeps running", env.server.text()[-1500:])
            rc, eid, err = env.entry_create(f"spiffe://{TD}/still-full")
            check(rc != 0 and eid is None, "disk full: a further write is still refused", err)
            os.unlink(filler)
            rc, eid, err = env.entry_create(f"spiffe://{TD}/after-full")
            if check(rc == 0 and eid, "space back: entry create works again", err):
                acked.append(eid)

        # -- restart: nothing acknowledged is lost
        rc = env.server.stop(signal.SIGKILL)
        check(env.start_server(), "server restarts (after SIGKILL) on the same data dir", env.server.text()[-2000:])
        rc, ids = env.entry_ids()
        lost = [e for e in acked if e not in ids]
        figures["acknowledged_entries"] = len(acked)
        figures["entries_lost"] = len(lost)
        check(rc == 0 and not lost, f"no acknowledged entry lost ({len(acked)} acknowledged, {len(lost)} lost)",
              str(lost))
        env.server.stop()

        # -- corrupted while stopped: start must fail, exit 1, a clear last line
        for name, off, data in (("header", 0, b"garbage-garbage-"), ("page 2", 4096, os.urandom(4096))):
            shutil.copy(db, db + ".bak")
            with open(db, "r+b") as f:
                f.seek(off)
                f.write(data)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.unlink(db + suffix)
            env.start_server(wait=False)
            try:
                rc = env.server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                rc = None
            last = env.server.text().strip().splitlines()[-1] if env.server.text().strip() else ""
            if rc is None:
                # Started: the damage was not in what start-up reads; a read must still fail cleanly.
                rc2, out, err = env.cli("entry", "show")
                check(rc2 != 0 and one_error_line(err) or rc2 == 0,
                      f"corrupt {name}: start succeeded; entry show fails with one line or still works",
                      err)
                env.server.stop(signal.SIGKILL)
                print(f"     corrupt {name}: server started; entry show rc={rc2} {err.strip()}", flush=True)
            else:
                env.server.log.close()
                check(rc == 1 and last.startswith("lanyard-server: ") and "datastore" in last,
                      f"corrupt {name}: start fails, exit 1, last line names the datastore", f"rc={rc} {last!r}")
                print(f"     corrupt {name}: {last}", flush=True)
            os.replace(db + ".bak", db)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if mounted:
            subprocess.run(["umount", "-l", mnt])


def scenario_skew(tmp, pb, pb_grpc):
    """The agent's clock off by +/-3 min (libfaketime): the SVID is served (notBefore backdated: server/ca.h)."""
    import glob
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:  # installed by scripts/install-deps.sh: missing, it is a failure, not a skip
        check(False, "skew: libfaketime is installed (package faketime, scripts/install-deps.sh)")
        return
    # libfaketime preloaded into the agent itself, not through the faketime program: that one forks, so
    # stopping it would orphan the agent (seen: leftover agents spinning after the test, since libfaketime
    # shifts the clock gRPC computes futex deadlines from but not the kernel's). ASan must be told that
    # a library preloaded ahead of its runtime is expected (harmless: libfaketime only wraps clock calls).
    faketime_env = dict(os.environ)
    faketime_env["LD_PRELOAD"] = libs[0]
    faketime_env["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                          "verify_asan_link_order=0"]))
    for off in ("+180", "-180"):
        d = os.path.join(tmp, "skew" + off)
        os.makedirs(d)
        env = Env(d)
        check(env.start_server(), f"skew {off} s: server starts")
        rc, out, err = env.cli("bundle", "show")
        with open(env.bundle_pem, "w") as f:
            f.write(out)
        rc, out, err = env.cli("token", "generate", "-spiffeID", AGENT_ID)
        token = re.search(r"Token: (\S+)", out).group(1)
        env.entry_create(f"spiffe://{TD}/skew")
        faketime_env["FAKETIME"] = off + "s"
        env.agent = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress",
                            "127.0.0.1", "-serverPort", str(env.port), "-socketPath", env.agent_sock, "-dataDir",
                            env.agent_data, "-logLevel", "debug", "-trustBundle", env.bundle_pem, "-joinToken",
                            token], os.path.join(d, "agent.log"), env=faketime_env)
        t0 = time.time()
        ok = wait_for(lambda: f"spiffe://{TD}/skew" in (served_ids(env, pb, pb_grpc) or set()), 30, 0.3)
        figures[f"skew_{off}_served"] = bool(ok)
        if ok:
            figures[f"skew_{off}_first_svid_s"] = round(time.time() - t0, 2)
        where = "ahead" if off.startswith("+") else "behind"
        check(ok, f"skew {off} s (agent {where}): the agent attests and serves the SVID",
              "\n".join([ln for ln in env.agent.text().splitlines() if "not yet valid" in ln or "refused" in ln
                         or "failed" in ln][-3:]) or env.agent.text()[-1500:])
        env.agent.stop(signal.SIGKILL)
        env.server.stop()


def scenario_agentkill(tmp, pb, pb_grpc):
    """SIGKILL the agent at random moments while it persists its state (a burst of entries makes it write its
    SVID cache file, debounced to once a second): each time it restarts without a token, as the same agent,
    serves what it held at once, and every file in its data dir is whole and 0600 (atomic writes: temp file,
    fsync, rename)."""
    import random
    rnd = random.Random(20261123)
    env = Env(tmp)
    check(env.start_server(), "agentkill: server starts")
    rc, out, err = env.cli("bundle", "show")
    with open(env.bundle_pem, "w") as f:
        f.write(out)
    rc, out, err = env.cli("token", "generate", "-spiffeID", AGENT_ID)
    token = re.search(r"Token: (\S+)", out).group(1)
    base = f"spiffe://{TD}/kill/base"
    env.entry_create(base)
    env.start_agent(env.port, token)
    check(wait_for(lambda: base in (served_ids(env, pb, pb_grpc) or set()), 30), "agentkill: first SVID served",
          env.agent.text()[-1500:])
    kills, served_at_once, n_entries = 0, 0, 1
    restart_s = []
    for round_ in range(8):
        # A burst of changes: the agent issues and persists while we kill it.
        for i in range(25):
            env.entry_create(f"spiffe://{TD}/kill/r{round_}/e{i}")
            n_entries += 1
        time.sleep(rnd.uniform(0.0, 1.5))
        env.agent.stop(signal.SIGKILL)
        kills += 1
        bad = []
        for name in os.listdir(env.agent_data):
            st = os.stat(os.path.join(env.agent_data, name))
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o600:
                bad.append(f"{name} {oct(stat.S_IMODE(st.st_mode))}")
        check(not bad, f"agentkill round {round_}: every file in the data dir is 0600", ", ".join(bad))
        t0 = time.time()
        env.start_agent(env.port)  # no token: it must resume
        ok = wait_for(lambda: base in (served_ids(env, pb, pb_grpc) or set()), 20, 0.1)
        restart_s.append(round(time.time() - t0, 2))
        if ok:
            served_at_once += 1
    text = env.agent.text()  # every run of the agent appends to the same log
    resumed = text.count("resuming as " + AGENT_ID)
    check(resumed == kills and text.count("attested as ") == 1,
          f"agentkill: the agent resumed its identity after each of {kills} SIGKILLs (no token, no new "
          "attestation)", f"resumed {resumed} of {kills}, attested {text.count('attested as ')} times")
    check(served_at_once == kills, "agentkill: it served its SVIDs again after each restart",
          f"{served_at_once} of {kills}; restart times {restart_s}")
    rc, out, err = env.cli("agent", "list")
    check(rc == 0 and out.count(AGENT_ID) == 1, "agentkill: the server still knows one agent", out + err)
    final = wait_for(lambda: len(served_ids(env, pb, pb_grpc) or set()) == n_entries, 60, 0.5)
    check(final, f"agentkill: all {n_entries} SVIDs served after the last restart",
          str(len(served_ids(env, pb, pb_grpc) or set())))
    figures["agentkill_kills"] = kills
    figures["agentkill_restart_to_first_svid_s"] = restart_s
    env.agent.stop()
    env.server.stop()


# ---- the datastore made read-only under a running server ------------------------------------

def scenario_sqlite_ro(tmp, pb, pb_grpc):
    """The server's data dir on an ext4 image (loop device): a plain `mount -o remount,ro` is refused by the
    kernel while the server holds the file open for writing, so read-only comes two ways: (1) every file of
    the data dir made immutable (`chattr +i`: writes through open descriptors fail with EPERM), then writable
    again without a restart; (2) the filesystem forced read-only under the server (`mount -o remount,abort`:
    ext4 does what it does after an I/O error with errors=remount-ro; writes fail with EROFS), recovered by
    kill -9, fsck, mount, restart. Each time: `entry create` fails, exit 1, one line naming the datastore;
    `entry show` works; the server and its agent keep serving; no acknowledged entry is lost."""
    missing = [t for t in ("mkfs.ext4", "e2fsck", "chattr") if shutil.which(t) is None]
    if missing:
        skip("sqlite_ro", f"{', '.join(missing)} not installed (Debian package e2fsprogs)")
        return
    img, mnt = os.path.join(tmp, "ds.img"), os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(32 << 20)

    def mount():
        return subprocess.run(["mount", "-t", "ext4", "-o", "loop,errors=remount-ro", img, mnt],
                              capture_output=True, text=True)
    mk = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True, text=True)
    if not check(mk.returncode == 0, "sqlite_ro: mkfs.ext4 on a 32 MiB image file", mk.stderr.strip()):
        return
    r = mount()
    if r.returncode != 0:
        skip("sqlite_ro", f"cannot mount an ext4 image on a loop device (needs root and /dev/loop*): "
             f"{r.stderr.strip()}")
        return
    env = Env(tmp, os.path.join(mnt, "data"))
    acked = []
    immutable = []
    try:
        if not enrol(env, env.port):
            return
        for i in range(5):
            rc, eid, err = env.entry_create(f"spiffe://{TD}/ro/pre/{i}")
            if check(rc == 0 and eid, f"sqlite_ro: entry create pre/{i}", err):
                acked.append(eid)
        want = {f"spiffe://{TD}/ro/pre/{i}" for i in range(5)}
        check(wait_for(lambda: (served_ids(env, pb, pb_grpc) or set()) >= want, 30, 0.2),
              "sqlite_ro: the agent serves the entries")

        r = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True, text=True)
        figures["plain_remount_ro_refused"] = r.returncode != 0
        print(f"     note: `mount -o remount,ro` under the running server: rc={r.returncode} "
              f"{r.stderr.strip().splitlines()[0] if r.stderr.strip() else ''}", flush=True)

        def read_only_checks(what, os_reason):
            rc, eid, err = env.entry_create(f"spiffe://{TD}/ro/{what}")
            check(rc == 1 and eid is None and one_error_line(err) and "datastore" in err,
                  f"{what}: entry create fails, exit 1, one line naming the datastore", f"rc={rc} {err!r}")
            check(f"(the datastore file is not writable: {os_reason})" in err,
                  f"{what}: ... and says why: the file is not writable: {os_reason}", err.strip())
            print(f"     {what}: {err.strip()}", flush=True)
            figures[f"{what}_error"] = err.strip()
            rc, ids = env.entry_ids()
            check(rc == 0 and set(acked) <= ids, f"{what}: entry show still works and lists every entry",
                  f"rc={rc} {len(ids)} listed")
            check(env.server.alive() and env.cli("healthcheck")[0] == 0, f"{what}: the server keeps running",
                  env.server.text()[-1500:])
            check(want <= (served_ids(env, pb, pb_grpc) or set()) and env.agent.alive(),
                  f"{what}: the agent keeps serving")
            rc, eid, err = env.entry_create(f"spiffe://{TD}/ro/{what}-again")
            check(rc == 1 and eid is None, f"{what}: a second write is refused too", f"rc={rc} {err!r}")

        # (1) the files read-only (immutable), then writable again, no restart
        data = env.server_data
        immutable = [data] + [os.path.join(data, n) for n in os.listdir(data)]
        r = subprocess.run(["chattr", "+i"] + immutable, capture_output=True, text=True)
        if check(r.returncode == 0, "immutable: chattr +i on the data dir and its files", r.stderr):
            read_only_checks("immutable", "Operation not permitted")
            subprocess.run(["chattr", "-i"] + immutable, check=True)
            immutable = []
            rc, eid, err = env.entry_create(f"spiffe://{TD}/ro/after-immutable")
            if check(rc == 0 and eid, "immutable: writable again -> entry create works, no restart", err):
                acked.append(eid)
                check(wait_for(lambda: f"spiffe://{TD}/ro/after-immutable" in (served_ids(env, pb, pb_grpc)
                                                                              or set()), 20, 0.2),
                      "immutable: the new entry reaches the agent")

        # (2) the filesystem forced read-only under the server
        r = subprocess.run(["mount", "-o", "remount,abort", mnt], capture_output=True, text=True)
        probe = os.path.join(mnt, "probe")
        try:
            open(probe, "w").close()
            erofs = False
        except OSError as ex:
            erofs = ex.errno == 30
        if check(r.returncode == 0 and erofs, "readonly fs: ext4 forced read-only under the server (EROFS)",
                 r.stderr):
            read_only_checks("readonly_fs", "Read-only file system")

        # Recovery: kill -9, fsck, mount, restart: nothing acknowledged lost, writes work.
        env.server.stop(signal.SIGKILL)
        subprocess.run(["umount", mnt], check=True)
        fsck = subprocess.run(["e2fsck", "-f", "-y", img], capture_output=True, text=True)
        check(fsck.returncode in (0, 1), "readonly fs: e2fsck repairs the filesystem", fsck.stdout[-500:])
        r = mount()
        check(r.returncode == 0, "readonly fs: the filesystem mounts read-write again", r.stderr)
        check(env.start_server(), "readonly fs: the server restarts on the same data dir",
              env.server.text()[-1500:])
        rc, eid, err = env.entry_create(f"spiffe://{TD}/ro/after-restart")
        if check(rc == 0 and eid, "readonly fs: entry create works after the restart", err):
            acked.append(eid)
        rc, ids = env.entry_ids()
        lost = [e for e in acked if e not in ids]
        figures["ro_acknowledged_entries"] = len(acked)
        figures["ro_entries_lost"] = len(lost)
        check(rc == 0 and not lost, f"sqlite_ro: no acknowledged entry lost ({len(acked)} acknowledged, "
              f"{len(lost)} lost)", str(lost))
        check(wait_for(lambda: f"spiffe://{TD}/ro/after-restart" in (served_ids(env, pb, pb_grpc) or set()),
                       30, 0.2) and env.agent.alive(), "sqlite_ro: the agent follows the restarted server")
        env.agent.stop()
        env.server.stop()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i"] + immutable)
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["umount", mnt], capture_output=True)


# ---- the server killed during a rotation storm ----------------------------------------------

def admin_stubs(tmp):
    """grpcio stubs of the admin API (admin.proto imports agent.proto): entries made fast, as bench/ does."""
    d = os.path.join(tmp, "pb-admin")
    os.makedirs(d)
    protoc(PROTO_DIR, d, "admin.proto", "agent.proto")
    sys.path.insert(0, d)
    import admin_pb2
    import admin_pb2_grpc
    import agent_pb2
    return admin_pb2, admin_pb2_grpc, agent_pb2


class SvidStream(threading.Thread):
    """One FetchX509SVID stream, reopened if it ends; every response recorded with its receive time.
    Each distinct leaf is parsed once (`leaves`, shared); a response carrying an SVID outside its validity at
    receive time is a violation. `current`: spiffe_id -> (serial, not_before, not_after, chain, bundle) of the
    last response."""

    def __init__(self, env, pb, pb_grpc, leaves, lock):
        super().__init__(daemon=True)
        self.env, self.pb, self.pb_grpc = env, pb, pb_grpc
        self.leaves, self.lock = leaves, lock
        self.current = {}
        self.responses = 0
        self.reopened = 0
        self.ends = []            # (status code, responses received before) of each end
        self.violations = []      # (spiffe_id, serial, not_before, not_after, t_recv)
        self.min_left = None      # the least life left of any SVID served, at its receive time (s)
        self.stopping = False
        self.call = None
        self.first = None         # spiffe_id -> serial of the first generation, once known
        self.all_renewed_t = None  # receive time of the first response with every SVID renewed

    def leaf(self, chain):
        from cryptography import x509
        key = hash(chain)
        with self.lock:
            v = self.leaves.get(key)
        if v is None or v[3] != chain:
            c = x509.load_der_x509_certificate(split_der(chain)[0])
            v = (c.serial_number, c.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp(),
                 c.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp(), chain)
            with self.lock:
                self.leaves[key] = v
        return v

    def run(self):
        while not self.stopping:
            ch = grpc.insecure_channel("unix:" + self.env.agent_sock,
                                       options=[("grpc.max_receive_message_length", 64 << 20)])
            try:
                self.call = self.pb_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(self.pb.X509SVIDRequest(),
                                                                                  metadata=MD)
                for r in self.call:
                    t = time.time()
                    cur = {}
                    for s in r.svids:
                        chain = bytes(s.x509_svid)
                        serial, nb, na, _ = self.leaf(chain)
                        if not nb <= t <= na:
                            self.violations.append((s.spiffe_id, serial, nb, na, t))
                        left = na - t
                        if self.min_left is None or left < self.min_left:
                            self.min_left = left
                        cur[s.spiffe_id] = (serial, nb, na, chain, bytes(s.bundle))
                    self.current = cur
                    self.responses += 1
                    first = self.first
                    if self.all_renewed_t is None and first is not None and len(cur) == len(first) and \
                            all(v[0] != first.get(sid) for sid, v in cur.items()):
                        self.all_renewed_t = t
            except grpc.RpcError as e:
                if not self.stopping:
                    self.ends.append((e.code().name, self.responses))
            finally:
                ch.close()
            if not self.stopping:
                self.reopened += 1
                time.sleep(0.01 if self.responses == 0 else 0.2)  # while the agent starts: try often

    def stop(self):
        self.stopping = True
        if self.call is not None:
            self.call.cancel()


class IssuedCount:
    """SVIDs the agent issued so far, from its log ("batch of N: K SVIDs issued", debug), read as it grows:
    what the agent did, without the lag of a workload's stream."""

    def __init__(self, path):
        self.path, self.off, self.rest, self.issued, self.sent = path, 0, b"", 0, 0

    def __call__(self):
        with open(self.path, "rb") as f:
            f.seek(self.off)
            d = f.read()
        self.off += len(d)
        lines = (self.rest + d).split(b"\n")
        self.rest = lines.pop()
        for ln in lines:
            m = re.search(rb"batch of \d+: (\d+) SVIDs issued", ln)
            if m:
                self.issued += int(m.group(1))
            elif b"BatchNewX509SVID: " in ln and b" CSRs sent" in ln:
                self.sent += 1
        return self.issued


def agent_log_counts(text):
    """From the agent's log: SVIDs whose renewal failed and was retried (a failed BatchNewX509SVID counts
    each of its CSRs; an item refused alone counts one), and SVIDs dropped because they expired."""
    retried = sum(int(m) for m in re.findall(r"BatchNewX509SVID of (\d+): ", text))
    retried += len(re.findall(r"SVID for entry \S+ \(\S+\) not issued: ", text))
    expired = sum(int(m) for m in re.findall(r"(\d+) cached SVIDs expired before they could be renewed", text))
    return retried, expired


def scenario_storm(tmp, pb, pb_grpc):
    """The server SIGKILLed while the agent renews a burst of SVIDs (N entries, X.509 TTL 90 s), down 8 s,
    restarted on the same data dir and port; when the agent sends its first renewals after that, a second
    SIGKILL, down 3 s, restart. Streams record every response: none may carry an SVID
    outside its validity at its receive time; in the end every SVID is renewed (a new serial), valid for a
    sensible time ahead, and its chain verifies against the bundle (`openssl verify`); the agent never died."""
    n = int(os.environ.get("LANYARD_STORM_ENTRIES", "1000"))
    # TTL 90 s: a 112.5 s life (backdated 22.5 s), renewed 28-39 s after issuance, expiring 90 s after it:
    # room for two outages and the agent's reconnection backoff (up to 30 s) under ASan on loaded cores.
    ttl, down_s, n_streams = 90, 8.0, 3
    apb, apb_grpc, gpb = admin_stubs(tmp)
    env = Env(tmp)
    if not check(env.start_server(), "storm: server starts", env.server.text()[-2000:]):
        return
    rc, out, err = env.cli("bundle", "show")
    with open(env.bundle_pem, "w") as f:
        f.write(out)
    rc, out, err = env.cli("token", "generate", "-spiffeID", AGENT_ID)
    token = re.search(r"Token: (\S+)", out).group(1)

    # N entries through the admin API, 128 calls in flight.
    ach = grpc.insecure_channel("unix:" + env.server_sock)
    admin = apb_grpc.AdminStub(ach)
    t0 = time.time()
    futs, made, errors = [], 0, []
    for i in range(n):
        e = gpb.Entry(spiffe_id=f"spiffe://{TD}/storm/{i}", parent_id=AGENT_ID,
                      selectors=[gpb.Selector(type="unix", value="uid:0")], x509_svid_ttl=ttl)
        futs.append(admin.CreateEntry.future(e, timeout=120))
        if len(futs) >= 128 or i == n - 1:
            for f in futs:
                try:
                    f.result()
                    made += 1
                except grpc.RpcError as ex:
                    errors.append(ex.details())
            futs = []
    ach.close()
    figures["storm_entries"] = made
    figures["storm_create_s"] = round(time.time() - t0, 2)
    if not check(made == n, f"storm: {n} entries created (admin API)", str(errors[:3])):
        return
    ids = {f"spiffe://{TD}/storm/{i}" for i in range(n)}

    env.start_agent(env.port, token)
    agent_pid = env.agent.proc.pid
    leaves, lock = {}, threading.Lock()
    streams = [SvidStream(env, pb, pb_grpc, leaves, lock) for _ in range(n_streams)]
    wait_for(lambda: os.path.exists(env.agent_sock), 30)
    for s in streams:
        s.start()
    t_start = time.time()
    if not check(wait_for(lambda: all(set(s.current) == ids for s in streams), 120, 0.1),
                 f"storm: every stream serves all {n} SVIDs", env.agent.text()[-1500:]):
        return
    figures["storm_first_issuance_s"] = round(time.time() - t_start, 2)
    first = {sid: v[0] for sid, v in streams[0].current.items()}
    for s in streams:
        s.first = first

    def renewed(s):
        return sum(1 for sid, v in s.current.items() if v[0] != first.get(sid))

    # The renewal burst: kill the server once the agent renewed a fifth of the SVIDs (its log).
    issued = IssuedCount(env.agent.log_path)
    burst = wait_for(lambda: issued() >= n + n // 5, ttl + 10, 0.02)
    env.server.stop(signal.SIGKILL)
    t_kill = time.time()
    at_kill = issued() - n
    figures["storm_renewed_at_kill"] = at_kill
    check(burst and at_kill < n, f"storm: server SIGKILLed in the middle of the renewal burst ({at_kill} of {n} "
          "renewed)", f"{at_kill} renewed")
    time.sleep(down_s)
    t_up = time.time()
    figures["storm_down_s"] = round(t_up - t_kill, 1)
    ok = env.start_server()
    check(ok, "storm: server restarts on the same data dir and port", env.server.text()[-1500:])

    # The second kill: as soon as the agent sends its first renewals after the restart (in flight, likely).
    at_restart = issued() - n
    sent0 = issued.sent
    again = wait_for(lambda: issued.sent > sent0 or issued() - n > at_restart, 60, 0.005)
    env.server.stop(signal.SIGKILL)
    t_kill2 = time.time()
    at_kill2 = issued() - n
    figures["storm_renewed_at_second_kill"] = at_kill2
    figures["storm_renewal_resumed_after_restart_s"] = round(t_kill2 - t_up, 2)
    check(again, f"storm: the agent sends renewals again after the restart ({at_kill2} of {n} renewed so far); "
          "the server killed again with them in flight",
          env.agent.text()[-1500:])
    time.sleep(3)
    t_up2 = time.time()  # exec: the server's own start-up is part of the recovery
    ok = env.start_server()
    check(ok, "storm: server restarts after the second kill", env.server.text()[-1500:])

    # Converged: every stream holds a renewed SVID for every entry.
    conv = wait_for(lambda: all(s.all_renewed_t is not None for s in streams), 90, 0.05)
    if conv:
        # As the workloads saw it: the last stream to receive a response with every SVID renewed.
        t_conv = max(s.all_renewed_t for s in streams)
        figures["storm_converged_after_last_restart_exec_s"] = round(t_conv - t_up2, 2)
        figures["storm_first_kill_to_converged_s"] = round(t_conv - t_kill, 2)
    check(conv, f"storm: every stream ends with a renewed SVID for all {n} entries "
          f"({figures.get('storm_first_kill_to_converged_s')} s after the first kill, "
          f"{figures.get('storm_converged_after_last_restart_exec_s')} s after the last restart's exec)",
          f"renewed per stream {[renewed(s) for s in streams]}")

    time.sleep(2)  # whatever follows convergence is recorded too
    for s in streams:
        s.stop()
    time.sleep(0.3)
    viol = [v for s in streams for v in s.violations]
    figures["storm_responses"] = [s.responses for s in streams]
    figures["storm_min_life_left_served_s"] = round(min(s.min_left for s in streams), 1)
    check(not viol, f"storm: no response on any stream carried an SVID outside its validity "
          f"({sum(s.responses for s in streams)} responses, least life left when served "
          f"{figures['storm_min_life_left_served_s']} s)", str(viol[:3]))
    # UNAVAILABLE while the agent starts is expected (clients retry); PERMISSION_DENIED would tell a workload
    # it has no identity, and once served a stream must stay open through the faults.
    ends = [e for s in streams for e in s.ends]
    figures["storm_stream_ends_before_first_response"] = [e[0] for e in ends if e[1] == 0]
    check(not [e for e in ends if e[0] != "UNAVAILABLE" or e[1] > 0],
          "storm: no stream was denied or ended once served (only UNAVAILABLE while the agent starts)",
          str(ends))

    # The end state, per SVID: renewed, valid now and for at least a third of the TTL, chain verifies.
    now = time.time()
    final = streams[0].current
    short = [sid for sid, v in final.items() if not (v[1] <= now and v[2] - now >= ttl / 3)]
    check(len(final) == n and not short, f"storm: all {n} final SVIDs valid now and for at least {ttl // 3} s more",
          f"{len(short)} short: {short[:3]}")
    vdir = os.path.join(tmp, "verify")
    os.makedirs(vdir)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    inter, roots, leaf_files, wrong_san = set(), set(), [], []
    for i, (sid, v) in enumerate(sorted(final.items())):
        certs = split_der(v[3])
        leaf = x509.load_der_x509_certificate(certs[0])
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        if uris != [sid]:
            wrong_san.append(sid)
        inter.update(certs[1:])
        roots.update(split_der(v[4]))
        p = os.path.join(vdir, f"leaf{i}.pem")
        with open(p, "wb") as f:
            f.write(leaf.public_bytes(Encoding.PEM))
        leaf_files.append(p)

    r, oks = openssl_verify(vdir, roots, inter, leaf_files)
    check(r.returncode == 0 and oks == n and not wrong_san,
          f"storm: every final chain verifies against the bundle (openssl verify -x509_strict: {oks} of {n} OK) "
          "and names its SPIFFE ID", (r.stderr or r.stdout)[-800:] + str(wrong_san[:3]))

    text = env.agent.text()
    retried, expired = agent_log_counts(text)
    figures["storm_renewals_retried"] = retried
    figures["storm_svids_expired_in_cache"] = expired
    check(env.agent.alive() and env.agent.proc.pid == agent_pid,
          "storm: the agent never died", text[-1500:])
    # (A kill between two batches fails none: the renewals due meanwhile wait for the reconnection.)
    print(f"     {retried} CSRs failed and were retried", flush=True)
    check(expired == 0, "storm: no SVID expired in the agent's cache before its renewal", str(expired))
    rc = env.agent.stop()
    check(rc == 0, "storm: the agent stops cleanly", f"rc={rc} " + env.agent.text()[-1500:])

    # The agent restarted with its identity but without its SVID cache (a damaged svid_cache.bin is
    # ignored), the server down: it knows no entries yet, so a caller must get UNAVAILABLE (retry), never
    # PERMISSION_DENIED (no identity, for good); once the server is back, everything is served again.
    env.server.stop(signal.SIGKILL)
    os.unlink(os.path.join(env.agent_data, "svid_cache.bin"))
    env.start_agent(env.port)
    wait_for(lambda: "resuming as " in env.agent.text() and os.path.exists(env.agent_sock), 20, 0.05)
    codes = set()
    for _ in range(10):
        ch = grpc.insecure_channel("unix:" + env.agent_sock)
        try:
            next(pb_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(pb.X509SVIDRequest(), metadata=MD, timeout=2))
            codes.add("OK")
        except grpc.RpcError as e:
            codes.add(e.code().name)
        finally:
            ch.close()
        time.sleep(0.1)
    check(codes == {"UNAVAILABLE"}, "storm: agent restarted without its SVID cache, server down: callers get "
          "UNAVAILABLE until the entries are known (not PERMISSION_DENIED)", str(codes))
    check(env.start_server(), "storm: server starts again")
    check(wait_for(lambda: (served_ids(env, pb, pb_grpc) or set()) == ids, 60, 0.2),
          f"storm: then all {n} SVIDs are served again", env.agent.text()[-1500:])
    rc = env.agent.stop()
    check(rc == 0, "storm: the agent stops cleanly", f"rc={rc} " + env.agent.text()[-1500:])
    env.server.stop()


def main():
    tmp = tempfile.mkdtemp(prefix=f"lanyard-faults-{SCENARIO}-")
    os.chmod(tmp, 0o755)
    pb, pb_grpc = make_stubs(tmp)
    try:
        {"proxy": scenario_proxy, "sqlite": scenario_sqlite, "skew": scenario_skew,
         "agentkill": scenario_agentkill, "storm": scenario_storm,
         "sqlite_ro": scenario_sqlite_ro}[SCENARIO](tmp, pb, pb_grpc)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        finish(tmp, with_figures=True)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
