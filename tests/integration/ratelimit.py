#!/usr/bin/python3
"""ratelimit.py: the server's rate limits (SPEC §11) with a real lanyard-server.

    ratelimit.py LANYARD_SERVER PROTO_DIR

Plays agents with grpcio through server_agent_api.py's TLS proxy (same
arguments, so its helpers are imported as they are):

  1. defaults (ratelimit on): a burst of AttestAgent calls from one IP is
     refused RESOURCE_EXHAUSTED past the burst (10), with a message naming
     the limit, and an attestation passes again after a wait of a second;
     a flood of NewJWTSVID calls by one agent is cut near 500/s (burst 500)
     while another agent's calls all pass; a batch of X.509 CSRs past the
     agent's tokens is signed as far as they go, the rest refused item by
     item; /metrics counts the refusals by limit, and the log has at most
     one line a second per limiter;
  2. `ratelimit: {attestation: false, signing: false}`: the same floods,
     nothing refused.

Prints one line per check and the figures measured; exits 1 on a failure.
"""
import concurrent.futures
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import server_agent_api as sa  # noqa: E402  (reads sys.argv[1:3]: the same arguments)
from harness import check, exit_status, failures, free_port, protoc  # noqa: E402

C = grpc.StatusCode
TDID = sa.TDID
ATTEST_BURST = 10
SIGN_RATE = 500


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def limited(text, limit):
    m = re.search(r'^lanyard_server_rate_limited_total\{limit="%s"\} (\S+)$' % limit, text, re.M)
    return float(m.group(1)) if m else 0.0


def bad_attest(t, pb):
    """An AttestAgent with a token the server never issued: refused by the attestor, or by the limit."""
    return sa.code_of(lambda: t.attest(pb.AttestAgentRequest(
        join_token=pb.JoinTokenAttestation(token="no-such-token-xyz"),
        csr=sa.csr_der(sa.ec_key(), f"{TDID}/lanyard/agent/join_token/no-such-token-xyz"))))


def jwt_flood(agent, pb, entry_id, n):
    """n NewJWTSVID calls at once (futures on one channel); returns (ok, refused, other, seconds, a refusal)."""
    req = pb.NewJWTSVIDRequest(entry_id=entry_id, audience=["svc"])
    t0 = time.monotonic()
    futs = [agent.stub.NewJWTSVID.future(req, timeout=60) for _ in range(n)]
    ok = refused = other = 0
    msg = ""
    for f in futs:
        try:
            f.result()
            ok += 1
        except grpc.RpcError as e:
            if e.code() == C.RESOURCE_EXHAUSTED:
                refused += 1
                msg = e.details()
            else:
                other += 1
                msg = msg or f"{e.code()} {e.details()}"
    return ok, refused, other, time.monotonic() - t0, msg


def phase_on(t, pb, health_port):
    # -- attestation: a burst from 127.0.0.1
    codes = []
    msg = ""
    for _ in range(ATTEST_BURST + 5):
        code, det = bad_attest(t, pb)
        codes.append(code)
        if code == C.RESOURCE_EXHAUSTED:
            msg = det
    first = codes.index(C.RESOURCE_EXHAUSTED) if C.RESOURCE_EXHAUSTED in codes else -1
    check(first >= ATTEST_BURST - 1 and all(c == C.PERMISSION_DENIED for c in codes[:first]),
          f"attestation: the first {ATTEST_BURST} calls of a burst reach the attestor",
          f"codes {[c.name for c in codes]}")
    check(first != -1 and codes[-1] == C.RESOURCE_EXHAUSTED, "attestation: past the burst, RESOURCE_EXHAUSTED",
          f"codes {[c.name for c in codes]}")
    check("rate limit" in msg and "attestation" in msg and "source IP" in msg,
          "attestation: the refusal names the limit", msg)
    time.sleep(1.2)
    a = t.join("a")
    check(a.id.startswith(TDID + "/lanyard/agent/"), "attestation: after waiting a second, an agent attests")
    time.sleep(1.2)
    b = t.join("b")
    ea = t.entry_create("-spiffeID", TDID + "/wa", "-parentID", a.id, "-selector", "unix:uid:1000")
    eb = t.entry_create("-spiffeID", TDID + "/wb", "-parentID", b.id, "-selector", "unix:uid:1001")
    # The entries reach the server's replica (a watch barrier, as in server_agent_api.py).
    wa, wb = sa.Watch(a.stub, pb), sa.Watch(b.stub, pb)
    check(wa.wait(lambda s: ea in s.state, 10) and wb.wait(lambda s: eb in s.state, 10),
          "signing: both agents see their entry")

    # -- JWT signing: agent a floods, agent b is served
    n = 1500
    ok, refused, other, secs, msg = jwt_flood(a, pb, ea, n)
    print(f"figure: jwt flood of {n} by one agent: {ok} signed, {refused} refused, {other} other, {secs:.2f} s")
    check(other == 0, "jwt: no other failure in the flood", msg)
    check(refused > 0, "jwt: a flood past the burst is refused RESOURCE_EXHAUSTED", f"{ok} ok")
    check(ok <= SIGN_RATE + SIGN_RATE * secs + 5, "jwt: at most burst + 500/s signed", f"{ok} in {secs:.2f} s")
    check("rate limit" in msg and "jwt_signing" in msg and "agent" in msg, "jwt: the refusal names the limit", msg)
    okb, refb, othb, _, msgb = jwt_flood(b, pb, eb, 50)
    check(okb == 50 and refb == 0 and othb == 0, "jwt: another agent is not limited by it", f"{okb} {refb} {msgb}")
    time.sleep(1.1)
    code, det = sa.code_of(lambda: a.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=ea, audience=["svc"]),
                                                     timeout=10))
    check(code == C.OK, "jwt: the flooding agent is served again a second later", f"{code} {det}")

    # -- X.509 signing: a batch over the tokens left is served as far as they go
    csrs = [sa.csr_der(sa.ec_key(), TDID + "/wa") for _ in range(400)]
    req = pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(entry_id=ea, csr=c) for c in csrs])
    time.sleep(1.1)  # the bucket is full again: 500
    r1 = a.stub.BatchNewX509SVID(req, timeout=60)
    r2 = a.stub.BatchNewX509SVID(req, timeout=60)
    s1 = sum(1 for r in r1.results if r.status_code == 0)
    s2 = sum(1 for r in r2.results if r.status_code == 0)
    ex2 = [r for r in r2.results if r.status_code == C.RESOURCE_EXHAUSTED.value[0]]
    print(f"figure: x509 batches of 400 + 400 by one agent: {s1} + {s2} signed, {len(ex2)} refused")
    check(s1 == 400, "x509: a batch within the burst is signed whole", str(s1))
    check(len(ex2) > 0 and s2 + len(ex2) == 400 and s2 < 400,
          "x509: the next batch is signed as far as the tokens go, the rest refused item by item",
          f"{s2} signed, {len(ex2)} refused")
    check(all("rate limit" in r.status_message and not r.cert_chain for r in ex2),
          "x509: each refused item says why and carries no certificate")
    r3 = b.stub.BatchNewX509SVID(pb.BatchNewX509SVIDRequest(
        params=[pb.X509SVIDParams(entry_id=eb, csr=sa.csr_der(sa.ec_key(), TDID + "/wb")) for _ in range(20)]),
        timeout=60)
    check(all(r.status_code == 0 for r in r3.results), "x509: another agent is not limited by it")

    # -- /metrics and the log
    text = metrics(health_port)
    check(limited(text, "attestation") >= 1, "metrics: attestation refusals counted",
          str(limited(text, "attestation")))
    check(limited(text, "jwt_signing") >= refused, "metrics: jwt refusals counted", str(limited(text, "jwt_signing")))
    check(limited(text, "x509_signing") >= len(ex2), "metrics: x509 refusals counted",
          str(limited(text, "x509_signing")))
    lines = [ln for ln in t.srv.log_text().splitlines() if "rate limit jwt_signing" in ln]
    check(1 <= len(lines) <= int(secs) + 2, "log: at most one line a second for the jwt limiter",
          f"{len(lines)} lines for a flood of {secs:.2f} s")
    for w in (wa, wb):
        w.cancel()


