#!/usr/bin/python3
"""health_metrics.py: the daemons' health and metrics listener end to end.

    health_metrics.py LANYARD_SERVER LANYARD_AGENT

A real lanyard-server (health_checks on, custom live/ready paths: 200s,
/metrics parses) on 127.0.0.1 and lanyard-agents with
`agent.health_checks.listener_enabled: true` on free loopback ports:
  - an agent whose server is unreachable: /live 200, /ready 503 with a reason;
  - an agent with a join token: /ready turns 200, /metrics parses with a
    strict Prometheus text-format 0.0.4 parser, svids_issued_total moves after
    an entry for uid 0 is created and a workload fetches its SVID;
  - 404, 405, 400, an oversized head (431), a slowloris connection closed by
    the read timeout, each without harming the next request.
Prints ok/FAIL per check; exits non-zero on any failure.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, failures, free_port, poller, run  # noqa: E402

wait_for = poller(0.1)

SERVER, AGENT = sys.argv[1], sys.argv[2]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"


def http(port, raw, timeout=10):
    """Sends raw bytes, reads to EOF: (status or None, headers text, body)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None, "", ""
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return (int(m.group(1)) if m else None), head.decode("latin-1"), body.decode("utf-8", "replace")


def get(port, path, method="GET"):
    return http(port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())


# ---- a strict Prometheus text format 0.0.4 parser ------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)"
LABELVAL = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL}={LABELVAL})(?:,{LABEL}={LABELVAL})*)?\}})? ({VALUE})(?: -?\d+)?$")


