#!/usr/bin/python3
"""go_federation.py: SPIFFE Federation end to end (issue 15, SPEC §3, §9),
with go-spiffe v2.9.0 (tests/interop/go) as the workloads.

    go_federation.py SERVER AGENT GO GO_SRC

Two trust domains on this machine, each a lanyard-server (own data dir and
SQLite datastore, own ports) and a lanyard-agent:
  a.test  bundle endpoint https_web (a certificate of a test CA made here),
          refresh_hint 2 s; federates with b.test dynamically (`federation
          create`, https_spiffe, endpoint_spiffe_id
          spiffe://b.test/lanyard/server, bootstrapped with b.test's bundle
          through -trustDomainBundlePath);
  b.test  bundle endpoint https_spiffe, ca_ttl 60 s (its CA rotates during
          the test: a successor is published at 30 s and signs 6 s later),
          refresh_hint 2 s; federates with a.test statically (config) over
          https_web.
Workloads (copies of the Go program, told apart by unix:path):
  go-a    spiffe://a.test/go/a   -federatesWith spiffe://b.test
  go-p    spiffe://a.test/go/p   (no federation: must not see b.test)
  go-b    spiffe://b.test/go/b   -federatesWith spiffe://a.test
Checks:
  - go-a's X.509 context (FetchX509SVID stream) carries b.test's bundle in
    federated_bundles, and so do its X.509 and JWT bundle streams; go-p's
    have a.test only;
  - mTLS with go-spiffe's spiffetls and tlsconfig.AuthorizeID: go-b serves
    (authorizing spiffe://a.test/go/a), go-a dials (authorizing
    spiffe://b.test/go/b) every 200 ms through b.test's CA rotation: no
    connection fails;
  - a JWT-SVID of go-b (b.test) validates in a.test through go-a's agent
    (ValidateJWTSVID) and locally with the federated JWT bundle
    (FetchJWTBundles, jwtsvid.ParseAndValidate); go-p's local check fails
    (no b.test bundle);
  - rotation across the border: every X.509 authority go-b's SVIDs chain to
    reached go-a's open stream before go-b was first served an SVID signed
    by it; the new JWT key reached go-a's JWT bundle stream too.
Figures: b.test's bundle change (seen on its endpoint, polled every 50 ms)
to the update on go-a's open X.509 bundle stream in a.test, split at a.test's
server storing it (its log line); how long before go-b used the new
authority go-a had it.

Exits 0 when every check passed, 1 on a failure, 77 (SKIP) when it cannot
run here (no Go, no go-spiffe modules, or the federation CLI verbs missing).
"""
import datetime
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Daemon, check, failures, figures, finish, free_port, make_tls_pki, poller, run  # noqa: E402

wait_for = poller(0.1)
SKIP = 77
SERVER, AGENT, GO, GO_SRC = sys.argv[1:5]


def skip(why):
    print(f"SKIPPED: {why}", flush=True)
    sys.exit(SKIP)