def phase_off(t, pb):
    codes = [bad_attest(t, pb)[0] for _ in range(ATTEST_BURST + 10)]
    check(all(c == C.PERMISSION_DENIED for c in codes), "off: an attestation burst is never rate limited",
          str([c.name for c in codes if c != C.PERMISSION_DENIED][:3]))
    a = t.join("a")
    ea = t.entry_create("-spiffeID", TDID + "/wa", "-parentID", a.id, "-selector", "unix:uid:1000")
    wa = sa.Watch(a.stub, pb)
    check(wa.wait(lambda s: ea in s.state, 10), "off: the agent sees its entry")
    ok, refused, other, secs, msg = jwt_flood(a, pb, ea, 1500)
    print(f"figure: jwt flood of 1500 with the limit off: {ok} signed in {secs:.2f} s")
    check(ok == 1500 and refused == 0, "off: a jwt flood is never rate limited", f"{ok} ok, {refused} refused {msg}")
    csrs = [sa.csr_der(sa.ec_key(), TDID + "/wa") for _ in range(400)]
    req = pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(entry_id=ea, csr=c) for c in csrs])
    n = sum(sum(1 for r in a.stub.BatchNewX509SVID(req, timeout=60).results if r.status_code == 0) for _ in range(3))
    check(n == 1200, "off: three batches of 400 back to back are signed whole", str(n))
    wa.cancel()


def main():
    d = tempfile.mkdtemp(prefix="lanyard-ratelimit-")
    tests = []
    try:
        protoc(sa.PROTO_DIR, d, "agent.proto", system_include=False)
        sys.path.insert(0, d)
        import agent_pb2 as pb
        import agent_pb2_grpc as pb_grpc

        for name, extra, phase in (("on", "", phase_on),
                                   ("off", "  ratelimit: {attestation: false, signing: false}\n", phase_off)):
            pd = os.path.join(d, name)
            os.mkdir(pd)
            hp = free_port()
            cfg = os.path.join(pd, "server.yaml")
            with open(cfg, "w") as f:
                f.write("server:\n  node_attestors:\n    join_token: {}\n"
                        f"  health_checks:\n    listener_enabled: true\n    bind_port: {hp}\n{extra}")
            t = sa.Test(pd, pb, pb_grpc)
            tests.append(t)
            t.start(cfg)
            n_fail = len(failures)
            if phase is phase_on:
                phase(t, pb, hp)
            else:
                phase(t, pb)
            rc = t.srv.stop()
            check(rc == 0, f"{name}: server stops cleanly", f"rc={rc}")
            if len(failures) > n_fail:
                print("\n".join(t.srv.log_text().splitlines()[-40:]))
    finally:
        for t in tests:
            for a in t.agents:
                a.close()
            if t.srv is not None and t.srv.proc.poll() is None:
                t.srv.proc.kill()
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
