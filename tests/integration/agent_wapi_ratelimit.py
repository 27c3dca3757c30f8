#!/usr/bin/python3
"""agent_wapi_ratelimit.py: the agent's Workload API rate limit per selector set.

    agent_wapi_ratelimit.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR

A real server and agent (agent_sync_e2e.py's helpers) with
`agent.ratelimit.workload_api: 20`, and Workload API clients:

  - this Python process calls FetchJWTSVID 60 times at once: 20 pass, the
    others are refused UNAVAILABLE with a message naming the limit;
  - meanwhile another program (the agent's CLI: another executable, so
    another selector set) is served;
  - a second later the Python process is served again;
  - /metrics counts the refusals (lanyard_agent_workload_api_rate_limited_total)
    and the log has one line per second at most;
  - the agent restarted with `workload_api: 0`: 300 calls, none refused.
Prints one line per check; exits 1 on a failure.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PROTO_DIR = sys.argv.pop(3)  # agent_sync_e2e reads argv[1:3]
import agent_sync_e2e as e2e  # noqa: E402
from harness import PROCS, check, exit_status, failures, free_port, protoc  # noqa: E402

MD = (("workload.spiffe.io", "true"),)
RATE = 20


def flood(stub, pb, n):
    futs = [stub.FetchJWTSVID.future(pb.JWTSVIDRequest(audience=["svc"]), metadata=MD, timeout=30) for _ in range(n)]
    ok = limited = other = 0
    msg = ""
    for f in futs:
        try:
            f.result()
            ok += 1
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE and "rate limit" in (e.details() or ""):
                limited += 1
                msg = e.details()
            else:
                other += 1
                msg = msg or f"{e.code()} {e.details()}"
    return ok, limited, other, msg


def refused_metric(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        m = re.search(r"^lanyard_agent_workload_api_rate_limited_total (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else None


def first_bundles(stub, pb):
    it = stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=MD, timeout=10)
    try:
        next(it)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()
    finally:
        it.cancel()


def main():
    d = tempfile.mkdtemp(prefix="lanyard-wapi-rl-")
    done = False
    try:
        protoc(PROTO_DIR, d, "workload.proto")
        sys.path.insert(0, d)
        import workload_pb2 as pb
        import workload_pb2_grpc as pb_grpc

        # Values out of range are refused at start, naming the key (exit 2).
        for bad in ("2000000", "-1", "lots"):
            bcfg = os.path.join(d, "bad.yaml")
            with open(bcfg, "w") as f:
                f.write(f"agent:\n  ratelimit:\n    workload_api: {bad}\n")
            r = subprocess.run([e2e.AGENT_BIN, "run", "-config", bcfg, "-trustDomain", e2e.TD, "-serverAddress",
                                "127.0.0.1", "-socketPath", os.path.join(d, "bad", "api.sock"), "-dataDir",
                                os.path.join(d, "bad", "data")], capture_output=True, text=True, timeout=30)
            last = (r.stderr.strip().splitlines() or [""])[-1]
            check(r.returncode == 2 and "ratelimit.workload_api" in last,
                  f"workload_api: {bad} refused at start (exit 2, the key named)", f"rc={r.returncode} {last}")
        cfg = os.path.join(d, "server.yaml")
        with open(cfg, "w") as f:
            f.write("server:\n  node_attestors:\n    join_token: {}\n")
        srv = e2e.Server(d, free_port(), cfg)
        srv.start()
        bundle = os.path.join(d, "bundle.pem")
        with open(bundle, "w") as f:
            f.write(srv.cli("bundle", "show").stdout)
        tok = srv.token()
        agent_id = f"{e2e.TDID}/lanyard/agent/join_token/{tok}"
        srv.entry_create("-spiffeID", f"{e2e.TDID}/w", "-parentID", agent_id, "-selector", f"unix:uid:{os.getuid()}")
        hp = free_port()
        acfg = os.path.join(d, "agent.yaml")
        with open(acfg, "w") as f:
            f.write(f"agent:\n  ratelimit:\n    workload_api: {RATE}\n  health_checks:\n    listener_enabled: true\n"
                    f"    bind_port: {hp}\n")
        a = e2e.Agent(d, "a", srv.port)
        a.start("-joinToken", tok, "-trustBundle", bundle, config=acfg)
        check(a.wait_log(r"attested as ", 20) is not None, "the agent attests")
        got = e2e.wait_until(lambda: a.fetch()[0] or None, 20, 0.1)
        check(bool(got), "the workload is served (its SVID issued)")
        time.sleep(1.2)  # the bucket of the CLI's set is its own; ours is full again in any case

        ch = grpc.insecure_channel("unix:" + a.sock)
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        ok, limited, other, msg = flood(stub, pb, 60)
        print(f"figure: 60 calls at once with workload_api: {RATE}: {ok} served, {limited} refused")
        check(other == 0, "no other failure", msg)
        check(RATE <= ok <= RATE + 5 and limited == 60 - ok, f"a burst past {RATE} is refused", f"{ok} served")
        check("rate limit" in msg and f"{RATE}/s" in msg and "selectors" in msg,
              "the refusal is UNAVAILABLE and names the limit", msg)
        before = refused_metric(hp)
        cli_ok = a.fetch()[0]
        check(cli_ok and refused_metric(hp) == before,
              "another selector set (the agent's CLI) is served meanwhile, not refused once")
        time.sleep(1.1)
        code, det = first_bundles(stub, pb)
        check(code == grpc.StatusCode.OK, "a second later the workload is served again", f"{code} {det}")
        check(before is not None and before >= limited, "/metrics counts the refusals", str(before))
        lines = [ln for ln in a.p.text().splitlines() if "workload api: rate limit" in ln]
        check(1 <= len(lines) <= 2, "one log line for the burst", str(len(lines)))
        ch.close()

        # Off.
        a.stop()
        with open(acfg, "w") as f:
            f.write("agent:\n  ratelimit:\n    workload_api: 0\n")
        a.start(config=acfg)
        check(a.wait_log(r"resuming as ", 20) is not None, "the agent restarts (limit off)")
        e2e.wait_until(lambda: a.fetch()[0] or None, 20, 0.1)
        ch = grpc.insecure_channel("unix:" + a.sock)
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        ok, limited, other, msg = flood(stub, pb, 300)
        check(ok == 300 and limited == 0, "workload_api: 0: 300 calls at once, none refused", f"{ok} {limited} {msg}")
        ch.close()
        rc = a.stop()
        check(rc == 0, "the agent stops cleanly", f"rc={rc}")
        srv.p.stop()
        done = True
    finally:
        if failures or not done:
            lp = os.path.join(d, "a", "agent.log")
            if os.path.exists(lp):
                print("\n".join(open(lp, errors="replace").read().splitlines()[-40:]))
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
