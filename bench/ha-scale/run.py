"""run.py: issue 16's scale proof on this machine (driven by run.sh; not run by ctest).

A throw-away PostgreSQL (initdb in a temp dir, Unix socket only; as nobody when run as root),
--servers lanyard-servers on it (1 or 2; two need servers that share one database: issue 16),
N join tokens and the entries made through the admin API (GenerateToken, CreateEntry; 256 in
flight), then bench_agentsim simulating the N agents (bench/agentsim.c), spread over the servers.

Entries: per agent, K-1 workload entries parented to it plus one "relay" entry (SPIFFE ID
spiffe://TD/sim/relay, parented to it); one more entry, the mark, is parented to that relay ID,
so every agent is authorized for it (docs/agent-api.md, "Which entries an agent gets", level 2).
Total: N*K + 1.

Phases: (1) wait until every agent is served and holds an SVID for every entry; (2) steady
state: CPU (utime+stime from /proc/PID/stat) and VmRSS of each server, of PostgreSQL (the
postmaster and all its children) and of the load generator over --steady seconds; (3)
revocation, --trials times: DeleteEntry of the mark through server 1's admin socket, and for
each agent the time from just before the call to the deletion arriving on its watch (recreated
between trials, once every agent holds it again); (4) with two servers: kill -9 of the last
server, and for each of its agents the time until a snapshot from another server arrived.
Prints markdown tables on stdout, progress on stderr; --json FILE writes the raw figures.
"""
import argparse
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from harness import free_port, protoc, wait_for  # noqa: E402

TD = "example.org"
RELAY = f"spiffe://{TD}/sim/relay"
MARK = "sim-mark"
NICE = ["nice", "-n", "5"]

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--agents", type=int, default=100)
ap.add_argument("--entries", type=int, default=5000, help="total entries (about; K per agent = entries / agents)")
ap.add_argument("--servers", type=int, default=1, choices=(1, 2))
ap.add_argument("--x509-ttl", type=int, default=3600, help="entries' X.509-SVID TTL, s")
ap.add_argument("--agent-ttl", type=int, default=3600, help="default_x509_svid_ttl: the agent SVIDs' TTL, s")
ap.add_argument("--ramp", type=int, default=200, help="agents started per second")
ap.add_argument("--resync", type=int, default=5, help="agent resync interval, s (0: none)")
ap.add_argument("--steady", type=int, default=30, help="steady-state window, s")
ap.add_argument("--settle", type=int, default=10, help="wait before the window, s")
ap.add_argument("--trials", type=int, default=3)
ap.add_argument("--ready-timeout", type=int, default=900)
ap.add_argument("--share-ca", action="store_true",
                help="copy server1's CA into the other servers' data dirs before they start (a stopgap for "
                     "servers that do not publish their own CA into a shared bundle yet)")
ap.add_argument("--server-bin", help="a lanyard-server other than BUILD's (e.g. a branch's build)")
ap.add_argument("--json")
ap.add_argument("--keep", action="store_true")
ap.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"),
                help="the servers' log_level (debug: every watch opened and sent, for timelines)")
A = ap.parse_args()

SERVER = A.server_bin or os.path.join(A.build, "server", "lanyard-server")
SIM = os.path.join(A.build, "bench", "bench_agentsim")
procs = []
with open(SERVER, "rb") if os.path.exists(SERVER) else open(os.devnull, "rb") as _f:
    LIMITS = b"ratelimit.attestation" in _f.read()


