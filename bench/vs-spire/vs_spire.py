#!/usr/bin/python3
"""vs_spire.py: Lanyard and SPIRE side by side, the same scenarios, the same machine, one run (issue 13).

    vs_spire.py LANYARD_BUILD_DIR SPIRE_BIN_DIR PROTO_DIR [--quick] [--only lanyard|spire]
    vs_spire.py LANYARD_BUILD_DIR SPIRE_BIN_DIR PROTO_DIR --only-row paced [--rounds N] [--seconds S]

Run by bench/vs-spire/run.sh. For each system in turn: its server and agents on 127.0.0.1, every
socket and data directory in a temporary directory, configured from the templates next to this
file (lanyard-*.yaml, spire-*.conf: SQLite, join-token node attestation, the unix workload
attestor, the same trust domain and SVID TTLs). Both are driven by the same tools and the same
clock: their CLIs for registration (the same flags on both), bench_wapi_client (C, gRPC core) and
grpcio streams over the standard Workload API for everything a workload sees. Every process
started here is stopped by its pid. Prints markdown tables on stdout (progress on stderr) and
writes the raw figures as JSON to $LANYARD_BENCH_JSON when set.

Rows (issue 13), per system:
  1. registration: K entries, one CLI exec each; N entries through the bulk path (SPIRE: one
     `entry create -data FILE`, i.e. BatchCreateEntry; Lanyard: CreateEntry over the admin API,
     256 in flight: its CLI has no bulk mode);
  2. storm: agent B starts after N entries exist for it, 1,000 per uid (6000, 6001, ...); one
     workload per uid (storm_reader.py under that uid, started with the agent) opens a Workload
     API stream as soon as the socket answers; from the agent's exec to the moment every workload
     has a message carrying all of its SVIDs (the observable both systems share: SVIDs a workload
     can get; 1,000 per workload keeps a response under gRPC's default 4 MiB message cap);
  3. FetchX509SVID first response on agent A (1 + N_A cached SVIDs, the caller entitled to one):
     one client new/open connection, 100 clients at once, 100 open connections at 1,000 calls/s;
     CPU per call of the agent and of the client;
  4. agent and server VmRSS/VmHWM (agent A at 1 + N_A, agent B at N), idle CPU per minute;
  5. revocation: `entry delete` exec -> the update on an open stream that no longer carries it;
  6. rotation: R entries with a 120 s TTL: arrival of the new SVID on a stream as a fraction of
     the old certificate's [notBefore, notAfter];
  7. server down: fetches answered on agent A; agent A restarted while the server is down;
  8. server restarted under agent B (a stream of ours open on it, refused and reopened every
     20 ms until we have an entry there): server exec -> an entry created as soon as the server
     answers reaches the stream.
Floor of the storm rows: bench_crypto_floor (a P-256 key, two signatures, two verifications per
SVID, OpenSSL alone), measured at the start of the run.
--only-row paced: only row 3's paced measure, both systems up at once (or the one --only
names), N rounds alternating, then one client's fetches on a new and an open connection
(only_paced below).
SPIRE's default LRU (1,000), when N > 1,000: a third agent with x509_svid_cache_max_size = 1000
and N entries: the SVIDs it mints with no workload asking (30 s), then the time until a stream
entitled to all N carries them.
"""
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "integration"))
from harness import Daemon as HarnessDaemon, free_port, protoc, wait_for  # noqa: E402

BUILD, SPIRE_BIN, PROTO_DIR = sys.argv[1:4]
ARGS = sys.argv[4:]
QUICK = "--quick" in ARGS
ONLY = ARGS[ARGS.index("--only") + 1] if "--only" in ARGS else None
ONLY_ROW = ARGS[ARGS.index("--only-row") + 1] if "--only-row" in ARGS else None
if ONLY not in (None, "lanyard", "spire"):
    raise SystemExit(f"vs_spire.py: --only {ONLY}: lanyard or spire")
ROUNDS = int(ARGS[ARGS.index("--rounds") + 1]) if "--rounds" in ARGS else 3
ROW_S = int(ARGS[ARGS.index("--seconds") + 1]) if "--seconds" in ARGS else 5
PERF_DIR = os.environ.get("VS_SPIRE_PERF")  # perf record each agent in one extra pass (paced row)
CLIENT = os.path.join(BUILD, "bench", "bench_wapi_client")
TD = "example.org"
MD = (("workload.spiffe.io", "true"),)
UID = os.getuid()
NOBODY_SEL = "unix:uid:4242"  # matches no running process
X509_TTL = 3600  # default_x509_svid_ttl on both servers
ROT_TTL = 120    # the rotation row's entries

N_STORMS = [1000] if QUICK else [1000, 10000]
N_A = 1000                      # agent A's cached SVIDs besides the caller's own
K_CLI = 50 if QUICK else 200    # entries created one CLI exec each
FETCH_COLD_ROUNDS = 100 if QUICK else 300
AT_ONCE_ROUNDS = 5 if QUICK else 20
PACED_S = 3 if QUICK else 5
REV_TRIALS = 10 if QUICK else 30
ROT_N = 100 if QUICK else 500
IDLE_S = 20 if QUICK else 60
DOWN_FETCHES = 20
MAX_MSG = 64 << 20
# Storm workloads: GROUP entries per uid (STORM_UID + k), each read by its own storm_reader.py
# process under that uid: a response of 1,000 SVIDs is ~1.7 MB, under gRPC's default 4 MiB
# message cap (lanyard-agent refuses to send more; a single workload entitled to 10,000 SVIDs
# would get nothing).
GROUP = 1000
STORM_UID = 6000
LRU_UID = 7000
READER = os.path.join(HERE, "storm_reader.py")
PB_DIR = None

