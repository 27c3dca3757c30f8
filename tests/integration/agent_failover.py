#!/usr/bin/python3
"""agent_failover.py: an agent with several servers (SPEC §10) moves when its server dies.

    agent_failover.py LANYARD_SERVER LANYARD_AGENT

Three phases, each with two real servers and a real agent given
`-serverAddress` with both (`localhost:PA,127.0.0.1:PB`: a DNS name,
resolved on the agent's loop, and an address):

  copy: two servers made from one data directory: server A runs, the agent
     attests to it and gets an SVID; A stops, its data directory is copied
     to B's (same CA key, same agents and entries at the copy), both start,
     each on its own SQLite file: changes made later through one are not
     seen by the other. A test device only (docs/ha.md: never copy a data
     directory to run another server on a shared database).
  pg:  two servers on one real PostgreSQL database (server_pg.py's
     throw-away cluster), each with its own data directory and its own CA:
     both roots in the shared bundle (docs/ha.md), the join token, the
     agent's record and the entries shared, changes heard by LISTEN/NOTIFY.
  pg-upstream: the same under one upstream CA (certs/make-dev-ca.sh): one
     root, each server's signing CA under it.

In each: the server holding the agent's watch is killed (SIGKILL): cached
SVIDs are still served, the agent's watch is on the other server within a
few seconds (measured from the kill), an entry created there reaches the
agent, the agent's log names the move; the dead server comes back, the
survivor is killed: the agent moves back. Also: a bad list is refused at
start with a clear one-line error; the agent stops cleanly.

  pg-dns: the pg phase behind one DNS name with two addresses, as a
     headless Kubernetes Service gives: the servers listen on 127.0.0.2
     and 127.0.0.3 at one port, and the agent runs in a mount namespace of
     its own (unshare -m, root) whose /etc/hosts gives the name both
     addresses; it is given only `name:port`.

What this does not prove: a thousand agents
(the unit test shows the full-jitter spread), revocation pushed across
servers (integration.ha_pg does). Prints one line per check and the figures; exits 1 on
a failure.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import agent_sync_e2e as e2e  # noqa: E402  (reads sys.argv[1:3]: the same arguments)
from harness import PROCS, check, exit_status, failures, free_port, skip  # noqa: E402

TDID = e2e.TDID
UID = os.getuid()
DNS_NAME = "lanyard-server.failover.test"  # in the pg-dns phase's own /etc/hosts only
MOVE_BOUND_S = 10  # the agent's watch is on the other server within this long after the kill


class Server(e2e.Server):
    def __init__(self, d, port, health_port, extra="", bind="127.0.0.1"):
        cfg = os.path.join(d, "server.yaml")
        os.makedirs(d, exist_ok=True)
        with open(cfg, "w") as f:
            f.write("server:\n  node_attestors:\n    join_token: {}\n"
                    f"  health_checks:\n    listener_enabled: true\n    bind_port: {health_port}\n{extra}")
        os.chmod(cfg, 0o600)  # it may hold a database password
        super().__init__(d, port, cfg, bind)
        self.health_port = health_port

    def watches(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=2) as r:
                m = re.search(r"^lanyard_server_agent_watch_streams (\S+)$", r.read().decode(), re.M)
                return float(m.group(1)) if m else 0.0
        except OSError:
            return 0.0


def start_agent(d, servers, extra, hosts=None):
    """The agent; with `hosts`, in a mount namespace of its own where that file is /etc/hosts."""
    sock = os.path.join(d, "agent", "public", "api.sock")
    data = os.path.join(d, "agent", "data")
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    a = e2e.Agent(d, "agent", 0)
    a.mark = os.path.getsize(a.log_path) if os.path.exists(a.log_path) else 0
    # unshare and sh exec: the process stopped and killed is the agent itself.
    wrap = ["unshare", "-m", "--", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts] if hosts else []
    a.p = e2e.Proc(wrap + [e2e.AGENT_BIN, "run", "-trustDomain", e2e.TD, "-serverAddress", servers,
                    "-socketPath", sock, "-dataDir", data, "-logLevel", "debug"] + extra, a.log_path)
    return a


def bad_lists(d):
    for lst, why in (("a,,b", "empty item"), ("h:0", "port must be"), ("[::1", "without ']'"),
                     ("x:1,x:1", "given twice")):
        r = subprocess.run([e2e.AGENT_BIN, "run", "-trustDomain", e2e.TD, "-serverAddress", lst, "-socketPath",
                            os.path.join(d, "bad", "api.sock"), "-dataDir", os.path.join(d, "bad", "data")],
                           capture_output=True, text=True, timeout=30)
        err = r.stderr.strip().splitlines()
        check(r.returncode != 0 and len(err) >= 1 and why in err[-1] and "serverAddress" in err[-1],
              f"bad list {lst!r} refused at start: {why}", r.stderr.strip()[-300:])


def wait_watch(srv, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if srv.watches() >= 1:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def rounds(tag, a, A, B, agent_id):
    """Kill the server holding the watch, twice (back and forth): the agent moves each time."""
    first, other = (A, B) if A.watches() >= 1 else (B, A)
    for rnd in range(2):
        mark = len(a.p.text())
        t_kill = time.monotonic()
        first.p.stop(signal.SIGKILL)
        served = a.fetch_all()  # every identity (the first one is the default: either entry by then)
        check(f"{TDID}/w1" in served, f"{tag} round {rnd + 1}: cached SVID served while moving", str(sorted(served)))
        moved = wait_watch(other, MOVE_BOUND_S + 5)
        t_move = time.monotonic() - t_kill
        print(f"figure: {tag} round {rnd + 1}: watch on the other server {t_move:.2f} s after the kill")
        check(moved is not None and t_move <= MOVE_BOUND_S,
              f"{tag} round {rnd + 1}: the agent moves to the other server within {MOVE_BOUND_S} s", f"{t_move:.2f} s")
        log = a.p.text()[mark:]
        check(re.search(r"retrying in \d+ ms with server %s:%d" % (re.escape(other.bind), other.port), log) is not None,
              f"{tag} round {rnd + 1}: the agent's log names the move to {other.bind}:{other.port}", log[-600:])
        name = f"{TDID}/{tag}-after-move-{rnd}"
        other.entry_create("-spiffeID", name, "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
        seen = e2e.wait_until(lambda: name in a.fetch_all(), 15, 0.1)
        check(bool(seen), f"{tag} round {rnd + 1}: an entry created on the new server reaches the agent")
        if rnd == 0:
            first.start()  # back (copy: with the state it had at the copy)
            first, other = other, first
            time.sleep(1.5)  # the hold-down of the first server's address (1 s) expires


def pg_phase(d, upstream, dns=False):
    """Two servers on one PostgreSQL database, with one upstream CA or each its own root (see the top);
    with `dns`, behind one DNS name with both their addresses (see the top)."""
    import server_pg  # noqa: E402  (reads sys.argv[1:3]: the same arguments)
    tag = "pg-upstream" if upstream else "pg-dns" if dns else "pg"
    bindir = server_pg.pg_bindir()
    if bindir is None:
        skip(tag, "no PostgreSQL binaries (scripts/install-deps.sh installs them)")
        return
    if dns and (os.geteuid() != 0 or shutil.which("unshare") is None):
        skip(tag, "needs root and unshare(1) for a mount namespace with its own /etc/hosts")
        return
    os.makedirs(d)
    os.chmod(os.path.dirname(d), 0o755)  # PostgreSQL runs as nobody when we are root: it must reach its directory
    pg = server_pg.Postgres(d, bindir)
    pg.start()
    try:
        rc, _, err = pg.psql("postgres", "CREATE DATABASE lanyard")
        check(rc == 0, f"{tag}: database created", err)
        pki = os.path.join(d, "pki")
        if upstream:
            r = subprocess.run(["bash", os.path.join(HERE, "..", "..", "certs", "make-dev-ca.sh"), pki],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, f"{tag}: an upstream CA made (certs/make-dev-ca.sh)", r.stderr[-300:])
        extra = f"  datastore:\n    database_type: postgres\n    connection_string: \"{pg.conninfo()}\"\n"
        if upstream:
            extra += f"  upstream_ca:\n    cert_file: {pki}/upstream-ca.pem\n    key_file: {pki}/upstream-ca.key\n"
        pa, pb = free_port(), free_port()
        binds = ("127.0.0.1", "127.0.0.1")
        if dns:
            pb = pa  # one name, one port, two addresses
            binds = ("127.0.0.2", "127.0.0.3")
        A = Server(os.path.join(d, "A"), pa, free_port(), extra, binds[0])
        B = Server(os.path.join(d, "B"), pb, free_port(), extra, binds[1])
        A.start()
        B.start()
        bundle = os.path.join(d, "bundle.pem")
        if not upstream:
            # Each server's own root, both in the shared bundle (docs/ha.md) once B published its own.
            e2e.wait_until(lambda: A.cli("bundle", "show").stdout.count("BEGIN CERTIFICATE") >= 2, 20, 0.2)
        with open(bundle, "w") as f:
            f.write(A.cli("bundle", "show").stdout)
        roots = open(bundle).read().count("BEGIN CERTIFICATE")
        check(roots == (1 if upstream else 2), f"{tag}: the bootstrap bundle holds {roots} root(s)")
        tok = B.token()  # made through B, used wherever the agent lands: one database
        agent_id = f"{TDID}/lanyard/agent/join_token/{tok}"
        hosts = None
        servers = f"localhost:{pa},127.0.0.1:{pb}"
        if dns:
            hosts = os.path.join(d, "hosts")
            with open(hosts, "w") as f:
                f.write(f"127.0.0.1 localhost\n{binds[0]} {DNS_NAME}\n{binds[1]} {DNS_NAME}\n")
            servers = f"{DNS_NAME}:{pa}"
        a = start_agent(d, servers, ["-joinToken", tok, "-trustBundle", bundle], hosts)
        check(a.wait_log(r"attested as ", 30) is not None, f"{tag}: the agent attests with one of the two servers")
        if dns:
            check(a.wait_log(r"server %s: 2 address\(es\)" % re.escape(DNS_NAME), 5) is not None,
                  f"{tag}: the agent resolves {DNS_NAME} to both servers' addresses")
        A.entry_create("-spiffeID", f"{TDID}/w1", "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
        got = e2e.wait_until(lambda: f"{TDID}/w1" in a.fetch_all(), 20, 0.1)
        check(bool(got), f"{tag}: an entry created through A -> an SVID served (whichever server the agent is on)")
        t = e2e.wait_until(lambda: A.watches() >= 1 or B.watches() >= 1, 20, 0.1)
        check(bool(t), f"{tag}: the agent's watch is on one of the two servers")
        rounds(tag, a, A, B, agent_id)
        rc = a.stop()
        check(rc == 0, f"{tag}: the agent stops cleanly", f"rc={rc}")
        for srv in (A, B):
            if srv.p is not None and srv.p.proc.poll() is None:
                srv.p.stop()
    finally:
        pg.stop()


def main():
    d = tempfile.mkdtemp(prefix="lanyard-failover-")
    ok_end = False
    try:
        bad_lists(d)
        pa, pb = free_port(), free_port()
        A = Server(os.path.join(d, "A"), pa, free_port())
        A.start()
        bundle = os.path.join(d, "bundle.pem")
        with open(bundle, "w") as f:
            f.write(A.cli("bundle", "show").stdout)
        tok = A.token()
        agent_id = f"{TDID}/lanyard/agent/join_token/{tok}"
        a = start_agent(d, f"localhost:{pa},127.0.0.1:{pb}", ["-joinToken", tok, "-trustBundle", bundle])
        check(a.wait_log(r"attested as ", 30) is not None, "the agent attests with one of its servers (B is down)")
        check(a.wait_log(r"server localhost: 1 address\(es\)", 5) is not None, "the DNS name is resolved by the agent")
        e1 = A.entry_create("-spiffeID", f"{TDID}/w1", "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
        got = e2e.wait_until(lambda: e2e.uri_sans(a.fetch()[1]) == [f"{TDID}/w1"] if a.fetch()[0] else None, 15)
        check(bool(got), "an entry -> an SVID served")

        # Two servers from one data directory (see the top).
        A.p.stop()
        B = Server(os.path.join(d, "B"), pb, free_port())
        shutil.copytree(os.path.join(A.d, "sdata"), os.path.join(B.d, "sdata"))
        A.start()
        B.start()
        t = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if A.watches() >= 1 or B.watches() >= 1:
                t = True
                break
            time.sleep(0.1)
        check(t is not None, "the agent's watch is on one of the two servers")
        rounds("copy", a, A, B, agent_id)
        # A (localhost:PA) was killed in one of the rounds: its name was resolved again on that failure.
        n_res = len(re.findall(r"server localhost: 1 address\(es\)", a.p.text()))
        check(n_res >= 2, "the DNS name is resolved again after its server failed", f"{n_res} resolution(s)")
        rc = a.stop()
        check(rc == 0, "the agent stops cleanly (SIGTERM, resolutions and channels released)", f"rc={rc}")
        A.p.stop()
        B.p.stop()
        pg_phase(os.path.join(d, "pg"), upstream=False)
        pg_phase(os.path.join(d, "pgu"), upstream=True)
        pg_phase(os.path.join(d, "pgdns"), upstream=False, dns=True)
        ok_end = True
    finally:
        if failures or not ok_end:
            for lp in [os.path.join(d, x, "agent", "agent.log") for x in ("", "pg", "pgu", "pgdns")]:
                if os.path.exists(lp):
                    print(f"---- {lp} (tail) ----")
                    print("\n".join(open(lp, errors="replace").read().splitlines()[-50:]))
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not failures and ok_end:
            shutil.rmtree(d, ignore_errors=True)
        else:
            print(f"logs kept in {d}")
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