def note(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(v, p):
    s = sorted(v)
    k = max(1, min(len(s), int(-(-p * len(s) // 1))))
    return s[k - 1]


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except FileNotFoundError:
        pass
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


class Proc:
    def __init__(self, args, log, **kw):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(args, stdout=kw.pop("stdout", self.log), stderr=self.log, **kw)
        self.pid = self.p.pid
        procs.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


class Postgres:
    def __init__(self, tmp):
        bindir = os.environ.get("LANYARD_PG_BINDIR")
        if not bindir:
            for d in sorted((p for p in os.listdir("/usr/lib/postgresql") if p.isdigit()), key=int, reverse=True):
                if os.access(f"/usr/lib/postgresql/{d}/bin/initdb", os.X_OK):
                    bindir = f"/usr/lib/postgresql/{d}/bin"
                    break
        if not bindir:
            sys.exit("run.py: no PostgreSQL binaries (install postgresql, or set LANYARD_PG_BINDIR)")
        self.bindir = bindir
        self.dir = os.path.join(tmp, "pg")
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        self.prefix = []
        if os.geteuid() == 0:
            uid = pwd.getpwnam("nobody").pw_uid
            try:
                gid = grp.getgrnam("nogroup").gr_gid
            except KeyError:
                gid = pwd.getpwnam("nobody").pw_gid
            os.chown(self.dir, uid, gid)
            os.chmod(tmp, 0o755)
            self.prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        self.run("initdb", "-D", self.data, "-U", "lanyard", "--auth=trust", "-E", "UTF8", "--locale=C",
                 "--no-instructions")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.dir}'\nport = 5432\n"
                    "max_connections = 50\n")

    def run(self, prog, *args):
        r = subprocess.run(NICE + self.prefix + [os.path.join(self.bindir, prog), *args], capture_output=True,
                           text=True, cwd=self.dir, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{prog} failed: {r.stdout}{r.stderr}")
        return r

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "postgres.log"), "-w", "start")
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.dir, "-U", "lanyard", "-d", "postgres", "-q",
                        "-c", "CREATE DATABASE lanyard"], check=True, capture_output=True)

    def sql(self, *stmts):
        for q in stmts:
            subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.dir, "-U", "lanyard", "-d", "postgres",
                            "-q", "-c", q], check=True, capture_output=True)

    def stop(self):
        subprocess.run(self.prefix + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                       "stop"], capture_output=True, cwd=self.dir)

    def pids(self):
        return [self.pid] + children(self.pid)

    def conninfo(self):
        return f"host={self.dir} port=5432 user=lanyard dbname=lanyard"


class Server:
    def __init__(self, tmp, i, pg):
        self.name = f"server{i}"
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir, mode=0o700)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.sock = os.path.join(self.dir, "api", "api.sock")
        self.conf = os.path.join(self.dir, "server.yaml")
        with open(self.conf, "w") as f:
            f.write(f"""server:
  trust_domain: {TD}
  bind_address: 127.0.0.1
  server_port: {self.port}
  socket_path: {self.sock}
  data_dir: {self.dir}/data
  datastore:
    database_type: postgres
    connection_string: "{pg.conninfo()}"
  log_level: {A.log_level}
  ca_key_type: ec-p256
  ca_ttl: 24h
  default_x509_svid_ttl: {A.agent_ttl}
  node_attestors:
    join_token: {{}}
""")
            if LIMITS:
                # Every simulated agent comes from 127.0.0.1: the per-IP attestation limit would
                # admit one a second. The per-agent signing limit stays on.
                f.write("  ratelimit:\n    attestation: false\n")
        os.chmod(self.conf, 0o600)
        self.proc = None

    def start(self):
        self.proc = Proc(NICE + [SERVER, "run", "-config", self.conf], os.path.join(self.dir, "server.log"))

        def up():
            if not self.proc.alive():
                raise RuntimeError(f"{self.name} exited; see {self.dir}/server.log")
            return self.cli("bundle", "show").returncode == 0
        if not wait_for(up, 60, step=0.1):
            raise RuntimeError(f"{self.name} not up")

    def cli(self, *args):
        return subprocess.run([SERVER, *args, "-socketPath", self.sock], capture_output=True, text=True, timeout=60)


class Sim:
    """bench_agentsim's stdout, read on a thread."""

    def __init__(self, proc, out=None):
        self.proc = proc
        self.out = out  # a file every stdout line is copied to (--keep: agentsim.out), or None
        self.stat = {}
        self.revoked = []
        self.moved = []
        self.errs = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for ln in self.proc.p.stdout:
            ln = ln.decode(errors="replace").strip()
            if self.out is not None:
                self.out.write(ln + "\n")
            kv = dict(x.split("=", 1) for x in ln.split()[1:] if "=" in x)
            with self.lock:
                if ln.startswith("stat "):
                    self.stat = kv
                elif ln.startswith("revoked "):
                    self.revoked.append((kv["server"], int(kv["t"])))
                elif ln.startswith("moved "):
                    self.moved.append(kv)
                elif ln.startswith("err "):
                    self.errs.append(ln)

    def get(self, k):
        with self.lock:
            return int(self.stat.get(k, "0").split(".")[0])


