#!/usr/bin/python3
"""agent_bench.py: lanyard-agent figures against floors measured in the same run.

    agent_bench.py LANYARD_SERVER LANYARD_AGENT BENCH_WAPI_CLIENT PROTO_DIR [--quick]

Run by bench/run-agent.sh. A real lanyard-server and real lanyard-agents on
127.0.0.1, every socket and data directory in a temporary directory; entries
are made through the admin API (grpcio stubs generated here from
proto/admin.proto), the Workload API is driven by bench_wapi_client (C, gRPC
core) and, for streams read over time, by grpcio. Every process started here
is stopped by its pid. Prints markdown tables on stdout (progress on stderr)
and writes the raw figures as JSON to $LANYARD_BENCH_JSON when set.

Phases (issue 4):
  A. agent "node1" (info log level while measuring latency):
     RSS with its own SVID only, then with 1,000 cached workload SVIDs
     (entries whose selector unix:uid:4242 matches no process);
     FetchX509SVID first-response latency, 1 / 100 / 1,000 concurrent
     clients, each on its own connection, with the floors (socketpair
     ping-pong, Health/Check unary round trips on the same socket);
     revocation: DeleteEntry (admin API, and the CLI) -> the update on an open
     FetchX509SVID stream, N trials.
  B. agent "node2", started after 10,000 entries (x509SVIDTTL 120) exist for it:
     the storm (the snapshot of 10,000 entries arrives -> all 10,000 SVIDs
     verified and cached), RSS and peak RSS with 10,000 cached SVIDs; then
     the renewal of the 10,000 in their [45%, 55%] window, checked per SVID
     on a 500-SVID sample read from a Workload API stream and for all of
     them from the agent's batch log lines.
"""
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from harness import Daemon as HarnessDaemon, free_port, wait_for  # noqa: E402

SERVER, AGENT, CLIENT, PROTO_DIR = sys.argv[1:5]
QUICK = "--quick" in sys.argv[5:]
# --storm: only the 10,000-SVID storm and the RSS after it (phase B without the renewal; ~1 minute).
STORM_ONLY = "--storm" in sys.argv[5:]
TD = "example.org"
MD = (("workload.spiffe.io", "true"),)
UID = os.getuid()
NOBODY_SEL = "uid:4242"  # a unix:uid selector that matches no running process
N_RSS = 200 if QUICK else 1000
N_STORM = 1000 if QUICK else 10000
N_SAMPLE = 100 if QUICK else 500
STORM_TTL = 120
REV_TRIALS = 10 if QUICK else 50
REV_CLI_TRIALS = 5 if QUICK else 20
FETCH_PLAN = [(1, 60 if QUICK else 300, 2), (100, 4 if QUICK else 20, 300), (1000, 2 if QUICK else 5, 1000)]
PACED_PLAN = [(100, 200), (100, 1000), (1000, 1000)]  # (open connections, FetchX509SVID per second)
PACED_S = 2 if QUICK else 5

fig = {}
procs = []


