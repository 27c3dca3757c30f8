#!/usr/bin/python3
"""server_cli.py: the real lanyard-server, run with flags only, driven by
its own CLI (SPEC §2) and, to reach the server's own checks past the
CLI's, by Python grpcio on the admin socket.

    server_cli.py LANYARD_SERVER PROTO_DIR

Scenarios: start-up (healthcheck, socket and data-dir modes, the agent
listener's TLS certificate), entries (create/show/update/delete, text and
JSON), refusals (one line on stderr, the exit code, nothing stored),
tokens, the bundle in both formats, agents, the audit log (one line per
change, never a token), kill -9 and restart (durability), start-up
failures (exit 1 and 2), SIGTERM (exit 0).

LANYARD_SERVER_WRAP="valgrind --leak-check=full --errors-for-leak-kinds=definite
--error-exitcode=99" runs the server under that command (timeouts grow).
Prints ok/FAIL per check and exits 1 on any failure, else 77 (a skip, for
ctest) when a scenario cannot run here (the other-uid one needs root).
"""
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SKIP_RC, skip, skips  # noqa: E402

SERVER, PROTO_DIR = sys.argv[1], sys.argv[2]
WRAP = shlex.split(os.environ.get("LANYARD_SERVER_WRAP", ""))
SLOW = 20 if WRAP else 1
TD = "example.org"
AGENT = f"spiffe://{TD}/lanyard/agent/node1"

failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (f" ({detail})" if detail and not cond else ""), flush=True)
    if not cond:
        failures.append(what)


class Server:
    def __init__(self, tmp, name, extra=(), config=None):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "admin", "api.sock")
        self.data = os.path.join(tmp, "data")
        self.log_path = os.path.join(tmp, f"{name}.log")
        args = [SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", "0",
                "-socketPath", self.sock, "-dataDir", self.data, *extra]
        if config:
            args += ["-config", config]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(WRAP + args, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None

    def wait_ready(self):
        deadline = time.time() + 30 * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            m = re.search(r"agent_api=127\.0\.0\.1:(\d+)", self.text())
            if m and cli("healthcheck", sock=self.sock)[0] == 0:
                self.port = int(m.group(1))
                return True
            time.sleep(0.1)
        return False

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc


def cli(*args, sock=None):
    cmd = [SERVER, *args]
    if sock is not None:
        cmd += ["-socketPath", sock]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    return r.returncode, r.stdout, r.stderr


def one_error_line(err):
    lines = err.splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ")


def field(out, name):
    """The value of `Name : value` in SPIRE-style output (the last field)."""
    for line in out.splitlines():
        if line.startswith(name) and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def entries_json(s):
    rc, out, err = cli("entry", "show", "-output", "json", sock=s.sock)
    return json.loads(out) if rc == 0 else None


# ---- scenarios --------------------------------------------------------------

def startup(s):
    check(s.wait_ready(), "server starts with flags only and is healthy", s.text()[-2000:])
    rc, out, err = cli("healthcheck", sock=s.sock)
    check(rc == 0 and out.strip() == "Server is healthy.", "healthcheck: exit 0, 'Server is healthy.'", out + err)
    st = os.stat(s.sock)
    check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, "admin socket is 0600",
          oct(st.st_mode))
    check(stat.S_IMODE(os.stat(os.path.dirname(s.sock)).st_mode) == 0o700, "admin socket directory is 0700")
    check(stat.S_IMODE(os.stat(s.data).st_mode) == 0o700, "data dir is 0700")
    bad = []
    for root, dirs, files in os.walk(s.data):
        for d in dirs:
            if stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) != 0o700:
                bad.append(d)
        for f in files:
            if stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) != 0o600:
                bad.append(f)
    check(not bad and os.path.exists(os.path.join(s.data, "datastore.sqlite3")),
          "data dir files are 0600 (datastore.sqlite3 there)", str(bad))
    m = re.search(r"lanyard-server started: trust_domain=example\.org .*bundle_sequence=(\d+)", s.text())
    check(m is not None and int(m.group(1)) >= 1, "start-up line names the trust domain and bundle sequence")
    check("PRIVATE KEY" not in s.text() and "BEGIN" not in s.text(), "no key material in the log")


