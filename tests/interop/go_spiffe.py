#!/usr/bin/python3
"""go_spiffe.py: go-spiffe v2.9.0 (the reference SPIFFE client, Go programs in
tests/interop/go/) and grpc-health-probe against a real lanyard-server and
lanyard-agent on 127.0.0.1 (issue 12, docs/compatibility.md).

    go_spiffe.py SERVER AGENT EX_SERVER EX_CLIENT GO GO_SRC SCENARIO

GO is the go command ("" when CMake found none), GO_SRC tests/interop/go.
The Go program is built (GOPROXY=off, -mod=readonly: modules from the cache
that scripts/peers/go.sh fills) into ${LANYARD_CACHE:-~/.cache/lanyard}/interop-go/bin;
without Go or the modules the scenario exits 77 (ctest SKIP_RETURN_CODE)
and says why. Workloads are told apart by `unix:path:` (copies of the Go
program and the C examples) plus `unix:uid:0`. Scenarios:

  basic      X509Source: first SVID and bundle, x509svid.Verify; the X.509
             and JWT bundle watches; JWT-SVID for two audiences validated
             through the agent (ValidateJWTSVID) and locally
             (jwtsvid.ParseAndValidate, with FetchJWTBundles and a JWTSource),
             another audience refused; FetchWITSVID UNIMPLEMENTED; hints
             (one SVID per hint: the agent leaves a duplicate out); spiffetls
             mTLS Go<->Go both directions (AuthorizeID, AuthorizeMemberOf),
             the C client library's examples against Go both ways, a wrong
             peer ID refused on each side.
  lifecycle  (server ca_ttl 60 s, X.509 TTL 20 s) rotations seen by the
             source on one stream at 45-55% of the lifetime; a CA rotation
             seen by the X.509 and JWT bundle watches and the source, the next
             SVID verified under the new authority, a JWT-SVID signed with
             the new key validated; an entry deleted (the
             source moves to the other SVID; the last one deleted: the watch
             gets PermissionDenied and retries by its backoff), created again
             (recovers by itself); a workload started before its entry exists
             (NewX509Source waits, retrying, and returns once it is created);
             the agent restarted under the open sources
             (reconnect by backoff, a new SVID served; one-shot fetches
             every 20 ms across it get a response go-spiffe accepts or
             UNAVAILABLE, nothing else). Throughout: no
             response a client rejects (empty svids, no bundle), no stream
             ended with OK or INVALID_ARGUMENT, no watch ended.
  basic.rsa-2048, basic.ec-p384, basic.upstream
             the same with the server's ca_key_type rsa-2048 (RS256 JWT-SVIDs,
             RSA CA certificates) and ec-p384 (ES384), and with an upstream
             CA (certs/make-dev-ca.sh: SVIDs carry the signing CA as an
             intermediate, the bundle is the upstream root).
  health     grpc-health-probe v0.4.63 against the agent's Workload API socket
             (grpc.health.v1: "" and SpiffeWorkloadAPI SERVING, another
             service NOT_FOUND); lanyard-server serves no grpc.health.v1.
Prints ok/FAIL per check and the figures; exits 1 on any failure.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Daemon, check, failures, figures, finish, free_port, poller, run  # noqa: E402

wait_for = poller(0.1)
SKIP = 77

SERVER, AGENT, EX_SERVER, EX_CLIENT, GO, GO_SRC, SCENARIO = sys.argv[1:8]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
CACHE = os.path.join(os.environ.get("LANYARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lanyard"),
                     "interop-go")
PROBE_VERSION = "v0.4.63"
MAKE_DEV_CA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "certs", "make-dev-ca.sh")


def skip(why):
    print(f"SKIPPED: {why}", flush=True)
    sys.exit(SKIP)


# ---- the Go program ----------------------------------------------------------------

def go_env():
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=readonly -buildvcs=false", GOTOOLCHAIN="local",
               GOWORK="off")
    return env


def build_go_program():
    """Builds tests/interop/go into the cache (an atomic rename: tests run in parallel); returns its path."""
    if not GO or not os.path.exists(GO):
        skip("no go command (Go 1.26 is needed: see scripts/peers/go.sh)")
    env = go_env()
    r = subprocess.run([GO, "mod", "download"], cwd=GO_SRC, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        skip(f"go-spiffe's modules are not in the Go module cache (run scripts/peers/go.sh): {last}")
    os.makedirs(os.path.join(CACHE, "bin"), exist_ok=True)
    out = os.path.join(CACHE, "bin", "lanyard-interop-go")
    tmp_out = f"{out}.{os.getpid()}"
    t0 = time.time()
    r = subprocess.run(["nice", GO, "build", "-o", tmp_out, "."], cwd=GO_SRC, env=env, capture_output=True,
                       text=True, timeout=900)
    if not check(r.returncode == 0, "the go-spiffe test program builds", r.stderr[-3000:]):
        sys.exit(1)
    os.replace(tmp_out, out)
    figures["go_build_s"] = round(time.time() - t0, 1)
    return out


# ---- daemons -------------------------------------------------------------------------

class Env:
    def __init__(self, tmp, ca_ttl=None, key_type=None):
        self.tmp = tmp
        self.server_sock = os.path.join(tmp, "server", "api.sock")
        self.agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        self.addr = "unix://" + self.agent_sock
        self.port = free_port()
        self.ca_ttl = ca_ttl
        self.key_type = key_type
        self.server = self.agent = None
        self.all = []  # every daemon started, restarts included

    def srv(self, *args):
        return run([SERVER, *args, "-socketPath", self.server_sock])

    def start(self):
        cfg = os.path.join(self.tmp, "server.yaml")
        with open(cfg, "w") as f:
            f.write(f"server:\n  trust_domain: {TD}\n" + (f"  ca_ttl: {self.ca_ttl}\n" if self.ca_ttl else ""))
            if self.key_type == "upstream":
                # certs/make-dev-ca.sh's upstream root: the signing CA is an intermediate under it.
                pki = os.path.join(self.tmp, "pki")
                rc, out, err = run(["bash", MAKE_DEV_CA, "-t", TD, pki])
                if not check(rc == 0, "certs/make-dev-ca.sh writes an upstream CA", err):
                    return False
                f.write(f"  upstream_ca:\n    cert_file: {pki}/upstream-ca.pem\n    key_file: {pki}/upstream-ca.key\n")
            elif self.key_type:
                f.write(f"  ca_key_type: {self.key_type}\n")
        self.server = Daemon([SERVER, "run", "-config", cfg, "-bindAddress", "127.0.0.1", "-serverPort",
                              str(self.port), "-socketPath", self.server_sock,
                              "-dataDir", os.path.join(self.tmp, "server-data")], os.path.join(self.tmp, "server.log"))
        self.all.append(self.server)
        if not check(wait_for(lambda: not self.server.alive() or self.srv("healthcheck")[0] == 0, 30)
                     and self.server.alive(), "lanyard-server starts", self.server.text()[-2000:]):
            return False
        rc, bundle, err = self.srv("bundle", "show")
        with open(os.path.join(self.tmp, "bootstrap.pem"), "w") as f:
            f.write(bundle)
        rc, out, err = self.srv("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, "token generate", err):
            return False
        return self.start_agent(m.group(1))

    def start_agent(self, token=None):
        args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(self.port),
                "-socketPath", self.agent_sock, "-dataDir", os.path.join(self.tmp, "agent-data")]
        if token:
            args += ["-joinToken", token, "-trustBundle", os.path.join(self.tmp, "bootstrap.pem")]
        self.agent = Daemon(args, os.path.join(self.tmp, "agent.log"))
        self.all.append(self.agent)
        return check(wait_for(lambda: not self.agent.alive() or
                              run([AGENT, "healthcheck", "-socketPath", self.agent_sock])[0] == 0, 30)
                     and self.agent.alive(), "lanyard-agent starts" + ("" if token else " again, without a token"),
                     self.agent.text()[-2000:])

    def entry(self, spiffe_id, path, ttl=None, hint=None):
        args = ["entry", "create", "-spiffeID", spiffe_id, "-parentID", AGENT_ID, "-selector", "unix:uid:0",
                "-selector", f"unix:path:{os.path.realpath(path)}"]
        if ttl:
            args += ["-x509SVIDTTL", str(ttl)]
        if hint:
            args += ["-hint", hint]
        rc, out, err = self.srv(*args)
        m = re.search(r"Entry ID\s*:\s*(\S+)", out)
        check(rc == 0 and m is not None, f"entry create {spiffe_id}", err)
        return m.group(1) if m else None

    def delete(self, entry_id):
        rc, out, err = self.srv("entry", "delete", "-entryID", entry_id)
        return check(rc == 0, f"entry delete {entry_id}", err)

    def stop(self):
        """Stops both daemons; every agent and server of the run must have exited 0 on SIGTERM with no
        sanitizer report in its log (an ASan build aborts on the first report)."""
        rcs = {}
        for d in self.all:
            rcs[os.path.basename(d.log_path) + f" pid {d.pid}"] = d.stop()
        if self.all:
            check(all(rc == 0 for rc in rcs.values()), "lanyard-server and every lanyard-agent exit 0 on SIGTERM",
                  json.dumps(rcs))
            reports = [ln for d in self.all for ln in d.text().splitlines()
                       if "Sanitizer" in ln or "runtime error:" in ln]
            check(not reports, "no sanitizer report in the daemons' logs", "\n".join(reports[:5]))


def copy_program(src, tmp, name):
    """A copy of the Go program at its own path: its own unix:path selector, its own identity."""
    d = os.path.join(tmp, "bin")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, name)
    shutil.copy2(src, dst)
    return dst


class Watch:
    """`lanyard-interop-go watch` in the background: its JSON lines, parsed, with arrival times."""

    def __init__(self, prog, env, name):
        self.lines = []
        self.lock = threading.Lock()
        self.log = open(os.path.join(env.tmp, f"{name}.jsonl"), "w")
        self.proc = subprocess.Popen([prog, "watch", "-socket", env.addr], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line}
            with self.lock:
                self.lines.append(ev)

    def events(self, kind=None, since=0.0):
        """Events up to the "closing" line (the test closed stdin: the watches end Canceled after it)."""
        with self.lock:
            out = []
            for e in self.lines:
                if e["ev"] == "closing":
                    break
                if (kind is None or e["ev"] == kind) and e.get("t", 0) >= since:
                    out.append(e)
            return out

    def last(self, kind):
        ev = self.events(kind)
        return ev[-1] if ev else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=5)
        self.log.close()


def stream_audit(w, what):
    """Nothing a client would reject on any Workload API stream the watch process had open."""
    ev = w.events("stream")
    bad_msgs = [e for e in ev if e["what"] == "msg" and e["problems"]]
    check(not bad_msgs, f"{what}: no response with empty svids, a missing bundle or empty bundles",
          json.dumps(bad_msgs[:3]))
    ends = [e for e in ev if e["what"] == "end"]
    check(not [e for e in ends if e["code"] == "OK"], f"{what}: no stream ended with OK",
          json.dumps([e for e in ends if e["code"] == "OK"][:3]))
    check(not [e for e in ev if e.get("code") == "InvalidArgument"], f"{what}: no INVALID_ARGUMENT on a stream",
          json.dumps([e for e in ev if e.get("code") == "InvalidArgument"][:3]))
    ended = w.events("watch-ended")
    check(not ended, f"{what}: no go-spiffe watch ended", json.dumps(ended))
    # A watch error that is no gRPC status is a response go-spiffe could not parse (the stream stays
    # open); the statuses (PermissionDenied, Unavailable) are the stream ends it retries on.
    perr = [e for e in w.events("watch-error") if not e["msg"].startswith("rpc error:")]
    check(not perr, f"{what}: go-spiffe parsed every response", json.dumps(perr[:3]))
    retried = sorted({e["code"] for e in w.events("watch-error")})
    check(set(retried) <= {"PermissionDenied", "Unavailable"},
          f"{what}: the watches saw only statuses go-spiffe retries on ({', '.join(retried) or 'none'})",
          json.dumps(retried))
    return ends


# ---- basic ----------------------------------------------------------------------------

def run_ok(args, what, want, timeout=30):
    rc, out, err = run(args, timeout=timeout)
    check(rc == 0 and all(w in out for w in want), what, f"rc {rc}: {out}{err}")
    return out


def scenario_basic(env, prog):
    a = copy_program(prog, env.tmp, "go-a")
    b = copy_program(prog, env.tmp, "go-b")
    id_a, id_b = f"spiffe://{TD}/go/a", f"spiffe://{TD}/go/b"
    id_cs, id_cc = f"spiffe://{TD}/c/server", f"spiffe://{TD}/c/client"
    env.entry(id_a, a)
    env.entry(id_b, b)
    env.entry(id_cs, EX_SERVER)
    env.entry(id_cc, EX_CLIENT)

    # ---- X509Source, bundles ----
    w = Watch(a, env, "watch-a")
    try:
        got = wait_for(lambda: w.last("ready") and w.last("x509bundles") and w.last("jwtbundles")
                       and w.last("x509context"), 30)
        check(got, "go-spiffe: NewX509Source returns, and the X.509 context, X.509 and JWT bundle watches "
              "get their first update", json.dumps(w.events()[-5:]))
        src = w.last("source") or {}
        check(src.get("id") == id_a and src.get("verify") == "ok" and src.get("bundle"),
              "X509Source: first SVID (its ID) and bundle; x509svid.Verify accepts the SVID", json.dumps(src))
        if env.key_type == "upstream":
            check(src.get("chain") == 2 and src.get("bundle") == [src.get("root")],
                  "upstream CA: the SVID comes with the signing CA (an intermediate) and chains to the upstream "
                  "root, the bundle's one authority", json.dumps(src))
        ctx = w.last("x509context") or {"svids": [], "bundles": {}}
        check([s["id"] for s in ctx["svids"]] == [id_a] and all(s["verify"] == "ok" for s in ctx["svids"]),
              "WatchX509Context: one SVID, verified with x509svid.Verify", json.dumps(ctx))
        xb = (w.last("x509bundles") or {}).get("bundles", {})
        jb = (w.last("jwtbundles") or {}).get("bundles", {})
        check(list(xb) == [TD] and xb[TD] == ctx["bundles"].get(TD) == src.get("bundle"),
              "WatchX509Bundles: our trust domain, the same authorities as the SVID response's bundle",
              json.dumps([xb, ctx["bundles"]]))
        check(list(jb) == [TD] and len(jb[TD]) >= 1 and all(jb[TD]),
              "WatchJWTBundles: our trust domain, every JWT key has a kid", json.dumps(jb))

        # ---- JWT ----
        rc, out, err = run([a, "jwt", "-socket", env.addr, "-aud", "svc-one,svc-two", "-wrong", "svc-other"])
        res = next((ev for ev in map(json.loads, out.splitlines()) if ev["ev"] == "jwt"), {}) if rc == 0 else {}
        check(rc == 0 and res.get("id") == id_a and sorted(res.get("aud", [])) == ["svc-one", "svc-two"],
              "FetchJWTSVID for two audiences: the token names both", out + err)
        want_alg = {"ec-p384": "ES384", "rsa-2048": "RS256"}.get(env.key_type, "ES256")
        check(res.get("alg") == want_alg, f"the JWT-SVID is signed {want_alg} ({env.key_type or 'ec-p256'} CA)",
              json.dumps([res.get("alg"), res.get("typ")]))
        for aud in ("svc-one", "svc-two"):
            check(res.get(f"agent:{aud}") == f"ok {id_a}",
                  f"workloadapi.ValidateJWTSVID (through the agent) accepts the token for {aud}", json.dumps(res))
            check(res.get(f"local:{aud}") == f"ok {id_a}" and res.get(f"source:{aud}") == f"ok {id_a}",
                  f"jwtsvid.ParseAndValidate (FetchJWTBundles, JWTSource) accepts the token for {aud}",
                  json.dumps(res))
        check(str(res.get("agent:svc-other", "")).startswith("refused")
              and str(res.get("local:svc-other", "")).startswith("refused")
              and str(res.get("source:svc-other", "")).startswith("refused"),
              "a token for another audience is refused by the agent and locally", json.dumps(res))
        check(res.get("source_token:svc-two") == f"ok {id_a}"
              and str(res.get("source_token:svc-one", "")).startswith("refused"),
              "JWTSource.FetchJWTSVID: a token for its one audience only", json.dumps(res))
        check(res.get("bundles", {}).get(TD) == jb.get(TD), "FetchJWTBundles: the same keys as the watch",
              json.dumps(res.get("bundles")))
        check(res.get("subject_own") == f"ok {id_a}", "FetchJWTSVID for its own SPIFFE ID (Subject)",
              json.dumps(res.get("subject_own")))
        check(res.get("subject_other") == "PermissionDenied",
              "FetchJWTSVID for an identity the caller does not have: PermissionDenied",
              json.dumps(res.get("subject_other")))
        check(res.get("wit") == "Unimplemented", "FetchWITSVID (newer Workload API): UNIMPLEMENTED",
              json.dumps(res.get("wit")))
    finally:
        w.stop()
    stream_audit(w, "basic")

    # ---- hints: three entries, two with the same hint ----
    h = copy_program(prog, env.tmp, "go-h")
    env.entry(f"spiffe://{TD}/go/h-internal", h, hint="internal")
    env.entry(f"spiffe://{TD}/go/h-internal-too", h, hint="internal")
    env.entry(f"spiffe://{TD}/go/h-external", h, hint="external")
    wh = Watch(h, env, "watch-hints")
    try:
        ctx = wait_for(lambda: wh.last("x509context"), 30) or {"svids": []}
        hints = [sv["hint"] for sv in ctx["svids"]]
        check(sorted(hints) == ["external", "internal"] and all(sv["verify"] == "ok" for sv in ctx["svids"]),
              "hints reach go-spiffe's X509Context, one SVID per hint", json.dumps(ctx["svids"]))
        sent = [e["svids"] for e in wh.events("stream") if e["what"] == "msg" and "svids" in e]
        check(sent and all(len(x) == 2 and len({i.split("#")[1] for i in x}) == 2 for x in sent),
              "the agent itself leaves the SVID with a duplicate hint out (SPEC §3: hints unique in a response)",
              json.dumps(sent))
        src = wh.last("source") or {}
        check(ctx["svids"] and src.get("id") == ctx["svids"][0]["id"],
              "the X509Source's default SVID is the response's first", json.dumps([src, ctx["svids"][:1]]))
    finally:
        wh.stop()
    stream_audit(wh, "hints")

    # ---- mTLS, Go <-> Go, both directions ----
    daemons = []
    try:
        for srv_prog, srv_id, cli_prog, cli_id in ((a, id_a, b, id_b), (b, id_b, a, id_a)):
            for mode, val in (("-id", cli_id), ("-td", TD)):
                port = free_port()
                s = Daemon([srv_prog, "serve", "-socket", env.addr, "-port", str(port), mode, val],
                           os.path.join(env.tmp, f"serve-{os.path.basename(srv_prog)}{mode}.log"))
                daemons.append(s)
                if not check(wait_for(lambda: "listening on" in s.text() or not s.alive(), 30),
                             f"spiffetls server {srv_id} listens ({mode})", s.text()[-1000:]):
                    continue
                for cmode, cval in (("-id", srv_id), ("-td", TD)):
                    run_ok([cli_prog, "dial", "-socket", env.addr, "-port", str(port), cmode, cval],
                           f"spiffetls mTLS: {cli_id} dials {srv_id} (server {mode}, client {cmode})",
                           [f"connected to {srv_id} as {cli_id}", f"answer: hello {cli_id}, this is {srv_id}"])
                for sock in ("unix://" + env.agent_sock, "unix:" + env.agent_sock):
                    rc, out, err = run([cli_prog, "dial", "-port", str(port), cmode, cval],
                                       env=dict(os.environ, SPIFFE_ENDPOINT_SOCKET=sock))
                    check(rc == 0 and f"answer: hello {cli_id}, this is {srv_id}" in out,
                          f"... the same with SPIFFE_ENDPOINT_SOCKET={sock.split(env.tmp)[0]}<path>", out + err)
                rc, out, err = run([cli_prog, "dial", "-socket", env.addr, "-port", str(port), "-id",
                                    f"spiffe://{TD}/go/not-the-server"])
                check(rc == 1 and "answer:" not in out and "unexpected ID" in err,
                      f"spiffetls client expecting another ID refuses {srv_id} (AuthorizeID)", out + err)
                rc, out, err = run([cli_prog, "dial", "-socket", env.addr, "-port", str(port), "-td", "other.org"])
                check(rc == 1 and "answer:" not in out, f"spiffetls client for other.org refuses {srv_id} "
                      "(AuthorizeMemberOf)", out + err)
                s.stop()

            # a server expecting another client ID refuses this one
            port = free_port()
            s = Daemon([srv_prog, "serve", "-socket", env.addr, "-port", str(port), "-id",
                        f"spiffe://{TD}/go/someone-else"], os.path.join(env.tmp, f"serve-wrong-{os.path.basename(srv_prog)}.log"))
            daemons.append(s)
            wait_for(lambda: "listening on" in s.text() or not s.alive(), 30)
            rc, out, err = run([cli_prog, "dial", "-socket", env.addr, "-port", str(port), "-id", srv_id])
            check(rc == 1 and "answer:" not in out, f"spiffetls server expecting another ID: {cli_id} gets no answer",
                  out + err)
            check(wait_for(lambda: "refused" in s.text() and "unexpected ID" in s.text(), 5)
                  and "accepted" not in s.text(), f"spiffetls server {srv_id} refuses {cli_id} (AuthorizeID)",
                  s.text()[-1000:])
            s.stop()

        # ---- across languages: the C client library's server, a go-spiffe client ----
        port = free_port()
        cs = Daemon([EX_SERVER, "-port", str(port), "-peerID", id_a, "-socketPath", env.agent_sock],
                    os.path.join(env.tmp, "c-server.log"))
        daemons.append(cs)
        check(wait_for(lambda: "listening on" in cs.text() or not cs.alive(), 30) and cs.alive(),
              "C example server listens", cs.text()[-1000:])
        run_ok([a, "dial", "-socket", env.addr, "-port", str(port), "-id", id_cs],
               "go-spiffe client (AuthorizeID) -> C library server: both authenticated",
               [f"connected to {id_cs} as {id_a}", f"answer: hello {id_a}, this is {id_cs}"])
        check(wait_for(lambda: f"accepted {id_a}" in cs.text(), 5), "C server accepted the go-spiffe client's ID",
              cs.text()[-1000:])
        run_ok([a, "dial", "-socket", env.addr, "-port", str(port), "-td", TD],
               "go-spiffe client (AuthorizeMemberOf) -> C library server", [f"connected to {id_cs} as {id_a}"])
        rc, out, err = run([a, "dial", "-socket", env.addr, "-port", str(port), "-id", f"spiffe://{TD}/c/other"])
        check(rc == 1 and "answer:" not in out and "unexpected ID" in err,
              "go-spiffe client expecting another ID refuses the C server", out + err)
        rc, out, err = run([b, "dial", "-socket", env.addr, "-port", str(port), "-id", id_cs])
        check(rc == 1 and "answer:" not in out, f"C server expecting {id_a} refuses the go-spiffe client {id_b}",
              out + err)
        check(wait_for(lambda: "not authorized" in cs.text(), 5) and f"accepted {id_b}" not in cs.text(),
              "C server says why it refused the wrong go-spiffe client", cs.text()[-1000:])
        cs.stop()

        # ---- across languages: a go-spiffe server, the C client library's client ----
        port = free_port()
        gs = Daemon([a, "serve", "-socket", env.addr, "-port", str(port), "-id", id_cc],
                    os.path.join(env.tmp, "go-server-c.log"))
        daemons.append(gs)
        check(wait_for(lambda: "listening on" in gs.text() or not gs.alive(), 30), "go-spiffe server listens",
              gs.text()[-1000:])
        run_ok([EX_CLIENT, "-port", str(port), "-peerID", id_a, "-socketPath", env.agent_sock],
               "C library client -> go-spiffe server (AuthorizeID): both authenticated",
               [f"connected to {id_a} as {id_cc}", f"answer: hello {id_cc}, this is {id_a}"])
        run_ok([EX_CLIENT, "-port", str(port), "-trustDomain", TD, "-socketPath", env.agent_sock],
               "C library client (-trustDomain) -> go-spiffe server", [f"connected to {id_a} as {id_cc}"])
        rc, out, err = run([EX_CLIENT, "-port", str(port), "-peerID", f"spiffe://{TD}/go/other",
                            "-socketPath", env.agent_sock])
        check(rc == 1 and "answer:" not in out and "not authorized" in err,
              "C client expecting another ID refuses the go-spiffe server", out + err)
        gs.stop()
        port = free_port()
        gs = Daemon([a, "serve", "-socket", env.addr, "-port", str(port), "-id", f"spiffe://{TD}/c/other"],
                    os.path.join(env.tmp, "go-server-c-wrong.log"))
        daemons.append(gs)
        wait_for(lambda: "listening on" in gs.text() or not gs.alive(), 30)
        rc, out, err = run([EX_CLIENT, "-port", str(port), "-peerID", id_a, "-socketPath", env.agent_sock])
        check(rc == 1 and "answer:" not in out, "go-spiffe server expecting another ID: the C client gets no answer",
              out + err)
        check(wait_for(lambda: "unexpected ID" in gs.text(), 5) and "accepted" not in gs.text(),
              "go-spiffe server refuses the C client (AuthorizeID)", gs.text()[-1000:])
    finally:
        for d in daemons:
            d.stop()


# ---- lifecycle --------------------------------------------------------------------------

def svid_of(ev, spiffe_id):
    return next((s for s in ev["svids"] if s["id"] == spiffe_id), None)


def scenario_lifecycle(env, prog, t_server):
    w_prog = copy_program(prog, env.tmp, "go-w")
    r_prog = copy_program(prog, env.tmp, "go-r")
    id_w = f"spiffe://{TD}/go/rotating"
    id_r1, id_r2 = f"spiffe://{TD}/go/revoked-1", f"spiffe://{TD}/go/revoked-2"
    env.entry(id_w, w_prog, ttl=20)
    r_entries = {id_r1: env.entry(id_r1, r_prog), id_r2: env.entry(id_r2, r_prog)}
    late_prog = copy_program(prog, env.tmp, "go-late")
    id_late = f"spiffe://{TD}/go/late"
    w = Watch(w_prog, env, "watch-rotating")
    r = Watch(r_prog, env, "watch-revoked")
    late = Watch(late_prog, env, "watch-late")  # started before its entry exists
    try:
        check(wait_for(lambda: w.last("ready") and r.last("ready") and w.last("x509bundles") and w.last("jwtbundles"),
                       30), "go-spiffe sources and watches are up", json.dumps(w.events()[-3:] + r.events()[-3:]))
        first_bundle = (w.last("x509bundles") or {}).get("bundles", {}).get(TD, [])
        first_kids = (w.last("jwtbundles") or {}).get("bundles", {}).get(TD, [])

        # ---- revocation (while the rotating workload's clock runs) ----
        wait_for(lambda: r.last("x509context") and len(r.last("x509context")["svids"]) == 2, 15)
        serving = (r.last("source") or {}).get("id")
        check(serving in (id_r1, id_r2) and len(r.last("x509context")["svids"]) == 2,
              "revocation: the workload holds two SVIDs, its X509Source serves one", json.dumps(r.last("source")))
        other = id_r2 if serving == id_r1 else id_r1
        t1 = time.time()
        env.delete(r_entries[serving])
        got = wait_for(lambda: next((e for e in r.events("source", t1) if e.get("id") == other), None), 15)
        check(got and got.get("verify") == "ok",
              "the served SVID's entry deleted: the X509Source stops serving it and serves the other one",
              json.dumps(r.events("source", t1)))
        ctx = wait_for(lambda: next((e for e in r.events("x509context", t1)
                                     if [s["id"] for s in e["svids"]] == [other]), None), 15)
        check(ctx, "the X.509 context watch gets the one SVID left", json.dumps(r.events("x509context", t1)))
        if got:
            figures["revocation_source_switch_s"] = round(got["t"] - t1, 2)
        t2 = time.time()
        env.delete(r_entries[other])
        denied = wait_for(lambda: next((e for e in r.events("stream", t2) if e["what"] == "end"
                                        and "FetchX509SVID" in e["method"]), None), 15)
        check(denied and denied["code"] == "PermissionDenied",
              "the last entry deleted: the stream ends PermissionDenied", json.dumps(denied))
        retry = wait_for(lambda: [e for e in r.events("log", t2) if "Retrying watch in" in e["msg"]], 10)
        check(retry and any("PermissionDenied" in e["msg"] for e in r.events("log", t2)
                            if "Failed to watch" in e["msg"]),
              "go-spiffe logs the PermissionDenied and retries by its backoff (1 s, 2 s, ...)",
              json.dumps(r.events("log", t2)[-6:]))
        if denied:
            figures["revocation_permission_denied_s"] = round(denied["t"] - t2, 2)
        time.sleep(3)  # a few retries, each PermissionDenied
        retries = [e for e in r.events("log", t2) if "Retrying watch in" in e["msg"] and e["who"] == "source"]
        check(len(retries) >= 2 and not r.events("watch-ended"),
              "the watches keep retrying while the workload has no identity", json.dumps(retries[-4:]))
        figures["revocation_source_retry_delays"] = [e["msg"].split()[-1] for e in retries]
        t3 = time.time()
        new_id = env.entry(id_r1, r_prog)
        back = wait_for(lambda: next((e for e in r.events("x509context", t3)
                                      if [s["id"] for s in e["svids"]] == [id_r1]), None), 40)
        check(back and back["svids"][0]["verify"] == "ok",
              "the entry created again: the watch recovers by itself (no restart of the client)",
              json.dumps(r.events("log", t3)[-4:]))
        src_back = wait_for(lambda: next((e for e in r.events("source", t3) if e.get("id") == id_r1), None), 10)
        check(src_back, "... and the X509Source serves the new SVID", json.dumps(r.events("source", t3)))
        if back:
            figures["revocation_recovery_s"] = round(back["t"] - t3, 2)
        check(new_id is not None, "entry created again")

        # ---- a workload started before its entry: NewX509Source waits, retrying, then returns ----
        denied = [e for e in late.events("log") if "Failed to watch" in e["msg"] and "PermissionDenied" in e["msg"]]
        check(not late.events("ready") and len(denied) >= 2 and late.proc.poll() is None,
              "no entry yet: NewX509Source keeps waiting, its watch retrying on PermissionDenied",
              json.dumps(late.events()[-4:]))
        t6 = time.time()
        env.entry(id_late, late_prog)
        ready = wait_for(lambda: late.last("ready"), 40)
        src = late.last("source") or {}
        check(ready and src.get("id") == id_late and src.get("verify") == "ok",
              "its entry created: NewX509Source returns with the SVID, on its own", json.dumps(late.events()[-4:]))
        if ready:
            figures["late_entry_source_ready_s"] = round(ready["t"] - t6, 2)

        # ---- rotations and the CA rotation (server ca_ttl 60 s: a successor at ~30 s) ----
        def rotation_done():
            seen = serials(w, id_w)
            xb = (w.last("x509bundles") or {}).get("bundles", {}).get(TD, [])
            newer = [e for e in w.events("x509context") if svid_of(e, id_w) and svid_of(e, id_w).get("root")
                     and svid_of(e, id_w)["root"] not in first_bundle]
            return len(seen) >= 4 and len(xb) > len(first_bundle) and newer
        wait_for(rotation_done, max(5, 75 - (time.time() - t_server)), step=0.5)
        seen = serials(w, id_w)
        check(len(seen) >= 3, "rotation: new SVIDs reach the X509Source", json.dumps(seen))
        check(seen and seen[0].get("root") in first_bundle, "the first SVID chains to the first bundle's root",
              json.dumps([seen[:1], first_bundle]))
        fracs = [round((n["t"] - p["nb"]) / (p["na"] - p["nb"]), 3) for p, n in zip(seen, seen[1:])]
        figures["rotation_fraction_of_lifetime"] = fracs
        figures["rotation_lifetime_s"] = [p["na"] - p["nb"] for p in seen]
        # Arrival = renewal time + issuance + delivery: 0.5 s of delivery allowed past 55%.
        check(fracs and all(0.45 <= f <= 0.55 + 0.5 / (p["na"] - p["nb"]) for f, p in zip(fracs, seen)),
              "rotation: the X509Source sees each new SVID within [45%, 55%] of the previous one's lifetime",
              str(fracs))
        opens = [e for e in w.events("stream") if e["what"] == "open" and e["who"] == "source"
                 and "FetchX509SVID" in e["method"]]
        check(len(opens) == 1, "rotation: all on the X509Source's first stream (no reconnection)",
              json.dumps(opens))
        xb = (w.last("x509bundles") or {}).get("bundles", {}).get(TD, [])
        jb = (w.last("jwtbundles") or {}).get("bundles", {}).get(TD, [])
        check(len(xb) > len(first_bundle) and set(first_bundle) <= set(xb),
              "CA rotation: WatchX509Bundles gets the successor authority beside the current one",
              json.dumps([first_bundle, xb]))
        check(set(jb) - set(first_kids), "CA rotation: WatchJWTBundles gets the successor JWT key",
              json.dumps([first_kids, jb]))
        src = w.last("source") or {}
        check(len(src.get("bundle", [])) > len(first_bundle), "CA rotation: the X509Source's bundle has it too",
              json.dumps(src))
        newer = [e for e in w.events("x509context") if svid_of(e, id_w) and svid_of(e, id_w).get("root")
                 and svid_of(e, id_w)["root"] not in first_bundle]
        check(newer and svid_of(newer[0], id_w)["verify"] == "ok",
              "CA rotation: an SVID issued under the new root verifies with x509svid.Verify against the "
              "watched bundle", json.dumps(newer[:1]))
        src_new = [e for e in w.events("source") if e.get("root") and e["root"] not in first_bundle]
        check(src_new and src_new[0]["verify"] == "ok", "CA rotation: the X509Source serves it",
              json.dumps(w.events("source")[-2:]))
        # A JWT-SVID now: signed with the successor's JWT key, validated locally with the watched bundle.
        rc, out, err = run([w_prog, "jwt", "-socket", env.addr, "-aud", "svc-one,svc-two", "-wrong", "svc-other"])
        res = next((ev for ev in map(json.loads, out.splitlines()) if ev["ev"] == "jwt"), {}) if rc == 0 else {}
        check(res.get("kid") in set(jb) - set(first_kids) and res.get("local:svc-one") == f"ok {id_w}"
              and res.get("agent:svc-one") == f"ok {id_w}",
              "CA rotation: a new JWT-SVID is signed with the successor's key and validates (agent and "
              "jwtsvid.ParseAndValidate)", json.dumps([res.get("kid"), first_kids, jb, res.get("local:svc-one")]))
        figures["ca_rotation_seen_s_after_server_start"] = round(
            next((e["t"] for e in w.events("x509bundles") if len(e["bundles"].get(TD, [])) > len(first_bundle)),
                 0) - t_server, 1)

        # ---- the agent restarted under the open sources ----
        before = {s["serial"] for s in serials(w, id_w)}
        # One-shot go-spiffe fetches every 20 ms across the restart (as the rotating workload).
        poller_proc = subprocess.Popen([w_prog, "poll", "-socket", env.addr], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.5)
        t4 = time.time()
        env.agent.stop()
        ends = wait_for(lambda: [e for e in w.events("stream", t4) if e["what"] == "end"], 10)
        check(ends and all(e["code"] == "Unavailable" for e in ends),
              "agent stopped: the open streams end UNAVAILABLE", json.dumps(ends))
        env.start_agent()
        t5 = time.time()
        fresh = wait_for(lambda: next((e for e in w.events("source", t5) if e.get("id") == id_w
                                       and e.get("serial") not in before and e.get("verify") == "ok"), None),
                         45, step=0.5)
        check(fresh, "after the agent's restart the X509Source reconnects by its backoff and serves a new SVID",
              json.dumps(w.events("log", t4)[-6:]))
        backoff = [e["msg"].split()[-1] for e in w.events("log", t4) if "Retrying watch in" in e["msg"]
                   and e["who"] == "source"]
        check(backoff and backoff[0] == "1s", "the X509Source's watch retried by go-spiffe's own backoff",
              json.dumps(backoff))
        figures["restart_source_retry_delays"] = backoff
        reopened = [e for e in w.events("stream", t4) if e["what"] == "msg" and e["who"] == "source"]
        check(reopened, "the source's stream is open again and receiving", "")
        rback = wait_for(lambda: next((e for e in r.events("x509context", t5)
                                       if [s["id"] for s in e["svids"]] == [id_r1]), None), 30)
        check(rback, "the other workload's watch reconnects too", json.dumps(r.events("log", t4)[-4:]))
        out, _ = poller_proc.communicate(input="", timeout=30)
        counts = next((e["counts"] for e in map(json.loads, out.splitlines()) if e["ev"] == "poll"), {})
        figures["restart_one_shot_fetches"] = counts
        check(counts and all(k.endswith((" ok", " Unavailable")) for k in counts)
              and all(counts.get(f"{m} ok", 0) > 0 for m in ("x509context", "x509bundles", "jwtbundles")),
              "one-shot fetches across the restart: each accepted by go-spiffe or UNAVAILABLE, nothing else",
              json.dumps(counts))
        if fresh:
            figures["restart_new_svid_s_after_agent_start"] = round(fresh["t"] - t5, 2)
        firsts = [e for e in w.events("stream", t5) if e["what"] == "msg" and e["n"] == 1]
        if firsts:
            figures["restart_first_message_s_after_agent_start"] = round(min(e["t"] for e in firsts) - t5, 2)
    finally:
        w.stop()
        r.stop()
        late.stop()
    stream_audit(w, "rotating workload")
    stream_audit(r, "revoked workload")
    stream_audit(late, "late workload")


def serials(w, spiffe_id):
    """The distinct SVIDs the X509Source served for spiffe_id, in order of arrival."""
    out = []
    for e in w.events("source"):
        if e.get("id") == spiffe_id and (not out or out[-1]["serial"] != e["serial"]) \
                and e["serial"] not in {x["serial"] for x in out}:
            out.append(e)
    return out


# ---- health ------------------------------------------------------------------------------

def health_probe():
    """grpc-health-probe from the cache, at the pinned version (go version -m reads its build info)."""
    if not GO or not os.path.exists(GO):
        skip("no go command: grpc-health-probe's version cannot be checked (see scripts/peers/go.sh)")
    probe = os.path.join(CACHE, "bin", "grpc-health-probe")
    rc, out, err = run(["sh", "-c", f"{GO} version -m {probe} 2>/dev/null | grep -w mod"])
    if not os.path.exists(probe) or PROBE_VERSION not in out:
        skip(f"grpc-health-probe {PROBE_VERSION} not in {probe} (run scripts/peers/go.sh)")
    return probe


def scenario_health(env, probe):
    rc, out, err = run([probe, "-addr", env.addr, "-connect-timeout", "5s", "-rpc-timeout", "5s"])
    check(rc == 0 and "SERVING" in out + err, "grpc-health-probe -addr unix://<agent socket>: SERVING, exit 0",
          f"rc {rc}: {out}{err}")
    rc, out, err = run([probe, "-addr", env.addr, "-service", "SpiffeWorkloadAPI", "-rpc-timeout", "5s"])
    check(rc == 0 and "SERVING" in out + err, "grpc-health-probe -service SpiffeWorkloadAPI: SERVING, exit 0",
          f"rc {rc}: {out}{err}")
    # grpc/health/v1/health.proto: an unknown service fails NOT_FOUND (a probe with a wrong name must fail).
    rc, out, err = run([probe, "-addr", env.addr, "-service", "no.such.Service", "-rpc-timeout", "5s"])
    check(rc == 3 and "NotFound" in out + err, "grpc-health-probe -service no.such.Service: NOT_FOUND, exit 3",
          f"rc {rc}: {out}{err}")
    rc, out, err = run([probe, "-addr", f"127.0.0.1:{env.port}", "-connect-timeout", "3s", "-rpc-timeout", "3s"])
    check(rc != 0, "lanyard-server's agent port has no plaintext grpc.health.v1 (probe fails)", f"rc {rc}: {out}{err}")
    env.agent.stop()
    rc, out, err = run([probe, "-addr", env.addr, "-connect-timeout", "2s", "-rpc-timeout", "2s"])
    check(rc == 2, "agent stopped: grpc-health-probe exits 2 (connection failure)", f"rc {rc}: {out}{err}")


def main():
    base, _, key_type = SCENARIO.partition(".")
    if base not in ("basic", "lifecycle", "health") or key_type not in ("", "ec-p256", "ec-p384", "rsa-2048", "upstream"):
        print(f"Error: unknown scenario {SCENARIO}", file=sys.stderr)
        sys.exit(2)
    prog = build_go_program() if base != "health" else health_probe()
    tmp = tempfile.mkdtemp(prefix=f"lanyard-go-{base}-")
    env = Env(tmp, ca_ttl="60s" if base == "lifecycle" else None, key_type=key_type or None)
    t_start = time.time()
    try:
        t_server = time.time()
        if env.start():
            if base == "basic":
                scenario_basic(env, prog)
            elif base == "lifecycle":
                scenario_lifecycle(env, prog, t_server)
            else:
                scenario_health(env, prog)
    finally:
        env.stop()
        figures["wall_s"] = round(time.time() - t_start, 1)
        finish(tmp, with_figures=True)
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