def build_go_program(tmp):
    """Builds tests/interop/go into the test's own directory (offline, from the module cache)."""
    if not GO or not os.path.exists(GO):
        skip("no go command (Go 1.26 is needed: see scripts/peers/go.sh)")
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=readonly -buildvcs=false", GOTOOLCHAIN="local", GOWORK="off")
    r = subprocess.run([GO, "mod", "download"], cwd=GO_SRC, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        skip("go-spiffe's modules are not in the Go module cache (run scripts/peers/go.sh)")
    out = os.path.join(tmp, "lanyard-interop-go")
    r = subprocess.run(["nice", GO, "build", "-o", out, "."], cwd=GO_SRC, env=env, capture_output=True, text=True,
                       timeout=900)
    if not check(r.returncode == 0, "the go-spiffe test program builds", r.stderr[-3000:]):
        sys.exit(1)
    return out


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class Domain:
    """One trust domain: a server, an agent, and the CLI."""

    def __init__(self, tmp, td, fed_yaml, ca_ttl=None):
        self.td = td
        self.dir = os.path.join(tmp, td)
        os.makedirs(self.dir, mode=0o700)
        self.sock = os.path.join(self.dir, "server", "api.sock")
        self.agent_sock = os.path.join(self.dir, "agent", "public", "api.sock")
        self.addr = "unix://" + self.agent_sock
        self.port = free_port()
        self.agent_id = f"spiffe://{td}/lanyard/agent/node1"
        cfg = os.path.join(self.dir, "server.yaml")
        write(cfg, f"server:\n  trust_domain: {td}\n  bind_address: 127.0.0.1\n  server_port: {self.port}\n"
                   f"  socket_path: {self.sock}\n  data_dir: {self.dir}/server-data\n  log_level: debug\n"
                   + (f"  ca_ttl: {ca_ttl}\n" if ca_ttl else "") + fed_yaml)
        self.server = Daemon([SERVER, "run", "-config", cfg], os.path.join(self.dir, "server.log"))
        self.agent = None

    def cli(self, *args):
        return run([SERVER, *args, "-socketPath", self.sock], timeout=30)

    def wait_server(self):
        return check(wait_for(lambda: not self.server.alive() or self.cli("healthcheck")[0] == 0, 40)
                     and self.server.alive(), f"{self.td}: lanyard-server starts", self.server.text()[-1500:])

    def start_agent(self):
        rc, bundle, err = self.cli("bundle", "show")
        boot = os.path.join(self.dir, "bootstrap.pem")
        write(boot, bundle, 0o644)
        rc, out, err = self.cli("token", "generate", "-spiffeID", self.agent_id)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, f"{self.td}: token generate", err):
            return False
        self.agent = Daemon([AGENT, "run", "-trustDomain", self.td, "-serverAddress", "127.0.0.1", "-serverPort",
                             str(self.port), "-socketPath", self.agent_sock, "-dataDir",
                             os.path.join(self.dir, "agent-data"), "-joinToken", m.group(1), "-trustBundle", boot,
                             "-logLevel", "debug"],
                            os.path.join(self.dir, "agent.log"))
        return check(wait_for(lambda: not self.agent.alive() or
                              run([AGENT, "healthcheck", "-socketPath", self.agent_sock])[0] == 0, 40)
                     and self.agent.alive(), f"{self.td}: lanyard-agent starts", self.agent.text()[-1500:])

    def entry(self, spiffe_id, path, *extra):
        args = ["entry", "create", "-spiffeID", spiffe_id, "-parentID", self.agent_id, "-selector", "unix:uid:0",
                "-selector", f"unix:path:{os.path.realpath(path)}", "-x509SVIDTTL", "20", *extra]
        rc, out, err = self.cli(*args)
        return rc, out, err

    def stop(self):
        rcs = {}
        for name, d in (("agent", self.agent), ("server", self.server)):
            if d is not None:
                rcs[name] = d.stop()
        check(all(rc == 0 for rc in rcs.values()), f"{self.td}: the daemons exit 0 on SIGTERM", json.dumps(rcs))
        reports = [ln for d in (self.agent, self.server) if d is not None for ln in d.text().splitlines()
                   if "Sanitizer" in ln or "runtime error:" in ln]
        check(not reports, f"{self.td}: no sanitizer report in the daemons' logs", "\n".join(reports[:5]))


class Proc:
    """A Go program in the background: its JSON lines with their arrival, and plain lines."""

    def __init__(self, args, log_path):
        self.lines = []
        self.lock = threading.Lock()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "text", "line": line.rstrip("\n"), "t": time.time()}
            with self.lock:
                self.lines.append(ev)

    def events(self, kind=None):
        with self.lock:
            return [e for e in self.lines if kind is None or e.get("ev") == kind]

    def last(self, kind):
        ev = self.events(kind)
        return ev[-1] if ev else None

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=5)
        self.log.close()


def endpoint_keys(port):
    """b.test's bundle as its endpoint serves it: (x5c certificates' SHA-256 prefixes, kids); None on failure."""
    import base64
    import hashlib
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with ctx.wrap_socket(s) as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while True:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    doc = json.loads(body)
    x5 = sorted(hashlib.sha256(base64.b64decode(k["x5c"][0])).hexdigest()[:16] for k in doc.get("keys", [])
                if k.get("use") == "x509-svid")
    kids = sorted(k.get("kid") for k in doc.get("keys", []) if k.get("use") == "jwt-svid")
    return x5, kids


