#!/usr/bin/python3
"""ha_pg.py: several lanyard-servers on one PostgreSQL (SPEC §10, issue 16), end to end.

    ha_pg.py LANYARD_SERVER LANYARD_AGENT

A real PostgreSQL in a temp dir (server_pg.py's cluster), three real servers
A, B and C with the same trust domain and connection string, each with its
own data dir and CA, and real agents. Checked:
 - the bundle every server serves holds the three servers' roots; any
   server answers the admin CLI (an entry made through A is listed by B);
 - an agent attached to B sees an entry created, then deleted, through A
   within 1 s (p50/p99 over 20 trials, no polling: PostgreSQL NOTIFY);
 - an X.509-SVID an agent on A got verifies with the bundle an agent on B
   holds, and the other way round;
 - one join token used at the same instant through two servers admits one
   agent (three rounds);
 - kill -9 of C: A and B keep serving, C's authorities stay in the bundle
   until they expire (C runs with a 60 s CA TTL), then drop out;
 - PostgreSQL restarted under the servers: they recover by themselves (a
   change through A reaches the agent on B again within 1 s) and every
   acknowledged entry is still there;
 - an agent banned through A: its stream on B ends at once;
 - the agent's periodic (5 s) watch carries its revision and gets deltas;
 - two servers under one upstream CA: one root in the bundle, both JWT keys.
Prints ok/FAIL per check and a `figures {...}` line; exits non-zero on any failure.
"""
import http.client
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, exit_status, failures, figures, free_port, poller, run  # noqa: E402
from server_pg import Postgres, pg_bindir  # noqa: E402

wait_for = poller(0.05)
SERVER, AGENT = sys.argv[1], sys.argv[2]
TD = "example.org"
TRIALS = 20


class Server:
    def __init__(self, tmp, name, conninfo, ca_ttl=None):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "admin", "api.sock")
        self.data = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "server.yaml")
        self.log_path = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.health_port = free_port()
        self.daemon = None
        with open(self.config, "w") as f:
            f.write("server:\n  trust_domain: example.org\n  datastore:\n    database_type: postgres\n"
                    f"    connection_string: \"{conninfo}\"\n"
                    f"  health_checks:\n    listener_enabled: true\n    bind_port: {self.health_port}\n" +
                    (f"  ca_ttl: {ca_ttl}s\n" if ca_ttl else ""))
        os.chmod(self.config, 0o600)

    def start(self):
        self.daemon = Daemon([SERVER, "run", "-config", self.config, "-logLevel", "debug", "-bindAddress", "127.0.0.1", "-serverPort",
                              str(self.port), "-socketPath", self.sock, "-dataDir", self.data], self.log_path)
        return wait_for(lambda: not self.daemon.alive() or self.cli("healthcheck")[0] == 0, 30) and \
            self.daemon.alive()

    def cli(self, *args):
        return run([SERVER, *args, "-socketPath", self.sock])

    def metric(self, line_prefix):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=10)
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
            conn.close()
        except OSError:
            return None
        for line in body.splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.split()[-1])
        return None

    def roots(self):
        rc, out, _ = self.cli("bundle", "show")
        return out.count("BEGIN CERTIFICATE") if rc == 0 else -1

    def entry_create(self, spiffe_id, selector, parent):
        rc, out, err = self.cli("entry", "create", "-spiffeID", spiffe_id, "-parentID", parent, "-selector", selector)
        m = re.search(r"Entry ID\s*:\s*(\S+)", out)
        return m.group(1) if rc == 0 and m else None, out + err

    def entry_ids(self):
        rc, out, _ = self.cli("entry", "show")
        return set(re.findall(r"Entry ID\s*:\s*(\S+)", out)) if rc == 0 else None

    def token(self, spiffe_id=None):
        args = ["token", "generate"] + (["-spiffeID", spiffe_id] if spiffe_id else [])
        rc, out, _ = self.cli(*args)
        m = re.search(r"Token: (\S+)", out)
        return m.group(1) if m else None