procs = []
fig = {"lanyard": {}, "spire": {}}


def note(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(v, p):
    """Nearest-rank percentile."""
    s = sorted(v)
    k = max(1, min(len(s), int(-(-p * len(s) // 1))))
    return s[k - 1]


class Daemon(HarnessDaemon):
    def __init__(self, args, log_path):
        self.t_exec = time.monotonic()
        self.args = args
        super().__init__(args, log_path)
        procs.append(self)

    def status(self):
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                    out[k] = int(v.split()[0])
        return out

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def render(template, path, **kv):
    with open(os.path.join(HERE, template)) as f:
        text = string.Template(f.read()).substitute(TRUST_DOMAIN=TD, X509_SVID_TTL=X509_TTL, **kv)
    with open(path, "w") as f:
        f.write(text)
    return path


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: exit {r.returncode}: {r.stderr.strip()[:500]}")
    return r


def run_client(*args):
    r = subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"bench_wapi_client {args}: exit {r.returncode}: {r.stderr}")
    out = []
    for ln in r.stdout.splitlines():
        if ln.startswith("measure="):
            out.append(dict(kv.split("=", 1) for kv in ln.split()))
        elif ln.startswith("cpu="):
            d = dict(kv.split("=", 1) for kv in ln.split())
            for m in out:
                if m["measure"] == d["cpu"] and m["clients"] == d["clients"]:
                    m.update(d)
    if r.stderr.strip():
        note("bench_wapi_client: " + r.stderr.strip()[:300])
    return out


# ---- the two systems: the same verbs -----------------------------------------------------

class System:
    """One server and its agents in DIR. Subclasses give the commands; the verbs are the same."""
    name = ""
    agent_tmpl = server_tmpl = ""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(os.path.join(self.dir, "server"), mode=0o700)
        self.port = free_port()
        self.sock = os.path.join(self.dir, "server", "api.sock")
        self.conf = render(self.server_tmpl, os.path.join(self.dir, "server.conf"), DIR=self.dir,
                           SERVER_PORT=self.port)
        self.server = None
        self.agents = {}

    def start_server(self):
        self.server = Daemon(self.server_cmd(), os.path.join(self.dir, "server.log"))
        t0 = self.server.t_exec

        def up():
            if not self.server.alive():
                raise RuntimeError(f"{self.name} server exited: {self.server.text()[-1500:]}")
            return run(self.cli("bundle", "show"), check=False, timeout=30).returncode == 0
        if not wait_for(up, 60, step=0.05):
            raise RuntimeError(f"{self.name} server not up: {self.server.text()[-1500:]}")
        return time.monotonic() - t0

    def stop_server(self):
        rc = self.server.stop(signal.SIGTERM)
        procs.remove(self.server)
        return rc

    def cli(self, *args):
        return [self.server_bin, *args, "-socketPath", self.sock]

    def write_bundle(self):
        with open(os.path.join(self.dir, "bundle.pem"), "w") as f:
            f.write(run(self.cli("bundle", "show")).stdout)

    def token(self, spiffe_id):
        out = run(self.cli("token", "generate", "-spiffeID", spiffe_id, "-ttl", "600")).stdout
        m = re.search(r"Token:\s*(\S+)", out) or re.search(r"^(\S+)\s*$", out.strip())
        if not m:
            raise RuntimeError(f"{self.name}: cannot read the token from {out!r}")
        return m.group(1)

    def create_cli(self, eid, spiffe_id, parent, sel, ttl=None):
        cmd = self.cli("entry", "create", "-entryID", eid, "-spiffeID", spiffe_id, "-parentID", parent,
                       "-selector", sel)
        if ttl:
            cmd += ["-x509SVIDTTL", str(ttl)]
        run(cmd, timeout=60)

    def delete_cli(self, eid):
        run(self.cli("entry", "delete", "-entryID", eid), timeout=60)

    def start_agent(self, name, token, lru=None):
        d = os.path.join(self.dir, name)
        os.makedirs(d, exist_ok=True)
        conf = render(self.agent_tmpl, os.path.join(d, "agent.conf"), DIR=self.dir, AGENT_DIR=d,
                      SERVER_PORT=self.port, LRU_SIZE=lru or 1000)
        ag = Daemon(self.agent_cmd(conf, token), os.path.join(self.dir, name + ".log"))
        ag.sock = os.path.join(d, "public", "api.sock")
        ag.name = name
        self.agents[name] = ag
        return ag

    def restart_agent(self, ag):
        ag.stop(signal.SIGTERM)
        procs.remove(ag)
        new = Daemon(ag.args, os.path.join(self.dir, ag.name + ".log"))
        new.sock, new.name = ag.sock, ag.name
        self.agents[ag.name] = new
        return new


class Lanyard(System):
    name = "lanyard"
    server_tmpl, agent_tmpl = "lanyard-server.yaml", "lanyard-agent.yaml"

    def __init__(self, tmp):
        self.server_bin = os.path.join(BUILD, "server", "lanyard-server")
        self.agent_bin = os.path.join(BUILD, "agent", "lanyard-agent")
        super().__init__(tmp)
        self.admin = None

    def server_cmd(self):
        return [self.server_bin, "run", "-config", self.conf]

    def agent_cmd(self, conf, token):
        return [self.agent_bin, "run", "-config", conf, "-joinToken", token]

    def version(self):
        return "lanyard " + run(["git", "-C", os.path.dirname(HERE), "describe", "--always", "--dirty"]).stdout.strip()

    def create_bulk(self, entries):
        """CreateEntry over the admin API, 256 in flight (the CLI has no bulk mode)."""
        import grpc
        import admin_pb2_grpc
        import agent_pb2
        ch = grpc.insecure_channel("unix:" + self.sock)
        admin = admin_pb2_grpc.AdminStub(ch)
        t0 = time.monotonic()
        futs = []
        for eid, sid, parent, sel, ttl in entries:
            t, _, v = sel.partition(":")
            e = agent_pb2.Entry(entry_id=eid, spiffe_id=sid, parent_id=parent,
                                selectors=[agent_pb2.Selector(type=t, value=v)], x509_svid_ttl=ttl or 0)
            futs.append(admin.CreateEntry.future(e, timeout=300))
            if len(futs) >= 256:
                futs.pop(0).result()
        for f in futs:
            f.result()
        dt = time.monotonic() - t0
        ch.close()
        return dt


class Spire(System):
    name = "spire"
    server_tmpl, agent_tmpl = "spire-server.conf", "spire-agent.conf"

    def __init__(self, tmp):
        self.server_bin = os.path.join(SPIRE_BIN, "spire-server")
        self.agent_bin = os.path.join(SPIRE_BIN, "spire-agent")
        super().__init__(tmp)

    def server_cmd(self):
        return [self.server_bin, "run", "-config", self.conf]

    def agent_cmd(self, conf, token):
        return [self.agent_bin, "run", "-config", conf, "-joinToken", token]

    def version(self):
        return "spire-server " + run([self.server_bin, "--version"], check=False).stderr.strip() + \
            run([self.server_bin, "--version"], check=False).stdout.strip()

    def create_bulk(self, entries):
        """One `spire-server entry create -data FILE` (BatchCreateEntry)."""
        path = os.path.join(self.dir, "entries.json")
        out = []
        for eid, sid, parent, sel, ttl in entries:
            t, _, v = sel.partition(":")
            e = {"entry_id": eid, "spiffe_id": sid, "parent_id": parent, "selectors": [{"type": t, "value": v}]}
            if ttl:
                e["x509_svid_ttl"] = ttl
            out.append(e)
        with open(path, "w") as f:
            json.dump({"entries": out}, f)
        t0 = time.monotonic()
        r = run(self.cli("entry", "create", "-data", path, "-output", "json"), timeout=900, check=False)
        dt = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"spire bulk create: exit {r.returncode}: {r.stderr[-500:]}")
        return dt


# ---- Workload API streams (grpcio, the standard proto) ---------------------------------------

class Stream(threading.Thread):
    """FetchX509SVID read in the background: (monotonic, ids, response) per message. Reopens the
    stream after an error (no socket yet, UNAVAILABLE, PERMISSION_DENIED while nothing is issued)
    every 20 ms until close()."""

    def __init__(self, sock, keep=False, retry=True):
        super().__init__(daemon=True)
        self.sock, self.keep, self.retry = sock, keep, retry
        self.events = []
        self.errors = []
        self.cv = threading.Condition()
        self.closed = False
        self.it = None
        self.ch = None

    def run(self):
        import grpc
        import workload_pb2
        import workload_pb2_grpc
        while not self.closed:
            self.ch = grpc.insecure_channel("unix:" + self.sock,
                                            options=[("grpc.max_receive_message_length", MAX_MSG)])
            try:
                self.it = workload_pb2_grpc.SpiffeWorkloadAPIStub(self.ch).FetchX509SVID(
                    workload_pb2.X509SVIDRequest(), metadata=MD)
                for r in self.it:
                    tm = time.monotonic()
                    ids = frozenset(s.spiffe_id for s in r.svids)
                    with self.cv:
                        self.events.append((tm, ids, r if self.keep else None))
                        self.cv.notify_all()
            except Exception as e:  # grpc.RpcError
                with self.cv:
                    self.errors.append((time.monotonic(), str(getattr(e, "code", lambda: e)())))
                    self.cv.notify_all()
            self.ch.close()
            if not self.retry:
                break
            time.sleep(0.02)

    def wait(self, pred, timeout):
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def close(self):
        self.closed = True
        if self.it is not None:
            self.it.cancel()
        self.join(timeout=10)


def fetch_once(sock, timeout=2.0):
    """One FetchX509SVID: the ids of its first message, or None."""
    import grpc
    import workload_pb2
    import workload_pb2_grpc
    ch = grpc.insecure_channel("unix:" + sock, options=[("grpc.max_receive_message_length", MAX_MSG)])
    try:
        it = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(workload_pb2.X509SVIDRequest(),
                                                                       metadata=MD, timeout=timeout)
        r = next(it)
        it.cancel()
        return [s.spiffe_id for s in r.svids]
    except Exception:
        return None
    finally:
        ch.close()


def leaf_window(der_chain):
    """(notBefore, notAfter) of the first certificate in a concatenated DER chain."""
    from cryptography import x509
    n = der_chain[1]
    ln = 2 + n if n < 0x80 else 2 + (n & 0x7f) + int.from_bytes(der_chain[2:2 + (n & 0x7f)], "big")
    c = x509.load_der_x509_certificate(der_chain[:ln])
    return (c.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp(),
            c.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())


# ---- the rows ---------------------------------------------------------------------------------

def sid(*parts):
    return f"spiffe://{TD}/" + "/".join(str(p) for p in parts)


def row_registration(s, f, n_bulk):
    # One CLI exec per entry (the CLI's start-up included), parented to a node nobody attests.
    t0 = time.monotonic()
    for i in range(K_CLI):
        s.create_cli(f"cli-{i}", sid("bench", "cli", i), sid("node", "none"), NOBODY_SEL)
    dt = time.monotonic() - t0
    f["reg_cli_n"], f["reg_cli_per_s"] = K_CLI, round(K_CLI / dt, 1)
    # The bulk path: the storm's entries for agent B's node (not attested yet: nothing is minted).
    ents = [(f"storm-{i}", sid("bench", "storm", i), sid("node", "b"), f"unix:uid:{STORM_UID + i // GROUP}", None)
            for i in range(n_bulk)]
    dt = s.create_bulk(ents)
    f["reg_bulk_n"], f["reg_bulk_s"], f["reg_bulk_per_s"] = n_bulk, round(dt, 2), round(n_bulk / dt)
    note(f"{s.name}: registration CLI {f['reg_cli_per_s']}/s, bulk {n_bulk} in {dt:.2f} s")


def start_readers(sock, n, uid0):
    """One storm_reader.py per GROUP entries, each under its own uid (uid0 + k)."""
    out = []
    for k in range((n + GROUP - 1) // GROUP):
        want = min(GROUP, n - k * GROUP)
        uid = str(uid0 + k)
        out.append(subprocess.Popen(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", sys.executable,
                                     READER, sock, str(want), PB_DIR, "600"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
    return out


def reap_readers(readers):
    """(latest 'all' time, earliest 'first' time, messages) over the readers; raises if one failed."""
    alls, firsts, msgs = [], [], 0
    for r in readers:
        out, err = r.communicate(timeout=700)
        m = re.match(r"all (\S+) first (\S+) msgs (\d+)", out.strip())
        if r.returncode != 0 or not m:
            raise RuntimeError(f"storm reader: exit {r.returncode}: {out.strip()} {err.strip()[-500:]}")
        alls.append(float(m.group(1)))
        firsts.append(float(m.group(2)))
        msgs += int(m.group(3))
    return max(alls), min(firsts), msgs


def row_storm(s, f, n, key, lru=None):
    """Agent started after n entries exist for it (GROUP per uid); exec -> every workload's stream
    carries all of its SVIDs (one reader process per uid, started with the agent)."""
    name = "agent-b" if key == "storm" else "agent-" + key
    node = sid("node", "b") if key == "storm" else sid("node", key)
    if key != "storm":
        ents = [(f"{key}-{i}", sid("bench", key, i), node, f"unix:uid:{STORM_UID + i // GROUP}", None)
                for i in range(n)]
        s.create_bulk(ents)
    tok = s.token(node)
    f[f"{key}_load"] = loadavg()
    srv0 = s.server.cpu_s()
    ag = s.start_agent(name, tok, lru=lru if lru else 4 * max(N_STORMS) + 4 * N_A)
    readers = start_readers(ag.sock, n, STORM_UID)
    peak = {"rss": 0}
    done = threading.Event()

    def sampler():
        while not done.is_set():
            try:
                peak["rss"] = max(peak["rss"], ag.status()["VmRSS"])
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        t_all, t_first, msgs = reap_readers(readers)
    finally:
        done.set()
        th.join()
    f[f"{key}_n"] = n
    f[f"{key}_workloads"] = len(readers)
    f[f"{key}_s"] = round(t_all - ag.t_exec, 3)
    f[f"{key}_first_msg_s"] = round(t_first - ag.t_exec, 3)
    f[f"{key}_msgs"] = msgs
    f[f"{key}_agent_cpu_s"] = round(ag.cpu_s(), 2)
    f[f"{key}_server_cpu_s"] = round(s.server.cpu_s() - srv0, 2)
    f[f"{key}_peak_rss_kb"] = peak["rss"]
    if isinstance(s, Spire):
        f[f"{key}_minted_log_lines"] = ag.text().count("Creating X509-SVID")
    note(f"{s.name}: {key} n={n}: exec -> all {n} on {len(readers)} workloads' streams {f[key + '_s']} s "
         f"(first message {f[key + '_first_msg_s']} s, {msgs} messages)")
    return ag


def row_fetch(s, f, ag):
    f["fetch_load"] = loadavg()
    if isinstance(s, Lanyard):
        # gRPC's own floor on this agent: Health/Check does no work in lanyard-agent (SPIRE's Check
        # makes a Workload API fetch of its own, so it is no floor there).
        f["unary"] = run_client("unary", "-s", ag.sock, "-i", "1000")
    res = run_client("fetch", "-s", ag.sock, "-n", "1", "-r", str(FETCH_COLD_ROUNDS), "-w", "2", "-H",
                     "-p", str(ag.pid))
    res += run_client("fetch", "-s", ag.sock, "-n", "100", "-r", str(AT_ONCE_ROUNDS), "-w", "300", "-H",
                      "-p", str(ag.pid))
    res += run_client("paced", "-s", ag.sock, "-n", "100", "-R", "1000", "-d", str(PACED_S), "-p", str(ag.pid))
    f["fetch"] = res
    note(f"{s.name}: fetch: " + "; ".join(f"{m['measure']}/{m['clients']} p50 {m.get('p50_us')} p99 "
                                          f"{m.get('p99_us')} err {m['errors']}" for m in res))


def row_revocation(s, f, ag, self_id):
    st = Stream(ag.sock)
    st.start()
    if st.wait(lambda e: self_id in e[1], 30) is None:
        raise RuntimeError(f"{s.name} revocation: no first response")
    from_exec, from_return, cli = [], [], []
    for i in range(REV_TRIALS):
        eid, rid = f"rev-{i}", sid("bench", "rev", i)
        s.create_cli(eid, rid, sid("node", "a"), f"unix:uid:{UID}")
        if st.wait(lambda e: rid in e[1], 60) is None:
            raise RuntimeError(f"{s.name} revocation trial {i}: the entry never reached the stream")
        time.sleep(0.1)
        t0 = time.monotonic()
        s.delete_cli(eid)
        t1 = time.monotonic()
        ev = st.wait(lambda e: e[0] >= t0 and rid not in e[1] and self_id in e[1], 60)
        if ev is None:
            raise RuntimeError(f"{s.name} revocation trial {i}: no update within 60 s")
        from_exec.append(round((ev[0] - t0) * 1e3, 2))
        from_return.append(round((ev[0] - t1) * 1e3, 2))
        cli.append(round((t1 - t0) * 1e3, 2))
    st.close()
    f["rev_from_exec_ms"], f["rev_from_return_ms"], f["rev_cli_ms"] = from_exec, from_return, cli
    note(f"{s.name}: revocation p50 {pct(from_exec, .5)} ms max {max(from_exec)} ms")


def row_rotation(s, f, ag):
    ents = [(f"rot-{i}", sid("bench", "rot", i), sid("node", "a"), f"unix:uid:{UID}", ROT_TTL)
            for i in range(ROT_N)]
    st = Stream(ag.sock, keep=True)
    st.start()
    s.create_bulk(ents)
    want = {e[1] for e in ents}
    ev = st.wait(lambda e: want <= e[1], 120)
    if ev is None:
        raise RuntimeError(f"{s.name} rotation: the {ROT_N} SVIDs never showed on the stream")
    first = {}
    for sv in ev[2].svids:
        if sv.spiffe_id in want:
            first[sv.spiffe_id] = (bytes(sv.x509_svid), leaf_window(bytes(sv.x509_svid)))
    # Later messages may already carry some of the first certificates: take each id's earliest.
    wall_off = time.time() - time.monotonic()
    renewed = {}
    seen = [0]

    def all_renewed():
        with st.cv:
            evs = st.events[seen[0]:]
        seen[0] += len(evs)
        for tm, ids, r in evs:
            for sv in r.svids:
                i = sv.spiffe_id
                if i in first and i not in renewed and bytes(sv.x509_svid) != first[i][0]:
                    renewed[i] = tm + wall_off
        return len(renewed) >= len(first)
    last_na = max(v[1][1] for v in first.values())
    wait_for(all_renewed, max(10.0, last_na - time.time() + 5), step=0.5)
    st.close()
    fr = [(renewed[i] - nb) / (na - nb) for i, (_, (nb, na)) in first.items() if i in renewed]
    f["rot_n"], f["rot_renewed"] = len(first), len(fr)
    f["rot_lifetime_s"] = statistics.median(na - nb for _, (nb, na) in first.values())
    f["rot_frac"] = [round(min(fr), 4), round(statistics.median(fr), 4), round(max(fr), 4)] if fr else None
    note(f"{s.name}: rotation {len(fr)}/{len(first)} renewed, fraction min/p50/max {f['rot_frac']}")
    # Deleted (one CLI exec each) so that they do not renew during the rows that follow.
    for e in ents:
        s.delete_cli(e[0])


def row_lru(s, f, n):
    """SPIRE with its default LRU (1,000): n entries for a new agent; how many SVIDs it mints with
    no workload asking (its "Creating X509-SVID" log lines after LRU_WAIT s), then a workload
    entitled to all n opens a stream: how long until they are all on it."""
    node = sid("node", "lru")
    s.create_bulk([(f"lru-{i}", sid("bench", "lru", i), node, f"unix:uid:{LRU_UID + i // GROUP}", None)
                   for i in range(n)])
    ag = s.start_agent("agent-lru", s.token(node), lru=1000)
    wait = 30
    time.sleep(wait)
    f["lru_n"], f["lru_wait_s"] = n, wait
    f["lru_minted_unasked"] = ag.text().count("Creating X509-SVID")
    memory(s, f, "lru", ag)
    t0 = time.monotonic()
    t_all, t_first, _ = reap_readers(start_readers(ag.sock, n, LRU_UID))
    f["lru_stream_all_s"] = round(t_all - t0, 3)
    f["lru_stream_first_msg_s"] = round(t_first - t0, 3)
    ag.stop(signal.SIGTERM)
    procs.remove(ag)
    note(f"{s.name}: default LRU: {f['lru_minted_unasked']} of {n} minted unasked in {wait} s; a stream "
         f"entitled to all: {f['lru_stream_all_s']} s")


def memory(s, f, key, ag):
    time.sleep(3)
    f[f"mem_{key}_agent"] = ag.status()
    f[f"mem_{key}_server"] = s.server.status()


def idle_cpu(s, f, ags):
    a0 = {a.name: a.cpu_s() for a in ags}
    s0, t0 = s.server.cpu_s(), time.monotonic()
    f["idle_load"] = loadavg()
    time.sleep(IDLE_S)
    dt = time.monotonic() - t0
    f["idle_server_cpu_s_per_min"] = round((s.server.cpu_s() - s0) * 60 / dt, 3)
    f["idle_agent_cpu_s_per_min"] = {a.name: round((a.cpu_s() - a0[a.name]) * 60 / dt, 3) for a in ags}


def row_down(s, f, ag_a, self_id):
    """Server stopped: agent A answers fetches? then restarted while still down: served? when?"""
    s.stop_server()
    time.sleep(1)
    r = run_client("fetch", "-s", ag_a.sock, "-n", "1", "-r", str(DOWN_FETCHES), "-w", "50", "-H")
    f["down_fetch"] = r[0]
    ag = s.restart_agent(ag_a)
    t_ans = None
    end = ag.t_exec + 30
    while time.monotonic() < end:
        ids = fetch_once(ag.sock, timeout=1.0)
        if ids and self_id in ids:
            t_ans = time.monotonic() - ag.t_exec
            break
        if not ag.alive():
            break
        time.sleep(0.05)
    f["down_restart_served"] = t_ans is not None
    f["down_restart_first_answer_s"] = round(t_ans, 3) if t_ans else "none within 30 s"
    f["down_restart_agent_alive"] = ag.alive()
    f["down_restart_agent_log_tail"] = ag.text()[-600:] if t_ans is None else ""
    note(f"{s.name}: down: fetch ok {int(r[0]['samples'])}/{DOWN_FETCHES}; agent restarted while down: "
         f"served {t_ans is not None} after {t_ans} s, alive {ag.alive()}")
    return ag


def row_restart(s, f, ag_b, node_b, n):
    """Server restarted (same data dir) under agent B with a stream open: server exec -> an entry
    created as soon as the server answers reaches the stream."""
    # Our uid has no entry on agent B yet: the stream is refused (and reopened every 20 ms) until the
    # new entry's SVID is there.
    st = Stream(ag_b.sock)
    st.start()
    up = s.start_server()
    t_exec = s.server.t_exec
    rid = sid("bench", "after-restart")
    s.create_cli("after-restart", rid, node_b, f"unix:uid:{UID}")
    t_created = time.monotonic()
    ev = st.wait(lambda e: rid in e[1], 180)
    st.close()
    f["restart_server_up_s"] = round(up, 3)
    f["restart_entry_created_s"] = round(t_created - t_exec, 3)
    f["restart_new_svid_s"] = round(ev[0] - t_exec, 3) if ev else "none within 180 s"
    note(f"{s.name}: server restart: up {up:.2f} s, new SVID on B's stream {f['restart_new_svid_s']} s after exec")


def start_agent_a(s, f):
    """Agent A: the caller's own entry (awaited on the Workload API), then N_A entries nobody
    matches. Returns (agent, the caller's SPIFFE ID)."""
    ag_a = s.start_agent("agent-a", s.token(sid("node", "a")), lru=4 * max(N_STORMS) + 4 * N_A)
    self_id = sid("bench", "self")
    s.create_cli("self", self_id, sid("node", "a"), f"unix:uid:{UID}")
    if not wait_for(lambda: (fetch_once(ag_a.sock) or []) and True, 60, step=0.1):
        raise RuntimeError(f"{s.name}: agent A never served the caller: {ag_a.text()[-1500:]}")
    memory(s, f, "a1", ag_a)
    s.create_bulk([(f"a-{i}", sid("bench", "a", i), sid("node", "a"), NOBODY_SEL, None) for i in range(N_A)])
    return ag_a, self_id


def wait_cached(ags):
    """No workload observable for entries nobody matches: wait for the agents' CPU to settle. At
    least 15 s (three of SPIRE's 5 s syncs, which mint 500 SVIDs each at most), then until every
    agent's CPU has been quiet for 2 s (90 s at most)."""
    t0 = time.monotonic()
    time.sleep(15)
    last = [a.cpu_s() for a in ags]
    while time.monotonic() - t0 < 90:
        time.sleep(2)
        c = [a.cpu_s() for a in ags]
        if all(y - x < 0.02 for x, y in zip(last, c)):
            break
        last = c


def bench_system(s, f):
    f["version"] = s.version()
    f["load_start"] = loadavg()
    s.start_server()
    s.write_bundle()
    f["reg_load"] = loadavg()
    row_registration(s, f, N_STORMS[0])

    ag_a, self_id = start_agent_a(s, f)
    wait_cached([ag_a])
    memory(s, f, f"a{N_A}", ag_a)
    row_fetch(s, f, ag_a)
    row_revocation(s, f, ag_a, self_id)
    row_rotation(s, f, ag_a)

    # Storm(s) on agent B (and a default-LRU agent for SPIRE when N > 1,000).
    # Storms: agent B with the N_STORMS[0] entries made in row 1; each larger N on a new agent
    # and node (the previous storm's agent stopped first), with N entries of its own.
    ag_b, node_b = None, sid("node", "b")
    for n in N_STORMS:
        key = "storm" if n == N_STORMS[0] else f"storm{n}"
        if ag_b is not None:
            ag_b.stop(signal.SIGTERM)
            procs.remove(ag_b)
            node_b = sid("node", key)
        ag_b = row_storm(s, f, n, key)
        memory(s, f, f"b{n}", ag_b)
    idle_cpu(s, f, [ag_a, ag_b])
    row_down(s, f, ag_a, self_id)
    row_restart(s, f, ag_b, node_b, max(N_STORMS))
    if isinstance(s, Spire) and (max(N_STORMS) > 1000 or os.environ.get("VS_SPIRE_LRU_ROW")):
        row_lru(s, f, max(N_STORMS) if max(N_STORMS) > 1000 else 2000)
    f["load_end"] = loadavg()


def crypto_floor():
    """The storm's floor: bench_crypto_floor's CPU per SVID (a P-256 key, two signatures, two
    verifications, OpenSSL alone), pinned to one core; {} when the build has no such binary."""
    exe = os.path.join(BUILD, "bench", "bench_crypto_floor")
    if not os.access(exe, os.X_OK):
        note("no bench/bench_crypto_floor in the build: the storm rows get no floor")
        return {}
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = run(pin + [exe, "-t", "1.5"]).stdout.split()
    f = {k: float(v) for k, v in (kv.split("=", 1) for kv in out)}
    f["cpus"], f["load"] = os.cpu_count(), loadavg()
    note(f"crypto floor: {f['svid_us']} us of CPU per SVID ({f['agent_us']} agent, {f['server_us']} server)")
    return f


def perf_start(pid, path):
    """perf record (cpu-clock, call graphs) attached to PID until perf_stop."""
    return subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", str(pid), "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def perf_stop(pr):
    pr.send_signal(signal.SIGINT)
    try:
        pr.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pr.kill()
        pr.wait()


def schedstat(pid):
    """(on-CPU ns, run-queue wait ns, times run) summed over PID's threads (/proc/PID/task/*/schedstat)."""
    tot = [0, 0, 0]
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as fh:
                v = [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            continue
        for i in range(3):
            tot[i] += v[i]
    return tot


PERF_STAT_EVENTS = ("context-switches", "syscalls:sys_enter_sched_yield", "syscalls:sys_enter_futex",
                    "syscalls:sys_enter_read", "syscalls:sys_enter_write")


def perf_stat_round(s, ag):
    """One paced round under `perf stat` (context switches and a few system calls of the agent):
    printed per call. Counting only, so the round's latencies stand (printed too)."""
    path = os.path.join(PERF_DIR, f"{s.name}-stat.csv")
    pr = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(PERF_STAT_EVENTS), "-p", str(ag.pid),
                           "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    m = paced_round(s, ag, {}, "perf stat")
    perf_stop(pr)
    counts = {}
    with open(path) as fh:
        for ln in fh:
            parts = ln.strip().split(",")
            if len(parts) > 2 and parts[0].isdigit():
                counts[parts[2].split(":")[-1]] = int(parts[0])
    calls = max(1, int(m["samples"]))
    print(f"{s.name}: per call under perf stat: " + ", ".join(f"{k} {v / calls:.2f}" for k, v in counts.items()),
          flush=True)


def paced_round(s, ag, f, rnd):
    load = loadavg()
    s0 = schedstat(ag.pid)
    m = run_client("paced", "-s", ag.sock, "-n", "100", "-R", "1000", "-d", str(ROW_S), "-p", str(ag.pid))[0]
    s1 = schedstat(ag.pid)
    calls = max(1, int(m["samples"]))
    m["agent_runq_wait_us_per_call"] = round((s1[1] - s0[1]) / 1e3 / calls, 1)
    m["agent_runs_per_call"] = round((s1[2] - s0[2]) / calls, 2)
    m["load"], m["round"] = load, rnd
    f.setdefault("paced_rounds", []).append(m)
    print(f"| {rnd} | {s.name} | {float(m['p50_us']) / 1e3:.3f} | {float(m['p99_us']) / 1e3:.3f} | "
          f"{float(m['max_us']) / 1e3:.1f} | {m.get('agent_cpu_us_per_call')} ({m.get('client_cpu_us_per_call')}) | "
          f"{m['agent_runq_wait_us_per_call']} | {m['agent_runs_per_call']} | "
          f"{m['samples']} / {m.get('skipped', '?')} / {m['errors']} | {load} |", flush=True)
    return m


def only_paced(tmp):
    """`--only-row paced`: both systems up at once, agent A of each with 1 + N_A SVIDs as in the full
    run, then the paced row (100 open connections, 1,000 calls/s, ROW_S seconds) ROUNDS times,
    Lanyard and SPIRE alternating (the order swapped every round, so drift in the machine's load
    falls on both). With VS_SPIRE_PERF=DIR, one more pass per system with `perf record -e
    cpu-clock -g` on its agent during the paced row and during 200 calls on new connections.
    --only lanyard|spire: that system alone (to compare two builds of one, run after run). After
    the rounds, one client's 200 fetches on a new and on an open connection per system."""
    systems = [c(tmp) for c in (Lanyard, Spire) if ONLY is None or c.name == ONLY]
    ags = {}
    for s in systems:
        f = fig[s.name]
        f["version"] = s.version()
        f["load_start"] = loadavg()
        s.start_server()
        s.write_bundle()
        ags[s.name], _ = start_agent_a(s, f)
        note(f"{s.name}: agent A up, {N_A} more entries made")
    wait_cached(list(ags.values()))
    if "spire" in ags:
        sp = ags["spire"].text().count("Creating X509-SVID")
        note(f"cached (SPIRE's agent logged {sp} 'Creating X509-SVID')")
    note(f"rounds of {ROW_S} s")
    print(f"paced row: 100 open connections, 1,000 calls/s, {ROW_S} s per round; agent A with 1 + {N_A} "
          f"SVIDs on each; latency from the scheduled start to the first message")
    print()
    print("| round | system | p50, ms | p99, ms | max, ms | CPU per call, agent (client), µs | "
          "agent's run-queue wait per call, µs | agent's threads put on a CPU per call | "
          "calls / skipped / errors | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rnd in range(1, ROUNDS + 1):
        for s in (systems if rnd % 2 else systems[::-1]):
            paced_round(s, ags[s.name], fig[s.name], rnd)
    for s in systems:
        r = fig[s.name]["paced_rounds"]
        fig[s.name]["paced_p99_ms"] = [round(float(m["p99_us"]) / 1e3, 3) for m in r]
        fig[s.name]["paced_p50_ms"] = [round(float(m["p50_us"]) / 1e3, 3) for m in r]
    print()
    print("run-queue wait: time the agent's threads spent runnable but not running (/proc/PID/task/*/schedstat); "
          "put on a CPU: how many times one of its threads was scheduled in")
    for s in systems:
        f = fig[s.name]
        print(f"{s.name}: p50 {min(f['paced_p50_ms'])}-{max(f['paced_p50_ms'])} ms, p99 "
              f"{min(f['paced_p99_ms'])}-{max(f['paced_p99_ms'])} ms over {ROUNDS} rounds")
    print("\none client, 200 FetchX509SVID, 2 ms apart, on a new connection each and on one open "
          "connection (bench_wapi_client fetch -H):")
    for s in systems:
        load = loadavg()
        ms = run_client("fetch", "-s", ags[s.name].sock, "-n", "1", "-r", "200", "-w", "2", "-H",
                        "-p", str(ags[s.name].pid))
        fig[s.name]["paced_fetch"] = ms
        for m in ms:
            print(f"{s.name}: {m['measure']}: p50 {float(m['p50_us']) / 1e3:.3f} ms, p99 "
                  f"{float(m['p99_us']) / 1e3:.3f} ms, agent CPU per call {m.get('agent_cpu_us_per_call')} µs "
                  f"(load {load})", flush=True)
    if PERF_DIR:
        print("\nwith perf stat, then perf record, attached to the agent (not counted above):")
        os.makedirs(PERF_DIR, exist_ok=True)
        for s in systems:
            ag = ags[s.name]
            perf_stat_round(s, ag)
            pr = perf_start(ag.pid, os.path.join(PERF_DIR, f"{s.name}-paced.data"))
            time.sleep(0.5)
            paced_round(s, ag, {}, "perf")
            perf_stop(pr)
            pr = perf_start(ag.pid, os.path.join(PERF_DIR, f"{s.name}-cold.data"))
            time.sleep(0.5)
            m = run_client("fetch", "-s", ag.sock, "-n", "1", "-r", "200", "-w", "2", "-H", "-p", str(ag.pid))
            perf_stop(pr)
            note(f"{s.name}: perf: new-connection fetch p50 {m[0]['p50_us']} us, agent CPU per call "
                 f"{m[0].get('agent_cpu_us_per_call')} us")
        note(f"perf data in {PERF_DIR}: perf report -i FILE --no-children --sort dso,sym")
    fig["load_end"] = loadavg()
    print(f"\nload average at the end: {fig['load_end']}")


def main():
    tmp = tempfile.mkdtemp(prefix="vs-spire-")
    fig["started"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig["quick"] = QUICK
    ok = False
    try:
        global PB_DIR
        os.chmod(tmp, 0o755)  # the storm readers run under other uids
        PB_DIR = os.path.join(tmp, "pb")
        protoc(PROTO_DIR, PB_DIR, "workload.proto", "admin.proto", "agent.proto")
        sys.path.insert(0, os.path.join(tmp, "pb"))
        fig["pingpong"] = run_client("pingpong", "-i", "20000")[0]
        if not ONLY_ROW:
            fig["crypto_floor"] = crypto_floor()
        fig["openssl"] = run(["openssl", "version"]).stdout.strip()
        fig["go"] = run(["go", "version"], check=False).stdout.strip()
        fig["kernel"] = os.uname().release
        fig["cpus"] = os.cpu_count()
        for cls in (Lanyard, Spire):
            if ONLY_ROW:
                break
            if ONLY and cls.name != ONLY:
                continue
            t = time.monotonic()
            s = cls(tmp)
            try:
                bench_system(s, fig[s.name])
            finally:
                for d in list(reversed(procs)):
                    if d.alive():
                        d.stop(signal.SIGTERM)
                procs.clear()
            fig[s.name]["wall_s"] = round(time.monotonic() - t)
            note(f"{s.name}: done in {fig[s.name]['wall_s']} s")
        if ONLY_ROW == "paced":
            t = time.monotonic()
            try:
                only_paced(tmp)
            finally:
                for d in list(reversed(procs)):
                    if d.alive():
                        d.stop(signal.SIGTERM)
                procs.clear()
            note(f"paced row: done in {round(time.monotonic() - t)} s")
        elif ONLY_ROW:
            raise SystemExit(f"vs_spire.py: --only-row {ONLY_ROW}: only 'paced' is known")
        ok = True
    finally:
        for d in reversed(procs):
            if d.alive():
                d.stop(signal.SIGTERM)
        if os.environ.get("LANYARD_BENCH_JSON"):
            with open(os.environ["LANYARD_BENCH_JSON"], "w") as fh:
                json.dump(fig, fh, indent=1, default=str)
        if ok and not os.environ.get("LANYARD_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            note(f"logs kept in {tmp}")
    if not ONLY_ROW:
        import report
        report.report(fig, sys.stdout)


if __name__ == "__main__":
    main()