def tls_listener(s, bundle_pem):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle_pem)
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
            with ctx.wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        uris = cert.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(x509.UniformResourceIdentifier)
        check(uris == [f"spiffe://{TD}/lanyard/server"],
              "agent listener: TLS certificate verifies to the bundle, URI SAN spiffe://TD/lanyard/server", str(uris))
    except Exception as e:  # noqa: BLE001
        check(False, "agent listener: TLS handshake against the bundle", repr(e))


def entries(s):
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/web", "-parentID", AGENT,
                       "-selector", "unix:uid:1000", "-selector", "unix:gid:1000", "-x509SVIDTTL", "600",
                       "-jwtSVIDTTL", "120", "-dns", "web.example.org", sock=s.sock)
    eid = field(out, "Entry ID")
    check(rc == 0 and eid and re.fullmatch(r"[0-9a-f-]{36}", eid), "entry create: exit 0, prints Entry ID",
          out + err)
    # A script's way: grep 'Entry ID' and take the last field.
    last = [ln.split()[-1] for ln in out.splitlines() if "Entry ID" in ln]
    check(last == [eid], "'Entry ID' line: the last field is the ID")
    check(field(out, "SPIFFE ID") == f"spiffe://{TD}/web" and field(out, "Parent ID") == AGENT
          and field(out, "X509-SVID TTL") == "600" and field(out, "JWT-SVID TTL") == "120"
          and "Selector         : unix:uid:1000" in out and "Selector         : unix:gid:1000" in out
          and "DNS name         : web.example.org" in out, "entry create: SPIRE's block", out)

    rc, out, err = cli("entry", "create", "-entryID", "db-1", "-spiffeID", f"spiffe://{TD}/db", "-parentID", AGENT,
                       "-selector", "unix:user:postgres", "-hint", "db", "-admin", sock=s.sock)
    check(rc == 0 and field(out, "Entry ID") == "db-1" and field(out, "X509-SVID TTL") == "default"
          and field(out, "Admin") == "true" and field(out, "Hint") == "db", "entry create -entryID -hint -admin",
          out + err)

    rc, out, err = cli("entry", "show", sock=s.sock)
    check(rc == 0 and out.startswith("Found 2 entries\n\n") and out.count("Entry ID         : ") == 2,
          "entry show: 'Found 2 entries' and two blocks", out + err)
    rc, out, err = cli("entry", "show", "-entryID", "db-1", sock=s.sock)
    check(rc == 0 and out.startswith("Found 1 entry\n") and "spiffe://example.org/db" in out,
          "entry show -entryID", out + err)
    rc, out, err = cli("entry", "show", "-selector", "unix:uid:1000", sock=s.sock)
    check(rc == 0 and "Found 1 entry" in out and eid in out, "entry show -selector (entries holding it)", out)
    rc, out, err = cli("entry", "show", "-spiffeID", f"spiffe://{TD}/nothing", sock=s.sock)
    check(rc == 0 and out.startswith("Found 0 entries"), "entry show -spiffeID with no match", out + err)

    js = entries_json(s)
    web = [e for e in (js or []) if e["entry_id"] == eid]
    check(isinstance(js, list) and len(js) == 2 and len(web) == 1, "entry show -output json: an array", str(js))
    if web:
        w = web[0]
        check(w["spiffe_id"] == f"spiffe://{TD}/web" and w["parent_id"] == AGENT and w["x509_svid_ttl"] == 600
              and w["jwt_svid_ttl"] == 120 and w["dns_names"] == ["web.example.org"] and w["node"] is False
              and {"type": "unix", "value": "uid:1000"} in w["selectors"] and w["revision"] >= 1
              and w["created_at"] > 0, "entry JSON: proto field names and values", json.dumps(w))

    rc, out, err = cli("entry", "update", "-entryID", eid, "-spiffeID", f"spiffe://{TD}/web2", "-parentID", AGENT,
                       "-selector", "unix:uid:1001", sock=s.sock)
    check(rc == 0 and field(out, "SPIFFE ID") == f"spiffe://{TD}/web2" and field(out, "Entry ID") == eid,
          "entry update replaces the entry", out + err)
    js = entries_json(s) or []
    upd = [e for e in js if e["entry_id"] == eid]
    check(len(upd) == 1 and upd[0]["selectors"] == [{"type": "unix", "value": "uid:1001"}]
          and upd[0]["x509_svid_ttl"] == 0 and upd[0]["dns_names"] == [], "update stored every field", str(upd))

    rc, out, err = cli("entry", "delete", "-entryID", eid, sock=s.sock)
    check(rc == 0 and out.strip() == f"Deleted entry {eid}", "entry delete: 'Deleted entry <id>'", out + err)
    js = entries_json(s) or []
    check([e["entry_id"] for e in js] == ["db-1"], "deleted entry is gone", str(js))
    return 2 + 1 + 1  # changes made: 2 creates, 1 update, 1 delete


