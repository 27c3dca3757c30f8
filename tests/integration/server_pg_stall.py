#!/usr/bin/python3
"""server_pg_stall.py: lanyard-server on a PostgreSQL that stops answering (issue 16).

    server_pg_stall.py LANYARD_SERVER LANYARD_AGENT

A real PostgreSQL (TCP on 127.0.0.1, a free port) behind a small TCP proxy
written here, which can STALL: it keeps every connection open and every
byte it has read, and forwards nothing until it resumes (what a host whose
packets are dropped looks like to libpq, without root or a network
namespace). The server's datastore runs on its worker thread
(server/datastore_async.h), so while the database hangs:

  - the server's loop stays responsive: /ready and /metrics answer at once;
  - /ready says 503 "datastore does not answer: ...", /metrics has
    lanyard_server_datastore_reachable 0 and counts the timeouts;
  - a real agent's workload keeps being served: its X.509-SVID (20 s TTL)
    is renewed by the server from what it already knows (the agent's
    record, the entry replica), and a new Workload API fetch works;
  - a shared bundle notification (another server's publish) arriving then
    reloads the bundle on the worker: /metrics keeps answering at once;
  - `entry create` fails within the 8 s deadline with one clear line
    (UNAVAILABLE), as documented (docs/operations.md), and the entry does
    not appear after the recovery (a write whose caller gave up never
    begins).

When the proxy forwards again, everything recovers by itself (no restart):
/ready 200, the gauge 1, the next `entry create` works and reaches the
agent's workload.

Missing PostgreSQL binaries are a SKIP (exit 77), as the unit tests' PostgreSQL.
Prints ok/FAIL per check and exits non-zero on any failure.
"""
import http.client
import os
import re
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, exit_status, failures, free_port, poller, run  # noqa: E402
import server_pg  # noqa: E402  (its Postgres class; it reads SERVER and AGENT from argv as we do)

wait_for = poller(0.2)

SERVER, AGENT = sys.argv[1], sys.argv[2]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/stallnode"
WORKLOAD_ID = f"spiffe://{TD}/stall/workload"


class Conn:
    """One proxied connection; `notify`: the server's LISTEN connection (its application_name seen)."""

    def __init__(self):
        self.notify = False