def parse_prometheus(text):
    """Returns {name: {"type": t, "samples": [(name, labels dict, float)]}}; raises ValueError."""
    if not text.endswith("\n"):
        raise ValueError("text does not end with a newline")
    fams, types, helps = {}, {}, set()
    for ln, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("# HELP "):
            m = re.match(rf"^# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)$", line)
            if not m or m.group(1) in helps:
                raise ValueError(f"line {ln}: bad or repeated HELP: {line!r}")
            helps.add(m.group(1))
            continue
        if line.startswith("# TYPE "):
            m = re.match(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$", line)
            if not m or m.group(1) in types:
                raise ValueError(f"line {ln}: bad or repeated TYPE: {line!r}")
            types[m.group(1)] = m.group(2)
            fams[m.group(1)] = {"type": m.group(2), "samples": []}
            continue
        if line.startswith("#") or line == "":
            raise ValueError(f"line {ln}: unexpected line {line!r}")
        m = SAMPLE.match(line)
        if not m:
            raise ValueError(f"line {ln}: bad sample {line!r}")
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        fam = name if name in fams else base
        if fam not in fams:
            raise ValueError(f"line {ln}: sample {name} before its TYPE")
        if fam != name and fams[fam]["type"] != "histogram":
            raise ValueError(f"line {ln}: suffix on a {fams[fam]['type']}")
        labels = dict(re.findall(rf"({LABEL})=({LABELVAL})", m.group(2) or ""))
        fams[fam]["samples"].append((name, labels, float(m.group(3))))
    for fam, f in fams.items():
        if f["type"] == "histogram":
            buckets = [s for s in f["samples"] if s[0] == fam + "_bucket"]
            if buckets and buckets[-1][1].get("le") != '"+Inf"':
                raise ValueError(f"{fam}: last bucket is not +Inf")
            vals = [s[2] for s in buckets]
            if vals != sorted(vals):
                raise ValueError(f"{fam}: buckets not cumulative")
    return fams


def metric(fams, name):
    f = fams.get(name)
    return f["samples"][0][2] if f and f["samples"] else None


def self_test_parser():
    good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# TYPE h histogram\n" \
           'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n'
    bad = ["a 1\n", "# TYPE a counter\na 1", "# TYPE a counter\na{b=\"x\"\"} 1\n",
           "# TYPE a counter\na one\n", "# TYPE a counter\na_sum 1\n", "# TYPE a counter\n# TYPE a counter\n",
           '# TYPE h histogram\nh_bucket{le="2"} 3\nh_bucket{le="+Inf"} 2\n']
    ok = True
    try:
        parse_prometheus(good)
    except ValueError:
        ok = False
    for b in bad:
        try:
            parse_prometheus(b)
            ok = False
        except ValueError:
            pass
    check(ok, "the test's Prometheus parser accepts valid text and refuses 7 malformed ones")


# ---- daemons ----------------------------------------------------------------------

def server_cli(sock, *args):
    return run([SERVER, *args, "-socketPath", sock])


def agent(tmp, name, server_port, health_port, bundle, token=None):
    cfg = os.path.join(tmp, name + ".yaml")
    with open(cfg, "w") as f:
        f.write("agent:\n  log_format: json\n  health_checks:\n    listener_enabled: true\n"
                f"    bind_address: \"127.0.0.1\"\n    bind_port: {health_port}\n")
    sock = os.path.join(tmp, name, "public", "api.sock")
    args = [AGENT, "run", "-config", cfg, "-trustDomain", TD, "-serverAddress", "127.0.0.1",
            "-serverPort", str(server_port), "-socketPath", sock, "-dataDir", os.path.join(tmp, name + "-data"),
            "-trustBundle", bundle]
    if token:
        args += ["-joinToken", token]
    return Daemon(args, os.path.join(tmp, name + ".log")), sock


def main():
    self_test_parser()
    tmp = tempfile.mkdtemp(prefix="lanyard-health-")
    server_sock = os.path.join(tmp, "server", "api.sock")
    sport = free_port()
    shp = free_port()
    scfg = os.path.join(tmp, "server.yaml")
    with open(scfg, "w") as f:
        f.write(f"server:\n  health_checks:\n    listener_enabled: true\n    bind_port: {shp}\n"
                "    live_path: /healthz\n    ready_path: /readyz\n")
    server = Daemon([SERVER, "run", "-config", scfg, "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(sport),
                     "-socketPath", server_sock, "-dataDir", os.path.join(tmp, "server-data")],
                    os.path.join(tmp, "server.log"))
    agents = []
    try:
        check(wait_for(lambda: not server.alive() or server_cli(server_sock, "healthcheck")[0] == 0, 30)
              and server.alive(), "server starts")
        check(get(shp, "/healthz")[0] == 200 and get(shp, "/live")[0] == 404, "server: /healthz 200, /live 404")
        check(wait_for(lambda: get(shp, "/readyz")[0] == 200, 10), "server: /readyz 200")
        try:
            sf = parse_prometheus(get(shp, "/metrics")[2])
            check(metric(sf, "lanyard_server_ready") == 1 and metric(sf, "process_start_time_seconds") > 0,
                  "server: /metrics parses, lanyard_server_ready 1")
        except ValueError as e:
            check(False, "server: /metrics parses", str(e))
        rc, out, err = server_cli(server_sock, "bundle", "show")
        bundle = os.path.join(tmp, "bootstrap.pem")
        with open(bundle, "w") as f:
            f.write(out)

        # An agent whose server is unreachable: alive, not ready.
        hp1 = free_port()
        a1, _ = agent(tmp, "lonely", free_port(), hp1, bundle, token="not-a-real-token")
        agents.append(a1)
        st = wait_for(lambda: get(hp1, "/live")[0], 20)
        check(st == 200, "unreachable server: /live 200", a1.text()[-1500:])
        st, _, body = get(hp1, "/ready")
        check(st == 503 and body.strip() != "" and "\n" not in body.strip(),
              "unreachable server: /ready 503 with a one-line reason", f"{st} {body!r}")
        st, head, body = get(hp1, "/metrics")
        try:
            fams = parse_prometheus(body)
            check(st == 200 and "text/plain; version=0.0.4" in head and metric(fams, "lanyard_agent_ready") == 0,
                  "unreachable server: /metrics parses, lanyard_agent_ready 0")
        except ValueError as e:
            check(False, "unreachable server: /metrics parses", str(e))
        check(a1.stop() == 0, "unreachable-server agent stops on SIGTERM (exit 0)")
        agents.remove(a1)

        # A real agent: ready once attested.
        rc, out, err = server_cli(server_sock, "token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        check(rc == 0 and m is not None, "token generate", err)
        hp = free_port()
        a2, sock = agent(tmp, "node1", sport, hp, bundle, token=m.group(1) if m else "")
        agents.append(a2)
        check(wait_for(lambda: get(hp, "/ready")[0] == 200, 30), "attested agent: /ready 200", a2.text()[-1500:])
        check(get(hp, "/live")[0] == 200, "attested agent: /live 200")
        st, head, body = get(hp, "/metrics")
        try:
            fams = parse_prometheus(body)
            names = ["process_start_time_seconds", "lanyard_agent_svids_issued_total",
                     "lanyard_agent_svid_rotations_total", "lanyard_agent_jwt_svids_minted_total"]
            check(st == 200 and all(metric(fams, n) is not None for n in names) and
                  metric(fams, "lanyard_agent_ready") == 1 and
                  abs(metric(fams, "process_start_time_seconds") - time.time()) < 120,
                  "attested agent: /metrics parses and has the agent's metrics", body[:500])
            before = metric(fams, "lanyard_agent_svids_issued_total")
        except ValueError as e:
            check(False, "attested agent: /metrics parses", str(e))
            before = None

        rc, out, err = server_cli(server_sock, "entry", "create", "-spiffeID", f"spiffe://{TD}/health/root",
                                  "-parentID", AGENT_ID, "-selector", "unix:uid:0")
        check(rc == 0, "entry create for uid 0", err)
        fetched = wait_for(lambda: subprocess.run([AGENT, "api", "fetch", "x509", "-socketPath", sock],
                                                  capture_output=True, text=True, timeout=30).returncode == 0, 30,
                           step=0.5)
        check(fetched, "a workload fetches its X.509-SVID")

        def issued():
            try:
                return metric(parse_prometheus(get(hp, "/metrics")[2]), "lanyard_agent_svids_issued_total")
            except ValueError:
                return None
        after = wait_for(lambda: (issued() or 0) > (before or 0) and issued(), 15)
        check(before is not None and after and after > before, "lanyard_agent_svids_issued_total moved",
              f"{before} -> {after}")
        try:
            cached = metric(parse_prometheus(get(hp, "/metrics")[2]), "lanyard_agent_cached_svids")
        except ValueError:
            cached = None
        check(cached is not None and cached >= 1, "lanyard_agent_cached_svids >= 1 after the entry", str(cached))
        try:
            fams = parse_prometheus(get(hp, "/metrics")[2])
        except ValueError as e:
            fams = {}
            check(False, "attested agent: /metrics parses again", str(e))
        att = fams.get("lanyard_agent_workload_attestation_seconds", {"samples": []})["samples"]
        att_count = next((v for n, _, v in att if n.endswith("_count")), None)
        check(att_count is not None and att_count >= 1,
              "lanyard_agent_workload_attestation_seconds counted the CLI's connections", str(att_count))
        lag = metric(fams, "lanyard_agent_sync_lag_seconds")
        check(metric(fams, "lanyard_agent_server_reachable") == 1 and lag is not None and 0 <= lag <= 11,
              "server reachable, sync lag within two sync intervals", f"lag {lag}")
        vf = fams.get("lanyard_agent_svid_verification_failures_total", {"samples": []})["samples"]
        check(len(vf) >= 2 and all(v == 0 for _, _, v in vf) and
              {lb.get("kind") for _, lb, _ in vf} == {'"x509"', '"jwt"'},
              "verification failures: a series per kind and reason, all 0", str(vf[:3]))
        check(metric(fams, "lanyard_agent_workload_api_connections") is not None and
              metric(fams, "lanyard_agent_workload_api_open_streams") == 0,
              "Workload API connections and open streams gauges")

        # The server's side of the same story.
        try:
            sf = parse_prometheus(get(shp, "/metrics")[2])
        except ValueError as e:
            sf = {}
            check(False, "server: /metrics parses after the agent's work", str(e))

        def series(fam, **want):
            for n, lb, v in sf.get(fam, {"samples": []})["samples"]:
                if all(lb.get(k) == f'"{w}"' for k, w in want.items()) and not n.endswith(("_bucket", "_sum")):
                    return v
            return None
        check(series("lanyard_server_node_attestations_total", attestor="join_token", result="ok") == 1,
              "server: one join_token attestation counted ok")
        check((series("lanyard_server_x509_svids_issued_total", kind="workload") or 0) >= 1 and
              (series("lanyard_server_x509_svids_issued_total", kind="agent") or 0) >= 1,
              "server: workload and agent X.509-SVIDs counted")
        hist = sf.get("lanyard_server_node_attestation_seconds", {"samples": []})["samples"]
        att_n = next((v for n, lb, v in hist if n.endswith("_count") and lb.get("attestor") == '"join_token"'), 0)
        check(att_n >= 1, "server: attestation latency observed", str(hist[-3:]))
        # The agents gauge is the datastore worker's last count (at most a ping, 1 s, behind).
        gauges = ("lanyard_server_agent_watch_streams", "lanyard_server_entries", "lanyard_server_agents")
        def gauges_up():
            g = parse_prometheus(get(shp, "/metrics")[2])
            return all((metric(g, n) or 0) >= 1 for n in gauges)
        check(wait_for(gauges_up, 5), "server: watch streams, entries and agents gauges",
              str([metric(sf, n) for n in gauges]))
        check(metric(sf, "lanyard_server_datastore_reachable") == 1 and
              metric(sf, "lanyard_server_datastore_calls_pending") is not None,
              "server: datastore reachable and pending-calls gauges")
        dsc = sf.get("lanyard_server_datastore_calls_total", {"samples": []})["samples"]
        dsh = sf.get("lanyard_server_datastore_call_seconds", {"samples": []})["samples"]
        check(any(lb.get("result") == '"ok"' and v >= 1 for _, lb, v in dsc) and
              any(n.endswith("_count") and v >= 1 for n, _, v in dsh),
              "server: datastore calls counted by outcome, their latency observed", str(dsc[:4]))
        check((metric(sf, "lanyard_server_ca_signing_expiry_timestamp_seconds") or 0) > time.time(),
              "server: the signing CA's expiry is in the future")

        # Refusals, each followed by a good request.
        check(get(hp, "/nope")[0] == 404, "unknown path: 404")
        check(get(hp, "/live", method="POST")[0] == 405, "POST /live: 405")
        check(http(hp, b"GET /live HTTP/1.1\n\n")[0] == 400, "bare LF: 400")
        check(http(hp, b"GET /live HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")[0] == 431,
              "oversized head (over 8 KiB): 431")
        check(get(hp, "/live")[0] == 200, "next request after the refusals: 200")
        slow = socket.create_connection(("127.0.0.1", hp), timeout=15)
        slow.sendall(b"GET /li")
        check(get(hp, "/live")[0] == 200, "served while a slowloris connection is open")
        t0 = time.time()
        try:
            eof = slow.recv(1) == b""
        except OSError:
            eof = False
        waited = time.time() - t0
        slow.close()
        check(eof and 3 < waited < 9, "slowloris connection closed by the read timeout", f"{waited:.1f}s")
        check(get(hp, "/live")[0] == 200, "next request after the slowloris: 200")

        log = a2.text()
        check(all(l.startswith("{") for l in log.splitlines() if l.strip()), "agent log_format json: JSON lines")
        check(m is None or m.group(1) not in log, "the join token is not in the agent's log")
        check(a2.stop() == 0, "agent stops on SIGTERM (exit 0)")
        agents.remove(a2)
    finally:
        for a in agents:
            a.stop()
        server.stop()
    print("FAILED: " + ", ".join(failures) if failures else "all passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
