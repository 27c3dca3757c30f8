#!/usr/bin/python3
"""agent_e2e.py: a real lanyard-server and a real lanyard-agent, driven by
real Workload API clients (Python grpcio with stubs generated here from
proto/workload.proto, the agent's own CLI, openssl, PyJWT).

    agent_e2e.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR

Everything runs on 127.0.0.1 in a temporary directory. Scenarios:
  - `run` refused on bad flags and config files (exit 2, one line, file:line);
  - start-up: server, join token, agent with the bootstrap bundle; socket
    0777 in a 0755 directory, data dir 0700, files 0600; healthcheck;
  - FetchX509SVID: the caller's SVIDs (uid selectors), default identity
    first; `openssl verify` of the chain against the bundle; an mTLS
    handshake (openssl s_server / s_client, -verify_return_error, both
    sides presenting SVIDs of two workloads running as two uids);
  - refusals: no `workload.spiffe.io` header -> INVALID_ARGUMENT; a uid with
    no entry (setpriv 65534) -> PERMISSION_DENIED on every method;
  - rotation seen on an open stream inside [45%, 55%] of the SVID's life
    (an entry with -x509SVIDTTL 20); an entry deleted: gone from an open
    stream, and a stream whose last entry is deleted ends PERMISSION_DENIED
    (delays measured);
  - JWT-SVIDs: fetch, ValidateJWTSVID, PyJWT against FetchJWTBundles' JWKS;
  - the server killed: the agent still serves; the agent restarted without
    a token while the server is down: same identity and SVIDs at once; the
    server back: a new entry reaches the agent;
  - the CLI: api fetch x509 -write, api fetch jwt, api fetch jwt-bundles,
    api validate, api watch, healthcheck, SPIFFE_ENDPOINT_SOCKET; an error
    with a newline in a value printed escaped on one line;
  - connect-then-exec: a process attested as the binary a unix:path entry
    names, that then execs another, is refused on its next call;
  - SIGTERM: open streams end UNAVAILABLE, exit 0.
Prints ok/FAIL per check and the measured figures; exits 1 on any failure,
else 77 (a skip, for ctest) when a scenario cannot run here (not root, no unshare).
"""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, check, exit_status, failures, figures, finish, free_port, kill_all,  # noqa: E402
                     one_error_line, protoc, run, skip, split_der, wait_for)

SERVER, AGENT, PROTO_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
MD = (("workload.spiffe.io", "true"),)
UID_B, UID_DOOMED, UID_NONE = 1001, 1003, 65534


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.server_sock = os.path.join(tmp, "server", "api.sock")
        self.server_data = os.path.join(tmp, "server-data")
        self.agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        self.agent_data = os.path.join(tmp, "agent-data")
        self.bundle_pem = os.path.join(tmp, "bootstrap.pem")
        self.port = free_port()
        self.server = None
        self.agent = None

    def start_server(self):
        self.server = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1",
                              "-serverPort", str(self.port), "-socketPath", self.server_sock,
                              "-dataDir", self.server_data],
                             os.path.join(self.tmp, "server.log"))
        return wait_for(lambda: not self.server.alive() or
                        server_cli(self, "healthcheck")[0] == 0, 30) and self.server.alive()

    def start_agent(self, token=None, bundle=True, extra=()):
        args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(self.port),
                "-socketPath", self.agent_sock, "-dataDir", self.agent_data, "-logLevel", "debug", *extra]
        if token:
            args += ["-joinToken", token]
        if bundle:
            args += ["-trustBundle", self.bundle_pem]
        self.agent = Daemon(args, os.path.join(self.tmp, "agent.log"))

    def agent_healthy(self, timeout=30):
        return wait_for(lambda: not self.agent.alive() or agent_cli("healthcheck", "-socketPath",
                                                                   self.agent_sock)[0] == 0,
                        timeout) and self.agent.alive()


def server_cli(env, *args):
    return run([SERVER, *args, "-socketPath", env.server_sock])


def agent_cli(*args, uid=None, env=None, timeout=60):
    return run([AGENT, *args], timeout=timeout, env=env, uid=uid)


def create_entry(env, spiffe_id, selectors, ttl=None):
    args = ["entry", "create", "-spiffeID", spiffe_id, "-parentID", AGENT_ID]
    for s in selectors:
        args += ["-selector", s]
    if ttl:
        args += ["-x509SVIDTTL", str(ttl)]
    rc, out, err = server_cli(env, *args)
    m = re.search(r"Entry ID\s*:\s*(\S+)", out)
    check(rc == 0 and m is not None, f"entry create {spiffe_id}", err)
    return m.group(1) if m else None


# ---- DER and certificates ------------------------------------------------------

def certs(data):
    return [x509.load_der_x509_certificate(d) for d in split_der(data)]


def pem_of(cert_list):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cert_list)


def uri_of(cert):
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def summary(resp):
    return {s.spiffe_id: certs(s.x509_svid)[0].serial_number for s in resp.svids}


# ---- Workload API clients --------------------------------------------------------

def stub_for(env, pb_grpc):
    ch = grpc.insecure_channel("unix:" + env.agent_sock)
    return ch, pb_grpc.SpiffeWorkloadAPIStub(ch)


def first_x509(stub, pb, timeout=10, metadata=MD):
    it = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=metadata, timeout=timeout)
    try:
        return next(it), None
    except grpc.RpcError as e:
        return None, e.code()
    finally:
        it.cancel()


def wait_ids(env, stub, pb, want, timeout=30):
    """Waits until the caller's FetchX509SVID names every ID in `want`; returns the response."""
    box = {}

    def ok():
        r, code = first_x509(stub, pb, timeout=5)
        box["r"], box["code"] = r, code
        return r is not None and want <= {s.spiffe_id for s in r.svids}
    wait_for(ok, timeout, step=0.2)
    return box.get("r") if box.get("r") is not None and want <= {s.spiffe_id for s in box["r"].svids} else None