class Agent:
    def __init__(self, tmp, name, server, token):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "public", "api.sock")
        self.bundle = os.path.join(self.dir, "bootstrap.pem")
        rc, out, _ = server.cli("bundle", "show")
        with open(self.bundle, "w") as f:
            f.write(out)
        self.daemon = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort",
                              str(server.port), "-socketPath", self.sock, "-dataDir", os.path.join(self.dir, "data"),
                              "-joinToken", token, "-trustBundle", self.bundle], os.path.join(self.dir, "agent.log"))

    def healthy(self, timeout=40):
        return wait_for(lambda: not self.daemon.alive() or
                        run([AGENT, "healthcheck", "-socketPath", self.sock])[0] == 0, timeout) and self.daemon.alive()

    def fetch(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        return run([AGENT, "api", "fetch", "x509", "-socketPath", self.sock, "-write", out_dir])


class Watch:
    """`lanyard-agent api watch`: the time of every update and its SVID count."""

    def __init__(self, agent):
        self.proc = subprocess.Popen([AGENT, "api", "watch", "-socketPath", agent.sock], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.updates = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            m = re.match(r"Received (\d+) svids? after", line)
            if m:
                with self.lock:
                    self.updates.append((time.monotonic(), int(m.group(1))))

    def count(self):
        with self.lock:
            return self.updates[-1][1] if self.updates else None

    def first_with(self, n, since):
        with self.lock:
            for t, k in self.updates:
                if t >= since and k == n:
                    return t
        return None

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def propagation(a, watch, parent, tag, trials=TRIALS):
    """Entries created, then deleted, through server `a`; the times until the watch on another server sees them."""
    base = watch.count()
    created, deleted = [], []
    for i in range(trials):
        t0 = time.monotonic()
        eid, detail = a.entry_create(f"spiffe://{TD}/ha/{tag}{i}", f"unix:uid:{os.getuid()}", parent)
        t1 = time.monotonic()
        if not check(eid is not None, f"{tag}: entry create {i} through {a.name}", detail):
            return None
        got = wait_for(lambda: watch.first_with(base + 1, t0), 5, step=0.005)
        if not check(got is not None, f"{tag}: the new entry {i} reached the agent on the other server",
                     str(watch.updates[-3:])):
            return None
        created.append(got - t0)
        t0 = time.monotonic()
        rc, out, err = a.cli("entry", "delete", "-entryID", eid)
        t1 = time.monotonic()
        if not check(rc == 0, f"{tag}: entry delete {i} through {a.name}", out + err):
            return None
        got = wait_for(lambda: watch.first_with(base, t0), 5, step=0.005)
        if not check(got is not None, f"{tag}: the deletion {i} reached the agent on the other server"):
            return None
        deleted.append(got - t0)
    return created, deleted


def upstream(tmp, pg, daemons):
    """Two servers under one upstream CA: one root in every bundle (each server's own signing CA under it),
    every server's JWT key."""
    d = os.path.join(tmp, "upstream")
    os.makedirs(d)
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", os.path.join(d, "up.key"), "-out", os.path.join(d, "up.crt"), "-days", "30",
                        "-subj", "/CN=upstream", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectAltName=URI:spiffe://example.org"],
                       capture_output=True, text=True)
    if not check(r.returncode == 0, "upstream: a CA made with openssl", r.stderr):
        return
    os.chmod(os.path.join(d, "up.key"), 0o600)
    rc, _, err = pg.psql("postgres", "CREATE DATABASE lanyard_up")
    check(rc == 0, "upstream: a second database", err)
    conninfo = pg.conninfo().replace("dbname=lanyard", "dbname=lanyard_up")
    servers = []
    for name in ("up-a", "up-b"):
        s = Server(tmp, name, conninfo)
        with open(s.config, "a") as f:
            f.write(f"  upstream_ca:\n    cert_file: {d}/up.crt\n    key_file: {d}/up.key\n")
        ok = s.start()
        daemons.append(s.daemon)
        check(ok, f"upstream: server {name} starts under the upstream CA", s.daemon.text()[-800:])
        servers.append(s)
    check(wait_for(lambda: all(s.roots() == 1 and s.metric('lanyard_server_bundle_authorities{kind="jwt"}') == 2
                               for s in servers), 10),
          "upstream: every bundle holds the one upstream root and both servers' JWT keys",
          str([(s.roots(), s.metric('lanyard_server_bundle_authorities{kind="jwt"}')) for s in servers]))


def main():
    bindir = pg_bindir()
    if not check(bindir is not None, "PostgreSQL binaries found (install postgresql: scripts/install-deps.sh)"):
        return
    tmp = tempfile.mkdtemp(prefix="lanyard-ha-it-")
    os.chmod(tmp, 0o755)
    pg = None
    daemons = []
    watches = []
    try:
        pg = Postgres(tmp, bindir)
        pg.start()
        rc, _, err = pg.psql("postgres", "CREATE DATABASE lanyard")
        check(rc == 0, "database created", err)
        a = Server(tmp, "a", pg.conninfo())
        b = Server(tmp, "b", pg.conninfo())
        c = Server(tmp, "c", pg.conninfo(), ca_ttl=60)
        for s in (a, b, c):
            ok = s.start()
            daemons.append(s.daemon)
            check(ok, f"server {s.name} starts on the shared database", s.daemon.text()[-1500:])
        if failures:
            return
        ids = set()
        for s in (a, b, c):
            m = re.search(r"server_id=(\S+)", s.daemon.text())
            ids.add(m.group(1) if m else None)
        check(None not in ids and len(ids) == 3, "each server has its own server ID", str(ids))
        check(wait_for(lambda: all(s.roots() >= 3 for s in (a, b, c)), 10),
              "every server's bundle holds the three servers' roots", str([s.roots() for s in (a, b, c)]))
        check(all(s.metric("lanyard_server_change_notifications_listening") == 1 for s in (a, b, c)) and
              all(s.metric('lanyard_server_bundle_authorities{kind="x509"}') == 3 for s in (a, b, c)),
              "/metrics: every server listens for changes and serves three X.509 authorities",
              str([(s.metric("lanyard_server_change_notifications_listening"),
                    s.metric('lanyard_server_bundle_authorities{kind="x509"}')) for s in (a, b, c)]))
        rc, n, _ = pg.psql("lanyard", "SELECT count(DISTINCT server_id) FROM bundle_authorities")
        check(n == "3", "the bundle_authorities table holds three servers' rows", n)
        rc, n, _ = pg.psql("lanyard", "SELECT count(*) FROM ca_state")
        check(n == "0", "no CA key or state in the database", n)

        # Any server answers the admin API.
        agent_b_id = f"spiffe://{TD}/lanyard/agent/ha-b"
        agent_a_id = f"spiffe://{TD}/lanyard/agent/ha-a"
        eid, detail = a.entry_create(f"spiffe://{TD}/ha/keep-b", f"unix:uid:{os.getuid()}", agent_b_id)
        check(eid is not None, "entry create through A", detail)
        check(wait_for(lambda: eid in (b.entry_ids() or set()), 5), "... listed through B")
        eid2, detail = b.entry_create(f"spiffe://{TD}/ha/keep-a", f"unix:uid:{os.getuid()}", agent_a_id)
        check(eid2 is not None, "entry create through B", detail)

        # Agents: one on B, one on A.
        tok_b = a.token(agent_b_id)  # a token made through A, used at B
        tok_a = b.token(agent_a_id)
        check(tok_a is not None and tok_b is not None, "tokens generated through either server")
        ag_b = Agent(tmp, "agent-b", b, tok_b)
        ag_a = Agent(tmp, "agent-a", a, tok_a)
        daemons += [ag_b.daemon, ag_a.daemon]
        check(ag_b.healthy(), "an agent attests at B with a token made through A", ag_b.daemon.text()[-1500:])
        check(ag_a.healthy(), "an agent attests at A with a token made through B", ag_a.daemon.text()[-1500:])

        # SVIDs of A verify with B's agent's bundle, and the other way round.
        da, db = os.path.join(tmp, "fetch-a"), os.path.join(tmp, "fetch-b")
        got_a = wait_for(lambda: ag_a.fetch(da)[0] == 0, 20, step=0.3)
        got_b = wait_for(lambda: ag_b.fetch(db)[0] == 0, 20, step=0.3)
        check(got_a and got_b, "both agents serve an X.509-SVID")
        for (src, dst, what) in ((da, db, "A's SVID verifies with the bundle of the agent on B"),
                                 (db, da, "B's SVID verifies with the bundle of the agent on A")):
            r = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(dst, "bundle.0.pem"), "-untrusted",
                                os.path.join(src, "svid.0.pem"), os.path.join(src, "svid.0.pem")],
                               capture_output=True, text=True)
            check(r.returncode == 0, what, r.stdout + r.stderr)

        # Propagation: created/deleted through A, seen by the agent on B.
        w = Watch(ag_b)
        watches.append(w)
        check(wait_for(lambda: w.count() == 1, 10), "the workload on the agent on B holds one SVID", str(w.updates))
        res = propagation(a, w, agent_b_id, "ab")
        if res is not None:
            cr, de = res
            allv = cr + de
            figures["ha_create_ms_p50"] = round(pct(cr, 50) * 1000, 1)
            figures["ha_create_ms_p99"] = round(pct(cr, 99) * 1000, 1)
            figures["ha_delete_ms_p50"] = round(pct(de, 50) * 1000, 1)
            figures["ha_delete_ms_p99"] = round(pct(de, 99) * 1000, 1)
            figures["ha_delete_ms_max"] = round(max(de) * 1000, 1)
            print("info " + json.dumps(figures), flush=True)
            check(pct(de, 99) < 1.0, "deletion through A reaches the agent on B: p99 < 1 s", str(figures))
            check(pct(cr, 99) < 1.0, "creation through A reaches the agent on B (SVID issued): p99 < 1 s",
                  str(figures))
            check(len(allv) == 2 * TRIALS, "every trial measured")

        # Join tokens: the same token at the same instant through two servers admits one agent.
        for rnd in range(3):
            tok = a.token()
            attested_before = sum(s.daemon.text().count("attested (join_token)") for s in (a, b))
            pair = [Agent(tmp, f"race{rnd}-{s.name}", s, tok) for s in (a, b)]
            daemons += [p.daemon for p in pair]
            time.sleep(8)
            attested = sum(s.daemon.text().count("attested (join_token)") for s in (a, b)) - attested_before
            healthy = sum(1 for p in pair if run([AGENT, "healthcheck", "-socketPath", p.sock])[0] == 0)
            check(attested == 1 and healthy == 1,
                  f"round {rnd}: one token through two servers at once admits exactly one agent",
                  f"attested={attested} healthy={healthy}")
            for p in pair:
                p.daemon.stop(signal.SIGKILL, timeout=10)

        # The agent's periodic check (every 5 s) is a revision check: answered with deltas, not snapshots.
        opens = re.findall(r"watch of " + re.escape(agent_b_id) + r" opened \(since_revision=(\d+), replica at (\d+): "
                           r"(delta|snapshot)\)", b.daemon.text())
        deltas = [o for o in opens if o[2] == "delta"]
        figures["ha_watch_opens_delta"] = len(deltas)
        figures["ha_watch_opens_snapshot"] = len(opens) - len(deltas)
        check(len(deltas) >= 2 and len(opens) - len(deltas) <= 2,
              "the agent's periodic watch carries its revision and gets deltas (a snapshot only after attesting)",
              str(opens[-6:]))

        # kill -9 of C: the others serve on; C's authorities stay until they expire.
        c.daemon.proc.send_signal(signal.SIGKILL)
        c.daemon.proc.wait()
        t_kill = time.monotonic()
        check(a.cli("healthcheck")[0] == 0 and b.cli("healthcheck")[0] == 0, "kill -9 of C: A and B stay healthy")
        eid3, detail = b.entry_create(f"spiffe://{TD}/ha/after-kill", "unix:uid:4242", agent_b_id)
        check(eid3 is not None, "... and B still writes", detail)
        rc, n_c, _ = pg.psql("lanyard", "SELECT count(*) FROM bundle_authorities WHERE kind = 1")
        check(a.roots() >= 3 and b.roots() >= 3, "C's roots stay in the bundle right after it died",
              str((a.roots(), b.roots())))
        rc, exp, _ = pg.psql("lanyard", "SELECT max(not_after) - extract(epoch from now())::bigint FROM "
                                        "bundle_authorities WHERE kind = 1 AND server_id = (SELECT server_id FROM "
                                        "bundle_authorities GROUP BY server_id ORDER BY min(not_after) LIMIT 1)")
        left = int(exp) if exp.lstrip("-").isdigit() else 90
        dropped = wait_for(lambda: a.roots() == 2 and b.roots() == 2, max(left, 0) + 20, step=1)
        figures["ha_dead_server_dropped_after_s"] = round(time.monotonic() - t_kill, 1)
        check(dropped, "C's roots drop out of A's and B's bundles once they expire",
              str((a.roots(), b.roots(), left)))
        check(ag_b.fetch(db)[0] == 0, "the agent on B still serves after C's authorities expired")

        # PostgreSQL restarted under the servers.
        before = a.entry_ids() or set()
        pg.stop("fast")
        eid_down, _ = a.entry_create(f"spiffe://{TD}/ha/during", "unix:uid:4343", agent_b_id)
        check(eid_down is None, "PostgreSQL down: entry create fails (not acknowledged)")
        time.sleep(1)
        pg.start()
        t_up = time.monotonic()
        check(wait_for(lambda: a.cli("healthcheck")[0] == 0 and b.cli("healthcheck")[0] == 0, 30),
              "PostgreSQL back: A and B healthy again without a restart")
        check(wait_for(lambda: b.daemon.text().count("change notifications: listening on") >= 2 and
                       b.metric("lanyard_server_change_notifications_listening") == 1, 20),
              "B listens for changes again", b.daemon.text()[-800:])
        figures["ha_pg_restart_listen_again_s"] = round(time.monotonic() - t_up, 1)
        check("agents not re-checked" not in b.daemon.text(),
              "... and re-read the agents once listening again (evictions and bans missed meanwhile)")
        after = a.entry_ids() or set()
        check(before <= after, "every acknowledged entry is still there", str(before - after))
        res = propagation(a, w, agent_b_id, "after", trials=5)
        if res is not None:
            cr, de = res
            check(max(de) < 1.0 and max(cr) < 1.0, "after the restart, changes through A reach the agent on B "
                  "within 1 s", str([round(x, 3) for x in cr + de]))

        upstream(tmp, pg, daemons)

        # A ban through A ends the agent's stream on B at once (NOTIFY "a banned ...").
        t0 = time.monotonic()
        rc, out, err = a.cli("agent", "ban", "-spiffeID", agent_b_id)
        check(rc == 0, "agent ban through A", out + err)
        ended = wait_for(lambda: "refuses this agent" in ag_b.daemon.text(), 5, step=0.01)
        figures["ha_ban_stream_end_ms"] = round((time.monotonic() - t0) * 1000, 1)
        check(ended, "a ban through A ends the agent's stream on B within 1 s",
              ag_b.daemon.text()[-800:])
        check(figures["ha_ban_stream_end_ms"] < 1000, "... within 1 s", str(figures["ha_ban_stream_end_ms"]))
    except Exception as e:  # a broken harness is a failure, with its reason
        check(False, "harness", repr(e))
    finally:
        for w in watches:
            w.stop()
        for d in daemons:
            if d is not None and d.alive():
                d.stop(signal.SIGKILL, timeout=10)
        if pg is not None:
            pg.stop("immediate")
        print("figures " + json.dumps(figures), flush=True)
        if failures:
            print(f"ha_pg: {len(failures)} failure(s); logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
