#!/usr/bin/python3
"""agent_sync_e2e.py: the agent's server side (agent/sync.c) against a real lanyard-server.

    agent_sync_e2e.py LANYARD_SERVER LANYARD_AGENT

Starts lanyard-server (short SVID TTLs so that rotation shows within a
minute) and lanyard-agent processes in a temporary directory, drives them
with their CLIs, and checks what SPEC §4 and §6 promise:

  - enrolment with a join token and a bootstrap bundle (one round trip),
    the data dir 0700 and its files 0600;
  - an entry for the agent -> an X.509-SVID on the Workload API, verified
    with `openssl verify` against `bundle show`, URI SAN = the entry;
    a JWT-SVID, reused from the agent's cache on the next call;
  - `entry delete` -> gone from the Workload API within 1 s (measured);
  - a 20 s entry renewed inside [45%, 55%] of its lifetime (measured);
  - the agent's own SVID renewed inside [45%, 55%], the watch still
    working over the new channel (a new entry still arrives);
  - the server killed -> cached SVIDs still served; the agent restarted
    while the server is down, without a token -> same ID, no attestation,
    SVIDs served at once from -dataDir; the server back -> the agent
    reconnects by itself;
  - `agent evict` -> the agent cannot attest again with a spent join token:
    it says so and keeps serving its SVIDs;
  - a token made with -spiffeID (the ticket step), -insecureBootstrap, and
    x509pop (two-step challenge), each enrolling a fresh agent.

Prints one line per check and the measured delays; exits 1 on any failure,
else 77 (a skip, for ctest) when a part cannot run here (`SKIP` lines say why).
"""
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PROCS, Daemon, check, exit_status, failures, free_port, make_node_pki, skip  # noqa: E402

SERVER_BIN, AGENT_BIN = sys.argv[1], sys.argv[2]
TD = "example.org"
TDID = "spiffe://" + TD
UID = os.getuid()