class StallProxy:
    """127.0.0.1:port -> 127.0.0.1:target. stall() holds everything (drops nothing); resume() lets it flow.

    stall(spare_notify=True) holds every connection but the server's LISTEN one (pg_notify.c's
    application_name "lanyard-server-notify"), so that another server's notification still arrives
    while the datastore's own connection hangs."""

    def __init__(self, target):
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.stop = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.spare_notify = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def stall(self, spare_notify=False):
        self.spare_notify = spare_notify
        self.flowing.clear()

    def hold(self, conn):
        """Returns once `conn` may pass bytes."""
        while not self.stop.is_set() and not self.flowing.is_set() and not (self.spare_notify and conn.notify):
            time.sleep(0.02)

    def resume(self):
        self.flowing.set()

    def accept_loop(self):
        while not self.stop.is_set():
            r, _, _ = select.select([self.lsock], [], [], 0.2)
            if not r:
                continue
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            # Connected upstream only when flowing: a new connection during a stall hangs like the old ones.
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        self.flowing.wait()
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return
        self.socks += [c, u]
        conn = Conn()
        threading.Thread(target=self.pump, args=(c, u, conn), daemon=True).start()
        threading.Thread(target=self.pump, args=(u, c, conn), daemon=True).start()

    def pump(self, src, dst, conn):
        try:
            while not self.stop.is_set():
                self.hold(conn)
                r, _, _ = select.select([src], [], [], 0.2)
                if not r:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if b"lanyard-server-notify" in data:  # the startup packet's application_name
                    conn.notify = True
                self.hold(conn)  # read during a stall: held, never dropped
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.flowing.set()
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class TcpPostgres(server_pg.Postgres):
    """server_pg's cluster, listening on 127.0.0.1:port too (password auth on TCP)."""

    def __init__(self, tmp, bindir):
        super().__init__(tmp, bindir)
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n")

    def psql(self, db, sql):
        env = dict(os.environ, PGPASSWORD=server_pg.PASSWORD)
        r = __import__("subprocess").run(
            [os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "lanyard", "-d", db,
             "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, env=env, timeout=60)
        return r.returncode, r.stdout.strip(), r.stderr

    def conninfo_via(self, port):
        return (f"host=127.0.0.1 port={port} user=lanyard password={server_pg.PASSWORD} dbname=lanyard "
                "connect_timeout=5")


def http_get(port, path):
    """(status, body, seconds) of GET path; (0, reason, seconds) when the listener does not answer."""
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        out = (r.status, r.read().decode(errors="replace"))
        conn.close()
    except OSError as e:
        out = (0, str(e))
    return out[0], out[1], time.monotonic() - t0


def metric(body, name, labels=None):
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m and m.group(1) == name and (labels is None or labels in (m.group(2) or "")):
            return float(m.group(3))
    return None


def main():
    bindir = server_pg.pg_bindir()
    if bindir is None:
        print("SKIP server_pg_stall: no PostgreSQL binaries (initdb) found", flush=True)
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lanyard-pg-stall-")
    pg = proxy = server = agent = None
    try:
        pg = TcpPostgres(tmp, bindir)
        pg.start()
        rc, out, err = pg.psql("postgres", "CREATE DATABASE lanyard")
        if not check(rc == 0, "CREATE DATABASE lanyard", out + err):
            return
        proxy = StallProxy(pg.port)
        sock = os.path.join(tmp, "server", "api.sock")
        agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        config = os.path.join(tmp, "server.yaml")
        port, hport = free_port(), free_port()
        with open(config, "w") as f:
            f.write("server:\n  trust_domain: example.org\n  datastore:\n    database_type: postgres\n"
                    f"    connection_string: \"{pg.conninfo_via(proxy.port)}\"\n"
                    f"  health_checks:\n    listener_enabled: true\n    bind_port: {hport}\n")
        os.chmod(config, 0o600)

        def cli(*args):
            return run([SERVER, *args, "-socketPath", sock])

        def fetch():
            return run([AGENT, "api", "fetch", "x509", "-socketPath", agent_sock])

        def valid_until():
            rc, out, _ = fetch()
            if rc != 0 or WORKLOAD_ID not in out:
                return None
            m = re.search(r"SVID Valid Until:\s*(.+)", out)
            return m.group(1).strip() if m else None

        server = Daemon([SERVER, "run", "-config", config, "-bindAddress", "127.0.0.1", "-serverPort", str(port),
                         "-socketPath", sock, "-dataDir", os.path.join(tmp, "server-data"), "-logLevel", "debug"],
                        os.path.join(tmp, "server.log"))
        if not check(wait_for(lambda: not server.alive() or cli("healthcheck")[0] == 0, 30) and server.alive(),
                     "server starts on PostgreSQL through the proxy", server.text()[-2000:]):
            return
        rc, out, err = cli("bundle", "show")
        bundle = os.path.join(tmp, "bootstrap.pem")
        with open(bundle, "w") as f:
            f.write(out)
        rc, out, err = cli("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        check(rc == 0 and m is not None, "token generate", err)
        rc, out, err = cli("entry", "create", "-spiffeID", WORKLOAD_ID, "-parentID", AGENT_ID,
                           "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", "20")
        check(rc == 0, "entry with a 20 s X.509-SVID TTL", out + err)
        agent = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(port),
                        "-socketPath", agent_sock, "-dataDir", os.path.join(tmp, "agent-data"), "-joinToken",
                        m.group(1) if m else "x", "-trustBundle", bundle], os.path.join(tmp, "agent.log"))
        first = []
        if not check(wait_for(lambda: first.append(valid_until()) or first[-1] is not None, 40),
                     "the workload fetches its X.509-SVID through the agent", agent.text()[-1500:]):
            return
        st, body, _ = http_get(hport, "/metrics")
        check(st == 200 and metric(body, "lanyard_server_datastore_reachable") == 1,
              "/metrics: lanyard_server_datastore_reachable 1 before the stall", body[-500:])

        # ---- the database stops answering ----
        proxy.stall()
        t_stall = time.monotonic()
        got = []
        check(wait_for(lambda: got.append(http_get(hport, "/ready")) or got[-1][0] == 503, 20) and
              "datastore does not answer" in got[-1][1],
              "stalled: /ready 503 'datastore does not answer: ...'", str(got[-1:]))
        print(f"info /ready said 503 {time.monotonic() - t_stall:.1f} s after the stall: {got[-1][1].strip()}",
              flush=True)
        st, body, secs = http_get(hport, "/metrics")
        # The first sign is the held call's timeout (8 s) or its connection given up (7 s without a byte).
        failed = sum(metric(body, "lanyard_server_datastore_calls_total", f'result="{r}"') or 0
                     for r in ("timeout", "error"))
        check(st == 200 and metric(body, "lanyard_server_datastore_reachable") == 0 and failed >= 1,
              "stalled: /metrics answers, datastore_reachable 0, a failed call counted", body[-800:])
        slow = [http_get(hport, "/ready")[2] for _ in range(10)]
        print(f"info /ready latency while stalled: max {max(slow) * 1000:.1f} ms", flush=True)
        check(max(slow) < 1.0, "stalled: the loop stays responsive (/ready under 1 s each)", str(slow))

        t0 = time.monotonic()
        rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/stall/during", "-parentID", AGENT_ID,
                           "-selector", "unix:uid:4242")
        took = time.monotonic() - t0
        lines = [l for l in err.strip().splitlines() if l]
        print(f"info entry create while stalled ({took:.1f} s): {' | '.join(lines)}", flush=True)
        # Either refused at once ("(not applied)": a call is held past its deadline) or, queued behind
        # the reconnection, told at its deadline (docs/operations.md); it never begins after that.
        check(rc == 1 and len(lines) == 1 and "datastore" in lines[0] and
              ("not applied" in lines[0] or "no answer within 8000 ms" in lines[0]),
              "stalled: entry create exits 1 with one clear line", out + err)
        check(took < 10, "... within the datastore deadline", f"{took:.1f} s")

        before = first[-1]
        renewed = []
        check(wait_for(lambda: renewed.append(valid_until()) or (renewed[-1] is not None and renewed[-1] != before),
                       30),
              "stalled: the workload's SVID is renewed by the server (notAfter moved)",
              f"{before} -> {renewed[-1:]}\n" + agent.text()[-1000:])
        rc, out, err = fetch()
        check(rc == 0 and WORKLOAD_ID in out, "stalled: a new Workload API fetch works", out + err)
        check(server.alive() and agent.alive(), "stalled: server and agent keep running")
        check(http_get(hport, "/ready")[0] == 503, "still stalled: /ready still 503")

        # ---- the database answers again ----
        proxy.resume()
        t_resume = time.monotonic()
        check(wait_for(lambda: http_get(hport, "/ready")[0] == 200, 30),
              "resumed: /ready 200 again by itself", str(http_get(hport, "/ready")))
        print(f"info /ready 200 {time.monotonic() - t_resume:.1f} s after the proxy resumed", flush=True)
        st, body, _ = http_get(hport, "/metrics")
        check(metric(body, "lanyard_server_datastore_reachable") == 1, "resumed: datastore_reachable 1")
        rc, out, err = cli("entry", "show")
        check(rc == 0 and f"spiffe://{TD}/stall/during" not in out,
              "resumed: the entry refused during the stall was not applied", out + err)
        rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/stall/after", "-parentID", AGENT_ID,
                           "-selector", f"unix:uid:{os.getuid()}")
        check(rc == 0, "resumed: entry create works", out + err)
        got = wait_for(lambda: (lambda r: r if r[0] == 0 and f"spiffe://{TD}/stall/after" in r[1] else None)(
            fetch()), 30)
        check(got is not None, "resumed: the new entry reaches the workload", agent.text()[-1000:])

        # ---- the datastore stalls again, and another server's bundle notification arrives ----
        # Its reload of the shared bundle runs on the datastore's worker: the loop does not wait for it
        # (it used to, for as long as libpq took to give up, freezing /metrics and every agent stream).
        proxy.stall(spare_notify=True)
        t_stall = time.monotonic()
        rc, out, err = pg.psql("lanyard", "SELECT pg_notify('lanyard_changes', 'b')")
        check(rc == 0, "stalled again: a shared bundle notification sent (as another server's publish)", out + err)
        lat = []
        while time.monotonic() - t_stall < 12:
            lat.append(http_get(hport, "/metrics")[2])
            time.sleep(0.2)
        print(f"info /metrics latency during the reload of the shared bundle on a stalled datastore: "
              f"max {max(lat) * 1000:.1f} ms over {len(lat)} requests", flush=True)
        check(max(lat) < 1.0, "stalled, bundle notification: the loop stays responsive (/metrics under 1 s each)",
              str([round(x, 2) for x in lat]))
        check(wait_for(lambda: "shared bundle: read:" in server.text(), 20),
              "stalled, bundle notification: the reload ran and failed on the worker (logged, bundle kept)",
              server.text()[-1500:])
        rc, out, err = fetch()
        check(rc == 0 and WORKLOAD_ID in out, "stalled, bundle notification: a Workload API fetch works",
              out + err)
        proxy.resume()
        check(wait_for(lambda: http_get(hport, "/ready")[0] == 200, 40),
              "resumed again: /ready 200", str(http_get(hport, "/ready")))
        log = server.text()
        check(log.count("not ready: datastore does not answer") >= 1 and "ready: datastore answers again" in log,
              "the server log says when the datastore stopped answering and when it answers again", log[-1500:])
        check(server.stop() == 0, "server SIGTERM: exit 0")
    except Exception as e:  # a broken harness is a failure, with its reason
        check(False, "harness", repr(e))
    finally:
        for d in (agent, server):
            if d is not None and d.alive():
                d.stop(signal.SIGKILL, timeout=10)
        if proxy is not None:
            proxy.close()
        if pg is not None:
            pg.stop("immediate")
        if failures:
            print(f"server_pg_stall: {len(failures)} failure(s); logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("all server_pg_stall checks passed")


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