class StreamWatcher(threading.Thread):
    """Reads a FetchX509SVID stream in the background: (time, {id: serial, ...}, response) per message."""

    def __init__(self, stub, pb):
        super().__init__(daemon=True)
        self.it = stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=MD)
        self.events = []
        self.end = None
        self.lock = threading.Lock()

    def run(self):
        try:
            for r in self.it:
                with self.lock:
                    self.events.append((time.time(), summary(r), r))
        except grpc.RpcError as e:
            self.end = (time.time(), e.code())

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def cancel(self):
        self.it.cancel()


CLIENT_SCRIPT = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import grpc
import workload_pb2 as pb, workload_pb2_grpc as pbg
sock, mode = sys.argv[2], sys.argv[3]
md = [("workload.spiffe.io", "true")]
stub = pbg.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix:" + sock))

def out(**kw):
    kw["t"] = time.time()
    print(json.dumps(kw), flush=True)

def code(e):
    return e.code().name

if mode == "all":
    res = {}
    try:
        next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=md, timeout=10)); res["x509"] = "OK"
    except grpc.RpcError as e: res["x509"] = code(e)
    try:
        next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=md, timeout=10)); res["x509_bundles"] = "OK"
    except grpc.RpcError as e: res["x509_bundles"] = code(e)
    try:
        next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=md, timeout=10)); res["jwt_bundles"] = "OK"
    except grpc.RpcError as e: res["jwt_bundles"] = code(e)
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), metadata=md, timeout=10); res["jwt"] = "OK"
    except grpc.RpcError as e: res["jwt"] = code(e)
    out(**res)
elif mode == "stream":
    try:
        for r in stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=md):
            out(ids=[s.spiffe_id for s in r.svids])
    except grpc.RpcError as e:
        out(end=code(e), details=e.details())