def refusals(s):
    before = entries_json(s)
    p = ["-parentID", AGENT]
    cases = [
        ("malformed SPIFFE ID", 2, ["entry", "create", "-spiffeID", "spiffe:/bad", *p, "-selector", "unix:uid:1"]),
        ("upper-case trust domain", 2,
         ["entry", "create", "-spiffeID", "spiffe://Example.org/x", *p, "-selector", "unix:uid:1"]),
        ("foreign trust domain", 1,
         ["entry", "create", "-spiffeID", "spiffe://other.org/x", *p, "-selector", "unix:uid:1"]),
        ("foreign parent trust domain", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", "-parentID", "spiffe://other.org/a",
          "-selector", "unix:uid:1"]),
        ("bad selector value", 2, ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:abc"]),
        ("unknown selector type", 2, ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "foo:bar"]),
        ("selector without a colon", 2, ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix"]),
        ("negative TTL", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-x509SVIDTTL", "-5"]),
        ("TTL over the cap", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-jwtSVIDTTL", "999999"]),
        ("bad DNS name", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-dns", "a..b"]),
        ("node selector on a workload entry", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "k8s_psat:cluster:demo"]),
        ("missing -selector", 2, ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p]),
        ("missing -spiffeID", 2, ["entry", "create", *p, "-selector", "unix:uid:1"]),
        ("duplicate entry", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/db", *p, "-selector", "unix:user:postgres"]),
        ("duplicate entry ID", 1,
         ["entry", "create", "-entryID", "db-1", "-spiffeID", f"spiffe://{TD}/other", *p, "-selector", "unix:uid:7"]),
        ("unknown entry ID on update", 1,
         ["entry", "update", "-entryID", "nope", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1"]),
        ("update without -entryID", 2, ["entry", "update", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1"]),
        ("unknown entry ID on delete", 1, ["entry", "delete", "-entryID", "nope"]),
        ("delete without -entryID", 2, ["entry", "delete"]),
        ("unknown flag", 2, ["entry", "create", "-bogus", "x"]),
        ("flag without a value", 2, ["entry", "show", "-spiffeID"]),
        ("bad -output", 2, ["entry", "show", "-output", "yaml"]),
        ("unknown command", 2, ["entry", "frobnicate"]),
        ("token TTL over 7 days", 2, ["token", "generate", "-ttl", "604801"]),
        ("token for another trust domain", 1, ["token", "generate", "-spiffeID", "spiffe://other.org/agent"]),
        # Lanyard's reserved namespace (lib/spiffeid.h), refused by the CLI before it sends.
        ("entry for the server's own ID", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/lanyard/server", *p, "-selector", "unix:uid:1"]),
        ("entry for an agent's ID", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/lanyard/agent/node1", *p, "-selector", "unix:uid:1"]),
        ("entry parented by a reserved ID that is no agent", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", "-parentID", f"spiffe://{TD}/lanyard/x",
          "-selector", "unix:uid:1"]),
        ("token for the server's own ID", 2, ["token", "generate", "-spiffeID", f"spiffe://{TD}/lanyard/server"]),
        ("token for an x509pop agent's ID", 2,
         ["token", "generate", "-spiffeID", f"spiffe://{TD}/lanyard/agent/x509pop/{'a' * 40}"]),
        ("token for another token's default ID", 2,
         ["token", "generate", "-spiffeID", f"spiffe://{TD}/lanyard/agent/join_token/abc"]),
        # The TTL floor (lib/caps.h), refused by the server.
        ("X.509 TTL under the floor", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-x509SVIDTTL", "1"]),
        ("JWT TTL under the floor", 1,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-jwtSVIDTTL", "29"]),
        # A value with a newline and a terminal escape: still one line.
        ("newline in a value", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x\nError: forged line", *p, "-selector", "unix:uid:1"]),
        ("escape in a value", 2,
         ["entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1", "-dns", "a\x1b[2Jb"]),
        ("bad bundle format", 2, ["bundle", "show", "-format", "der"]),
        ("agent show of an unknown agent", 1, ["agent", "show", "-spiffeID", AGENT]),
        ("agent evict of an unknown agent", 1, ["agent", "evict", "-spiffeID", AGENT]),
        ("agent ban of an unknown agent", 1, ["agent", "ban", "-spiffeID", AGENT]),
        ("agent ban without -spiffeID", 2, ["agent", "ban"]),
    ]
    for name, want, args in cases:
        rc, out, err = cli(*args, sock=s.sock)
        check(rc == want and one_error_line(err) and out == "", f"refused: {name}: exit {want}, one 'Error:' line",
              f"rc={rc} out={out!r} err={err!r}")
    check(entries_json(s) == before, "nothing stored by any refused command")
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/lanyard/server", *p, "-selector", "unix:uid:1",
                       sock=s.sock)
    check("reserved namespace" in err, "refused: the server's ID: the message names the reserved namespace", err)
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1",
                       "-x509SVIDTTL", "1", sock=s.sock)
    check("x509_svid_ttl 1 is under the 20-second floor" in err, "refused: X.509 TTL 1: the floor named", err)
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/x\nError: forged line", *p,
                       "-selector", "unix:uid:1", sock=s.sock)
    check(err.count("\n") == 1 and "x\\nError: forged line" in err,
          "a newline in a value is printed escaped (\\n), on one line", repr(err))
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/x", *p, "-selector", "unix:uid:1",
                       "-dns", "a\x1b[2Jb", sock=s.sock)
    check("\x1b" not in err and "a\\x1b[2Jb" in err, "a terminal escape in a value is printed as \\x1b", repr(err))
    changes = {("entry", "create"), ("entry", "update"), ("entry", "delete"), ("token", "generate"),
               ("agent", "evict"), ("agent", "ban")}
    reached = sum(1 for _, want, args in cases if want == 1 and tuple(args[:2]) in changes)
    rc, out, err = cli("healthcheck", sock=os.path.join(s.tmp, "nowhere.sock"))
    check(rc == 1 and one_error_line(err) and "cannot reach" in err, "healthcheck: no server: exit 1", err)
    return reached + 1  # and the X.509 TTL 1 create above


def direct(s, pb_dir):
    """The server's own checks, past the CLI: requests the CLI would never send."""
    sys.path.insert(0, pb_dir)
    admin = importlib.import_module("admin_pb2")
    agent = importlib.import_module("agent_pb2")
    ch = grpc.insecure_channel(f"unix:{s.sock}")

    def call(method, req, resp_type):
        f = ch.unary_unary(f"/lanyard.admin.v1.Admin/{method}", request_serializer=lambda m: m.SerializeToString()
                           if not isinstance(m, bytes) else m, response_deserializer=resp_type.FromString)
        try:
            return grpc.StatusCode.OK, f(req, timeout=30 * SLOW)
        except grpc.RpcError as e:
            return e.code(), e.details()

    before = entries_json(s)

    def entry(**kw):
        e = agent.Entry(spiffe_id=f"spiffe://{TD}/direct", parent_id=AGENT,
                        selectors=[agent.Selector(type="unix", value="uid:5")])
        for k, v in kw.items():
            if isinstance(v, list):
                del getattr(e, k)[:]
                getattr(e, k).extend(v)
            else:
                setattr(e, k, v)
        return e

    bad = [
        ("malformed SPIFFE ID", entry(spiffe_id="spiffe:/x")),
        ("foreign trust domain", entry(spiffe_id="spiffe://other.org/x")),
        ("trust domain ID as spiffe_id", entry(spiffe_id=f"spiffe://{TD}")),
        ("bad selector", entry(selectors=[agent.Selector(type="unix", value="uid:-1")])),
        ("unknown selector type", entry(selectors=[agent.Selector(type="nope", value="x")])),
        ("no selectors", entry(selectors=[])),
        ("negative X.509 TTL", entry(x509_svid_ttl=-1)),
        ("negative JWT TTL", entry(jwt_svid_ttl=-300)),
        ("bad entry ID", entry(entry_id="a/b")),
        ("bad DNS name", entry(dns_names=["-bad-"])),
        ("duplicate selector", entry(selectors=[agent.Selector(type="unix", value="uid:5")] * 2)),
        ("the server's own ID", entry(spiffe_id=f"spiffe://{TD}/lanyard/server")),
        ("an agent's ID", entry(spiffe_id=f"spiffe://{TD}/lanyard/agent/join_token/abc")),
        ("a node entry for the server's ID", entry(spiffe_id=f"spiffe://{TD}/lanyard/server", node=True,
                                                   parent_id=f"spiffe://{TD}/lanyard/server",
                                                   selectors=[agent.Selector(type="k8s_psat", value="cluster:c")])),
        ("a reserved parent that is no agent", entry(parent_id=f"spiffe://{TD}/lanyard")),
        ("X.509 TTL 1 (under the floor)", entry(x509_svid_ttl=1)),
        ("JWT TTL 1 (under the floor)", entry(jwt_svid_ttl=1)),
    ]
    for name, req in bad:
        code, detail = call("CreateEntry", req, agent.Entry)
        check(code == grpc.StatusCode.INVALID_ARGUMENT and detail and "\n" not in detail,
              f"server refuses CreateEntry: {name}: INVALID_ARGUMENT, one line", f"{code} {detail}")
    code, detail = call("CreateEntry", b"\xff\xff\xff", agent.Entry)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "server refuses a malformed request", f"{code} {detail}")
    code, detail = call("CreateEntry", entry(spiffe_id=f"spiffe://{TD}/db", selectors=[
        agent.Selector(type="unix", value="user:postgres")]), agent.Entry)
    check(code == grpc.StatusCode.ALREADY_EXISTS, "server: duplicate entry is ALREADY_EXISTS", f"{code} {detail}")
    code, detail = call("UpdateEntry", entry(), agent.Entry)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "server: update without an entry ID", f"{code} {detail}")
    code, detail = call("UpdateEntry", entry(entry_id="nope"), agent.Entry)
    check(code == grpc.StatusCode.NOT_FOUND, "server: update of an unknown entry is NOT_FOUND", f"{code} {detail}")
    code, detail = call("DeleteEntry", admin.EntryID(entry_id="nope"), agent.Entry)
    check(code == grpc.StatusCode.NOT_FOUND, "server: delete of an unknown entry is NOT_FOUND", f"{code} {detail}")
    for name, req in [("negative TTL", admin.TokenRequest(ttl=-1)),
                      ("TTL over 7 days", admin.TokenRequest(ttl=7 * 86400 + 1)),
                      ("foreign trust domain", admin.TokenRequest(spiffe_id="spiffe://other.org/a")),
                      ("malformed SPIFFE ID", admin.TokenRequest(spiffe_id="spiffe://example.org/a//b")),
                      ("the server's own ID", admin.TokenRequest(spiffe_id=f"spiffe://{TD}/lanyard/server")),
                      ("a k8s_psat agent's ID",
                       admin.TokenRequest(spiffe_id=f"spiffe://{TD}/lanyard/agent/k8s_psat/c/u")),
                      ("another token's default ID",
                       admin.TokenRequest(spiffe_id=f"spiffe://{TD}/lanyard/agent/join_token/abc"))]:
        code, detail = call("GenerateToken", req, admin.Token)
        check(code == grpc.StatusCode.INVALID_ARGUMENT, f"server refuses GenerateToken: {name}", f"{code} {detail}")
    code, detail = call("EvictAgent", admin.AgentID(), admin.Agent)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "server: evict without an ID", f"{code} {detail}")
    check(entries_json(s) == before, "nothing stored by any refused request")
    code, tok = call("GenerateToken", admin.TokenRequest(), admin.Token)
    check(code == grpc.StatusCode.OK and tok.spiffe_id == f"spiffe://{TD}/lanyard/agent/join_token/{tok.token}"
          and 590 <= tok.expires_at - time.time() <= 610,
          "GenerateToken default: SPIFFE ID .../join_token/<token>, 600 s", str(tok))
    ch.close()
    # refused: 17 + 1 + 1 + 1 + 1 + 1 creates/updates/deletes, 7 tokens, 1 evict; accepted: 1 token
    return tok.token, 30, 1


def tokens(s):
    rc1, out1, err1 = cli("token", "generate", sock=s.sock)
    rc2, out2, err2 = cli("token", "generate", "-spiffeID", AGENT, "-ttl", "60", sock=s.sock)
    t1 = out1.strip().removeprefix("Token: ")
    t2 = out2.strip().removeprefix("Token: ")
    check(rc1 == 0 and rc2 == 0 and out1.startswith("Token: ") and re.fullmatch(r"[0-9a-f]{64}", t1)
          and re.fullmatch(r"[0-9a-f]{64}", t2), "token generate prints 'Token: <64 hex>'", out1 + err1 + out2 + err2)
    check(t1 != t2, "two tokens differ")
    return [t1, t2]


def bundle(s, tmp):
    rc, pem, err = cli("bundle", "show", sock=s.sock)
    path = os.path.join(tmp, "bundle.pem")
    with open(path, "w") as f:
        f.write(pem)
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-ext", "subjectAltName,basicConstraints"],
                       capture_output=True, text=True)
    check(rc == 0 and pem.startswith("-----BEGIN CERTIFICATE-----") and r.returncode == 0
          and f"URI:spiffe://{TD}" in r.stdout and "CA:TRUE" in r.stdout,
          "bundle show (pem): openssl reads a CA with URI SAN spiffe://TD", pem[:200] + err + r.stderr)
    rc, out, err = cli("bundle", "show", "-format", "spiffe", sock=s.sock)
    try:
        doc = json.loads(out)
        keys = doc["keys"]
        x5 = [k for k in keys if k.get("use") == "x509-svid"]
        jw = [k for k in keys if k.get("use") == "jwt-svid"]
        ok = (rc == 0 and doc["spiffe_sequence"] >= 1 and doc["spiffe_refresh_hint"] > 0 and x5 and jw
              and all(len(k["x5c"]) == 1 and "kid" not in k for k in x5) and all(k.get("kid") for k in jw))
        check(ok, "bundle show -format spiffe: JWKS with use/x5c/kid and spiffe_sequence", out[:300])
    except (ValueError, KeyError) as e:
        check(False, "bundle show -format spiffe parses as JSON", repr(e) + out[:300] + err)
    return pem


def agents(s):
    rc, out, err = cli("agent", "list", sock=s.sock)
    check(rc == 0 and out.strip() == "No attested agents found", "agent list: none yet", out + err)
    rc, out, err = cli("agent", "list", "-output", "json", sock=s.sock)
    check(rc == 0 and json.loads(out) == [], "agent list -output json: []", out + err)


def other_uid(s):
    """Another user that got past the file modes is still refused (uid check)."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        skip("other uid", "needs root and setpriv")
        return
    d = os.path.dirname(s.sock)
    os.chmod(d, 0o755)
    os.chmod(s.sock, 0o666)
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SERVER, "entry", "create",
                            "-spiffeID", f"spiffe://{TD}/sneaky", "-parentID", AGENT, "-selector", "unix:uid:1",
                            "-socketPath", s.sock], capture_output=True, text=True, timeout=60 * SLOW)
        check(r.returncode == 1 and one_error_line(r.stderr) and "PERMISSION_DENIED" in r.stderr
              and "uid 65534" in r.stderr, "a caller of another uid is refused (PERMISSION_DENIED)", r.stderr)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SERVER, "healthcheck",
                            "-socketPath", s.sock], capture_output=True, text=True, timeout=60 * SLOW)
        check(r.returncode == 1, "a caller of another uid cannot even read health", r.stdout + r.stderr)
    finally:
        os.chmod(s.sock, 0o600)
        os.chmod(d, 0o700)
    denied = [x for x in audit_lines(s.text()) if x.get("caller") == "uid:65534"]
    check(len(denied) == 1 and denied[0]["action"] == "entry.create" and denied[0]["result"] == "PERMISSION_DENIED",
          "audit: the refused caller's uid", str(denied))
    check(all(e["spiffe_id"] != f"spiffe://{TD}/sneaky" for e in entries_json(s) or []), "nothing stored for it")


def audit_lines(text):
    return [json.loads(m) for m in re.findall(r" audit (\{.*\})$", text, re.M)]


def restart_survives_kill9(tmp):
    s = Server(tmp, "second")
    check(s.wait_ready(), "restart after SIGTERM", s.text()[-2000:])
    rc, out, err = cli("entry", "show", "-entryID", "db-1", sock=s.sock)
    check(rc == 0 and "Found 1 entry" in out, "entries survive a clean restart", out + err)
    rc, out, err = cli("entry", "create", "-spiffeID", f"spiffe://{TD}/durable", "-parentID", AGENT,
                       "-selector", "unix:uid:4242", sock=s.sock)
    eid = field(out, "Entry ID")
    check(rc == 0 and eid, "create acknowledged before kill -9", out + err)
    s.stop(signal.SIGKILL)
    audit = os.path.join(tmp, "audit.log")
    cfg = os.path.join(tmp, "server.yaml")
    with open(cfg, "w") as f:
        # Flags override the file: the file's trust domain and port lose.
        f.write(f"server:\n  trust_domain: file.example.org\n  server_port: 1\n  audit_log: {audit}\n"
                f"  log_level: debug\n  node_attestors:\n    join_token: {{}}\n")
    s2 = Server(tmp, "third", config=cfg, extra=["-logLevel", "info"])
    check(s2.wait_ready(), "restart after kill -9 (stale socket replaced), with -config", s2.text()[-2000:])
    rc, out, err = cli("entry", "show", "-entryID", eid, sock=s2.sock)
    check(rc == 0 and "spiffe://example.org/durable" in out, "entry survives kill -9 and restart", out + err)
    check(" debug " not in s2.text(), "-logLevel overrides the file's log_level")
    rc, out, err = cli("entry", "delete", "-entryID", eid, sock=s2.sock)
    rc2, tout, _ = cli("token", "generate", sock=s2.sock)
    rc3, _, _ = cli("entry", "delete", "-entryID", eid, sock=s2.sock)   # refused: gone
    token = tout.strip().removeprefix("Token: ")
    st = os.stat(audit)
    with open(audit) as f:
        text = f.read()
    lines = [json.loads(ln) for ln in text.splitlines()]
    check(stat.S_IMODE(st.st_mode) == 0o600, "audit log file is 0600", oct(st.st_mode))
    check([(x["action"], x["result"]) for x in lines] ==
          [("entry.delete", "ok"), ("token.generate", "ok"), ("entry.delete", "NOT_FOUND")]
          and all(x["caller"] == f"uid:{os.getuid()}" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", x["time"])
                  for x in lines) and lines[0]["entry_id"] == eid,
          "audit file: one line per change, with time, caller uid, action, result", text)
    check(rc2 == 0 and token and token not in text and token not in s2.text(), "audit file and log hold no token")
    return s2


def startup_failures(tmp):
    cases = [
        ("no trust domain", 2, ["run", "-dataDir", os.path.join(tmp, "f1")], "trust domain"),
        ("unknown flag", 2, ["run", "-trustDomain", TD, "-bogus"], "bogus"),
        ("bad port", 2, ["run", "-trustDomain", TD, "-serverPort", "http"], "serverPort"),
        ("bad bind address", 2, ["run", "-trustDomain", TD, "-bindAddress", "localhost"], "bindAddress"),
        ("missing config file", 1, ["run", "-trustDomain", TD, "-config", os.path.join(tmp, "nope.yaml")],
         "nope.yaml"),
    ]
    junk = os.path.join(tmp, "junkdata")
    os.makedirs(junk, mode=0o700)
    with open(os.path.join(junk, "datastore.sqlite3"), "wb") as f:
        f.write(b"this is not a database" * 100)
    os.chmod(os.path.join(junk, "datastore.sqlite3"), 0o600)
    cases.append(("corrupt datastore", 1, ["run", "-trustDomain", TD, "-dataDir", junk, "-bindAddress", "127.0.0.1",
                                           "-serverPort", "0", "-socketPath", os.path.join(tmp, "j", "s.sock")],
                  "cannot open datastore " + os.path.join(junk, "datastore.sqlite3")))
    badcfg = os.path.join(tmp, "bad.yaml")
    with open(badcfg, "w") as f:
        f.write("server:\n  trust_domain: example.org\n  data_dri: /x\n")
    cases.append(("unknown config key", 2, ["run", "-config", badcfg], f"{badcfg}:3: unknown key server.data_dri"))
    for name, want, args, part in cases:
        r = subprocess.run([SERVER, *args], capture_output=True, text=True, timeout=60 * SLOW)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("lanyard-server: ")]
        check(r.returncode == want and len(lines) == 1 and part in lines[0] and r.stderr.splitlines()[-1] == lines[0],
              f"run refused: {name}: exit {want}, one 'lanyard-server:' line", f"rc={r.returncode} {r.stderr!r}")


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-server-cli-")
    os.chmod(tmp, 0o755)
    pb_dir = os.path.join(tmp, "pb")
    os.makedirs(pb_dir)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", "-I/usr/include",
                    f"--python_out={pb_dir}", f"{PROTO_DIR}/agent.proto", f"{PROTO_DIR}/admin.proto"], check=True)
    s = Server(tmp, "first")
    s2 = None
    try:
        startup(s)
        if failures:
            return
        changes = entries(s)
        cli_refused = refusals(s)  # refused changes that reached the server
        direct_token, direct_refused, direct_ok = direct(s, pb_dir)
        toks = tokens(s)
        pem = bundle(s, tmp)
        tls_listener(s, pem)
        agents(s)
        # Without audit_log, audit lines go to the log: one per change, refused ones too.
        lines = audit_lines(s.text())
        ok_lines = [x for x in lines if x["result"] == "ok"]
        check(len(ok_lines) == changes + direct_ok + len(toks),
              f"audit: one 'ok' line per accepted change ({changes + direct_ok + len(toks)})",
              f"{len(ok_lines)}: {ok_lines}")
        check(len(lines) - len(ok_lines) == cli_refused + direct_refused,
              f"audit: one line per refused change ({cli_refused + direct_refused})",
              f"{len(lines) - len(ok_lines)}")
        text = s.text()
        check(all(t not in text for t in toks + [direct_token]), "log and audit lines hold no token")
        check(all(x.get("caller") == f"uid:{os.getuid()}" for x in lines), "audit caller is the uid")
        other_uid(s)
        # A clean stop after everything above (under a sanitizer or valgrind,
        # a leak or a memory error makes the exit code non-zero).
        def sigterm(srv, when):
            rc = srv.stop(signal.SIGTERM)
            check(rc == 0, f"SIGTERM {when}: exit 0", f"rc={rc} {srv.text()[-3000:]}")
            check(not os.path.exists(srv.sock), f"SIGTERM {when}: admin socket removed")
            check("lanyard-server stopped" in srv.text(), f"SIGTERM {when}: orderly stop logged")

        sigterm(s, "after the CLI scenarios")
        s2 = restart_survives_kill9(tmp)
        sigterm(s2, "after kill -9 and restart")
        startup_failures(tmp)
    finally:
        for srv in (s, s2):
            if srv is not None and srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
        if failures:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)" +
          (f", {len(skips)} scenario(s) SKIPPED" if skips else ""))
    sys.exit(1 if failures else SKIP_RC if skips else 0)
