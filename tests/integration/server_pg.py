#!/usr/bin/python3
"""server_pg.py: lanyard-server on the PostgreSQL datastore
(server.datastore.database_type: postgres), end to end.

    server_pg.py LANYARD_SERVER LANYARD_AGENT

A real PostgreSQL is started in a temp dir (initdb as nobody when run as
root, Unix socket only, scram-sha-256 with a password for the role the
server uses). Then: entries created with the CLI and listed, the server
restarted -> still there; kill -9 right after `entry create` printed its ID
-> there after restart; PostgreSQL stopped under a running server ->
`entry create` exits 1 with one clear error line, the server keeps
running, `/ready` answers 503 "datastore does not answer" and `healthcheck`
exits 1; PostgreSQL back -> writes work again and `/ready` is 200 without
restarting the server; a real agent attests with a join token (consumed in PostgreSQL)
and fetches an X.509-SVID; a wrong password -> exit 1, libpq's reason,
no password; the server log never holds the password or the connection
string; no SQLite file is made.

Missing PostgreSQL binaries are a failure (CI installs them).
Prints ok/FAIL per check and exits non-zero on any failure.
"""
import glob
import http.client
import os
import pwd
import grp
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, exit_status, failures, free_port, poller, run  # noqa: E402

wait_for = poller(0.1)

SERVER, AGENT = sys.argv[1], sys.argv[2]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/pgnode"
PASSWORD = "pG-Pa55w0rd-9f3kq"
PG_PORT = 5432


def pg_bindir():
    env = os.environ.get("LANYARD_PG_BINDIR")
    if env:
        return env if os.access(os.path.join(env, "initdb"), os.X_OK) else None
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


class Postgres:
    """A throw-away cluster: superuser `lanyard` with PASSWORD (scram-sha-256), socket in `dir`."""

    def __init__(self, tmp, bindir):
        self.bindir = bindir
        self.dir = os.path.join(tmp, "pg")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        os.makedirs(self.dir)
        self.prefix = []
        if os.geteuid() == 0:
            uid = pwd.getpwnam("nobody").pw_uid
            try:
                gid = grp.getgrnam("nogroup").gr_gid
            except KeyError:
                gid = pwd.getpwnam("nobody").pw_gid
            os.chown(self.dir, uid, gid)
            os.chmod(tmp, 0o755)
            self.prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            self.uid, self.gid = uid, gid
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if self.prefix:
            os.chown(pwfile, self.uid, self.gid)
        self.run("initdb", "-D", self.data, "-U", "lanyard", "--auth-local=scram-sha-256",
                 "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync",
                 "--no-instructions")
        os.unlink(pwfile)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.dir}'\nport = {PG_PORT}\n"
                    "max_connections = 30\nshared_buffers = 16MB\n")
        open(self.log, "a").close()
        if self.prefix:
            os.chown(self.log, self.uid, self.gid)

    def run(self, prog, *args, check_rc=True):
        r = subprocess.run(self.prefix + [os.path.join(self.bindir, prog), *args], capture_output=True, text=True,
                           cwd=self.dir, timeout=120)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"{prog} failed: {r.stdout}{r.stderr}")
        return r

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check_rc=False)

    def psql(self, db, sql):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.dir, "-p", str(PG_PORT), "-U", "lanyard",
                            "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        return r.returncode, r.stdout.strip(), r.stderr

    def conninfo(self, password=PASSWORD):
        return f"host={self.dir} port={PG_PORT} user=lanyard password={password} dbname=lanyard"