def log_times(text, needle):
    """Unix times of the log lines holding `needle` (the daemons log ISO 8601 UTC with milliseconds)."""
    out = []
    for ln in text.splitlines():
        if needle in ln:
            try:
                out.append(datetime.datetime.strptime(ln.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
                           .replace(tzinfo=datetime.timezone.utc).timestamp())
            except ValueError:
                pass
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-gofed-")
    prog = build_go_program(tmp)
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    go_a, go_p, go_b = (shutil.copy2(prog, os.path.join(bindir, n)) for n in ("go-a", "go-p", "go-b"))
    pki = os.path.join(tmp, "pki")
    os.makedirs(pki)
    make_tls_pki(pki, "ep", "127.0.0.1")
    os.chmod(os.path.join(pki, "ep.key"), 0o600)
    pa, pb = free_port(), free_port()
    A = B = None
    procs = []
    try:
        # a.test first: b.test's static relationship fetches a.test's bundle as it starts.
        A = Domain(tmp, "a.test",
                   f"  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pa}\n"
                   f"      refresh_hint: 2s\n      profile:\n        https_web:\n          serving_cert_file:\n"
                   f"            cert_file_path: {pki}/ep.crt\n            key_file_path: {pki}/ep.key\n")
        if not A.wait_server():
            return
        B = Domain(tmp, "b.test",
                   f"  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pb}\n"
                   f"      refresh_hint: 2s\n      profile:\n        https_spiffe: {{}}\n"
                   f"    https_web_ca_file: {pki}/ca.crt\n    federates_with:\n"
                   f"      \"a.test\":\n        bundle_endpoint_url: https://127.0.0.1:{pa}\n"
                   f"        bundle_endpoint_profile:\n          https_web: {{}}\n", ca_ttl=60)
        if not B.wait_server():
            return
        rc, out, err = A.cli("bundle", "count")
        if rc != 0:
            skip(f"the federation CLI verbs are not available (`bundle count`: {err.strip()[:120]})")
        got = wait_for(lambda: "spiffe://a.test" in B.cli("bundle", "list")[1], 30, 0.5)
        check(bool(got), "b.test fetched a.test's bundle (static relationship, https_web)", B.server.text()[-800:])
        # https_spiffe is bootstrapped by the operator with b.test's bundle, obtained out of band.
        rc, bpem, err = B.cli("bundle", "show")
        write(os.path.join(tmp, "b.pem"), bpem)
        rc, out, err = A.cli("federation", "create", "-trustDomain", "b.test", "-bundleEndpointURL",
                             f"https://127.0.0.1:{pb}", "-bundleEndpointProfile", "https_spiffe",
                             "-endpointSpiffeID", "spiffe://b.test/lanyard/server",
                             "-trustDomainBundlePath", os.path.join(tmp, "b.pem"))
        check(rc == 0, "a.test: federation create -trustDomain b.test (dynamic, https_spiffe, bootstrap bundle)", err)
        got = wait_for(lambda: "spiffe://b.test" in A.cli("bundle", "list")[1], 30, 0.5)
        check(bool(got), "a.test holds b.test's bundle (later changes come over https_spiffe: the rotation below)",
              A.server.text()[-800:])
        if not (A.start_agent() and B.start_agent()):
            return
        rc, out, err = A.entry("spiffe://a.test/go/a", go_a, "-federatesWith", "spiffe://b.test")
        if rc != 0 and "federatesWith" in err:
            skip(f"entry create -federatesWith is not available: {err.strip()[:120]}")
        check(rc == 0, "a.test: entry go/a -federatesWith spiffe://b.test", err)
        rc, out, err = A.entry("spiffe://a.test/go/p", go_p)
        check(rc == 0, "a.test: entry go/p (no federation)", err)
        rc, out, err = B.entry("spiffe://b.test/go/b", go_b, "-federatesWith", "spiffe://a.test")
        check(rc == 0, "b.test: entry go/b -federatesWith spiffe://a.test", err)

        # ---- what each workload is served ----
        wa = Proc([go_a, "watch", "-socket", A.addr], os.path.join(tmp, "watch-a.jsonl"))
        wb = Proc([go_b, "watch", "-socket", B.addr], os.path.join(tmp, "watch-b.jsonl"))
        wp = Proc([go_p, "watch", "-socket", A.addr], os.path.join(tmp, "watch-p.jsonl"))
        procs += [wa, wb, wp]

        def has_fed(w, td):
            ctx, xb, jb = w.last("x509context"), w.last("x509bundles"), w.last("jwtbundles")
            return ctx and xb and jb and td in ctx["bundles"] and td in xb["bundles"] and td in jb["bundles"]
        check(bool(wait_for(lambda: has_fed(wa, "b.test"), 40)),
              "go-a (a.test, federates with b.test): b.test's bundle in its X.509 context (federated_bundles), "
              "X.509 bundles and JWT bundles", json.dumps(wa.events()[-4:]))
        check(bool(wait_for(lambda: has_fed(wb, "a.test"), 40)),
              "go-b (b.test, federates with a.test): a.test's bundle on all three streams",
              json.dumps(wb.events()[-4:]))
        wait_for(lambda: wp.last("x509context") and wp.last("x509bundles") and wp.last("jwtbundles"), 30)
        pc, px, pj = wp.last("x509context"), wp.last("x509bundles"), wp.last("jwtbundles")
        check(pc is not None and px is not None and pj is not None and list(pc["bundles"]) == ["a.test"] and
              list(px["bundles"]) == ["a.test"] and list(pj["bundles"]) == ["a.test"],
              "go-p (a.test, no federation): a.test's bundle alone on every stream (another entry's federation "
              "is not shown)", json.dumps([pc, px, pj]))

        # ---- mTLS across the border, looping through b.test's CA rotation ----
        port = free_port()
        srv = Proc([go_b, "serve", "-socket", B.addr, "-port", str(port), "-id", "spiffe://a.test/go/a"],
                   os.path.join(tmp, "serve-b.log"))
        procs.append(srv)
        check(bool(wait_for(lambda: any("listening" in e.get("line", "") for e in srv.events("text")), 30)),
              "go-b serves spiffetls mTLS (AuthorizeID spiffe://a.test/go/a)", json.dumps(srv.events()[-3:]))
        rc, out, err = run([go_a, "dial", "-socket", A.addr, "-port", str(port), "-id", "spiffe://b.test/go/b",
                            "-message", "hello"], timeout=40)
        check(rc == 0 and "connected to spiffe://b.test/go/b as spiffe://a.test/go/a" in out,
              "go-a (a.test) dials go-b (b.test) with spiffetls, AuthorizeID spiffe://b.test/go/b: connected", out + err)
        rc, out, err = run([go_p, "dial", "-socket", A.addr, "-port", str(port), "-id", "spiffe://b.test/go/b"],
                           timeout=40)
        check(rc != 0, "go-p (no federation) cannot verify go-b: the dial fails", out + err)
        loop = Proc([go_a, "dialloop", "-socket", A.addr, "-port", str(port), "-id", "spiffe://b.test/go/b",
                     "-interval", "200ms"], os.path.join(tmp, "dialloop-a.jsonl"))
        procs.append(loop)

        # ---- JWT-SVID of b.test, validated in a.test ----
        rc, out, err = run([go_b, "jwtmint", "-socket", B.addr, "-aud", "svc-a"])
        tok = next((e for e in map(json.loads, out.splitlines()) if e.get("ev") == "jwtmint"), {}) if rc == 0 else {}
        if check(tok.get("id") == "spiffe://b.test/go/b", "go-b: a JWT-SVID from b.test for audience svc-a", err):
            rc, out, err = run([go_a, "jwtverify", "-socket", A.addr, "-token", tok["token"], "-aud", "svc-a"])
            v = next((e for e in map(json.loads, out.splitlines()) if e.get("ev") == "jwtverify"), {})
            check(v.get("agent") == "ok spiffe://b.test/go/b",
                  "a.test's agent validates b.test's JWT-SVID (ValidateJWTSVID)", json.dumps(v) + err)
            check(v.get("local") == "ok spiffe://b.test/go/b" and "b.test" in v.get("bundles", {}),
                  "go-a validates it locally with the federated JWT bundle (FetchJWTBundles, "
                  "jwtsvid.ParseAndValidate)", json.dumps(v))
            check(v.get("x509bundles") == ["a.test", "b.test"], "go-a's FetchX509Bundles: a.test and b.test",
                  json.dumps(v))
            rc, out, err = run([go_b, "jwtverify", "-socket", B.addr, "-token", tok["token"], "-aud", "svc-other"])
            v = next((e for e in map(json.loads, out.splitlines()) if e.get("ev") == "jwtverify"), {})
            check(str(v.get("local", "")).startswith("refused"), "another audience is refused", json.dumps(v))
            rc, out, err = run([go_p, "jwtverify", "-socket", A.addr, "-token", tok["token"], "-aud", "svc-a"])
            v = next((e for e in map(json.loads, out.splitlines()) if e.get("ev") == "jwtverify"), {})
            check(str(v.get("local", "")).startswith("refused") and list(v.get("bundles", {})) == ["a.test"],
                  "go-p (no federation): no b.test JWT bundle, the local validation fails", json.dumps(v))
            check(str(v.get("agent", "")).startswith("refused"),
                  "go-p (no federation): its agent does not validate b.test's token either (SPIRE's rule: the "
                  "caller's bundles)", json.dumps(v))

        # ---- b.test's CA rotation, seen from a.test ----
        changes = []  # (time, x509 authorities, kids) of b.test's endpoint, each time they change
        stop = threading.Event()

        def poll_endpoint():
            last = None
            while not stop.is_set():
                k = endpoint_keys(pb)
                if k is not None and k != last:
                    changes.append((time.time(), k[0], k[1]))
                    last = k
                time.sleep(0.05)
        poller_thread = threading.Thread(target=poll_endpoint, daemon=True)
        poller_thread.start()

        def roots_b():
            return [e for e in wb.events("source") if e.get("root")]
        first_root = (roots_b() or [{}])[0].get("root")
        # A rotation: go-b is served an SVID under another authority (its CA's successor signs).
        rotated = wait_for(lambda: [e for e in roots_b() if e["root"] != first_root], 100, 0.5)
        check(bool(rotated), "b.test's CA rotated: go-b is served an SVID under the new authority",
              json.dumps(roots_b()[-3:]))
        time.sleep(3)
        stop.set()
        poller_thread.join(timeout=10)
        loop.stop()
        summary = loop.last("dialloop") or {}
        fails = loop.events("dial-failed")
        check(summary.get("ok", 0) >= 20 and summary.get("fail", 1) == 0,
              f"mTLS a.test -> b.test every 200 ms through the rotation: {summary.get('ok', 0)} connections, "
              f"none failed", json.dumps(fails[:3]))
        if rotated:
            new_root = rotated[0]["root"]
            t_used = rotated[0]["t"]
            seen = [e["t"] for e in wa.events("x509bundles") if new_root in e["bundles"].get("b.test", [])]
            seen_ctx = [e["t"] for e in wa.events("x509context") if new_root in e["bundles"].get("b.test", [])]
            check(bool(seen) and bool(seen_ctx) and seen[0] < t_used and seen_ctx[0] < t_used,
                  "the new b.test authority reached go-a's open streams (X.509 bundles, X.509 context) before "
                  "go-b was served an SVID signed by it",
                  json.dumps({"seen": seen[:1], "seen_ctx": seen_ctx[:1], "used": t_used}))
            if seen:
                figures["b_new_authority_lead_s"] = round(t_used - seen[0], 2)
            # The propagation: b.test's endpoint serving the new authority -> go-a's open stream.
            pub = [t for t, x5, _ in changes if new_root in x5]
            if check(bool(pub) and bool(seen), "b.test's endpoint published the new authority (polled every 50 ms)",
                     json.dumps([(round(t, 2), x5) for t, x5, _ in changes])):
                figures["b_bundle_change_to_a_stream_s"] = round(seen[0] - pub[0], 2)
                # Split: a.test's server stores it (its log line, ms), then its agent and the stream.
                stored = [ts for ts in log_times(A.server.text(), "federated bundle of b.test set") if ts >= pub[0] - 0.2]
                if stored:
                    figures["b_change_to_a_stored_s"] = round(stored[0] - pub[0], 2)
                    figures["a_stored_to_a_stream_s"] = round(seen[0] - stored[0], 3)
            # JWT: the new key's kid reached go-a's JWT bundle stream.
            kids0 = changes[0][2] if changes else []
            new_kids = sorted({k for _, _, ks in changes for k in ks} - set(kids0))
            jseen = [e["t"] for e in wa.events("jwtbundles")
                     if new_kids and set(new_kids) <= set(e["bundles"].get("b.test", []))]
            check(bool(new_kids) and bool(jseen), "b.test's new JWT key reached go-a's JWT bundle stream",
                  json.dumps({"new_kids": new_kids}))
        for w, what in ((wa, "go-a"), (wb, "go-b"), (wp, "go-p")):
            perr = [e for e in w.events("watch-error") if not e.get("msg", "").startswith("rpc error:")]
            check(not perr and not w.events("watch-ended"), f"{what}: go-spiffe parsed every response, no watch ended",
                  json.dumps(perr[:3]))
    finally:
        for p in procs:
            p.stop()
        for d in (A, B):
            if d is not None:
                d.stop()
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if failures else 0)