def admin_stub(sock):
    import grpc
    import admin_pb2_grpc
    ch = grpc.insecure_channel("unix:" + sock, options=[("grpc.max_receive_message_length", 64 << 20)])
    return ch, admin_pb2_grpc.AdminStub(ch)


def in_flight(calls, n=256):
    """Runs the (callable -> future) list with n in flight; returns the results in order."""
    futs, out = [], []
    for c in calls:
        futs.append(c())
        if len(futs) >= n:
            out.append(futs.pop(0).result())
    out.extend(f.result() for f in futs)
    return out


def main():
    for b in (SERVER, SIM):
        if not os.access(b, os.X_OK):
            sys.exit(f"run.py: {b} not found (build lanyard-server and bench_agentsim)")
    tmp = tempfile.mkdtemp(prefix="lanyard-hascale-")
    fig = {"agents": A.agents, "servers": A.servers, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "load_start": loadavg(), "nproc": os.cpu_count()}
    pg = None
    ok = False
    try:
        pbdir = os.path.join(tmp, "pb")
        protoc(os.path.join(SRC, "proto"), pbdir, "admin.proto", "agent.proto")
        sys.path.insert(0, pbdir)
        import admin_pb2
        import agent_pb2

        pg = Postgres(tmp)
        pg.start()
        servers = [Server(tmp, i + 1, pg) for i in range(A.servers)]
        for i, s in enumerate(servers):
            if i > 0 and A.share_ca:
                shutil.copytree(os.path.join(servers[0].dir, "data", "ca"), os.path.join(s.dir, "data", "ca"))
                os.chmod(os.path.join(s.dir, "data"), 0o700)
            s.start()
            note(f"{s.name} up on {s.addr}")
        bundle = os.path.join(tmp, "bundle.pem")
        with open(bundle, "w") as f:
            f.write(servers[0].cli("bundle", "show").stdout)

        ch, admin = admin_stub(servers[0].sock)
        t0 = time.monotonic()
        toks = in_flight([lambda: admin.GenerateToken.future(admin_pb2.TokenRequest(ttl=7200), timeout=300)
                          for _ in range(A.agents)])
        fig["tokens_s"] = round(time.monotonic() - t0, 1)
        tokfile = os.path.join(tmp, "tokens")
        with open(tokfile, "w") as f:
            for t in toks:
                f.write(t.token + "\n")
        os.chmod(tokfile, 0o600)
        note(f"{A.agents} join tokens in {fig['tokens_s']} s")

        k = max(1, A.entries // A.agents)
        ents = []
        for i, t in enumerate(toks):
            parent = t.spiffe_id
            ents.append(agent_pb2.Entry(entry_id=f"sim-{i}-relay", spiffe_id=RELAY, parent_id=parent,
                                        selectors=[agent_pb2.Selector(type="unix", value="uid:1")],
                                        x509_svid_ttl=A.x509_ttl))
            for j in range(1, k):
                ents.append(agent_pb2.Entry(entry_id=f"sim-{i}-{j}", spiffe_id=f"spiffe://{TD}/sim/a{i}/w{j}",
                                            parent_id=parent,
                                            selectors=[agent_pb2.Selector(type="unix", value=f"uid:{1000 + j}")],
                                            x509_svid_ttl=A.x509_ttl))
        mark = agent_pb2.Entry(entry_id=MARK, spiffe_id=f"spiffe://{TD}/sim/revoked", parent_id=RELAY,
                               selectors=[agent_pb2.Selector(type="unix", value="uid:2")], x509_svid_ttl=A.x509_ttl)
        ents.append(mark)
        # Set-up only: commits without waiting for the disk (one transaction per CreateEntry is
        # fsync-bound at ~200/s here); PostgreSQL's default is back before anything is measured.
        pg.sql("ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()")
        fig["entries"] = len(ents)
        fig["per_agent"] = k + 1
        t0 = time.monotonic()
        in_flight([lambda e=e: admin.CreateEntry.future(e, timeout=600) for e in ents])
        fig["create_s"] = round(time.monotonic() - t0, 1)
        pg.sql("ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()")
        note(f"{len(ents)} entries in {fig['create_s']} s ({len(ents) / max(fig['create_s'], 0.1):.0f}/s)")

        sim_proc = Proc(NICE + [SIM, "-servers", ",".join(s.addr for s in servers), "-tokens", tokfile,
                                "-bundle", bundle, "-td", TD, "-ramp", str(A.ramp), "-resync", str(A.resync),
                                "-mark", MARK, "-srcAddrs", str(max(1, -(-A.agents // 32)))], os.path.join(tmp, "agentsim.log"), stdout=subprocess.PIPE)
        sim = Sim(sim_proc, open(os.path.join(tmp, "agentsim.out"), "w", buffering=1) if A.keep else None)
        cpu_start = [cpu_s(s.proc.pid) for s in servers] + [sum(cpu_s(p) for p in pg.pids())]
        t0 = time.monotonic()

        def ready():
            if not sim_proc.alive():
                raise RuntimeError("bench_agentsim exited; see agentsim.log")
            for s in servers:
                if not s.proc.alive():
                    raise RuntimeError(f"{s.name} exited")
            # Agents whose attestation failed for good (a join token used up) are counted apart.
            served = sim.get("served")
            return served + sim.get("failed") == A.agents and sim.get("svids") >= served * (k + 1) and \
                sim.get("marked") == served
        last = [0]

        def progress():
            r = ready()
            if time.monotonic() - last[0] > 10:
                last[0] = time.monotonic()
                note("agentsim: " + " ".join(f"{x}={sim.stat.get(x)}" for x in
                                             ("attested", "served", "svids", "marked", "errs")))
            return r
        if not wait_for(progress, A.ready_timeout, step=0.5):
            raise RuntimeError(f"not all agents served within {A.ready_timeout} s: {sim.stat}; {sim.errs[:5]}")
        fig["ready_s"] = round(time.monotonic() - t0, 1)
        n_served = sim.get("served")
        fig["failed"] = sim.get("failed")
        if fig["failed"]:
            note(f"WARNING: {fig['failed']} agents could not attest; measuring the {n_served} served")
        fig["served_by"] = sim.stat.get("served_by")
        cpu_ready = [cpu_s(s.proc.pid) for s in servers] + [sum(cpu_s(p) for p in pg.pids())]
        fig["startup_cpu_s"] = [round(b - a, 1) for a, b in zip(cpu_start, cpu_ready)]
        if len(servers) > 1 and "/0" in "/" + fig["served_by"]:
            note(f"WARNING: a server serves no agent ({fig['served_by']}): its CA is not in the bundle the "
                 "agents have (servers sharing one database as one trust domain: issue 16; --share-ca)")
        fig["issued"] = sim.get("issued")
        note(f"{n_served} agents served, {sim.get('svids')} SVIDs, in {fig['ready_s']} s")

        time.sleep(A.settle)
        clk = os.sysconf("SC_CLK_TCK")
        pgp = pg.pids()
        c0 = [cpu_s(s.proc.pid) for s in servers]
        p0 = sum(cpu_s(p) for p in pgp)
        a0 = cpu_s(sim_proc.pid)
        s0 = dict(sim.stat)
        w0 = time.monotonic()
        time.sleep(A.steady)
        w = time.monotonic() - w0
        pgp2 = pg.pids()
        # Backends that ended in the window are lost; those started in it count from 0.
        p1 = sum(cpu_s(p) for p in pgp2)
        fig["steady"] = {
            "window_s": round(w, 1), "load": loadavg(),
            "servers": [{"name": s.name, "cpu_cores": round((cpu_s(s.proc.pid) - c) / w, 3),
                         "rss_mib": round(rss_kib(s.proc.pid) / 1024, 1)} for s, c in zip(servers, c0)],
            "postgres_cpu_cores": round((p1 - p0) / w, 3), "postgres_procs": len(pgp2),
            "postgres_rss_mib": round(sum(rss_kib(p) for p in pgp2) / 1024, 1),
            "agentsim_cpu_cores": round((cpu_s(sim_proc.pid) - a0) / w, 3),
            "agentsim_rss_mib": round(rss_kib(sim_proc.pid) / 1024, 1),
            "renewed": sim.get("renewed") - int(s0.get("renewed", 0)),
            "agent_renewed": sim.get("agent_renewed") - int(s0.get("agent_renewed", 0)),
            "snapshots_per_s": round((sim.get("snapshots") - int(s0.get("snapshots", 0))) / w, 1),
            "deltas_per_s": round((sim.get("deltas") - int(s0.get("deltas", 0))) / w, 1),
            "watches_per_s": round((sim.get("watches") - int(s0.get("watches", 0))) / w, 1),
        }
        del clk
        note(f"steady: {fig['steady']}")

        trials = []
        for tr in range(A.trials):
            if tr > 0:
                admin.CreateEntry(mark, timeout=60)
                if not wait_for(lambda: sim.get("marked") == n_served, 120, step=0.2):
                    raise RuntimeError(f"mark not back on every agent: {sim.stat}")
                time.sleep(2)
            with sim.lock:
                n0 = len(sim.revoked)
            t_del = time.time_ns()
            admin.DeleteEntry(admin_pb2.EntryID(entry_id=MARK), timeout=60)
            t_ret = time.time_ns()
            if not wait_for(lambda: len(sim.revoked) - n0 >= n_served, 60, step=0.05):
                note(f"trial {tr}: only {len(sim.revoked) - n0} of {n_served} agents saw the deletion")
            with sim.lock:
                got = sim.revoked[n0:]
            lat = [(t - t_del) / 1e6 for _, t in got]
            trial = {"agents": len(lat), "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1),
                     "max_ms": round(max(lat), 1), "delete_call_ms": round((t_ret - t_del) / 1e6, 1),
                     "by_server": {}}
            for s in servers:
                ls = [(t - t_del) / 1e6 for a, t in got if a == s.addr]
                if ls:
                    trial["by_server"][s.name] = {"agents": len(ls), "p50_ms": round(pct(ls, 0.5), 1),
                                                  "p99_ms": round(pct(ls, 0.99), 1), "max_ms": round(max(ls), 1)}
            trials.append(trial)
            note(f"revocation {tr}: {trials[-1]}")
        fig["revocation"] = trials

        if len(servers) > 1:
            victim = servers[-1]
            time.sleep(3)
            with sim.lock:
                m0 = len(sim.moved)
            with sim.lock:
                on_victim = int(sim.stat.get("served_by", "0").split("/")[-1])
            cn0 = sim.get("chan_new_ms")
            a_cpu0 = cpu_s(sim_proc.pid)
            t_kill = time.time_ns()
            victim.proc.p.send_signal(signal.SIGKILL)
            victim.proc.p.wait()
            wait_for(lambda: len(sim.moved) - m0 >= on_victim and sim.get("served") == n_served, 120, step=0.1)
            with sim.lock:
                mv = sim.moved[m0:]
            mine = [m for m in mv if m["from"] == victim.addr]
            back = [(int(m["back"]) - t_kill) / 1e9 for m in mine]
            lost = [(int(m["lost"]) - t_kill) / 1e9 for m in mine]
            fig["kill"] = {"expected": on_victim, "moved": len(back), "served_after": sim.get("served"),
                           "p50_s": round(pct(back, 0.5), 2) if back else None,
                           "p99_s": round(pct(back, 0.99), 2) if back else None,
                           "max_s": round(max(back), 2) if back else None,
                           "tries_max": max((int(m["tries"]) for m in mv), default=0),
                           "sim_chan_new_s": round((sim.get("chan_new_ms") - cn0) / 1e3, 2),
                           "sim_cpu_s": round(cpu_s(sim_proc.pid) - a_cpu0, 2),
                           "lost_p50_s": round(pct(lost, 0.5), 3) if lost else None,
                           "lost_max_s": round(max(lost), 3) if lost else None}
            note(f"kill -9 {victim.name}: {fig['kill']}")
        time.sleep(1.5)  # one more stat line
        fig["sim_errors"] = sim.get("errs")
        fig["sim_first_errors"] = sim.errs[:10]
        fig["load_end"] = loadavg()
        sim_proc.stop()
        ok = True
    finally:
        for p in reversed(procs):
            p.stop(signal.SIGKILL if not ok else signal.SIGTERM)
        if pg is not None:
            pg.stop()
        if A.keep or not ok:
            note(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(fig)


def report(fig):
    if A.json:
        with open(A.json, "w") as f:
            json.dump(fig, f, indent=1)
    st = fig["steady"]
    print(f"Scale run {fig['started']}: {fig['agents']} simulated agents, {fig['entries']} entries "
          f"({fig['per_agent']} per agent), {fig['servers']} server(s) on one PostgreSQL; "
          f"{fig['nproc']} CPUs, load average {fig['load_start']} at the start, {st['load']} in the window, "
          f"{fig['load_end']} at the end.")
    print()
    print(f"Set-up: {fig['agents']} tokens {fig['tokens_s']} s; entries created in {fig['create_s']} s; "
          f"{fig['agents'] - fig['failed']} agents served with every SVID ({fig['failed']} could not attest) "
          f"{fig['ready_s']} s after bench_agentsim started "
          f"({fig['issued']} SVIDs issued); CPU seconds spent meanwhile by "
          + ", ".join(f"server{i + 1} {c}" for i, c in enumerate(fig["startup_cpu_s"][:-1]))
          + f", PostgreSQL {fig['startup_cpu_s'][-1]}.")
    print()
    print(f"Agents served by each server when ready: {fig['served_by']}.")
    print()
    print(f"| steady state ({st['window_s']} s) | CPU (cores) | memory (VmRSS MiB) |")
    print("|---|---|---|")
    for s in st["servers"]:
        print(f"| {s['name']} | {s['cpu_cores']} | {s['rss_mib']} |")
    print(f"| PostgreSQL ({st['postgres_procs']} processes) | {st['postgres_cpu_cores']} | {st['postgres_rss_mib']} |")
    print(f"| bench_agentsim (load generator) | {st['agentsim_cpu_cores']} | {st['agentsim_rss_mib']} |")
    print()
    print(f"In the window: {st['watches_per_s']} watches opened/s (the agents' resync), answered with "
          f"{st['snapshots_per_s']} snapshots/s and {st['deltas_per_s']} deltas/s; {st['renewed']} SVIDs and {st['agent_renewed']} agent SVIDs renewed.")
    print()
    print("| revocation trial | agents that saw it | p50 ms | p99 ms | max ms | DeleteEntry call ms |")
    print("|---|---|---|---|---|---|")
    for i, t in enumerate(fig["revocation"]):
        print(f"| {i + 1} | {t['agents']} | {t['p50_ms']} | {t['p99_ms']} | {t['max_ms']} | {t['delete_call_ms']} |")
        if len(t["by_server"]) > 1:
            for name, b in t["by_server"].items():
                print(f"| {i + 1}, agents on {name} | {b['agents']} | {b['p50_ms']} | {b['p99_ms']} | {b['max_ms']} | |")
    if "kill" in fig:
        k = fig["kill"]
        print()
        print("| kill -9 of one server | agents on it | moved and served again | p50 s | p99 s | max s |")
        print("|---|---|---|---|---|---|")
        print(f"| | {k['expected']} | {k['moved']} | {k['p50_s']} | {k['p99_s']} | {k['max_s']} |")
        print()
        print(f"Their watches failed {k['lost_p50_s']} s (median; last {k['lost_max_s']} s) after the kill; "
              f"at most {k['tries_max']} backoff wait(s) (the first one included) before a server answered. "
              f"The load generator spent {k['sim_cpu_s']} CPU s meanwhile, "
              f"{k['sim_chan_new_s']} s of them making the new channels (loop time).")
    print()
    print(f"bench_agentsim errors: {fig['sim_errors']}")
    for ln in fig["sim_first_errors"]:
        print("    " + ln)


if __name__ == "__main__":
    main()
