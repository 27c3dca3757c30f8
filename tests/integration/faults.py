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
          most 5 min: server/ca.h).

Everything runs on 127.0.0.1 in a temporary directory. Prints ok/FAIL per
check and a `figures` line; exits non-zero on any failure.
"""
import json
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

SERVER, AGENT, PROTO_DIR, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
MD = (("workload.spiffe.io", "true"),)

failures = []
figures = {}
PROCS = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (f" ({detail})" if detail and not cond else ""), flush=True)
    if not cond:
        failures.append(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(fn, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


class Daemon:
    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        PROCS.append(self.proc)

    def text(self):
        return open(self.log_path, "rb").read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


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
        r = subprocess.run([SERVER, *args, "-socketPath", self.server_sock], capture_output=True, text=True,
                           timeout=timeout)
        return r.returncode, r.stdout, r.stderr

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


def one_error_line(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ")


def make_stubs(tmp):
    pb_dir = os.path.join(tmp, "pb")
    os.makedirs(pb_dir)
    subprocess.run(["/usr/bin/python3", "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", "-I/usr/include",
                    f"--python_out={pb_dir}", f"--grpc_python_out={pb_dir}",
                    os.path.join(PROTO_DIR, "workload.proto")], check=True)
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
        # 200 ms doubling to 30 s: about 7 attempts in 30 s; a tight loop would make hundreds.
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
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt],
                             capture_output=True).returncode == 0
    if not mounted:
        print("note: cannot mount a tmpfs: disk-full case skipped", flush=True)
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
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
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
    if shutil.which("faketime") is None:
        check(False, "skew: faketime is installed (scripts/install-deps.sh)")
        return
    # faketime preloads libfaketime ahead of an ASan build's runtime; ASan refuses to start unless told
    # that order is expected (harmless: libfaketime only wraps the clock calls).
    faketime_env = dict(os.environ)
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
        env.agent = Daemon(["faketime", "-f", off + "s", AGENT, "run", "-trustDomain", TD, "-serverAddress",
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


def main():
    tmp = tempfile.mkdtemp(prefix=f"lanyard-faults-{SCENARIO}-")
    os.chmod(tmp, 0o755)
    pb, pb_grpc = make_stubs(tmp)
    try:
        {"proxy": scenario_proxy, "sqlite": scenario_sqlite, "skew": scenario_skew,
         "agentkill": scenario_agentkill}[SCENARIO](tmp, pb, pb_grpc)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        print("figures " + json.dumps(figures), flush=True)
        if failures:
            print(f"{len(failures)} FAILED; logs in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