class Env:
    def __init__(self, tmp, pg):
        self.tmp = tmp
        self.pg = pg
        self.sock = os.path.join(tmp, "server", "api.sock")
        self.data = os.path.join(tmp, "server-data")
        self.agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        self.agent_data = os.path.join(tmp, "agent-data")
        self.bundle_pem = os.path.join(tmp, "bootstrap.pem")
        self.config = os.path.join(tmp, "server.yaml")
        self.log_path = os.path.join(tmp, "server.log")
        self.port = free_port()
        self.health_port = free_port()
        self.server = None
        self.agent = None
        self.write_config(pg.conninfo())

    def write_config(self, conninfo, path=None):
        with open(path or self.config, "w") as f:
            f.write("server:\n  trust_domain: example.org\n  datastore:\n    database_type: postgres\n"
                    f"    connection_string: \"{conninfo}\"\n"
                    f"  health_checks:\n    listener_enabled: true\n    bind_port: {self.health_port}\n")
        os.chmod(path or self.config, 0o600)

    def start_server(self):
        self.server = Daemon([SERVER, "run", "-config", self.config, "-bindAddress", "127.0.0.1",
                              "-serverPort", str(self.port), "-socketPath", self.sock, "-dataDir", self.data],
                             self.log_path)
        return wait_for(lambda: not self.server.alive() or cli(self, "healthcheck")[0] == 0, 30) and \
            self.server.alive()