def note(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(v, p):
    """Nearest-rank percentile."""
    s = sorted(v)
    k = max(1, min(len(s), int(-(-p * len(s) // 1))))
    return s[k - 1]


class Daemon(HarnessDaemon):
    """The integration harness's Daemon, with the exec time and the /proc readings the figures need."""

    def __init__(self, args, log_path):
        self.t_exec = time.time()
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


LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (\w+) (\S+): (.*)$")


def log_lines(d):
    out = []
    for ln in d.text().splitlines():
        m = LOG_RE.match(ln)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            out.append((t, m.group(4)))
    return out


BATCH_RE = re.compile(r"^batch of (\d+): (\d+) SVIDs issued, (\d+) failed")
SENT_RE = re.compile(r"^BatchNewX509SVID: (\d+) CSRs sent")
WATCH_RE = re.compile(r"^watch: (snapshot|delta) revision (-?\d+): (\d+) entries")


def batches(d, since=0.0):
    """[(time, n, issued, failed)] of the agent's issuance batches logged at or after `since`."""
    res = []
    for t, msg in log_lines(d):
        m = BATCH_RE.match(msg)
        if m and t >= since:
            res.append((t, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return res


def issued_since(d, since):
    return sum(b[2] for b in batches(d, since))


# ---- Python stubs ---------------------------------------------------------------

def stubs(tmp):
    pbdir = os.path.join(tmp, "pb")
    os.makedirs(pbdir)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", "-I/usr/include",
                    f"--python_out={pbdir}", f"--grpc_python_out={pbdir}"] +
                   [os.path.join(PROTO_DIR, p) for p in ("workload.proto", "admin.proto", "agent.proto")],
                   check=True)
    sys.path.insert(0, pbdir)


class Bench:
    def __init__(self, tmp):
        import grpc
        import admin_pb2
        import admin_pb2_grpc
        import agent_pb2
        import workload_pb2
        import workload_pb2_grpc
        self.grpc, self.apb, self.gpb, self.wpb = grpc, admin_pb2, agent_pb2, workload_pb2
        self.wpg = workload_pb2_grpc
        self.tmp = tmp
        self.port = free_port()
        self.server_sock = os.path.join(tmp, "server", "api.sock")
        # The rate limits off: the storms measure the implementation, not the limiter (docs/operations.md §13).
        server_conf = os.path.join(tmp, "server.yaml")
        with open(server_conf, "w") as f:
            f.write("server:\n  ratelimit:\n    attestation: false\n    signing: false\n")
        self.server = Daemon([SERVER, "run", "-config", server_conf, "-trustDomain", TD, "-bindAddress", "127.0.0.1",
                              "-serverPort", str(self.port), "-socketPath", self.server_sock,
                              "-dataDir", os.path.join(tmp, "server-data")], os.path.join(tmp, "server.log"))
        self.admin_ch = grpc.insecure_channel("unix:" + self.server_sock)
        grpc.channel_ready_future(self.admin_ch).result(timeout=30)
        self.admin = admin_pb2_grpc.AdminStub(self.admin_ch)
        wait_for(lambda: self._healthy(), 30)
        self.bundle_pem = os.path.join(tmp, "bundle.pem")
        with open(self.bundle_pem, "w") as f:
            f.write(self.bundle_text())

    def _healthy(self):
        try:
            return self.admin.Health(self.apb.HealthRequest(), timeout=5).serving
        except self.grpc.RpcError:
            return False

    def bundle_text(self):
        r = subprocess.run([SERVER, "bundle", "show", "-socketPath", self.server_sock], capture_output=True,
                           text=True, timeout=30, check=True)
        return r.stdout

    def token(self, spiffe_id):
        return self.admin.GenerateToken(self.apb.TokenRequest(spiffe_id=spiffe_id, ttl=600), timeout=10).token

    def entry(self, entry_id, spiffe_id, parent, sel, ttl=0):
        t, _, v = sel.partition(":")
        return self.gpb.Entry(entry_id=entry_id, spiffe_id=spiffe_id, parent_id=parent,
                              selectors=[self.gpb.Selector(type=t, value=v)], x509_svid_ttl=ttl)

    def create_many(self, entries, window=256, chunk=1000):
        """CreateEntry for each, at most `window` calls in flight; returns the seconds taken.
        self.chunk_rates: entries per second for each `chunk` entries completed."""
        t0 = time.monotonic()
        futs = []
        done, tc, self.chunk_rates = 0, t0, []

        def one(f):
            nonlocal done, tc
            f.result()
            done += 1
            if done % chunk == 0:
                now = time.monotonic()
                self.chunk_rates.append(round(chunk / (now - tc)))
                tc = now
        for e in entries:
            futs.append(self.admin.CreateEntry.future(e, timeout=120))
            if len(futs) >= window:
                one(futs.pop(0))
        for f in futs:
            one(f)
        return time.monotonic() - t0

    def start_agent(self, name, token, conf_level):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        conf = os.path.join(d, "agent.yaml")
        with open(conf, "w") as f:
            # No Workload API limit: the bench measures the agent, not the limiter (docs/operations.md §13).
            f.write(f"agent:\n  log_level: {conf_level}\n  ratelimit:\n    workload_api: 0\n")
        sock = os.path.join(d, "public", "api.sock")
        ag = Daemon([AGENT, "run", "-config", conf, "-trustDomain", TD, "-serverAddress", "127.0.0.1",
                     "-serverPort", str(self.port), "-socketPath", sock, "-dataDir", os.path.join(d, "data"),
                     "-joinToken", token, "-trustBundle", self.bundle_pem], os.path.join(self.tmp, name + ".log"))
        ag.sock, ag.conf = sock, conf
        return ag

    def set_level(self, ag, level):
        with open(ag.conf, "w") as f:
            f.write(f"agent:\n  log_level: {level}\n  ratelimit:\n    workload_api: 0\n")
        ag.proc.send_signal(signal.SIGHUP)
        if not wait_for(lambda: f"SIGHUP: log level is now {level}" in ag.text(), 10):
            raise RuntimeError(f"agent did not switch to log level {level}")

    def agent_ready(self, ag, timeout=60):
        def ok():
            if not ag.alive():
                raise RuntimeError("agent exited: " + ag.text()[-2000:])
            r = subprocess.run([AGENT, "healthcheck", "-socketPath", ag.sock], capture_output=True, timeout=30)
            return r.returncode == 0
        if not wait_for(ok, timeout, step=0.1):
            raise RuntimeError("agent not healthy: " + ag.text()[-2000:])

    def first_ids(self, ag, timeout=5):
        ch = self.grpc.insecure_channel("unix:" + ag.sock)
        try:
            it = self.wpg.SpiffeWorkloadAPIStub(ch).FetchX509SVID(self.wpb.X509SVIDRequest(), metadata=MD,
                                                                   timeout=timeout)
            r = next(it)
            it.cancel()
            return [s.spiffe_id for s in r.svids]
        except self.grpc.RpcError:
            return []
        finally:
            ch.close()


class Stream(threading.Thread):
    """A FetchX509SVID stream read in the background: (monotonic, wall, response) per message."""

    def __init__(self, b, ag, keep=False):
        super().__init__(daemon=True)
        self.ch = b.grpc.insecure_channel("unix:" + ag.sock,
                                          options=[("grpc.max_receive_message_length", 8 << 20)])
        self.it = b.wpg.SpiffeWorkloadAPIStub(self.ch).FetchX509SVID(b.wpb.X509SVIDRequest(), metadata=MD)
        self.keep = keep
        self.events = []
        self.cv = threading.Condition()
        self.end = None

    def run(self):
        try:
            for r in self.it:
                tm, tw = time.monotonic(), time.time()
                ids = frozenset(s.spiffe_id for s in r.svids)
                with self.cv:
                    self.events.append((tm, tw, ids, r if self.keep else None))
                    self.cv.notify_all()
        except Exception as e:  # grpc.RpcError on cancel
            with self.cv:
                self.end = e
                self.cv.notify_all()

    def wait(self, pred, timeout):
        """The first event (after none seen so far are skipped by pred) satisfying pred(event)."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = end - time.monotonic()
                if left <= 0 or self.end is not None:
                    return None
                self.cv.wait(left)

    def close(self):
        self.it.cancel()
        self.join(timeout=10)
        self.ch.close()


def run_client(*args):
    r = subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=600)
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
        note("bench_wapi_client: " + r.stderr.strip()[:500])
    return out


def openssl_speed():
    r = subprocess.run(["openssl", "speed", "-seconds", "2", "ecdsap256"], capture_output=True, text=True,
                       timeout=120)
    for ln in r.stdout.splitlines():
        if re.search(r"256 bits ecdsa \(nistp256\)", ln):
            f = ln.split()
            return float(f[-2]), float(f[-1])
    raise RuntimeError("openssl speed: cannot parse")


# ---- phases ----------------------------------------------------------------------

def phase_a(b):
    node1 = f"spiffe://{TD}/lanyard/agent/node1"
    ag = b.start_agent("agent-a", b.token(node1), "debug")
    b.agent_ready(ag)
    self_id = f"spiffe://{TD}/bench/self"
    b.create_many([b.entry("self", self_id, node1, f"unix:uid:{UID}")])
    if not wait_for(lambda: self_id in b.first_ids(ag), 30, step=0.1):
        raise RuntimeError("self SVID not served: " + ag.text()[-2000:])
    time.sleep(2)
    fig["rss_1"] = ag.status()

    # RSS with N_RSS cached SVIDs.
    t0 = time.time()
    dt = b.create_many([b.entry(f"rss-{i}", f"spiffe://{TD}/bench/rss/{i}", node1, "unix:" + NOBODY_SEL)
                        for i in range(N_RSS)])
    fig["create_rate_per_s"] = round(N_RSS / dt)
    if not wait_for(lambda: issued_since(ag, t0 - 1) >= N_RSS, 120, step=0.2):
        raise RuntimeError(f"agent A issued only {issued_since(ag, t0 - 1)} of {N_RSS}")
    time.sleep(3)  # the cache file is written at most once a second; let the pool settle
    fig["rss_1k"] = ag.status()
    fig["rss_1k_n"] = N_RSS
    note(f"A: RSS {fig['rss_1']} -> {fig['rss_1k']} with {N_RSS} SVIDs")

    # Latency at info level (no per-connection debug lines).
    b.set_level(ag, "info")
    fig["load_latency"] = loadavg()
    fig["pingpong"] = run_client("pingpong", "-i", "20000")[0]
    fig["unary"] = run_client("unary", "-s", ag.sock, "-i", "2000")
    fig["fetch"] = []
    for n, rounds, pause in FETCH_PLAN:
        fig["fetch"] += run_client("fetch", "-s", ag.sock, "-n", str(n), "-r", str(rounds), "-w", str(pause),
                                   "-p", str(ag.pid))
        note(f"A: fetch n={n}: {fig['fetch'][-3:]}")
    for n, rate in PACED_PLAN:
        fig["fetch"] += run_client("paced", "-s", ag.sock, "-n", str(n), "-R", str(rate), "-d", str(PACED_S),
                                   "-p", str(ag.pid))
        note(f"A: paced n={n} rate={rate}: {fig['fetch'][-1:]}")
    time.sleep(1)
    fig["rss_after_1000_clients"] = ag.status()

    # Revocation.
    st = Stream(b, ag)
    st.start()
    if st.wait(lambda ev: self_id in ev[2], 10) is None:
        raise RuntimeError("revocation stream: no first response")
    api, cli, call = [], [], []
    for i in range(REV_TRIALS + REV_CLI_TRIALS):
        eid, sid = f"rev-{i}", f"spiffe://{TD}/bench/rev/{i}"
        b.create_many([b.entry(eid, sid, node1, f"unix:uid:{UID}")])
        if st.wait(lambda ev: sid in ev[2], 20) is None:
            raise RuntimeError(f"revocation trial {i}: entry never reached the stream")
        time.sleep(0.05)
        use_cli = i >= REV_TRIALS
        t0 = time.monotonic()
        if use_cli:
            subprocess.run([SERVER, "entry", "delete", "-entryID", eid, "-socketPath", b.server_sock], check=True,
                           capture_output=True, timeout=30)
        else:
            b.admin.DeleteEntry(b.apb.EntryID(entry_id=eid), timeout=10)
        t1 = time.monotonic()
        ev = st.wait(lambda e: e[0] >= t0 and sid not in e[2] and self_id in e[2], 10)
        if ev is None:
            raise RuntimeError(f"revocation trial {i}: no update within 10 s")
        if use_cli:
            cli.append(ev[0] - t0)
        else:
            api.append((ev[0] - t0, ev[0] - t1))
            call.append(t1 - t0)
    st.close()
    fig["revocation_api_from_start_ms"] = [round(x[0] * 1e3, 3) for x in api]
    fig["revocation_api_from_return_ms"] = [round(x[1] * 1e3, 3) for x in api]
    fig["revocation_api_call_ms"] = [round(x * 1e3, 3) for x in call]
    fig["revocation_cli_from_start_ms"] = [round(x * 1e3, 3) for x in cli]
    rc = ag.stop(signal.SIGTERM)
    fig["agent_a_exit"] = rc


def phase_b(b):
    node2 = f"spiffe://{TD}/lanyard/agent/node2"
    fig["storm_n"], fig["storm_sample"], fig["storm_ttl"] = N_STORM, N_SAMPLE, STORM_TTL
    ents = [b.entry(f"storm-{i}", f"spiffe://{TD}/bench/storm/{i}", node2,
                    f"unix:uid:{UID}" if i < N_SAMPLE else "unix:" + NOBODY_SEL, ttl=STORM_TTL)
            for i in range(N_STORM)]
    dt = b.create_many(ents)
    note(f"B: {N_STORM} entries created in {dt:.1f} s")
    fig["create_storm_s"] = round(dt, 2)
    fig["create_storm_chunk_rates"] = b.chunk_rates
    fig["openssl_sign_per_s"], fig["openssl_verify_per_s"] = openssl_speed()
    fig["load_storm"] = loadavg()
    srv_cpu0 = b.server.cpu_s()
    ag = b.start_agent("agent-b", b.token(node2), "debug")
    peak = {"rss": 0}
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            try:
                peak["rss"] = max(peak["rss"], ag.status()["VmRSS"])
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    ok = wait_for(lambda: (not ag.alive()) or issued_since(ag, 0) >= N_STORM, 300, step=0.1)
    stop_sampling.set()
    th.join()
    if not ok or not ag.alive():
        raise RuntimeError(f"storm: {issued_since(ag, 0)} of {N_STORM} issued: " + ag.text()[-2000:])
    fig["storm_agent_cpu_s"] = round(ag.cpu_s(), 2)
    fig["storm_server_cpu_s"] = round(b.server.cpu_s() - srv_cpu0, 2)
    lines = log_lines(ag)
    t_att = next(t for t, m in lines if m.startswith("attested as "))
    t_snap, got = None, 0
    for t, m in lines:
        w = WATCH_RE.match(m)
        if w and w.group(1) == "snapshot":
            got = int(w.group(3))
            if got >= N_STORM:
                t_snap = t
                break
    bl = batches(ag)
    total, t_done = 0, None
    for t, n, ok_n, failed in bl:
        total += ok_n
        if total >= N_STORM:
            t_done = t
            break
    fig["storm_batches"] = [(n, ok_n, failed) for t, n, ok_n, failed in bl if t <= t_done]
    # Per batch, from the log: answer = "CSRs sent" -> "issued" (the server's BatchNewX509SVID and
    # the agent's verification). No "prepare" figure: two batches are in flight at once, so the
    # time before a batch is sent overlaps the previous batch's answer and has no clean start.
    sent = [t for t, m in lines if SENT_RE.match(m) and t <= t_done]
    ends = [t for t, _, _, _ in bl if t <= t_done]
    answer = sum(te - ts_ for ts_, te in zip(sent, ends))
    fig["storm_answer_s"] = round(answer, 3)
    fig["storm_exec_to_attested_s"] = round(t_att - ag.t_exec, 3)
    fig["storm_snapshot_to_cached_s"] = round(t_done - t_snap, 3) if t_snap else None
    fig["storm_exec_to_cached_s"] = round(t_done - ag.t_exec, 3)
    fig["storm_first_batch_to_last_s"] = round(t_done - bl[0][0], 3)
    fig["storm_peak_rss_sampled_kb"] = peak["rss"]
    note(f"B: storm snapshot->cached {fig['storm_snapshot_to_cached_s']} s; exec->cached "
         f"{fig['storm_exec_to_cached_s']} s")
    time.sleep(3)
    fig["rss_10k"] = ag.status()
    if STORM_ONLY:
        return

    # Renewal: every SVID was issued in [t_first_issue, t_done]; lifetime STORM_TTL + backdate.
    t_first_issue = bl[0][0]
    st = Stream(b, ag, keep=True)
    st.start()
    ev = st.wait(lambda e: len(e[2]) >= N_SAMPLE, 30)
    if ev is None:
        raise RuntimeError("renewal: the sample stream did not show the sample")
    from cryptography import x509

    def leaf_info(der_chain):
        n = der_chain[1]
        if n < 0x80:
            ln = 2 + n
        else:
            k = n & 0x7f
            ln = 2 + k + int.from_bytes(der_chain[2:2 + k], "big")
        c = x509.load_der_x509_certificate(der_chain[:ln])
        return c.serial_number, c.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp(), \
            c.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
    first = {}
    for s in ev[3].svids:
        first[s.spiffe_id] = (bytes(s.x509_svid), leaf_info(bytes(s.x509_svid)))
    lifetime = statistics.median(v[1][2] - v[1][1] for v in first.values())
    fig["storm_lifetime_s"] = lifetime
    # Idle agent CPU before any renewal is due (the 5 s resyncs of 10,000 entries included).
    idle0, tidle0 = ag.cpu_s(), time.monotonic()
    due_first = min(v[1][1] for v in first.values()) + 0.45 * lifetime
    time.sleep(max(1.0, min(20.0, due_first - time.time() - 3)))
    fig["idle_agent_cpu_per_s"] = round((ag.cpu_s() - idle0) / (time.monotonic() - tidle0), 4)
    cpu_r0, srv_r0 = ag.cpu_s(), b.server.cpu_s()
    t_r0 = time.time()
    fig["load_renewal"] = loadavg()
    last_due = max(v[1][1] for v in first.values()) + 0.55 * lifetime
    renewed = {}  # spiffe_id -> wall time its new SVID arrived on the stream
    seen = [0]

    def all_renewed():
        with st.cv:
            evs = st.events[seen[0]:]
        seen[0] += len(evs)
        for tm, tw, ids, r in evs:
            for s in r.svids:
                sid = s.spiffe_id
                if sid in first and sid not in renewed and bytes(s.x509_svid) != first[sid][0]:
                    renewed[sid] = tw
        return len(renewed) >= len(first)
    wait_for(all_renewed, max(5.0, last_due - time.time() + 15), step=0.5)
    # The whole renewal, from the log: every batch after the storm's last one.
    wait_for(lambda: sum(x[2] for x in batches(ag, t_done + 0.001)) >= N_STORM,
             max(5.0, last_due - time.time() + 15), step=0.5)
    t_r1 = time.time()
    fig["renewal_agent_cpu_s"] = round(ag.cpu_s() - cpu_r0, 2)
    fig["renewal_server_cpu_s"] = round(b.server.cpu_s() - srv_r0, 2)
    fig["renewal_window_s"] = round(t_r1 - t_r0, 2)
    st.close()
    rb = [x for x in batches(ag, t_done + 0.001)]
    fig["renewal_batches"] = len(rb)
    fig["renewal_svids"] = sum(x[2] for x in rb)
    fig["renewal_failed"] = sum(x[3] for x in rb)
    fig["renewal_batch_max"] = max((x[1] for x in rb), default=0)
    fig["renewal_first_s_after_issue"] = round(rb[0][0] - t_first_issue, 2) if rb else None
    fig["renewal_last_s_after_issue"] = round(rb[-1][0] - t_first_issue, 2) if rb else None
    fig["renewal_span_s"] = round(rb[-1][0] - rb[0][0], 2) if rb else None
    # All 10,000 were issued within [t_first_issue, t_done]: with a lifetime L (backdated notBefore),
    # each renewal must fall in [nb + 0.45 L, nb + 0.55 L] of its own certificate.
    fracs = []
    for sid, (der, (serial, nb, na)) in first.items():
        if sid in renewed:
            fracs.append((renewed[sid] - nb) / (na - nb))
    fig["renewal_sample_renewed"] = len(fracs)
    fig["renewal_sample_frac_min"] = round(min(fracs), 4) if fracs else None
    fig["renewal_sample_frac_p50"] = round(statistics.median(fracs), 4) if fracs else None
    fig["renewal_sample_frac_max"] = round(max(fracs), 4) if fracs else None
    fig["renewal_sample_outside"] = sum(1 for f in fracs if not 0.45 <= f <= 0.55)
    fig["renewal_sample_outside_max_ms"] = round(max([0.0] + [max(0.45 - f, f - 0.55) * lifetime * 1e3
                                                             for f in fracs]), 1)
    # Per second of renewal activity, from the log (how flat the spread was).
    per_s = {}
    for t, n, ok_n, failed in rb:
        per_s[int(t - rb[0][0])] = per_s.get(int(t - rb[0][0]), 0) + ok_n
    fig["renewal_per_second"] = [per_s.get(i, 0) for i in range(max(per_s) + 1)] if per_s else []
    fig["rss_10k_after_renewal"] = ag.status()
    fig["agent_b_exit"] = ag.stop(signal.SIGTERM)


# ---- report ----------------------------------------------------------------------

def ms(us):
    return f"{float(us) / 1000:.3f}"


def report():
    p = print
    p(f"lanyard agent bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
      f"{os.cpu_count()} CPUs; load before/latency/storm/renewal: {fig.get('load_start')} / "
      f"{fig.get('load_latency')} / {fig.get('load_storm')} / {fig.get('load_renewal')}"
      + ("; QUICK run" if QUICK else ""))
    p()
    p("### FetchX509SVID first response (ms)")
    p()
    p("| measure | clients at once | samples | errors | p50 | p99 | max | all answered (median round) "
      "| CPU per call, agent / client (µs) |")
    p("|---|---|---|---|---|---|---|---|---|")
    pp = fig["pingpong"]
    p(f"| floor: socketpair ping-pong, 64 B | 1 | {pp['samples']} | 0 | {ms(pp['p50_us'])} | {ms(pp['p99_us'])} "
      f"| {ms(pp['max_us'])} | | |")
    for u in fig["unary"]:
        what = ("floor: Health/Check unary, open connection" if u["measure"] == "unary_warm" else
                "floor: Health/Check unary, new connection (attested)")
        p(f"| {what} | 1 | {u['samples']} | {u['errors']} | {ms(u['p50_us'])} | {ms(u['p99_us'])} "
          f"| {ms(u['max_us'])} | | |")
    names = {"fetch_cold": "FetchX509SVID, new connection each",
             "fetch_warm": "FetchX509SVID, again on the open connections",
             "health_warm": "floor: Health/Check unary on the open connections"}
    for f in fig["fetch"]:
        if f["measure"].startswith("paced_"):
            rate = f["measure"].split("_")[1]
            names[f["measure"]] = f"FetchX509SVID on open connections, {rate} calls/s spread over them"
        p(f"| {names[f['measure']]} | {f['clients']} | {f['samples']} | {f['errors']} | {ms(f['p50_us'])} | "
          f"{ms(f['p99_us'])} | {ms(f['max_us'])} | {f.get('wall_ms', '')} | "
          f"{f.get('agent_cpu_us_per_call', '?')} / {f.get('client_cpu_us_per_call', '?')} |")
    resp = next((f.get("resp_bytes") for f in fig["fetch"] if f.get("resp_bytes")), "?")
    p()
    p(f"Response: one SVID with chain, key and bundle, {resp} bytes; the agent held "
      f"{fig['rss_1k_n'] + 1} cached SVIDs.")
    p()
    p("### Agent memory (kB, /proc/<pid>/status)")
    p()
    p("| cached workload SVIDs | VmRSS | VmHWM | RssAnon |")
    p("|---|---|---|---|")
    for k, label in (("rss_1", "1 (agent's own SVID + 1)"), ("rss_1k", f"{fig['rss_1k_n'] + 1}"),
                     ("rss_after_1000_clients", f"{fig['rss_1k_n'] + 1}, after the 1,000-client rounds"),
                     ("rss_10k", f"{fig['storm_n']} (after the storm)"),
                     ("rss_10k_after_renewal", f"{fig['storm_n']} (after all were renewed)")):
        v = fig.get(k)
        if v:
            p(f"| {label} | {v['VmRSS']} | {v['VmHWM']} | {v.get('RssAnon', '')} |")
    p()
    p(f"Peak VmRSS sampled every 50 ms during the storm: {fig['storm_peak_rss_sampled_kb']} kB.")
    p()
    sign, ver = fig["openssl_sign_per_s"], fig["openssl_verify_per_s"]
    floor_cpu = fig["storm_n"] * (2 / sign + 2 / ver)
    p(f"### Storm: {fig['storm_n']} SVIDs issued at once (TTL {fig['storm_ttl']} s)")
    p()
    p("| measure | value |")
    p("|---|---|")
    p(f"| entries created through the admin API beforehand (not timed below) | {fig['create_storm_s']} s; "
      f"entries/s per 1,000: {', '.join(map(str, fig['create_storm_chunk_rates']))} |")
    p(f"| agent exec -> attested (join token) | {fig['storm_exec_to_attested_s']} s |")
    p(f"| **snapshot of {fig['storm_n']} entries received -> all {fig['storm_n']} SVIDs verified and cached** | "
      f"**{fig['storm_snapshot_to_cached_s']} s** |")
    p(f"| agent exec -> all cached | {fig['storm_exec_to_cached_s']} s |")
    p(f"| batches (size, issued, failed) | {len(fig['storm_batches'])}: "
      f"{', '.join(str(b[0]) for b in fig['storm_batches'][:6])}{'...' if len(fig['storm_batches']) > 6 else ''} |")
    p(f"| summed over batches (two are in flight at once, so these overlap): CSRs sent -> verified and "
      f"cached | {fig['storm_answer_s']} s |")
    p(f"| CPU: agent (since exec) / server (during) | {fig['storm_agent_cpu_s']} s / {fig['storm_server_cpu_s']} s |")
    p(f"| floor: 2 P-256 signs + 2 verifies per SVID (openssl speed: {sign:.0f} sign/s, {ver:.0f} verify/s) | "
      f"{floor_cpu:.2f} CPU s, {floor_cpu / 2:.2f} s on 2 cores |")
    p()
    p(f"### Renewal of the {fig['storm_n']} (lifetime {fig['storm_lifetime_s']:.0f} s: TTL + 10 s backdate)")
    p()
    p("| measure | value |")
    p("|---|---|")
    p(f"| SVIDs renewed / failed | {fig['renewal_svids']} / {fig['renewal_failed']} in {fig['renewal_batches']} "
      f"batches (largest {fig['renewal_batch_max']}) |")
    p(f"| first / last renewal batch, after the storm's first batch | {fig['renewal_first_s_after_issue']} s / "
      f"{fig['renewal_last_s_after_issue']} s (span {fig['renewal_span_s']} s) |")
    p(f"| renewals per second over the span | {', '.join(map(str, fig['renewal_per_second']))} |")
    p(f"| agent CPU during the renewal window ({fig['renewal_window_s']} s) / idle rate | "
      f"{fig['renewal_agent_cpu_s']} s / {fig['idle_agent_cpu_per_s']} s per s |")
    p(f"| server CPU during the renewal window | {fig['renewal_server_cpu_s']} s |")
    p(f"| sample of {fig['storm_sample']} read on a stream: renewed, arrival as a fraction of the old "
      f"certificate's life (min / p50 / max) | {fig['renewal_sample_renewed']}: {fig['renewal_sample_frac_min']} / "
      f"{fig['renewal_sample_frac_p50']} / {fig['renewal_sample_frac_max']}; outside [0.45, 0.55]: "
      f"{fig['renewal_sample_outside']} (at most {fig['renewal_sample_outside_max_ms']} ms outside) |")
    p()
    p("### Revocation: entry deleted -> update on an open FetchX509SVID stream (ms)")
    p()
    p("| from | trials | p50 | p99 | max |")
    p("|---|---|---|---|---|")
    for key, label in (("revocation_api_from_start_ms", "DeleteEntry (admin API) call start"),
                       ("revocation_api_from_return_ms", "DeleteEntry call return (negative: update first)"),
                       ("revocation_cli_from_start_ms", "`lanyard-server entry delete` exec"),
                       ("revocation_api_call_ms", "(the DeleteEntry call itself)")):
        v = fig[key]
        if v:
            p(f"| {label} | {len(v)} | {pct(v, 0.5):.2f} | {pct(v, 0.99):.2f} | {max(v):.2f} |")
    p()
    p(f"Agents' exits on SIGTERM: A {fig.get('agent_a_exit')}, B {fig.get('agent_b_exit')}.")


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-agent-bench-")
    fig["load_start"] = loadavg()
    ok = False
    b = None
    try:
        stubs(tmp)
        b = Bench(tmp)
        t = time.monotonic()
        if not STORM_ONLY:
            phase_a(b)
            note(f"phase A: {time.monotonic() - t:.0f} s")
        t = time.monotonic()
        phase_b(b)
        note(f"phase B: {time.monotonic() - t:.0f} s")
        ok = True
    finally:
        if b is not None:
            b.admin_ch.close()
        for d in reversed(procs):
            if d.alive():
                d.stop(signal.SIGTERM)
        if os.environ.get("LANYARD_BENCH_JSON"):
            with open(os.environ["LANYARD_BENCH_JSON"], "w") as f:
                json.dump(fig, f, indent=1, default=str)
        if ok and not os.environ.get("LANYARD_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            note(f"logs kept in {tmp}")
        if ok and os.environ.get("LANYARD_BENCH_KEEP"):
            note(f"LANYARD_BENCH_KEEP: logs kept in {tmp}")
    if STORM_ONLY:
        for k in sorted(fig):
            if k.startswith(("storm", "rss_10k", "openssl", "load", "create")):
                print(f"{k}: {fig[k]}")
    else:
        report()


if __name__ == "__main__":
    main()