def log_time(line):
    """The UTC timestamp at the start of a log line, as Unix seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if not m:
        return None
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def line_at(text, pos):
    """The whole line of `text` holding offset `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start:end if end >= 0 else len(text)]


class Proc(Daemon):
    """A Daemon (harness.PROCS: killed at the end whatever happened) whose log can be waited on."""

    def wait_log(self, pattern, timeout=10.0, after=0):
        """The first match of `pattern` in the log past offset `after`, waiting for it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.text()
            m = re.search(pattern, t[after:], re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        return None


class Server:
    def __init__(self, d, port, config, bind="127.0.0.1"):
        self.d, self.port, self.config, self.bind = d, port, config, bind
        self.sock = os.path.join(d, "ssock", "api.sock")
        self.p = None

    def start(self):
        self.p = Proc([SERVER_BIN, "run", "-config", self.config, "-trustDomain", TD, "-bindAddress", self.bind,
                       "-serverPort", str(self.port), "-socketPath", self.sock, "-dataDir",
                       os.path.join(self.d, "sdata"), "-logLevel", "debug"], os.path.join(self.d, "server.log"))
        if not self.p.wait_log(r"agent_api=%s:\d+" % re.escape(self.bind), 20):
            print(self.p.text())
            raise SystemExit("lanyard-server did not start")

    def cli(self, *args, check_rc=True):
        r = subprocess.run([SERVER_BIN, *args, "-socketPath", self.sock], capture_output=True, text=True, timeout=30)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"lanyard-server {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r

    def token(self, *args):
        return re.search(r"Token: (\S+)", self.cli("token", "generate", *args).stdout).group(1)

    def entry_create(self, *args):
        return re.search(r"Entry ID\s*: (\S+)", self.cli("entry", "create", *args).stdout).group(1)


class Agent:
    def __init__(self, d, name, server_port):
        self.d = os.path.join(d, name)
        os.makedirs(self.d, exist_ok=True)
        self.name = name
        self.sock = os.path.join(self.d, "public", "api.sock")
        self.data = os.path.join(self.d, "data")
        self.server_port = server_port
        self.p = None
        self.log_path = os.path.join(self.d, "agent.log")

    def start(self, *extra, config=None):
        args = [AGENT_BIN, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort",
                str(self.server_port), "-socketPath", self.sock, "-dataDir", self.data, "-logLevel", "debug"]
        if config:
            args[2:2] = ["-config", config]
        self.mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.p = Proc(args + list(extra), self.log_path)
        return self.p

    def wait_log(self, pattern, timeout=10.0):
        return self.p.wait_log(pattern, timeout, self.mark)

    def fetch(self):
        """(ok, leaf certificate, chain DER list, stderr) from `api fetch x509 -write`."""
        out = os.path.join(self.d, "fetch")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        r = subprocess.run([AGENT_BIN, "api", "fetch", "x509", "-socketPath", self.sock, "-write", out],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return False, None, None, (r.stdout + r.stderr).strip()
        pem = open(os.path.join(out, "svid.0.pem"), "rb").read()
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
        certs = [x509.load_pem_x509_certificate(b) for b in blocks]
        return True, certs[0], certs, out

    def fetch_all(self):
        """{SPIFFE ID: leaf certificate} of every identity served ({} on failure)."""
        ok, _, _, out = self.fetch()
        res = {}
        if not ok:
            return res
        for name in sorted(os.listdir(out)):
            if re.fullmatch(r"svid\.\d+\.pem", name):
                leaf = x509.load_pem_x509_certificate(open(os.path.join(out, name), "rb").read())
                for u in uri_sans(leaf):
                    res[u] = leaf
        return res

    def fetch_jwt(self, aud):
        r = subprocess.run([AGENT_BIN, "api", "fetch", "jwt", "-audience", aud, "-socketPath", self.sock],
                           capture_output=True, text=True, timeout=30)
        m = re.search(r"\n\s*(eyJ[\w-]+\.[\w-]+\.[\w-]+)", r.stdout)
        return r.returncode, (m.group(1) if m else None), r.stderr.strip()

    def stop(self, sig=signal.SIGTERM):
        return self.p.stop(sig)


def uri_sans(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def nb_na(cert):
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return (cert.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp(),
            cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())


def openssl_verify(d, bundle_path, fetch_dir):
    leaf = os.path.join(fetch_dir, "svid.0.pem")
    r = subprocess.run(["openssl", "verify", "-CAfile", bundle_path, "-untrusted", leaf, leaf],
                       capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def wait_until(pred, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def make_x509pop_pki(d):
    ca_path, node, node_key = make_node_pki(d)
    cert_path = os.path.join(d, "node.pem")
    with open(cert_path, "wb") as f:
        f.write(node.public_bytes(serialization.Encoding.PEM))
    key_path = os.path.join(d, "node.key")
    with open(key_path, "wb") as f:
        f.write(node_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    sha1 = hashlib_sha1(node.public_bytes(serialization.Encoding.DER))
    return ca_path, cert_path, key_path, f"{TDID}/lanyard/agent/x509pop/{sha1}"


def hashlib_sha1(b):
    import hashlib
    return hashlib.sha1(b).hexdigest()


# ---- the scenario -------------------------------------------------------------------

def main_scenario(d, srv, bundle_path):
    # -- enrolment
    tok = srv.token()
    agent_id = f"{TDID}/lanyard/agent/join_token/{tok}"
    a = Agent(d, "a1", srv.port)
    a.start("-joinToken", tok, "-trustBundle", bundle_path)
    m = a.wait_log(r"attested as \S+: SVID valid from (\d+) until (\d+), renewal at (\d+) ms", 15)
    check(m is not None, "join token: the agent attests (one round trip, the ID predicted)")
    if m is None:
        return None
    ag_nb, ag_na, ag_renew = int(m.group(1)), int(m.group(2)), int(m.group(3)) / 1000
    check(0.45 <= (ag_renew - ag_nb) / (ag_na - ag_nb) <= 0.55, "agent SVID renewal drawn in [45%, 55%]",
          f"{(ag_renew - ag_nb) / (ag_na - ag_nb):.3f}")
    check(agent_id in srv.cli("agent", "list").stdout, "`agent list` shows the agent")
    ok = wait_until(lambda: os.path.exists(os.path.join(a.data, "agent_state.bin")), 5)
    st = os.stat(a.data)
    check(ok and (st.st_mode & 0o777) == 0o700, "data dir is 0700", oct(st.st_mode & 0o777))
    fst = os.stat(os.path.join(a.data, "agent_state.bin"))
    check((fst.st_mode & 0o777) == 0o600, "agent_state.bin is 0600", oct(fst.st_mode & 0o777))
    tok_in_log = tok in a.p.text()
    check(not tok_in_log, "the agent log never shows the join token")

    # -- an entry -> an SVID, verified
    t0 = time.time()
    e1 = srv.entry_create("-spiffeID", f"{TDID}/w1", "-parentID", agent_id, "-selector", f"unix:uid:{UID}",
                          "-dns", "w1.example.org")
    got = wait_until(lambda: a.fetch()[0] or None, 5, 0.02)
    t_issue = time.time() - t0
    ok, leaf, certs, out = a.fetch()
    check(got and ok, "entry created -> an X.509-SVID on the Workload API", str(out))
    if not ok:
        return None
    print(f"     entry create -> SVID served: {t_issue * 1000:.0f} ms (CLI start included)")
    check(uri_sans(leaf) == [f"{TDID}/w1"], "the SVID's URI SAN is the entry's SPIFFE ID", str(uri_sans(leaf)))
    vok, vout = openssl_verify(d, bundle_path, out)
    check(vok, "the SVID verifies with `openssl verify` against `bundle show`", vout)
    key = serialization.load_pem_private_key(open(os.path.join(out, "svid.0.key"), "rb").read(), None)
    check(key.public_key().public_numbers() == leaf.public_key().public_numbers(),
          "the SVID's key is the one the agent generated (svid.0.key)")

    # -- JWT-SVID: minted once, then from the cache
    rc1, j1, err1 = a.fetch_jwt("aud-1")
    rc2, j2, err2 = a.fetch_jwt("aud-1")
    check(rc1 == 0 and j1, "JWT-SVID minted, verified and served", err1)
    check(j1 is not None and j1 == j2, "second JWT-SVID fetch comes from the agent's cache (same token)")

    # -- deletion: gone within 1 s
    e2 = srv.entry_create("-spiffeID", f"{TDID}/w2", "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
    wait_until(lambda: a.fetch_all().get(f"{TDID}/w2"), 5, 0.05)
    mark = len(a.p.text())
    t0 = time.time()
    srv.cli("entry", "delete", "-entryID", e1)
    m = a.p.wait_log(rf"entry {e1} \(\S+\): deleted", 5, mark)
    gone = wait_until(lambda: all(uri_sans(c) != [f"{TDID}/w1"] for c in (a.fetch()[2] or [])) or None, 5, 0.01)
    t_gone = time.time() - t0
    line = [ln for ln in a.p.text()[mark:].splitlines() if f"entry {e1}" in ln and "deleted" in ln]
    t_log = (log_time(line[0]) - t0) if line else None
    check(m is not None and t_log is not None and t_log < 1.0, "entry delete reaches the agent's cache within 1 s",
          f"{t_log}")
    check(gone is not None and t_gone < 1.0, "entry delete: the SVID is gone from the Workload API within 1 s",
          f"{t_gone:.3f} s")
    print(f"     entry delete -> agent cache: {t_log * 1000 if t_log else -1:.0f} ms; "
          f"-> absent from a fresh fetch: {t_gone * 1000:.0f} ms (CLI starts included)")

    # -- an entry that stays, for the restart checks
    srv.entry_create("-spiffeID", f"{TDID}/keep", "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
    check(wait_until(lambda: a.fetch()[0] or None, 5, 0.05) is not None, "a long-lived entry issued")

    # -- a 20 s entry, renewed at ~50%
    srv.cli("entry", "delete", "-entryID", e2)
    e3 = srv.entry_create("-spiffeID", f"{TDID}/short", "-parentID", agent_id, "-selector", f"unix:uid:{UID}",
                          "-x509SVIDTTL", "20")
    short = f"{TDID}/short"
    first = wait_until(lambda: a.fetch_all().get(short), 5, 0.05)
    check(first is not None, "short-TTL entry issued")
    fractions = []
    cur = first
    for _ in range(2):
        if cur is None:
            break
        nb, na = nb_na(cur)
        serial = cur.serial_number
        nxt = wait_until(lambda: (lambda c: c if c is not None and c.serial_number != serial else None)(
            a.fetch_all().get(short)), na - time.time() + 2, 0.1)
        if nxt is None:
            break
        fractions.append((time.time() - nb) / (na - nb))
        cur = nxt
    check(len(fractions) == 2 and all(0.45 <= f <= 0.57 for f in fractions),
          "a 20 s SVID is renewed in [45%, 55%] of its lifetime, twice in a row (100 ms polling)",
          ", ".join(f"{f:.3f}" for f in fractions))
    print("     short-TTL renewals seen at " + ", ".join(f"{f * 100:.1f}%" for f in fractions) + " of the lifetime")
    srv.cli("entry", "delete", "-entryID", e3)

    # -- the agent's own SVID renewed at ~50%, and the watch still works afterwards
    m = a.wait_log(r"agent SVID renewed: valid from (\d+) until (\d+)", ag_na - time.time() + 5)
    check(m is not None, "the agent renews its own SVID")
    if m:
        t_ren = log_time(line_at(a.p.text()[a.mark:], m.start()))
        frac = (t_ren - ag_nb) / (ag_na - ag_nb)
        check(0.45 <= frac <= 0.56, "agent SVID renewed in [45%, 55%] of its lifetime", f"{frac:.3f}")
        print(f"     agent SVID renewed at {frac * 100:.1f}% of its lifetime")
        e4 = srv.entry_create("-spiffeID", f"{TDID}/after-renewal", "-parentID", agent_id, "-selector",
                              f"unix:uid:{UID}")
        seen = wait_until(lambda: a.fetch_all().get(f"{TDID}/after-renewal"), 5, 0.05)
        check(seen is not None, "after its renewal the agent still gets new entries (new mTLS channel)")
        srv.cli("entry", "delete", "-entryID", e4)
    return a, agent_id


def restart_scenario(d, srv, a, agent_id, bundle_path):
    srv_agents = srv.cli("agent", "list").stdout
    # -- server killed: cached SVIDs still served
    srv.p.stop(signal.SIGKILL)
    time.sleep(0.5)
    ok, leaf, _, out = a.fetch()
    check(ok and uri_sans(leaf) == [f"{TDID}/keep"], "server killed: the cached SVID is still served", str(out))
    m = a.wait_log(r"retrying in \d+ ms", 15)
    check(m is not None, "server killed: the agent retries with backoff")

    # -- agent restarted while the server is down, without a token
    rc = a.stop()
    check(rc == 0, "agent stops cleanly (SIGTERM)", f"rc={rc}")
    a.start()
    # (IDs with a long hex run are redacted in logs: the server's `agent list` tells.)
    m = a.wait_log(r"resuming as (\S+) \(SVID valid until", 10)
    check(m is not None, "restart without a token: the agent resumes with its persisted SVID",
          a.p.text()[a.mark:][-2000:])
    check(a.wait_log(r"attested as", 0.5) is None, "restart: no attestation happened")
    got = wait_until(lambda: a.fetch()[0] or None, 5, 0.05)
    ok, leaf, _, out = a.fetch()
    check(got and ok and uri_sans(leaf) == [f"{TDID}/keep"],
          "restart with the server down: the persisted SVID is served at once", str(out))
    agents_before = srv_agents

    # -- the server comes back: the agent reconnects by itself
    srv.start()
    m = a.wait_log(r"watch: connected to the server again", 40)
    check(m is not None, "server back: the agent reconnects (backoff) and its watch resumes")
    # The server authenticates the watch by the serial it recorded: the very SVID it issued to agent_id.
    listed = srv.cli("agent", "list").stdout
    check(agent_id in listed and listed.count("join_token/") == agents_before.count("join_token/"),
          "restart: same agent ID, no new agent record (no attestation)")
    e5 = srv.entry_create("-spiffeID", f"{TDID}/after-restart", "-parentID", agent_id, "-selector",
                          f"unix:uid:{UID}")
    m = a.wait_log(r"batch of \d+: 1 SVIDs issued", 10)
    check(m is not None, "after the server's restart, a new entry is issued")
    srv.cli("entry", "delete", "-entryID", e5)

    # -- evicted: a spent join token cannot attest again; SVIDs stay served
    srv.cli("agent", "evict", "-spiffeID", agent_id)
    m = a.wait_log(r"attestation refused|no attestation left", 15)
    check(m is not None, "evicted with a spent join token: the agent says it must be given a new one")
    ok, leaf, _, _ = a.fetch()
    check(ok and uri_sans(leaf) == [f"{TDID}/keep"], "evicted: the agent keeps serving its valid cached SVIDs")
    rc = a.stop()
    check(rc == 0, "agent stops cleanly", f"rc={rc}")
    secrets = ["BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY"]
    check(not any(s in a.p.text() for s in secrets), "the agent log holds no key")
    check(not re.search(r"eyJ[A-Za-z0-9_-]+\.eyJ", a.p.text()), "the agent log holds no JWT")


def other_enrolments(d, srv, bundle_path, x509pop, k8s):
    # -- a token made with -spiffeID: the agent cannot predict its ID, the ticket step
    custom = f"{TDID}/lanyard/agent/custom-node-1"
    tok = srv.token("-spiffeID", custom)
    b = Agent(d, "b", srv.port)
    b.start("-joinToken", tok, "-trustBundle", bundle_path)
    m = b.wait_log(r"admitted as (\S+): redeeming the ticket", 10)
    m2 = b.wait_log(r"attested as (\S+):", 10)
    check(m is not None and m2 is not None and m2.group(1) == custom,
          "join token with -spiffeID: the ticket step gives the agent that ID", m2.group(1) if m2 else "")
    check(b.stop() == 0, "ticket-step agent stops cleanly")

    # -- insecure bootstrap: no bundle, the first server believed
    c = Agent(d, "c", srv.port)
    c.start("-joinToken", srv.token(), "-insecureBootstrap")
    m = c.wait_log(r"attested as (\S+):", 15)
    check(m is not None, "-insecureBootstrap: the agent attests without a bundle (and warns)",
          c.p.text()[-1500:] if m is None else "")
    check(c.wait_log(r"insecure bootstrap", 1) is not None, "-insecureBootstrap is logged as a warning")
    check(c.stop() == 0, "insecure-bootstrap agent stops cleanly")

    # -- x509pop: two steps, the ID predicted from the certificate
    ca_path, cert_path, key_path, pop_id = x509pop
    cfg = os.path.join(d, "agent-x509pop.yaml")
    with open(cfg, "w") as f:
        f.write(f"agent:\n  node_attestor:\n    x509pop:\n      certificate_path: {cert_path}\n"
                f"      private_key_path: {key_path}\n")
    x = Agent(d, "x", srv.port)
    x.start("-trustBundle", bundle_path, config=cfg)
    m = x.wait_log(r"attested as (\S+):", 15)
    check(m is not None and pop_id in srv.cli("agent", "list").stdout,
          "x509pop: challenge answered, attested under the predicted ID (one round trip after the challenge)",
          x.p.text()[-1500:] if m is None else "")
    check(x.wait_log(r"redeeming the ticket", 0.2) is None, "x509pop: no ticket step (the ID was predicted)")
    if m:
        # evicted: x509pop can attest again by itself
        srv.cli("agent", "evict", "-spiffeID", pop_id)
        m = x.wait_log(r"attesting again[\s\S]*attested as", 20)
        check(m is not None, "x509pop agent evicted: it attests again by itself")
    check(x.stop() == 0, "x509pop agent stops cleanly")

    # -- k8s_psat against the fake Kubernetes API: no CSR (the node UID is unknown), the ticket step
    mod, kd = k8s
    tok_path = os.path.join(d, "psat-token")
    with open(tok_path, "w") as f:
        f.write("good.agent-token.a1\n")
    cfg = os.path.join(d, "agent-psat.yaml")
    with open(cfg, "w") as f:
        f.write(f"agent:\n  node_attestor:\n    k8s_psat:\n      cluster: prod\n      token_path: {tok_path}\n")
    k = Agent(d, "k", srv.port)
    k.start("-trustBundle", bundle_path, config=cfg)
    psat_id = f"{TDID}/lanyard/agent/k8s_psat/prod/{mod.NODE_UID}"
    m = k.wait_log(r"attested as (\S+):", 20)
    check(m is not None and psat_id in srv.cli("agent", "list").stdout and
          k.wait_log(r"redeeming the ticket", 0.2) is not None,
          "k8s_psat: TokenReview, then the ticket step: attested as .../k8s_psat/prod/<node uid>",
          m.group(1) if m else k.p.text()[-1500:])
    check(k.stop() == 0, "k8s_psat agent stops cleanly")


def rotation_scenario(d):
    """A server CA of 60 s: its successor root is published at ~30 s, used after, the old one dropped at 60 s."""
    rd = os.path.join(d, "rot")
    os.makedirs(rd)
    cfg = os.path.join(rd, "server.yaml")
    with open(cfg, "w") as f:
        f.write("server:\n  ca_ttl: 60\n  default_x509_svid_ttl: 30\n  node_attestors:\n    join_token: {}\n")
    srv = Server(rd, free_port(), cfg)
    srv.start()
    a = None
    try:
        bundle_path = os.path.join(rd, "bundle.pem")
        with open(bundle_path, "w") as f:
            f.write(srv.cli("bundle", "show").stdout)
        tok = srv.token()
        agent_id = f"{TDID}/lanyard/agent/join_token/{tok}"
        a = Agent(rd, "r", srv.port)
        a.start("-joinToken", tok, "-trustBundle", bundle_path)
        check(a.wait_log(r"attested as", 15) is not None, "rotation: the agent attests")
        srv.entry_create("-spiffeID", f"{TDID}/rot", "-parentID", agent_id, "-selector", f"unix:uid:{UID}")
        first = wait_until(lambda: a.fetch_all().get(f"{TDID}/rot"), 5, 0.05)
        check(first is not None, "rotation: SVID issued under the first CA")
        if first is None:
            return
        first_root = open(bundle_path, "rb").read().strip()

        def first_root_served():
            a.fetch()
            return first_root in open(os.path.join(a.d, "fetch", "bundle.0.pem"), "rb").read()

        gaps = []
        served = 0
        seen_new_issuer = None
        deadline = time.time() + 75
        while time.time() < deadline:
            c = a.fetch_all().get(f"{TDID}/rot")
            if c is None:
                gaps.append(time.time())
            else:
                served += 1
                if seen_new_issuer is None and c.extensions.get_extension_for_class(
                        x509.AuthorityKeyIdentifier).value.key_identifier != first.extensions.get_extension_for_class(
                        x509.AuthorityKeyIdentifier).value.key_identifier:
                    seen_new_issuer = time.time()
            if seen_new_issuer and not first_root_served():
                break
            time.sleep(0.25)
        installs = re.findall(r"trust bundle sequence (\d+) installed \((\d+) X\.509", a.p.text())
        check(any(n == "2" for _, n in installs), "rotation: the successor root reaches the agent (2 roots)",
              str(installs))
        check(seen_new_issuer is not None, "rotation: SVIDs are then issued by the successor CA, verified, served")
        check(len(installs) >= 3 and not first_root_served(),
              "rotation: the first root, expired, is dropped from the bundle served", str(installs))
        check(not gaps, "rotation: the SVID was served at every poll through both bundle changes",
              f"{len(gaps)} gaps of {served + len(gaps)} polls")
        check(a.wait_log(r"SVIDs no longer verify", 0.1) is None and a.wait_log(r"not issued", 0.1) is None,
              "rotation: no SVID refused or dropped on the way")
        rc = a.stop()
        check(rc == 0, "rotation: agent stops cleanly", f"rc={rc}")
    finally:
        if a and a.p.proc.poll() is None:
            a.p.stop(signal.SIGKILL)
        srv.p.stop()


def main():
    d = tempfile.mkdtemp(prefix="lanyard-agent-sync-")
    httpd = None
    completed = False
    try:
        x509pop = make_x509pop_pki(d)
        # The fake Kubernetes API (its PKI made with the openssl CLI): a set-up that fails fails the test.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import fake_k8s_api as mod
        kd = os.path.join(d, "k8s")
        os.mkdir(kd)
        mod.make_pki(kd)
        with open(os.path.join(kd, "token"), "w") as f:
            f.write(mod.SERVER_TOKEN + "\n")
        httpd, url = mod.start_server(kd)
        k8s = (mod, kd)
        psat_cfg = (f"    k8s_psat:\n      clusters:\n        prod:\n"
                    f"          service_account_allow_list: [\"{mod.NS}:{mod.SA}\"]\n"
                    f"          api_server_url: {url}\n          ca_file: {kd}/ca.crt\n"
                    f"          token_file: {kd}/token\n")
        cfg = os.path.join(d, "server.yaml")
        with open(cfg, "w") as f:
            # Agent SVIDs (the default TTL) of 30 s: the agent renews its own within the test.
            f.write(f"server:\n  default_x509_svid_ttl: 30\n  node_attestors:\n    join_token: {{}}\n"
                    f"    x509pop:\n      ca_bundle_path: {x509pop[0]}\n{psat_cfg}")
        srv = Server(d, free_port(), cfg)
        srv.start()
        bundle_path = os.path.join(d, "bundle.pem")
        with open(bundle_path, "w") as f:
            f.write(srv.cli("bundle", "show").stdout)
        res = main_scenario(d, srv, bundle_path)
        if res:
            a, agent_id = res
            restart_scenario(d, srv, a, agent_id, bundle_path)
        other_enrolments(d, srv, bundle_path, x509pop, k8s)
        srv.p.stop()
        if "--no-rotation" in sys.argv:
            skip("rotation", "--no-rotation given")
        else:
            rotation_scenario(d)
        completed = True
    finally:
        if failures or not completed:
            for p in sorted(os.listdir(d)) + ["rot/r"]:
                lp = os.path.join(d, p, "agent.log")
                if os.path.exists(lp):
                    print(f"---- {p}: agent log (tail) ----")
                    print("\n".join(open(lp, errors="replace").read().splitlines()[-40:]))
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if httpd is not None:
            httpd.shutdown()
        if not failures and completed:
            shutil.rmtree(d, ignore_errors=True)
        else:
            print(f"logs kept in {d}")
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