def ready(env):
    """GET /ready -> (status, body); (0, reason) when the listener does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", env.health_port, timeout=10)
        conn.request("GET", "/ready")
        r = conn.getresponse()
        out = (r.status, r.read().decode(errors="replace"))
        conn.close()
        return out
    except OSError as e:
        return 0, str(e)


def cli(env, *args):
    return run([SERVER, *args, "-socketPath", env.sock])


def agent_cli(*args):
    return run([AGENT, *args])


def create_entry(env, spiffe_id, selector, parent=AGENT_ID):
    rc, out, err = cli(env, "entry", "create", "-spiffeID", spiffe_id, "-parentID", parent, "-selector", selector)
    m = re.search(r"Entry ID\s*:\s*(\S+)", out)
    return rc, (m.group(1) if m else None), out + err


def entry_ids(env):
    rc, out, err = cli(env, "entry", "show")
    return set(re.findall(r"Entry ID\s*:\s*(\S+)", out)) if rc == 0 else None


# ---- scenarios --------------------------------------------------------------

def basics(env):
    check(env.start_server(), "server starts on PostgreSQL and is healthy", env.server.text()[-2000:])
    text = env.server.text()
    check(re.search(r"lanyard-server started: .* datastore=postgres ", text) is not None,
          "start-up line names the back end (datastore=postgres)", text[-1500:])
    check(not os.path.exists(os.path.join(env.data, "datastore.sqlite3")), "no SQLite file in the data dir")
    ids = []
    for i in range(3):
        rc, eid, detail = create_entry(env, f"spiffe://{TD}/pg/w{i}", f"unix:uid:{2000 + i}")
        check(rc == 0 and eid is not None, f"entry create w{i}", detail)
        ids.append(eid)
    got = entry_ids(env)
    check(got is not None and set(ids) <= got and len(got) == 3, "entry show lists the 3 entries", str(got))
    rc, n, err = env.pg.psql("lanyard", "SELECT count(*) FROM entries")
    check(rc == 0 and n == "3", "the entries are rows in PostgreSQL", n + err)
    rc, out, err = cli(env, "entry", "create", "-spiffeID", f"spiffe://{TD}/pg/w0", "-parentID", AGENT_ID,
                       "-selector", "unix:uid:2000")
    check(rc == 1 and "already exists" in err and len(err.strip().splitlines()) == 1,
          "a duplicate is refused: exit 1, one line 'already exists'", err)
    rc = env.server.stop()
    check(rc == 0, "SIGTERM: exit 0", str(rc))
    check(env.start_server(), "server restarts", env.server.text()[-2000:])
    got = entry_ids(env)
    check(got == set(ids), "after a restart the entries are still there", str(got))
    return ids


def kill9(env, ids):
    rc, eid, detail = create_entry(env, f"spiffe://{TD}/pg/acked", "unix:uid:2100")
    env.server.proc.send_signal(signal.SIGKILL)
    env.server.proc.wait()
    env.server.log.close()
    check(rc == 0 and eid is not None, "entry create printed its ID before kill -9", detail)
    check(env.start_server(), "server restarts after kill -9", env.server.text()[-2000:])
    got = entry_ids(env)
    check(got is not None and eid in got, "the acknowledged entry survived kill -9", str(got))
    ids.append(eid)


def outage(env, ids):
    check(ready(env)[0] == 200, "/ready: 200 while PostgreSQL is up", str(ready(env)))
    env.pg.stop("immediate")
    # /ready pings the datastore at most once a second.
    got = []
    check(wait_for(lambda: got.append(ready(env)) or got[-1][0] == 503, 5) and
          "datastore does not answer" in got[-1][1], "/ready: 503 'datastore does not answer' while it is down",
          str(got[-1:]))
    check("password" not in got[-1][1] and env.pg.dir not in got[-1][1],
          "... and the answer names no host, user or password", got[-1][1])
    rc, out, err = cli(env, "healthcheck")
    check(rc == 1 and "unhealthy" in err and "datastore" in err, "healthcheck while down: exit 1, datastore named",
          out + err)
    rc, eid, detail = create_entry(env, f"spiffe://{TD}/pg/during", "unix:uid:2200")
    lines = [l for l in detail.strip().splitlines() if l.startswith("Error")]
    check(rc == 1 and eid is None, "PostgreSQL down: entry create exits 1", detail)
    print("info " + " | ".join(lines), flush=True)
    check(len(lines) == 1 and "datastore" in lines[0] and "connection lost" in lines[0],
          "the error is one clear line (datastore: connection lost: ...)", detail)
    rc2, _, detail2 = create_entry(env, f"spiffe://{TD}/pg/during2", "unix:uid:2201")
    check(rc2 == 1, "a second write while down also exits 1", detail2)
    time.sleep(0.5)
    check(env.server.alive(), "the server keeps running while PostgreSQL is down")
    rc, out, err = cli(env, "entry", "show")
    check(rc == 1, "entry show while down: exit 1", out + err)
    env.pg.start()
    # The next operation reconnects: no restart of lanyard-server.
    rc, eid, detail = create_entry(env, f"spiffe://{TD}/pg/after", "unix:uid:2300")
    check(rc == 0 and eid is not None, "PostgreSQL back: the first write after works (reconnected)", detail)
    check(env.server.alive(), "... without restarting the server")
    check(wait_for(lambda: ready(env)[0] == 200, 5), "/ready: 200 again once PostgreSQL is back", str(ready(env)))
    log = env.server.text()
    check(log.count("not ready: datastore does not answer") == 1 and "ready: datastore answers again" in log,
          "the log says once that the datastore stopped answering, and when it answers again", log[-1500:])
    got = entry_ids(env)
    check(got is not None and eid in got and len(got) == len(ids) + 1,
          "the entries are all there, nothing from the outage half-written", str(got))
    ids.append(eid)


def agent_svid(env):
    rc, out, err = cli(env, "bundle", "show")
    check(rc == 0 and "BEGIN CERTIFICATE" in out, "bundle show", err)
    with open(env.bundle_pem, "w") as f:
        f.write(out)
    rc, out, err = cli(env, "token", "generate", "-spiffeID", AGENT_ID)
    m = re.search(r"Token: (\S+)", out)
    check(rc == 0 and m is not None, "token generate", err)
    if not m:
        return
    token = m.group(1)
    rc, n, e = env.pg.psql("lanyard", "SELECT count(*) FROM join_tokens")
    check(rc == 0 and n == "1", "the join token is a row in PostgreSQL", n + e)
    rc, hit, e = env.pg.psql("lanyard", f"SELECT count(*) FROM join_tokens WHERE token_sha256 = "
                                        f"sha256('{token}'::bytea)")
    check(rc == 0 and hit == "1", "... stored as its SHA-256", hit + e)
    rc, eid, detail = create_entry(env, f"spiffe://{TD}/pg/workload", f"unix:uid:{os.getuid()}")
    check(rc == 0, "entry for the workload (this uid) under the agent", detail)
    env.agent = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort",
                        str(env.port), "-socketPath", env.agent_sock, "-dataDir", env.agent_data, "-joinToken",
                        token, "-trustBundle", env.bundle_pem], os.path.join(env.tmp, "agent.log"))
    ok = wait_for(lambda: not env.agent.alive() or
                  agent_cli("healthcheck", "-socketPath", env.agent_sock)[0] == 0, 40) and env.agent.alive()
    check(ok, "the agent attests with the join token and is healthy", env.agent.text()[-2000:])
    rc, n, e = env.pg.psql("lanyard", "SELECT count(*) FROM join_tokens")
    check(rc == 0 and n == "0", "the token was consumed (no row left)", n + e)
    rc, n, e = env.pg.psql("lanyard", f"SELECT count(*) FROM agents WHERE spiffe_id = '{AGENT_ID}'")
    check(rc == 0 and n == "1", "the agent is a row in PostgreSQL", n + e)
    got = wait_for(lambda: (lambda r: r if r[0] == 0 and f"spiffe://{TD}/pg/workload" in r[1] else None)(
        agent_cli("api", "fetch", "x509", "-socketPath", env.agent_sock)), 30, step=0.5)
    check(got is not None, "the workload fetches its X.509-SVID through the agent",
          env.agent.text()[-1500:] if got is None else "")
    check(env.agent.stop() == 0, "agent SIGTERM: exit 0")


def wrong_password(env):
    bad = os.path.join(env.tmp, "bad.yaml")
    wrong = "not-the-Pa55word-x7"
    env.write_config(env.pg.conninfo(password=wrong), path=bad)
    r = subprocess.run([SERVER, "run", "-config", bad, "-bindAddress", "127.0.0.1", "-serverPort", "0",
                        "-socketPath", os.path.join(env.tmp, "bad", "api.sock"), "-dataDir",
                        os.path.join(env.tmp, "bad-data")], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    check(r.returncode == 1, "a wrong password: run exits 1", out[-1500:])
    print("info " + out.strip().splitlines()[-1] if out.strip() else "info (no output)", flush=True)
    check("cannot open datastore (postgres)" in out and "password authentication failed" in out,
          "... saying why (libpq's message)", out[-1500:])
    check(wrong not in out and "password=" not in out, "... without the password or the connection string")
    # A malformed string is refused at load (exit 2), not quoted.
    env.write_config("password=Sup3r-Secret-zz dbname", path=bad)
    r = subprocess.run([SERVER, "run", "-config", bad, "-socketPath", os.path.join(env.tmp, "bad", "api.sock"),
                        "-dataDir", os.path.join(env.tmp, "bad-data")], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    check(r.returncode == 2 and "server.datastore.connection_string" in out and "malformed" in out,
          "a malformed connection string: exit 2, names the key", out[-1500:])
    check("Sup3r-Secret-zz" not in out, "... and does not quote it")
    print("info " + out.strip().splitlines()[-1] if out.strip() else "info (no output)", flush=True)


def secrets_in_log(env):
    text = env.server.text()
    check(PASSWORD not in text, "the server log never holds the password")
    check(env.pg.conninfo() not in text and "password=" not in text and f"host={env.pg.dir}" not in text,
          "the server log never holds the connection string")


def main():
    bindir = pg_bindir()
    if not check(bindir is not None, "PostgreSQL binaries found (install postgresql: scripts/install-deps.sh)"):
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="lanyard-pg-it-")
    os.chmod(tmp, 0o755)
    pg = None
    env = None
    try:
        pg = Postgres(tmp, bindir)
        pg.start()
        rc, out, err = pg.psql("postgres", "CREATE DATABASE lanyard")
        check(rc == 0, "database created", err)
        env = Env(tmp, pg)
        ids = basics(env)
        kill9(env, ids)
        outage(env, ids)
        agent_svid(env)
        check(env.server.stop() == 0, "server SIGTERM: exit 0")
        wrong_password(env)
        secrets_in_log(env)
    except Exception as e:  # a broken harness is a failure, with its reason
        check(False, "harness", repr(e))
    finally:
        if env is not None:
            for d in (env.agent, env.server):
                if d is not None and d.alive():
                    d.stop(signal.SIGKILL, timeout=10)
        if pg is not None:
            pg.stop("immediate")
        if failures:
            print(f"server_pg: {len(failures)} failure(s); logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("all server_pg checks passed")


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
