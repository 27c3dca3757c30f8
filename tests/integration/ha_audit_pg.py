#!/usr/bin/python3
"""ha_audit_pg.py: the shared audit trail of several servers on one PostgreSQL (issue 16), end to end.

    ha_audit_pg.py LANYARD_SERVER LANYARD_AGENT   (the agent is not used: server_pg.py's arguments)

A real PostgreSQL in a temp dir (server_pg.py's cluster) and two real servers A and B on it (A with an
audit_log file, B logging its audit lines). Checked:
 - an entry created through A is listed by `audit list` on B with A's server ID (<data_dir>/server-id),
   the caller, the entry ID and SPIFFE ID, result ok; its delete through B too, with B's server ID and
   the deleted entry's SPIFFE ID;
 - refusals are listed: a duplicate entry through B (ALREADY_EXISTS), an unknown entry's delete
   (NOT_FOUND), an entry of another trust domain through A (INVALID_ARGUMENT, refused before the datastore);
 - join tokens: the token never appears in any row (read with psql, and in `audit list -output json`),
   its default agent ID is stored with "[redacted]" where the token was;
 - -since (RFC 3339 and a duration) and -limit choose lines; bad flags are usage errors (exit 2);
 - A's audit file still gets its lines (the file sink as before);
 - rows carry the time, and the table holds nothing else (no key material, no token hash).
Prints ok/FAIL per check; exits non-zero on any failure, 77 when PostgreSQL is not installed.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, exit_status, failures, free_port, poller, run, skip  # noqa: E402
from server_pg import Postgres, pg_bindir  # noqa: E402

wait_for = poller(0.05)
SERVER = sys.argv[1]
TD = "example.org"


class Server:
    def __init__(self, tmp, name, conninfo, audit_file=None):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "admin", "api.sock")
        self.data = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "server.yaml")
        self.audit_file = audit_file
        self.daemon = None
        with open(self.config, "w") as f:
            f.write("server:\n  trust_domain: example.org\n  datastore:\n    database_type: postgres\n"
                    f"    connection_string: \"{conninfo}\"\n  audit_retention: 7d\n" +
                    (f"  audit_log: {audit_file}\n" if audit_file else ""))
        os.chmod(self.config, 0o600)

    def start(self):
        self.daemon = Daemon([SERVER, "run", "-config", self.config, "-bindAddress", "127.0.0.1", "-serverPort",
                              str(free_port()), "-socketPath", self.sock, "-dataDir", self.data],
                             os.path.join(self.dir, "server.log"))
        return wait_for(lambda: not self.daemon.alive() or self.cli("healthcheck")[0] == 0, 30) and \
            self.daemon.alive()

    def cli(self, *args):
        return run([SERVER, *args, "-socketPath", self.sock])

    def server_id(self):
        with open(os.path.join(self.data, "server-id")) as f:
            return f.read().strip()

    def audit(self, *flags):
        rc, out, err = self.cli("audit", "list", "-output", "json", *flags)
        if rc != 0:
            return None, out + err
        return json.loads(out), out


def find(lines, **want):
    return [ln for ln in (lines or []) if all(ln.get(k) == v for k, v in want.items())]


def main():
    bindir = pg_bindir()
    if bindir is None:
        skip("ha_audit_pg", "PostgreSQL binaries not found (install postgresql: scripts/install-deps.sh)")
        return
    tmp = tempfile.mkdtemp(prefix="lanyard-audit-it-")
    os.chmod(tmp, 0o755)
    pg = None
    daemons = []
    try:
        pg = Postgres(tmp, bindir)
        pg.start()
        rc, _, err = pg.psql("postgres", "CREATE DATABASE lanyard")
        check(rc == 0, "database created", err)
        a = Server(tmp, "a", pg.conninfo(), audit_file=os.path.join(tmp, "a-audit.log"))
        b = Server(tmp, "b", pg.conninfo())
        for s in (a, b):
            ok = s.start()
            daemons.append(s.daemon)
            check(ok, f"server {s.name} starts on the shared database", s.daemon.text()[-1500:])
        if failures:
            return
        id_a, id_b = a.server_id(), b.server_id()
        check(id_a != id_b, "the two servers have their own server IDs", f"{id_a} {id_b}")
        caller = f"uid:{os.geteuid()}"

        # A change through A, listed through B with A as the server.
        t0 = int(time.time())
        spiffe = f"spiffe://{TD}/audit/web"
        parent = f"spiffe://{TD}/lanyard/agent/n1"
        rc, out, err = a.cli("entry", "create", "-spiffeID", spiffe, "-parentID", parent, "-selector", "unix:uid:1000")
        check(rc == 0, "entry create through A", out + err)
        eid = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Entry ID")), None)
        lines, raw = b.audit()
        got = find(lines, action="entry.create", server=id_a, entry_id=eid, spiffe_id=spiffe, result="ok",
                   caller=caller)
        check(len(got) == 1, "the change through A is listed by `audit list` on B, with A as the server", raw)

        # Refusals, from the datastore (a duplicate) and before it (a malformed ID).
        rc, out, err = b.cli("entry", "create", "-spiffeID", spiffe, "-parentID", parent, "-selector", "unix:uid:1000")
        check(rc != 0, "the same entry again through B is refused", out + err)
        rc, out, err = a.cli("entry", "delete", "-entryID", "no-such-entry")
        check(rc != 0, "deleting an unknown entry through A is refused", out + err)
        rc, out, err = a.cli("entry", "create", "-spiffeID", "spiffe://other.test/x", "-parentID", parent,
                             "-selector", "unix:uid:1000")
        check(rc != 0, "an entry of another trust domain through A is refused", out + err)
        lines, raw = a.audit()
        check(len(find(lines, action="entry.create", server=id_a, spiffe_id="spiffe://other.test/x",
                       result="INVALID_ARGUMENT")) == 1,
              "the refusal before the datastore is listed (INVALID_ARGUMENT)", raw)
        check(len(find(lines, action="entry.create", server=id_b, result="ALREADY_EXISTS")) == 1,
              "the refused duplicate through B is listed on A (ALREADY_EXISTS, B as the server)", raw)
        refused = find(lines, action="entry.delete", server=id_a, entry_id="no-such-entry", result="NOT_FOUND")
        check(len(refused) == 1 and refused[0].get("detail"), "the refused delete is listed with its reason", raw)

        # The delete through B: its row names the deleted entry's SPIFFE ID.
        rc, out, err = b.cli("entry", "delete", "-entryID", eid)
        check(rc == 0, "entry delete through B", out + err)
        lines, raw = a.audit()
        check(len(find(lines, action="entry.delete", server=id_b, entry_id=eid, spiffe_id=spiffe, result="ok")) == 1,
              "the delete through B is listed on A with the entry's SPIFFE ID", raw)

        # Join tokens: never stored, neither in a row nor in the default agent ID.
        rc, out, err = a.cli("token", "generate")
        token = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Token:")), "")
        check(rc == 0 and len(token) >= 32, "token generate through A", out + err)
        rc, out, err = b.cli("token", "generate", "-spiffeID", f"spiffe://{TD}/lanyard/agent/n2")
        token2 = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Token:")), "")
        check(rc == 0 and len(token2) >= 32, "token generate through B", out + err)
        lines, raw = b.audit()
        toks = find(lines, action="token.generate", result="ok")
        check(len(toks) == 2, "both tokens' lines are listed on B", raw)
        check(any("[redacted]" in ln.get("spiffe_id", "") and ln.get("server") == id_a for ln in toks),
              "the default agent ID, which embeds the token, is stored redacted", raw)
        rc, dump, err = pg.psql("lanyard", "SELECT string_agg(t::text, E'\\n' ORDER BY id) FROM audit_log t")
        check(rc == 0 and "token.generate" in dump, "the audit_log table read with psql", err)
        check(token not in dump and token2 not in dump and token not in raw and token2 not in raw,
              "no token in any row (psql) nor in `audit list`")

        # Filters.
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        lines, raw = a.audit("-since", future)
        check(lines == [], "-since a future RFC 3339 time lists nothing", raw)
        lines, raw = a.audit("-since", "1h")
        check(lines is not None and len(lines) == 7, "-since 1h lists the 7 lines of this run", raw)
        check(all(ln["time"] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 5)) for ln in lines or []),
              "every line carries its time", raw)
        lines, raw = a.audit("-limit", "1")
        check(lines is not None and len(lines) == 1 and lines[0]["action"] == "token.generate" and
              lines[0]["server"] == id_b, "-limit 1 lists the newest line", raw)
        rc, out, err = a.cli("audit", "list", "-since", "yesterday")
        check(rc == 2 and "-since" in err, "a bad -since is a usage error", out + err)
        rc, out, err = a.cli("audit", "list", "-limit", "0")
        check(rc == 2, "-limit 0 is a usage error", out + err)
        rc, out, err = a.cli("audit", "list")
        check(rc == 0 and "Server" in out and id_a in out and "entry.create" in out,
              "the pretty output names the server and the action", out + err)

        # The file sink is as it was.
        with open(a.audit_file) as f:
            file_lines = [json.loads(x) for x in f if x.strip()]
        check(any(x.get("action") == "entry.create" and x.get("entry_id") == eid for x in file_lines) and
              all("server" not in x for x in file_lines),
              "A's audit file still gets its lines, in their format", str(file_lines[-3:]))
        check(all(token not in json.dumps(x) for x in file_lines), "no token in A's audit file")
        rc, n, err = pg.psql("lanyard", "SELECT count(*) FROM audit_log WHERE server NOT IN ('%s', '%s')" %
                             (id_a, id_b))
        check(rc == 0 and n == "0", "every row names one of the two servers", n + err)
    except Exception as e:  # a broken harness is a failure, with its reason
        check(False, "harness", repr(e))
    finally:
        for d in daemons:
            if d is not None and d.alive():
                d.stop(signal.SIGKILL, timeout=10)
        if pg is not None:
            pg.stop("immediate")
        if failures:
            print(f"ha_audit_pg: {len(failures)} failure(s); logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