'''


def run_as(uid, env, mode):
    return subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3",
                             env.client_script, env.pb_dir, env.agent_sock, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- scenarios ----------------------------------------------------------------------

def refusals_at_startup(env):
    """`run` refuses bad flags and configs before starting anything."""
    cfgdir = os.path.join(env.tmp, "cfg")
    os.makedirs(cfgdir, exist_ok=True)

    def run(args, want, part, name):
        r = subprocess.run([AGENT, "run", *args], capture_output=True, text=True, timeout=30)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == want and len(lines) == 1 and part in lines[0],
              f"run refused: {name}: exit {want}, one line naming it", f"rc={r.returncode} {r.stderr!r}")

    def cfg(name, text):
        p = os.path.join(cfgdir, name)
        with open(p, "w") as f:
            f.write(text)
        return p
    base = ["-serverAddress", "127.0.0.1", "-socketPath", os.path.join(cfgdir, "s", "api.sock"),
            "-dataDir", os.path.join(cfgdir, "d")]
    run(base, 2, "trust domain", "no trust domain")
    run(["-trustDomain", "Bad_TD", *base], 2, "-trustDomain", "bad trust domain flag")
    run(["-trustDomain", TD, "-socketPath", "relative.sock", "-serverAddress", "127.0.0.1"], 2, "-socketPath",
        "relative socket path")
    run(["-trustDomain", TD, *base, "-serverPort", "70000"], 2, "serverPort", "port out of range")
    run(["-trustDomain", TD, *base, "-nosuchflag"], 2, "nosuchflag", "unknown flag")
    run(["-trustDomain", TD, *base, "-trustBundle", "x.pem", "-insecureBootstrap"], 2, "insecure",
        "bundle and insecure bootstrap")
    p = cfg("unknown.yaml", "agent:\n  trust_domain: example.org\n  server_adress: 127.0.0.1\n")
    run(["-config", p, *base], 2, "unknown.yaml:3", "unknown key, file:line")
    p = cfg("badlevel.yaml", "agent:\n  trust_domain: example.org\n  log_level: loud\n")
    run(["-config", p, *base], 2, "badlevel.yaml:3", "bad log level, file:line")
    p = cfg("badsync.yaml", "agent:\n  trust_domain: example.org\n  sync_interval: 0s\n")
    run(["-config", p, *base], 2, "badsync.yaml:3", "sync_interval 0, file:line")
    p = cfg("x509pop.yaml", "agent:\n  trust_domain: example.org\n  node_attestor:\n    x509pop:\n"
            "      certificate_path: /x.pem\n")
    run(["-config", p, *base], 2, "x509pop.yaml:5", "x509pop without a key, file:line")
    p = cfg("kubelet.yaml", "agent:\n  trust_domain: example.org\n  workload_attestors:\n    k8s:\n"
            "      node_name: node1\n      kubelet_url: http://node1:10250\n")
    run(["-config", p, *base], 2, "kubelet.yaml:6", "kubelet_url not https, file:line")
    p = cfg("nonode.yaml", "agent:\n  trust_domain: example.org\n  workload_attestors:\n    k8s:\n"
            "      node_name_env: LANYARD_TEST_NO_SUCH_VAR\n")
    run(["-config", p, *base], 2, "node", "k8s attestor without a node name")
    run(["-config", os.path.join(cfgdir, "missing.yaml"), *base], 1, "missing.yaml", "missing config file")
    r = subprocess.run([AGENT, "run", "-h"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and "-joinToken" in r.stdout, "run -h lists the flags")
    rc, out, err = agent_cli("nosuch")
    check(rc == 2 and one_error_line(err), "unknown command: exit 2, one line", err)
    rc, out, err = agent_cli("api", "fetch", "x509", "-socketPath", os.path.join(cfgdir, "none.sock"))
    check(rc == 1 and one_error_line(err) and "none.sock" in err, "api fetch x509 without an agent: exit 1", err)


def not_ready(env, pb, pb_grpc):
    """An agent that cannot reach its server and has nothing cached: UNAVAILABLE, unhealthy, still stops cleanly."""
    d = os.path.join(env.tmp, "lonely")
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "sock", "api.sock")
    conf = os.path.join(d, "agent.yaml")
    with open(conf, "w") as f:
        f.write(f"agent:\n  trust_domain: {TD}\n  log_level: warn\n  sync_interval: 2s\n")
    ag = Daemon([AGENT, "run", "-config", conf, "-serverAddress", "127.0.0.1", "-serverPort",
                 str(free_port()), "-socketPath", sock, "-dataDir", os.path.join(d, "data"),
                 "-joinToken", "nosuchtoken", "-insecureBootstrap"], os.path.join(env.tmp, "lonely.log"))
    up = wait_for(lambda: os.path.exists(sock) or not ag.alive(), 20)
    check(up and ag.alive(), "an agent without a reachable server still listens", ag.text()[-2000:])
    ch = grpc.insecure_channel("unix:" + sock)
    stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
    r, code = first_x509(stub, pb, timeout=5)
    check(code == grpc.StatusCode.UNAVAILABLE, "not ready (no SVID of its own, nothing cached) -> UNAVAILABLE",
          str(code))
    rc, out, err = agent_cli("healthcheck", "-socketPath", sock)
    check(rc == 1 and one_error_line(err) and "not serving" in err, "not ready: healthcheck exit 1", out + err)
    ch.close()
    with open(conf, "w") as f:
        f.write(f"agent:\n  trust_domain: {TD}\n  log_level: debug\n")
    ag.proc.send_signal(signal.SIGHUP)
    check(wait_for(lambda: "SIGHUP: log level is now debug" in ag.text(), 5), "SIGHUP re-reads the log level",
          ag.text()[-1000:])
    rc = ag.stop(signal.SIGTERM)
    check(rc == 0, "SIGTERM while still attesting -> exit 0", ag.text()[-2000:])
    check("nosuchtoken" not in ag.text(), "the join token is not logged")


def pid_namespace(env, pb, pb_grpc):
    """An agent in its own PID namespace sees callers as PID 0: refused PERMISSION_DENIED (SPEC §5)."""
    if shutil.which("unshare") is None:
        skip("PID namespace", "no unshare command (Debian package util-linux)")
        return
    rc, out, err = server_cli(env, "token", "generate", "-spiffeID", f"spiffe://{TD}/lanyard/agent/ns")
    token = re.search(r"Token: (\S+)", out).group(1)
    d = os.path.join(env.tmp, "ns")
    sock = os.path.join(d, "sock", "api.sock")
    ag = Daemon(["unshare", "--pid", "--fork", "--mount-proc", AGENT, "run", "-trustDomain", TD,
                 "-serverAddress", "127.0.0.1", "-serverPort", str(env.port), "-socketPath", sock,
                 "-dataDir", os.path.join(d, "data"), "-joinToken", token, "-trustBundle", env.bundle_pem],
                os.path.join(env.tmp, "ns.log"))
    ok = wait_for(lambda: agent_cli("healthcheck", "-socketPath", sock)[0] == 0 or not ag.alive(), 20)
    check(ok and ag.alive(), "agent in a PID namespace starts", ag.text()[-2000:])
    ch = grpc.insecure_channel("unix:" + sock)
    stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
    r, code = first_x509(stub, pb, timeout=5)
    check(code == grpc.StatusCode.PERMISSION_DENIED and "PID is not visible" in ag.text(),
          "caller seen as PID 0 -> PERMISSION_DENIED (logged why)", str(code))
    ch.close()
    # The agent is PID 1 of its namespace: signal it directly (unshare does not forward).
    kids = open(f"/proc/{ag.proc.pid}/task/{ag.proc.pid}/children").read().split()
    if kids:
        os.kill(int(kids[0]), signal.SIGTERM)
    rc = ag.stop(signal.SIGTERM)
    check(rc == 0, "agent in a PID namespace: SIGTERM -> exit 0", ag.text()[-2000:])


def startup(env):
    check(env.start_server(), "server starts", env.server.text()[-2000:] if env.server else "")
    rc, out, err = server_cli(env, "bundle", "show")
    check(rc == 0 and "BEGIN CERTIFICATE" in out, "bundle show (bootstrap bundle)", err)
    with open(env.bundle_pem, "w") as f:
        f.write(out)
    rc, out, err = server_cli(env, "token", "generate", "-spiffeID", AGENT_ID)
    m = re.search(r"Token: (\S+)", out)
    check(rc == 0 and m is not None, "token generate", err)
    token = m.group(1)
    t0 = time.time()
    env.start_agent(token=token)
    ok = env.agent_healthy()
    figures["agent_start_to_healthy_s"] = round(time.time() - t0, 3)
    check(ok, "agent starts with the join token and the bootstrap bundle; healthcheck says healthy",
          env.agent.text()[-3000:])
    check(token not in env.agent.text(), "the join token is not in the agent's log")
    st = os.stat(env.agent_sock)
    check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777, "Workload API socket is 0777",
          oct(st.st_mode))
    check(stat.S_IMODE(os.stat(os.path.dirname(env.agent_sock)).st_mode) == 0o755, "socket directory is 0755")
    check(stat.S_IMODE(os.stat(env.agent_data).st_mode) == 0o700, "data dir is 0700")
    rc, out, err = server_cli(env, "agent", "list")
    check(rc == 0 and AGENT_ID in out, "the server lists the agent", out + err)
    return token


def data_files_private(env):
    bad = []
    for root, dirs, files in os.walk(env.agent_data):
        for f in files:
            if stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) & 0o077:
                bad.append(f)
    check(not bad and wait_for(lambda: len(os.listdir(env.agent_data)) > 0, 5),
          "agent data dir files are 0600", str(bad))


def fetch_x509(env, pb, pb_grpc, ids):
    ch, stub = stub_for(env, pb_grpc)
    r = wait_ids(env, stub, pb, {ids["a"], ids["x"], ids["r"]})
    check(r is not None, "FetchX509SVID returns the caller's SVIDs (uid 0: a, x, rotating)",
          env.agent.text()[-3000:])
    if r is None:
        return None
    got = [s.spiffe_id for s in r.svids]
    check(ids["b"] not in got and ids["d"] not in got, "no SVID of another uid's entry", str(got))
    check(got[0] == ids["a"], "the first SVID is the oldest entry's (default identity)", str(got))
    sv = r.svids[0]
    chain = certs(sv.x509_svid)
    check(uri_of(chain[0]) == [ids["a"]], "leaf has exactly the entry's SPIFFE ID as URI SAN")
    key = serialization.load_der_private_key(sv.x509_svid_key, None)
    check(key.public_key().public_numbers() == chain[0].public_key().public_numbers(),
          "x509_svid_key (PKCS#8) is the leaf's key")
    check(len(sv.bundle) > 0 and r.svids[1].bundle == sv.bundle, "each SVID carries the bundle")
    hints = [s.hint for s in r.svids if s.hint]
    check(len(hints) == len(set(hints)), "hints unique")

    # openssl verify: the chain against the bundle.
    d = os.path.join(env.tmp, "verify")
    os.makedirs(d, exist_ok=True)
    for name, data in (("leaf.pem", pem_of(chain[:1])), ("inter.pem", pem_of(chain[1:])),
                       ("bundle.pem", pem_of(certs(sv.bundle)))):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    args = ["openssl", "verify", "-CAfile", os.path.join(d, "bundle.pem")]
    if len(chain) > 1:
        args += ["-untrusted", os.path.join(d, "inter.pem")]
    v = subprocess.run(args + [os.path.join(d, "leaf.pem")], capture_output=True, text=True)
    check(v.returncode == 0 and ": OK" in v.stdout, "openssl verify: the SVID chains to the bundle",
          v.stdout + v.stderr)

    # First-response latency: a new connection each time (attestation included), and on an open one.
    cold, warm = [], []
    for _ in range(30):
        t = time.perf_counter()
        c2, s2 = stub_for(env, pb_grpc)
        r2, _ = first_x509(s2, pb)
        cold.append((time.perf_counter() - t) * 1000)
        c2.close()
    for _ in range(30):
        t = time.perf_counter()
        first_x509(stub, pb)
        warm.append((time.perf_counter() - t) * 1000)
    figures["fetch_x509_first_response_new_connection_ms_median"] = round(statistics.median(cold), 2)
    figures["fetch_x509_first_response_new_connection_ms_max"] = round(max(cold), 2)
    figures["fetch_x509_first_response_open_connection_ms_median"] = round(statistics.median(warm), 2)
    check(statistics.median(cold) < 100, "FetchX509SVID answers at once (median < 100 ms on a new connection)",
          str(figures))
    ch.close()
    return r


def header_and_denied(env, pb, pb_grpc):
    ch, stub = stub_for(env, pb_grpc)
    codes = {}
    it = stub.FetchX509SVID(pb.X509SVIDRequest(), timeout=5)
    try:
        next(it)
    except grpc.RpcError as e:
        codes["x509"] = e.code()
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), timeout=5)
    except grpc.RpcError as e:
        codes["jwt"] = e.code()
    try:
        stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z"), timeout=5)
    except grpc.RpcError as e:
        codes["validate"] = e.code()
    try:
        next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), timeout=5))
    except grpc.RpcError as e:
        codes["jwt_bundles"] = e.code()
    try:
        next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=(("workload.spiffe.io", "false"),),
                                   timeout=5))
    except grpc.RpcError as e:
        codes["x509_bundles_false"] = e.code()
    check(all(c == grpc.StatusCode.INVALID_ARGUMENT for c in codes.values()) and len(codes) == 5,
          "no workload.spiffe.io: true header -> INVALID_ARGUMENT on every method", str(codes))
    ch.close()

    p = run_as(UID_NONE, env, "all")
    out, err = p.communicate(timeout=60)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {}
    check(all(res.get(k) == "PERMISSION_DENIED" for k in ("x509", "x509_bundles", "jwt_bundles", "jwt")),
          "uid 65534 (no entry) -> PERMISSION_DENIED on FetchX509SVID, bundles, FetchJWTSVID", out + err)
    rc, out, err = agent_cli("api", "fetch", "x509", "-socketPath", env.agent_sock, uid=UID_NONE)
    check(rc == 1 and one_error_line(err) and "PERMISSION_DENIED" in err,
          "CLI as uid 65534: exit 1, PERMISSION_DENIED", err)


def wait_accept(srv):
    """s_server's output up to its ACCEPT line (it accepts one connection: do not probe the port)."""
    seen = ""
    while True:
        ln = srv.stdout.readline()
        seen += ln
        if not ln or ln.startswith("ACCEPT"):
            return seen


def read_all(proc, timeout=10):
    """The rest of proc's stdout, then its exit (killed after `timeout`)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    out = proc.stdout.read()
    proc.wait()
    timer.cancel()
    return out


def mtls(env, pb, pb_grpc, ids):
    """Two workloads (uid 0 and uid 1001) fetch their SVIDs with the CLI and shake hands over mTLS."""
    da, db = os.path.join(env.tmp, "wl-a"), os.path.join(env.tmp, "wl-b")
    os.makedirs(da, exist_ok=True)
    os.makedirs(db, exist_ok=True)
    os.chown(db, UID_B, UID_B)
    rc, out, err = agent_cli("api", "fetch", "x509", "-socketPath", env.agent_sock, "-write", da)
    check(rc == 0 and ids["a"] in out, "api fetch x509 -write (uid 0)", out + err)
    ok = wait_for(lambda: agent_cli("api", "fetch", "x509", "-socketPath", env.agent_sock, "-write", db,
                                    uid=UID_B)[0] == 0, 20, step=0.3)
    rc, out, err = agent_cli("api", "fetch", "x509", "-socketPath", env.agent_sock, "-write", db, uid=UID_B)
    check(ok and rc == 0 and ids["b"] in out and ids["a"] not in out, "api fetch x509 -write (uid 1001: b only)",
          out + err)
    for d in (da, db):
        for f, mode in (("svid.0.pem", 0o644), ("svid.0.key", 0o600), ("bundle.0.pem", 0o644)):
            p = os.path.join(d, f)
            check(os.path.exists(p) and stat.S_IMODE(os.stat(p).st_mode) == mode, f"{d}/{f} written, mode {oct(mode)}")
    key_a = open(os.path.join(da, "svid.0.key"), "rb").read()
    check(key_a.startswith(b"-----BEGIN PRIVATE KEY-----"), "svid.0.key is PKCS#8 PEM")

    def split(d):
        text = open(os.path.join(d, "svid.0.pem"), "rb").read()
        cs = [x509.load_pem_x509_certificate(b) for b in
              re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", text, re.S)]
        with open(os.path.join(d, "leaf.pem"), "wb") as f:
            f.write(pem_of(cs[:1]))
        with open(os.path.join(d, "chain.pem"), "wb") as f:
            f.write(pem_of(cs[1:]) or pem_of(cs[:1]))
        return cs
    ca, cb = split(da), split(db)
    check(uri_of(ca[0]) == [ids["a"]] and uri_of(cb[0]) == [ids["b"]], "workload SVIDs name a and b")
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                            os.path.join(da, "leaf.pem"), "-cert_chain", os.path.join(da, "chain.pem"), "-key",
                            os.path.join(da, "svid.0.key"), "-CAfile", os.path.join(da, "bundle.0.pem"),
                            "-Verify", "2", "-verify_return_error", "-naccept", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True)
    accepting = wait_accept(srv)
    cli = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", os.path.join(db, "leaf.pem"),
                          "-cert_chain", os.path.join(db, "chain.pem"), "-key", os.path.join(db, "svid.0.key"),
                          "-CAfile", os.path.join(db, "bundle.0.pem"), "-verify_return_error", "-verify", "2"],
                         input="hello\n", capture_output=True, text=True, timeout=30)
    sout = accepting + read_all(srv)
    check(cli.returncode == 0 and "Verify return code: 0 (ok)" in cli.stdout and "verify error" not in sout
          and "hello" in sout,
          "mTLS between two workloads' SVIDs (openssl s_server/s_client, -verify_return_error both sides)",
          cli.stdout[-1500:] + cli.stderr[-500:] + sout[-1500:])
    # The same server refuses a client without a certificate (TLS 1.2: the refusal is the handshake's).
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                            os.path.join(da, "leaf.pem"), "-cert_chain", os.path.join(da, "chain.pem"), "-key",
                            os.path.join(da, "svid.0.key"), "-CAfile", os.path.join(da, "bundle.0.pem"),
                            "-Verify", "2", "-verify_return_error", "-naccept", "1", "-tls1_2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True)
    wait_accept(srv)
    cli = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                          os.path.join(db, "bundle.0.pem"), "-verify_return_error", "-tls1_2"],
                         input="hello\n", capture_output=True, text=True, timeout=30)
    read_all(srv)
    check(cli.returncode != 0, "the SVID server refuses a client without an SVID")


def rotation(env, pb, pb_grpc, ids):
    """The rotating entry (TTL 20 s) is renewed on an open stream inside [45%, 55%] of its life."""
    ch, stub = stub_for(env, pb_grpc)
    w = StreamWatcher(stub, pb)
    w.start()
    deadline = time.time() + 60
    seen = []  # (arrival, serial, not_before, not_after)
    while time.time() < deadline and len(seen) < 3:
        for t, summ, r in w.snapshot():
            for s in r.svids:
                if s.spiffe_id != ids["r"]:
                    continue
                leaf = certs(s.x509_svid)[0]
                if not seen or seen[-1][1] != leaf.serial_number:
                    if not any(x[1] == leaf.serial_number for x in seen):
                        seen.append((t, leaf.serial_number, leaf.not_valid_before.replace(
                            tzinfo=datetime.timezone.utc).timestamp(), leaf.not_valid_after.replace(
                            tzinfo=datetime.timezone.utc).timestamp()))
        time.sleep(0.1)
    w.cancel()
    ch.close()
    check(len(seen) >= 2, "rotation: a new certificate for the rotating entry arrives on the open stream",
          str(seen))
    fracs = []
    for prev, nxt in zip(seen, seen[1:]):
        life = prev[3] - prev[2]
        fracs.append(round((nxt[0] - prev[2]) / life, 3))
    figures["rotation_arrival_fraction_of_lifetime"] = fracs
    if len(seen) >= 2:
        figures["rotation_lifetime_s"] = seen[0][3] - seen[0][2]
        figures["rotation_arrivals_s_after_first_response"] = [round(n[0] - seen[0][0], 2) for n in seen[1:]]
    # Arrival = renewal time + issuance + delivery: allow 0.5 s of delivery past 55%.
    check(fracs and all(0.45 <= f <= 0.55 + 0.5 / (seen[0][3] - seen[0][2]) for f in fracs),
          "rotation: each new certificate arrives within [45%, 55%] of the previous one's lifetime", str(fracs))


def revocation(env, pb, pb_grpc, ids, entry_ids):
    # (1) One of several entries deleted: gone from the open stream.
    ch, stub = stub_for(env, pb_grpc)
    w = StreamWatcher(stub, pb)
    w.start()
    wait_for(lambda: any(ids["x"] in s for _, s, _ in w.snapshot()), 10)
    t0 = time.time()
    rc, _, err = server_cli(env, "entry", "delete", "-entryID", entry_ids["x"])
    t1 = time.time()
    check(rc == 0, "entry delete x", err)
    got = wait_for(lambda: next((t for t, s, _ in w.snapshot() if t > t0 and ids["x"] not in s and ids["a"] in s),
                                None), 10)
    w.cancel()
    ch.close()
    check(got is not None, "revocation: the deleted entry's SVID leaves the open stream (a new full response)")
    if got:
        figures["revocation_update_delay_ms_from_delete_return"] = round((got - t1) * 1000, 1)
        figures["revocation_update_delay_ms_from_delete_start"] = round((got - t0) * 1000, 1)
        check(got - t1 <= 1.0, "revocation: within 1 s", str(figures))

    # (2) The caller's last entry deleted: its stream ends PERMISSION_DENIED.
    p = run_as(UID_DOOMED, env, "stream")
    first = p.stdout.readline()
    check('"ids"' in first and ids["d"] in first, "uid 1003 streams its SVID", first + (p.stderr.read()
                                                                                       if not first else ""))
    t0 = time.time()
    rc, _, err = server_cli(env, "entry", "delete", "-entryID", entry_ids["d"])
    t1 = time.time()
    check(rc == 0, "entry delete d", err)
    # Not communicate(): readline() may have buffered more than the line.
    timer = threading.Timer(10, p.kill)
    timer.start()
    out, perr = p.stdout.read(), p.stderr.read()
    p.wait()
    timer.cancel()
    last = {}
    for ln in out.strip().splitlines():
        try:
            last = json.loads(ln)
        except ValueError:
            pass
    check(last.get("end") == "PERMISSION_DENIED", "revocation: a stream whose last entry is deleted ends "
          "PERMISSION_DENIED", out + perr)
    if "t" in last:
        figures["revocation_stream_end_ms_from_delete_return"] = round((last["t"] - t1) * 1000, 1)
        figures["revocation_stream_end_ms_from_delete_start"] = round((last["t"] - t0) * 1000, 1)
        check(last["t"] - t1 <= 1.0, "revocation: stream ended within 1 s", str(figures))


def jwt_checks(env, pb, pb_grpc, ids):
    ch, stub = stub_for(env, pb_grpc)
    t = time.perf_counter()
    r = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["svc-b"]), metadata=MD, timeout=20)
    figures["fetch_jwt_first_ms"] = round((time.perf_counter() - t) * 1000, 2)
    got = [s.spiffe_id for s in r.svids]
    check(set(got) == {ids["a"], ids["r"]} | ({ids["x"]} if ids["x"] in got else set()) and got[0] == ids["a"],
          "FetchJWTSVID: one token per identity, default first", str(got))
    token = r.svids[0].svid
    t = time.perf_counter()
    r2 = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["svc-b"], spiffe_id=ids["a"]), metadata=MD, timeout=20)
    figures["fetch_jwt_cached_ms"] = round((time.perf_counter() - t) * 1000, 2)
    check(len(r2.svids) == 1 and r2.svids[0].spiffe_id == ids["a"], "FetchJWTSVID for one SPIFFE ID")
    v = stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="svc-b", svid=token), metadata=MD, timeout=10)
    claims = json.loads(__import__("google.protobuf.json_format", fromlist=["x"]).MessageToJson(v.claims))
    check(v.spiffe_id == ids["a"] and claims.get("sub") == ids["a"] and "svc-b" in json.dumps(claims.get("aud"))
          and isinstance(claims.get("exp"), (int, float)), "ValidateJWTSVID: SPIFFE ID and claims", str(claims))
    codes = {}
    for name, fn in (
            ("no audience", lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(), metadata=MD, timeout=10)),
            ("empty audience", lambda: stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=[""]), metadata=MD, timeout=10)),
            ("validate no audience", lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(svid=token), metadata=MD,
                                                                  timeout=10)),
            ("validate no svid", lambda: stub.ValidateJWTSVID(pb.ValidateJWTSVIDRequest(audience="svc-b"),
                                                              metadata=MD, timeout=10)),
            ("validate wrong audience", lambda: stub.ValidateJWTSVID(
                pb.ValidateJWTSVIDRequest(audience="other", svid=token), metadata=MD, timeout=10)),
            ("validate tampered", lambda: stub.ValidateJWTSVID(
                pb.ValidateJWTSVIDRequest(audience="svc-b", svid=token[:-4] + ("AAAA" if token[-4:] != "AAAA"
                                                                               else "BBBB")), metadata=MD,
                timeout=10))):
        try:
            fn()
            codes[name] = "OK"
        except grpc.RpcError as e:
            codes[name] = e.code().name
    check(all(c == "INVALID_ARGUMENT" for c in codes.values()), "JWT refusals: INVALID_ARGUMENT", str(codes))
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["svc-b"], spiffe_id=ids["b"]), metadata=MD, timeout=10)
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    check(code == "PERMISSION_DENIED", "FetchJWTSVID for another workload's SPIFFE ID -> PERMISSION_DENIED", code)
    check(token not in env.agent.text(), "no JWT-SVID in the agent's log")

    # PyJWT against the JWKS of FetchJWTBundles.
    b = next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=MD, timeout=10))
    jwks = json.loads(b.bundles[f"spiffe://{TD}"])
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = next(k for k in pyjwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    dec = pyjwt.decode(token, key.key, algorithms=["ES256", "ES384", "RS256", "PS256"], audience="svc-b")
    check(dec["sub"] == ids["a"], "PyJWT validates the token with FetchJWTBundles' JWKS")
    xb = next(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=MD, timeout=10))
    check(list(xb.bundles.keys()) == [f"spiffe://{TD}"] and len(certs(xb.bundles[f"spiffe://{TD}"])) >= 1,
          "FetchX509Bundles keyed by spiffe://td")
    ch.close()
    return token


def cli_verbs(env, ids, token):
    sock = env.agent_sock
    rc, out, err = agent_cli("api", "fetch", "jwt", "-audience", "cli-aud", "-socketPath", sock)
    m = re.search(r"token\(" + re.escape(ids["a"]) + r"\):\s+(\S+)", out)
    check(rc == 0 and m is not None and f"bundle(spiffe://{TD})" in out, "api fetch jwt prints tokens and bundles",
          out + err)
    tok = m.group(1) if m else ""
    rc, out, err = agent_cli("api", "validate", "-audience", "cli-aud", "-svid", tok, "-socketPath", sock)
    check(rc == 0 and "SVID is valid." in out and ids["a"] in out, "api validate: valid", out + err)
    rc, out, err = agent_cli("api", "validate", "jwt", "-audience", "wrong", "-svid", tok, "-socketPath", sock)
    check(rc == 1 and one_error_line(err) and "INVALID_ARGUMENT" in err, "api validate: wrong audience, exit 1",
          out + err)
    rc, out, err = agent_cli("api", "validate", "-audience", "x", "-socketPath", sock)
    check(rc == 2 and one_error_line(err), "api validate without -svid: exit 2", err)
    rc, out, err = agent_cli("api", "fetch", "jwt", "-socketPath", sock)
    check(rc == 2 and one_error_line(err), "api fetch jwt without -audience: exit 2", err)
    rc, out, err = agent_cli("api", "fetch", "jwt", "-audience", "a", "-spiffeID",
                             f"spiffe://{TD}/x\nError: forged line\x1b[2J", "-socketPath", sock)
    check(rc == 2 and one_error_line(err) and "x\\nError: forged line\\x1b[2J" in err and "\x1b" not in err,
          "api fetch jwt: a newline and an escape in a value printed escaped, on one line", repr(err))
    rc, out, err = agent_cli("api", "fetch", "jwt-bundles", "-socketPath", sock)
    check(rc == 0 and f"bundle(spiffe://{TD})" in out and '"keys"' in out, "api fetch jwt-bundles", out + err)
    rc, out, err = agent_cli("healthcheck", "-socketPath", sock)
    check(rc == 0 and "Agent is healthy." in out, "healthcheck", out + err)
    e = dict(os.environ, SPIFFE_ENDPOINT_SOCKET="unix://" + sock)
    rc, out, err = agent_cli("api", "fetch", "x509", env=e)
    check(rc == 0 and ids["a"] in out and "SVID Valid Until:" in out, "SPIFFE_ENDPOINT_SOCKET=unix:///path honoured",
          out + err)
    e = dict(os.environ, SPIFFE_ENDPOINT_SOCKET="tcp://127.0.0.1:1")
    rc, out, err = agent_cli("api", "fetch", "x509", env=e)
    check(rc == 2 and one_error_line(err), "SPIFFE_ENDPOINT_SOCKET tcp:// refused (exit 2)", err)
    # api watch: the first update, then SIGTERM ends it with exit 0.
    p = subprocess.Popen([AGENT, "api", "watch", "-socketPath", sock], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    # Not communicate(): readline() may have buffered more than the line.
    out, err = p.stdout.read(), p.stderr.read()
    p.wait(timeout=10)
    check(line.startswith("Received ") and p.returncode == 0 and ids["a"] in out,
          "api watch prints updates, exits 0 on SIGTERM", line + out + err)
    check(tok not in env.agent.text(), "no CLI token in the agent's log")


EXEC_CLIENT = r'''
import os, socket, sys
agent_sock, ctl_path, then = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.connect(agent_sock)
c = socket.socket(socket.AF_UNIX)
c.connect(ctl_path)
socket.send_fds(c, [b"fd"], [s.fileno()])
c.recv(1)
os.execv(then, [then, "30"])
'''


def splice(a, b):
    """Copies a -> b until a closes."""
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for x in (a, b):
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def connect_then_exec(env, pb, pb_grpc):
    """A process that connected as the binary an entry names (unix:path), was attested so, and then
    exec'd another binary: its next call on the same connection is refused (attest_unix.h)."""
    d = os.path.join(env.tmp, "exec")
    os.makedirs(d)
    trusted = os.path.join(d, "trusted-python")
    shutil.copy(os.path.realpath("/usr/bin/python3"), trusted)
    os.chmod(trusted, 0o755)
    then = os.path.realpath(shutil.which("sleep"))
    script = os.path.join(d, "client.py")
    with open(script, "w") as f:
        f.write(EXEC_CLIENT)
    sid = f"spiffe://{TD}/workload/trusted-binary"
    create_entry(env, sid, [f"unix:path:{trusted}"])
    ctl_path, front = os.path.join(d, "ctl.sock"), os.path.join(d, "front.sock")
    ctl = socket.socket(socket.AF_UNIX)
    ctl.bind(ctl_path)
    ctl.listen(1)
    lst = socket.socket(socket.AF_UNIX)
    lst.bind(front)
    lst.listen(1)
    # The trusted binary connects to the agent and hands the connection to us; we carry a gRPC
    # channel over it (a local relay), so the agent sees every call as the connector's.
    proc = subprocess.Popen([trusted, script, env.agent_sock, ctl_path, then], stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONHOME="/usr"))
    ctl.settimeout(20)
    c, _ = ctl.accept()
    _, fds, _, _ = socket.recv_fds(c, 16, 1)
    agent_conn = socket.socket(fileno=fds[0])

    def relay():
        lst.settimeout(20)
        g, _ = lst.accept()
        threading.Thread(target=splice, args=(agent_conn, g), daemon=True).start()
        splice(g, agent_conn)

    threading.Thread(target=relay, daemon=True).start()
    ch = grpc.insecure_channel("unix:" + front)
    stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
    box = {}

    def served():
        r, code = first_x509(stub, pb, timeout=5)
        box["r"], box["code"] = r, code
        return r is not None and sid in {s.spiffe_id for s in r.svids}

    check(wait_for(served, 30, 0.2), "connect-then-exec: the connector, running the trusted binary, gets its SVID",
          str(box.get("code")))
    c.send(b"x")  # now exec another binary, same PID, same connection
    exe = f"/proc/{proc.pid}/exe"
    check(wait_for(lambda: os.path.realpath(exe) == then, 10), "connect-then-exec: the connector exec'd sleep")
    r, code = first_x509(stub, pb, timeout=5)
    check(r is None and code == grpc.StatusCode.PERMISSION_DENIED,
          "connect-then-exec: its next call on the same connection: PERMISSION_DENIED",
          f"{code} {[s.spiffe_id for s in r.svids] if r else ''}")
    try:
        stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["a"]), metadata=MD, timeout=5)
        jcode = grpc.StatusCode.OK
    except grpc.RpcError as e:
        jcode = e.code()
    check(jcode == grpc.StatusCode.PERMISSION_DENIED, "connect-then-exec: FetchJWTSVID too: PERMISSION_DENIED",
          str(jcode))
    check("another executable" in env.agent.text(), "connect-then-exec: the agent logs why")
    ch.close()
    proc.kill()
    proc.wait()
    for x in (ctl, lst, c, agent_conn):
        x.close()


def server_down_and_restart(env, pb, pb_grpc, ids, token, before):
    rc = env.server.stop(signal.SIGKILL)
    check(rc == -9, "server killed (SIGKILL)")
    time.sleep(1)
    ch, stub = stub_for(env, pb_grpc)
    r, code = first_x509(stub, pb)
    check(r is not None and summary(r).get(ids["a"]) == summary(before).get(ids["a"]),
          "server down: the agent still serves the cached SVIDs", str(code))
    b = next(stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=MD, timeout=10))
    check(f"spiffe://{TD}" in b.bundles, "server down: bundles still served")
    rc, out, err = agent_cli("healthcheck", "-socketPath", env.agent_sock)
    check(rc == 0, "server down: healthcheck still healthy", out + err)

    # A stream open during SIGTERM ends UNAVAILABLE; the agent exits 0.
    w = StreamWatcher(stub, pb)
    w.start()
    wait_for(lambda: w.snapshot(), 5)
    rc = env.agent.stop(signal.SIGTERM)
    w.join(timeout=10)
    check(rc == 0, "agent: SIGTERM -> exit 0", env.agent.text()[-2000:])
    check(w.end is not None and w.end[1] == grpc.StatusCode.UNAVAILABLE, "SIGTERM: open streams end UNAVAILABLE",
          str(w.end))
    check(not os.path.exists(env.agent_sock), "SIGTERM: the socket is removed")
    ch.close()

    # Restart without a token (and without the bootstrap bundle), the server still down.
    t0 = time.time()
    env.start_agent(token=None, bundle=False)
    ch, stub = stub_for(env, pb_grpc)
    got = {}

    def served():
        if not os.path.exists(env.agent_sock):
            return None
        r, code = first_x509(stub, pb, timeout=2)
        got["code"] = code
        return r
    r = wait_for(served, 20, step=0.02)
    figures["restart_without_server_first_svid_s"] = round(time.time() - t0, 3)
    check(r is not None and summary(r).get(ids["a"]) == summary(before).get(ids["a"])
          and summary(r).get(ids["r"]) is not None,
          "restart without token, server down: the same SVIDs are served at once",
          f"{got} {env.agent.text()[-3000:]}")
    check(r is not None and figures["restart_without_server_first_svid_s"] < 5,
          "restart: first SVID served in under 5 s", str(figures))
    ch.close()

    # The server back: the agent resumes with its persisted identity, a new entry reaches it.
    check(env.start_server(), "server restarted", env.server.text()[-2000:])
    new_id = f"spiffe://{TD}/workload/late"
    create_entry(env, new_id, ["unix:uid:0"])
    ch, stub = stub_for(env, pb_grpc)
    r = wait_ids(env, stub, pb, {new_id, ids["a"]}, timeout=60)
    check(r is not None, "server back: the agent resumes (same identity, no token) and gets a new entry",
          env.agent.text()[-3000:])
    rc, out, err = server_cli(env, "agent", "list")
    check(out.count(AGENT_ID) == 1 and out.count("SPIFFE ID") == 2, "still the same agent ID (and the ns agent)",
          out)
    ch.close()


def main():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        # Callers of other uids are the point of most scenarios: without them, none is run.
        skip("agent_e2e", "needs root and setpriv (callers of other uids)")
        sys.exit(exit_status())
    tmp = tempfile.mkdtemp(prefix="lanyard-agent-e2e-")
    os.chmod(tmp, 0o755)  # other uids reach the socket, the stubs and their output directories
    env = Env(tmp)
    env.pb_dir = os.path.join(tmp, "pb")
    os.makedirs(env.pb_dir)
    protoc(PROTO_DIR, env.pb_dir, "workload.proto")
    env.client_script = os.path.join(tmp, "wl_client.py")
    with open(env.client_script, "w") as f:
        f.write(CLIENT_SCRIPT)
    for root, dirs, files in os.walk(env.pb_dir):
        os.chmod(root, 0o755)
        for fn in files:
            os.chmod(os.path.join(root, fn), 0o644)
    os.chmod(env.client_script, 0o644)
    sys.path.insert(0, env.pb_dir)
    import workload_pb2 as pb
    import workload_pb2_grpc as pb_grpc

    try:
        refusals_at_startup(env)
        not_ready(env, pb, pb_grpc)
        token = startup(env)
        if failures:
            return
        data_files_private(env)
        ids = {k: f"spiffe://{TD}/workload/{k}" for k in ("a", "b", "x", "d")}
        ids["r"] = f"spiffe://{TD}/workload/rotating"
        entry_ids = {}
        entry_ids["a"] = create_entry(env, ids["a"], ["unix:uid:0"])
        time.sleep(1.1)  # created_at has second resolution: a is the oldest, so the default identity
        entry_ids["b"] = create_entry(env, ids["b"], [f"unix:uid:{UID_B}"])
        entry_ids["x"] = create_entry(env, ids["x"], ["unix:uid:0", "unix:gid:0"])
        entry_ids["r"] = create_entry(env, ids["r"], ["unix:uid:0"], ttl=20)
        entry_ids["d"] = create_entry(env, ids["d"], [f"unix:uid:{UID_DOOMED}"])
        before = fetch_x509(env, pb, pb_grpc, ids)
        if before is None:
            return
        header_and_denied(env, pb, pb_grpc)
        pid_namespace(env, pb, pb_grpc)
        mtls(env, pb, pb_grpc, ids)
        revocation(env, pb, pb_grpc, ids, entry_ids)
        rotation(env, pb, pb_grpc, ids)
        tok = jwt_checks(env, pb, pb_grpc, ids)
        cli_verbs(env, ids, tok)
        connect_then_exec(env, pb, pb_grpc)
        ch, stub = stub_for(env, pb_grpc)
        before, _ = first_x509(stub, pb)
        ch.close()
        server_down_and_restart(env, pb, pb_grpc, ids, token, before)
        rc = env.agent.stop(signal.SIGTERM)
        check(rc == 0, "agent: SIGTERM -> exit 0 (second run)", env.agent.text()[-2000:])
    finally:
        kill_all(env.agent, env.server)
        finish(tmp, with_figures=True)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
