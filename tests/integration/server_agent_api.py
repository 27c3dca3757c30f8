#!/usr/bin/python3
"""server_agent_api.py: the Agent API of a real lanyard-server, end to end.

    server_agent_api.py LANYARD_SERVER PROTO_DIR

Starts lanyard-server in a temporary directory (join_token, x509pop with a
CA made here, k8s_psat against fake_k8s_api.py), generates Python stubs
from PROTO_DIR/agent.proto at test time, and plays agents with grpcio:
attestation by each method (and the ticket step), the agent SVID checked
with `openssl verify`, then mTLS calls with it: GetBundle, WatchEntries
(snapshot, then deltas for entries created and deleted through the CLI,
with the delete-to-watch delay measured), BatchNewX509SVID (authorized,
unauthorized, wrong SAN, weak key, caps), NewJWTSVID (checked with PyJWT
against the JWKS of `bundle show -format spiffe`), RenewAgent, token reuse
and expiry, node-entry aliases, eviction and ban.

The server's certificate carries only a URI SAN (an X.509-SVID), which
grpcio's TLS cannot check (it wants a host name). So each agent talks to
the server through a small local proxy: plaintext gRPC in, TLS out, the
server's chain verified against the bundle and its URI SAN checked to be
spiffe://example.org/lanyard/server, the agent's SVID as client
certificate. The bytes on the wire between proxy and server are exactly
what an agent sends.

Prints one line per check and the measured delays; exits 1 on any failure,
else 77 (a skip, for ctest) when a part cannot run here (`SKIP` lines say why).
"""
import datetime
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SERVER_BIN, PROTO_DIR = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
TD = "example.org"
TDID = "spiffe://" + TD
SERVER_ID = TDID + "/lanyard/server"
RPC_TIMEOUT = 10

sys.path.insert(0, HERE)
from harness import check, exit_status, failures, make_node_pki, protoc, skip, split_der  # noqa: E402


# ---- helpers ---------------------------------------------------------------

def pem_of(ders):
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


def load_pems(data):
    """Every CERTIFICATE block of PEM text (cryptography 38 has no load_pem_x509_certificates)."""
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    return [x509.load_pem_x509_certificate(b) for b in blocks]


def uri_sans(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def csr_der(key, uri=None, dns=()):
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names = ([x509.UniformResourceIdentifier(uri)] if uri else []) + [x509.DNSName(d) for d in dns]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def code_of(fn):
    """Runs fn(); returns (StatusCode, details) of its failure, or (OK, result)."""
    try:
        return grpc.StatusCode.OK, fn()
    except grpc.RpcError as e:
        return e.code(), e.details()


# ---- the TLS proxy ------------------------------------------------------------

class TLSProxy:
    """Plaintext in on 127.0.0.1:port, TLS out to the server (see the top)."""

    def __init__(self, server_port, bundle_path, cert_path=None, key_path=None):
        self.server_port = server_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False  # checked below: the URI SAN
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(bundle_path)
        self.ctx.set_alpn_protocols(["h2"])
        if cert_path:
            self.ctx.load_cert_chain(cert_path, key_path)
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.closed = False
        self.bad_server_id = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        u = None
        try:
            raw = socket.create_connection(("127.0.0.1", self.server_port))
            u = self.ctx.wrap_socket(raw)
            leaf = x509.load_der_x509_certificate(u.getpeercert(binary_form=True))
            if uri_sans(leaf) != [SERVER_ID]:
                self.bad_server_id += 1
                return
            self.conns.append((c, u))
            while True:
                ready = [u] if u.pending() else select.select([c, u], [], [], 1.0)[0]
                if c in ready:
                    data = c.recv(65536)
                    if not data:
                        return
                    u.sendall(data)
                if u in ready:
                    data = u.recv(65536)
                    if not data:
                        return
                    c.sendall(data)
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            for s in (c, u):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.ls.close()
        for c, u in self.conns:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass


# ---- the server ---------------------------------------------------------------

class Server:
    def __init__(self, d, config_path):
        self.d = d
        self.sock = os.path.join(d, "sock", "api.sock")
        self.log_path = os.path.join(d, "server.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [SERVER_BIN, "run", "-config", config_path, "-trustDomain", TD, "-bindAddress", "127.0.0.1",
             "-serverPort", "0", "-socketPath", self.sock, "-dataDir", os.path.join(d, "data"),
             "-logLevel", "debug"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(rb"agent_api=127\.0\.0\.1:(\d+)", open(self.log_path, "rb").read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            print(open(self.log_path, "rb").read().decode(errors="replace"))
            raise SystemExit("lanyard-server did not start")

    def cli(self, *args, check_rc=True):
        r = subprocess.run([SERVER_BIN, *args, "-socketPath", self.sock], capture_output=True, text=True, timeout=30)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"lanyard-server {' '.join(args)}: rc={r.returncode} {r.stderr.strip()}")
        return r

    def log_text(self):
        return open(self.log_path, "rb").read().decode(errors="replace")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.log.close()
        return rc


# ---- a watch stream -------------------------------------------------------------

class Watch:
    """Consumes WatchEntries on a thread; keeps the agent-side state as an agent would."""

    def __init__(self, stub, pb):
        self.msgs = []
        self.state = {}
        self.status = None
        self.cond = threading.Condition()
        self.call = stub.WatchEntries(pb.WatchEntriesRequest())
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for m in self.call:
                with self.cond:
                    if m.snapshot:
                        self.state = {}
                    for e in m.entries:
                        self.state[e.entry_id] = e
                    for i in m.deleted_entry_ids:
                        self.state.pop(i, None)
                    self.msgs.append((time.monotonic(), m))
                    self.cond.notify_all()
            code, details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        with self.cond:
            self.status = (code, details)
            self.cond.notify_all()

    def wait(self, pred, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(lambda: pred(self), timeout)

    def cancel(self):
        self.call.cancel()


# ---- an agent -------------------------------------------------------------------

class Agent:
    """An enrolled agent: its key, SVID and an mTLS channel (through a proxy)."""

    def __init__(self, t, name, svid, key):
        self.t, self.name, self.key = t, name, key
        self.set_svid(svid)

    def set_svid(self, svid):
        self.svid = svid
        self.id = svid.spiffe_id
        self.chain = split_der(svid.cert_chain)
        self.cert_path = os.path.join(self.t.d, f"{self.name}-{len(os.listdir(self.t.d))}.pem")
        self.key_path = self.cert_path + ".key"
        with open(self.cert_path, "wb") as f:
            f.write(pem_of(self.chain))
        with open(self.key_path, "wb") as f:
            f.write(key_pem(self.key))
        os.chmod(self.key_path, 0o600)
        self.proxy = TLSProxy(self.t.srv.port, self.t.bundle_path, self.cert_path, self.key_path)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.proxy.port}")
        self.stub = self.t.grpc.AgentStub(self.channel)

    def close(self):
        self.channel.close()
        self.proxy.close()


class Test:
    def __init__(self, d, pb, pb_grpc):
        self.d, self.pb, self.grpc = d, pb, pb_grpc
        self.srv = None
        self.bundle_path = os.path.join(d, "bundle.pem")
        self.agents = []
        self.barriers = 0

    def start(self, config_path):
        self.srv = Server(self.d, config_path)
        with open(self.bundle_path, "w") as f:
            f.write(self.srv.cli("bundle", "show").stdout)
        # Server-authenticated channel for attestation (no client certificate).
        self.anon_proxy = TLSProxy(self.srv.port, self.bundle_path)
        self.anon = self.grpc.AgentStub(grpc.insecure_channel(f"127.0.0.1:{self.anon_proxy.port}"))

    def token(self, *args):
        out = self.srv.cli("token", "generate", *args).stdout
        return re.search(r"Token: (\S+)", out).group(1)

    def entry_create(self, *args):
        out = self.srv.cli("entry", "create", *args).stdout
        return re.search(r"Entry ID\s*: (\S+)", out).group(1)

    def attest(self, req):
        return self.anon.AttestAgent(req, timeout=RPC_TIMEOUT)

    def barrier(self, w, agent_id):
        """True once the watch `w` (of the agent `agent_id`) has had every update due for the changes made
        before this call: an entry created now under the agent arrives on it, then is deleted and gone. Each
        update is computed from the server's whole state at the time (agent_api_watch_send), so
        an earlier entry that was to reach `w` has arrived by then: "not in w.state" after the barrier means
        not sent, where a sleep would only mean not sent yet."""
        self.barriers += 1
        mark = self.entry_create("-spiffeID", f"{TDID}/barrier/{self.barriers}", "-parentID", agent_id,
                                 "-selector", "unix:uid:4999")
        arrived = w.wait(lambda s: mark in s.state)
        self.srv.cli("entry", "delete", "-entryID", mark)
        return w.wait(lambda s: mark not in s.state) and arrived

    def join(self, name, token=None, agent_id=None):
        """Attests a new agent with a join token (one round trip: it knows its ID)."""
        token = token or self.token()
        agent_id = agent_id or f"{TDID}/lanyard/agent/join_token/{token}"
        key = ec_key()
        resp = self.attest(self.pb.AttestAgentRequest(join_token=self.pb.JoinTokenAttestation(token=token),
                                                      csr=csr_der(key, agent_id)))
        a = Agent(self, name, resp.svid, key)
        self.agents.append(a)
        return a

    def openssl_verify(self, ders, name):
        leaf = os.path.join(self.d, name + "-leaf.pem")
        inter = os.path.join(self.d, name + "-inter.pem")
        with open(leaf, "wb") as f:
            f.write(pem_of(ders[:1]))
        with open(inter, "wb") as f:
            f.write(pem_of(ders[1:]))
        r = subprocess.run(["openssl", "verify", "-CAfile", self.bundle_path, "-untrusted", inter, leaf],
                           capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip().endswith(": OK"), (r.stdout + r.stderr).strip()


# ---- the scenario -----------------------------------------------------------------

def make_x509pop_pki(d):
    """A node CA and a node certificate (CN node1) under it, made here."""
    path, node, node_key = make_node_pki(d)
    return path, node.public_bytes(serialization.Encoding.DER), node_key


def scenario(t, pb, node_der, node_key, k8s):
    srv = t.srv
    C = grpc.StatusCode

    # -- GetBundle needs mTLS
    code, det = code_of(lambda: t.anon.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code == C.UNAUTHENTICATED, "GetBundle without a client certificate: UNAUTHENTICATED", f"{code} {det}")

    # -- join_token: the SVID, verified with openssl
    a1 = t.join("a1")
    chain = a1.chain
    ok, out = t.openssl_verify(chain, "a1")
    check(ok, "agent SVID verifies with openssl against `bundle show`", out)
    leaf = x509.load_der_x509_certificate(chain[0])
    check(uri_sans(leaf) == [a1.id], "agent SVID URI SAN is the agent ID")
    check(a1.id.startswith(TDID + "/lanyard/agent/join_token/"), "join_token agent ID by default", a1.id)
    check(abs(a1.svid.expires_at - int(leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())) <= 1,
          "AgentSVID.expires_at is the leaf's notAfter")
    check(len(chain) >= 2, "agent SVID chain: leaf and signing CA")
    roots = load_pems(open(t.bundle_path, "rb").read())
    check(sorted(a1.svid.bundle.x509_authorities) == sorted(c.public_bytes(serialization.Encoding.DER) for c in roots),
          "AgentSVID.bundle holds the bundle's X.509 roots")
    agents_out = srv.cli("agent", "list").stdout
    check(a1.id in agents_out, "`agent list` shows the attested agent")

    # -- token reuse, expired token, malformed CSR (token kept), join token never logged
    used = a1.id.rsplit("/", 1)[1]
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
        join_token=pb.JoinTokenAttestation(token=used), csr=csr_der(ec_key(), a1.id))))
    check(code == C.PERMISSION_DENIED, "join token reuse refused: PERMISSION_DENIED", f"{code} {det}")
    short = t.token("-ttl", "1")
    time.sleep(2.2)
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
        join_token=pb.JoinTokenAttestation(token=short),
        csr=csr_der(ec_key(), f"{TDID}/lanyard/agent/join_token/{short}"))))
    check(code == C.PERMISSION_DENIED, "expired join token refused: PERMISSION_DENIED", f"{code} {det}")
    kept = t.token()
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
        join_token=pb.JoinTokenAttestation(token=kept), csr=b"\x30\x03\x02\x01\x00")))
    check(code == C.INVALID_ARGUMENT, "malformed CSR refused: INVALID_ARGUMENT", f"{code} {det}")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
        join_token=pb.JoinTokenAttestation(token=kept),
        csr=csr_der(weak, f"{TDID}/lanyard/agent/join_token/{kept}"))))
    check(code == C.INVALID_ARGUMENT, "agent CSR with an RSA-1024 key refused: INVALID_ARGUMENT", f"{code} {det}")
    a_kept = t.join("kept", token=kept)
    check(a_kept.id.endswith("/" + kept), "a token refused for its CSR is not used up")
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(csr=csr_der(ec_key(), a1.id))))
    check(code == C.INVALID_ARGUMENT, "AttestAgent without attestation: INVALID_ARGUMENT", f"{code} {det}")

    # -- the ticket step: a join token made with -spiffeID (the agent cannot know its ID)
    custom_id = TDID + "/agents/custom-1"
    tok = t.token("-spiffeID", custom_id)
    key = ec_key()
    resp = t.attest(pb.AttestAgentRequest(join_token=pb.JoinTokenAttestation(token=tok),
                                          csr=csr_der(key, TDID + "/placeholder")))
    check(not resp.HasField("svid") and resp.agent_id == custom_id and len(resp.ticket) == 32,
          "CSR for another ID: the answer is agent_id and a ticket", f"{resp.agent_id!r}")
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(ticket=resp.ticket,
                                                               csr=csr_der(key, TDID + "/placeholder"))))
    check(code == C.INVALID_ARGUMENT, "ticket redeemed with a CSR for the wrong ID: INVALID_ARGUMENT", f"{code}")
    resp = t.attest(pb.AttestAgentRequest(join_token=pb.JoinTokenAttestation(token=t.token("-spiffeID", custom_id)),
                                          csr=b""))
    check(resp.agent_id == custom_id and len(resp.ticket) == 32, "no CSR at all: agent_id and a ticket")
    resp2 = t.attest(pb.AttestAgentRequest(ticket=resp.ticket, csr=csr_der(key, custom_id)))
    check(resp2.svid.spiffe_id == custom_id, "ticket + CSR for agent_id: the SVID")
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(ticket=resp.ticket, csr=csr_der(key, custom_id))))
    check(code == C.PERMISSION_DENIED, "ticket reuse refused: PERMISSION_DENIED", f"{code}")
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(ticket=b"\x00" * 32, csr=csr_der(key, custom_id))))
    check(code == C.PERMISSION_DENIED, "unknown ticket refused: PERMISSION_DENIED", f"{code}")
    custom = Agent(t, "custom", resp2.svid, key)
    t.agents.append(custom)

    # -- GetBundle over mTLS, against the JWKS
    b = a1.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT)
    jwks = json.loads(srv.cli("bundle", "show", "-format", "spiffe").stdout)
    kids = sorted(k["kid"] for k in jwks["keys"] if k.get("use") == "jwt-svid")
    check(b.trust_domain == TD and b.sequence == jwks["spiffe_sequence"] and b.sequence >= 1,
          "GetBundle: trust domain and sequence", f"{b.trust_domain} {b.sequence}")
    check(sorted(j.kid for j in b.jwt_authorities) == kids, "GetBundle: JWT authorities' kids match the JWKS")
    check(all(serialization.load_der_public_key(j.public_key) is not None for j in b.jwt_authorities),
          "GetBundle: JWT authorities are SPKI DER")
    check(sorted(b.x509_authorities) == sorted(c.public_bytes(serialization.Encoding.DER) for c in roots),
          "GetBundle: X.509 authorities are the bundle's roots")

    # -- WatchEntries: snapshot, then create / delete deltas
    w = Watch(a1.stub, pb)
    check(w.wait(lambda s: len(s.msgs) >= 1), "watch: first message at once")
    first = w.msgs[0][1]
    check(first.snapshot and len(first.entries) == 0 and first.bundle_sequence == b.sequence,
          "watch: a snapshot (empty), with the bundle sequence")
    web_id = t.entry_create("-spiffeID", TDID + "/web", "-parentID", a1.id, "-selector", "unix:uid:1000",
                            "-dns", "web.example.org", "-x509SVIDTTL", "600")
    check(w.wait(lambda s: web_id in s.state), "watch: a created entry arrives")
    m = [x for _, x in w.msgs if any(e.entry_id == web_id for e in x.entries)][0]
    e = [x for x in m.entries if x.entry_id == web_id][0]
    check(not m.snapshot and e.spiffe_id == TDID + "/web" and e.parent_id == a1.id and e.x509_svid_ttl == 600
          and [(s.type, s.value) for s in e.selectors] == [("unix", "uid:1000")] and list(e.dns_names) ==
          ["web.example.org"] and e.revision > 0, "watch: a delta with the whole entry")
    other_agent_entry = t.entry_create("-spiffeID", TDID + "/not-mine", "-parentID", TDID + "/lanyard/agent/other",
                                       "-selector", "unix:uid:1")
    check(t.barrier(w, a1.id) and other_agent_entry not in w.state,
          "watch: another agent's entry is not sent (an entry of its own, created after it, arrived first)")

    # -- BatchNewX509SVID
    wkey = ec_key()
    params = [pb.X509SVIDParams(entry_id=web_id, csr=csr_der(wkey, TDID + "/web")),
              pb.X509SVIDParams(entry_id=other_agent_entry, csr=csr_der(ec_key(), TDID + "/not-mine")),
              pb.X509SVIDParams(entry_id=web_id, csr=csr_der(ec_key(), TDID + "/not-web")),
              pb.X509SVIDParams(entry_id=web_id, csr=csr_der(weak, TDID + "/web")),
              pb.X509SVIDParams(entry_id="no-such-entry", csr=csr_der(ec_key(), TDID + "/web")),
              pb.X509SVIDParams(entry_id="bad id!", csr=csr_der(ec_key(), TDID + "/web"))]
    r = a1.stub.BatchNewX509SVID(pb.BatchNewX509SVIDRequest(params=params), timeout=RPC_TIMEOUT)
    codes = [x.status_code for x in r.results]
    check(len(r.results) == len(params), "batch: one result per request")
    check(codes[0] == 0 and r.results[0].spiffe_id == TDID + "/web", "batch: the authorized entry is signed",
          f"{codes[0]} {r.results[0].status_message}")
    ders = split_der(r.results[0].cert_chain)
    ok, out = t.openssl_verify(ders, "web")
    check(ok, "batch: workload SVID chain verifies with openssl", out)
    wl = x509.load_der_x509_certificate(ders[0])
    san = wl.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    check(uri_sans(wl) == [TDID + "/web"] and san.get_values_for_type(x509.DNSName) == ["web.example.org"],
          "batch: SVID has the entry's ID and DNS names")
    life = (wl.not_valid_after - wl.not_valid_before).total_seconds()
    # TTL 600 s + notBefore backdated a quarter of the TTL (150 s; server/ca.h LY_SVID_BACKDATE).
    check(745 <= life <= 755 and abs(r.results[0].expires_at -
                                     wl.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()) <= 1,
          "batch: the entry's TTL and expires_at", f"{life}")
    check(codes[1] == grpc.StatusCode.PERMISSION_DENIED.value[0], "batch: another agent's entry: PERMISSION_DENIED",
          f"{codes[1]} {r.results[1].status_message}")
    check(codes[2] == grpc.StatusCode.INVALID_ARGUMENT.value[0], "batch: CSR with a wrong SAN: INVALID_ARGUMENT",
          f"{codes[2]} {r.results[2].status_message}")
    check(codes[3] == grpc.StatusCode.INVALID_ARGUMENT.value[0], "batch: RSA-1024 CSR: INVALID_ARGUMENT",
          f"{codes[3]} {r.results[3].status_message}")
    check(codes[4] == grpc.StatusCode.PERMISSION_DENIED.value[0], "batch: unknown entry: PERMISSION_DENIED")
    check(codes[5] == grpc.StatusCode.INVALID_ARGUMENT.value[0], "batch: malformed entry ID: INVALID_ARGUMENT")
    check(not any(x.cert_chain for x in r.results[1:]), "batch: no chain for refused items")
    code, det = code_of(lambda: a1.stub.BatchNewX509SVID(pb.BatchNewX509SVIDRequest(params=[]), timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "batch: empty: INVALID_ARGUMENT", f"{code}")
    one = csr_der(ec_key(), TDID + "/web")
    big = pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(entry_id=web_id, csr=one)] * 1025)
    code, det = code_of(lambda: a1.stub.BatchNewX509SVID(big, timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "batch: 1025 requests (over LY_CA_BATCH_MAX): INVALID_ARGUMENT", f"{code} {det}")
    full = pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(entry_id=web_id, csr=one)] * 1024)
    t0 = time.monotonic()
    r = a1.stub.BatchNewX509SVID(full, timeout=60)
    batch_ms = (time.monotonic() - t0) * 1000
    check(len(r.results) == 1024 and all(x.status_code == 0 for x in r.results),
          f"batch: 1024 requests signed in one call ({batch_ms:.0f} ms)")

    # -- NewJWTSVID, validated with PyJWT against the JWKS
    tr = a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id, audience=["svc-a", "svc-b"]), timeout=RPC_TIMEOUT)
    hdr = jwt.get_unverified_header(tr.token)
    jwk = [k for k in jwks["keys"] if k.get("kid") == hdr.get("kid")]
    ok = False
    if check(len(jwk) == 1, "JWT-SVID kid is in the JWKS"):
        pub = jwt.PyJWK(jwk[0]).key
        try:
            claims = jwt.decode(tr.token, pub, algorithms=[hdr["alg"]], audience="svc-a")
            ok = claims["sub"] == TDID + "/web" and claims["exp"] == tr.expires_at and tr.issued_at <= claims["exp"]
        except jwt.PyJWTError as ex:
            print("     ", ex)
    check(ok, "JWT-SVID validates with PyJWT: sub, aud, exp")
    code, det = code_of(lambda: a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id), timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "JWT-SVID without audience: INVALID_ARGUMENT", f"{code}")
    code, det = code_of(lambda: a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id, audience=["a", ""]),
                                                   timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "JWT-SVID with an empty audience: INVALID_ARGUMENT", f"{code}")
    code, det = code_of(lambda: a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id, audience=["a"] * 33),
                                                   timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "JWT-SVID with 33 audiences: INVALID_ARGUMENT", f"{code}")
    # A NUL inside an audience: it was signed cut at the NUL ("svc-a"), now refused as the Workload API does.
    code, det = code_of(lambda: a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id, audience=["svc-a\x00evil"]),
                                                   timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT and "NUL" in (det or ""), "JWT-SVID with a NUL in an audience: INVALID_ARGUMENT",
          f"{code} {det}")
    code, det = code_of(lambda: a1.stub.NewJWTSVID(pb.NewJWTSVIDRequest(entry_id=web_id, audience=["svc-a\nb"]),
                                                   timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "JWT-SVID with a control character in an audience: INVALID_ARGUMENT",
          f"{code} {det}")
    code, det = code_of(lambda: a1.stub.NewJWTSVID(
        pb.NewJWTSVIDRequest(entry_id=other_agent_entry, audience=["a"]), timeout=RPC_TIMEOUT))
    check(code == C.PERMISSION_DENIED, "JWT-SVID for another agent's entry: PERMISSION_DENIED", f"{code}")

    # -- a workload SVID is no agent credential
    wpath = os.path.join(t.d, "workload.pem")
    with open(wpath, "wb") as f:
        f.write(pem_of(ders))
    with open(wpath + ".key", "wb") as f:
        f.write(key_pem(wkey))
    wp = TLSProxy(srv.port, t.bundle_path, wpath, wpath + ".key")
    wstub = t.grpc.AgentStub(grpc.insecure_channel(f"127.0.0.1:{wp.port}"))
    code, det = code_of(lambda: wstub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code == C.PERMISSION_DENIED, "a workload SVID as client certificate: PERMISSION_DENIED", f"{code} {det}")
    wp.close()

    # -- delete -> watch: measured
    delays, after_cli = [], []
    for i in range(8):
        eid = t.entry_create("-spiffeID", f"{TDID}/tmp/{i}", "-parentID", a1.id, "-selector", f"unix:uid:{2000 + i}")
        if not w.wait(lambda s: eid in s.state):
            check(False, f"watch: entry {i} created")
            break
        n0 = len(w.msgs)
        t0 = time.monotonic()
        srv.cli("entry", "delete", "-entryID", eid)
        t1 = time.monotonic()
        got = w.wait(lambda s: eid not in s.state, timeout=5)
        t2 = [ts for ts, m in w.msgs[n0:] if eid in m.deleted_entry_ids or (m.snapshot and
                                                                             all(e.entry_id != eid for e in m.entries))]
        if not got or not t2:
            check(False, f"watch: deletion {i} arrives")
            break
        delays.append((t2[0] - t0) * 1000)
        after_cli.append((t2[0] - t1) * 1000)
    if delays:
        print(f"     delete -> watch delay over {len(delays)} deletions: median {statistics.median(delays):.1f} ms, "
              f"max {max(delays):.1f} ms from the CLI's start (CLI process included); median "
              f"{statistics.median(after_cli):.1f} ms, max {max(after_cli):.1f} ms after the CLI returned")
    check(len(delays) == 8 and max(delays) < 1000, "watch: every deletion arrives within 1 s")
    check(w.state.keys() == {web_id}, "watch: the agent's view is exactly its authorized set")

    # -- node entries (aliases): an x509pop agent matching CN node1
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(x509pop=pb.X509PopAttestation(
        certificate_chain=node_der, challenge_nonce=b"\x00" * 32, challenge_signature=b"\x01"))))
    check(code == C.PERMISSION_DENIED, "x509pop: a response without a challenge: PERMISSION_DENIED", f"{code} {det}")
    ch1 = t.attest(pb.AttestAgentRequest(x509pop=pb.X509PopAttestation(certificate_chain=node_der)))
    check(len(ch1.challenge_nonce) == 32 and not ch1.HasField("svid"), "x509pop: step 1 gives a 32-byte nonce")
    bad = node_key.sign(b"lanyard x509pop v1" + b"\x00" * 32, ec.ECDSA(hashes.SHA256()))
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(x509pop=pb.X509PopAttestation(
        certificate_chain=node_der, challenge_nonce=ch1.challenge_nonce, challenge_signature=bad))))
    check(code == C.PERMISSION_DENIED, "x509pop: a signature over another nonce: PERMISSION_DENIED", f"{code} {det}")
    ch2 = t.attest(pb.AttestAgentRequest(x509pop=pb.X509PopAttestation(certificate_chain=node_der)))
    sig = node_key.sign(b"lanyard x509pop v1" + ch2.challenge_nonce, ec.ECDSA(hashes.SHA256()))
    xkey = ec_key()
    pop_req = pb.AttestAgentRequest(x509pop=pb.X509PopAttestation(
        certificate_chain=node_der, challenge_nonce=ch2.challenge_nonce, challenge_signature=sig),
        csr=csr_der(xkey, TDID + "/placeholder"))
    r1 = t.attest(pop_req)
    want = f"{TDID}/lanyard/agent/x509pop/{hashlib.sha1(node_der).hexdigest()}"
    check(r1.agent_id == want and len(r1.ticket) == 32, "x509pop: admitted; agent_id and a ticket", r1.agent_id)
    code, det = code_of(lambda: t.attest(pop_req))
    check(code == C.PERMISSION_DENIED, "x509pop: a challenge is single use", f"{code}")
    r2 = t.attest(pb.AttestAgentRequest(ticket=r1.ticket, csr=csr_der(xkey, want)))
    xa = Agent(t, "x509pop", r2.svid, xkey)
    t.agents.append(xa)
    check(xa.id == want, "x509pop: the SVID after the ticket step")
    xw = Watch(xa.stub, pb)
    check(xw.wait(lambda s: len(s.msgs) >= 1) and len(xw.state) == 0, "x509pop agent: empty snapshot")
    node_entry = t.entry_create("-node", "-spiffeID", TDID + "/nodes/group-1", "-parentID", SERVER_ID,
                                "-selector", "x509pop:subject:cn:node1")
    child = t.entry_create("-spiffeID", TDID + "/aliased", "-parentID", TDID + "/nodes/group-1",
                           "-selector", "unix:uid:3000")
    check(xw.wait(lambda s: child in s.state), "alias: the child of a matching node entry reaches the agent")
    check(node_entry not in xw.state, "alias: the node entry itself is not sent")
    check(t.barrier(w, a1.id) and child not in w.state,
          "alias: an agent without the node selector does not get it (an entry of its own, created after, arrived)")
    r = xa.stub.BatchNewX509SVID(pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(
        entry_id=child, csr=csr_der(ec_key(), TDID + "/aliased"))]), timeout=RPC_TIMEOUT)
    check(r.results[0].status_code == 0, "alias: the aliased entry is signed for the x509pop agent")
    r = a1.stub.BatchNewX509SVID(pb.BatchNewX509SVIDRequest(params=[pb.X509SVIDParams(
        entry_id=child, csr=csr_der(ec_key(), TDID + "/aliased"))]), timeout=RPC_TIMEOUT)
    check(r.results[0].status_code == grpc.StatusCode.PERMISSION_DENIED.value[0], "alias: refused to the other agent")
    srv.cli("entry", "delete", "-entryID", node_entry)
    check(xw.wait(lambda s: child not in s.state), "alias: deleting the node entry revokes its children at once")

    # -- k8s_psat (TokenReview on the thread pool, against the fake API server)
    if k8s is not None:
        psat_id = f"{TDID}/lanyard/agent/k8s_psat/prod/{k8s.NODE_UID}"
        pk = ec_key()
        r = t.attest(pb.AttestAgentRequest(k8s_psat=pb.K8sPsatAttestation(cluster="prod", token="good.agent-token.a1"),
                                           csr=csr_der(pk, psat_id)))
        check(r.svid.spiffe_id == psat_id, "k8s_psat: SVID in one call when the CSR names the agent ID")
        pa = Agent(t, "psat", r.svid, pk)
        t.agents.append(pa)
        check(pa.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT).trust_domain == TD,
              "k8s_psat: the agent's SVID works over mTLS")
        rec = srv.cli("agent", "show", "-spiffeID", psat_id).stdout
        check("k8s_psat:cluster:prod" in rec and "k8s_psat:agent_node_uid:" + k8s.NODE_UID in rec,
              "k8s_psat: node selectors recorded")
        for tok, want_code, what in (("unauth.agent-token.b2", C.PERMISSION_DENIED, "not authenticated"),
                                     ("boom.agent-token.h8", C.UNAVAILABLE, "API server error")):
            code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
                k8s_psat=pb.K8sPsatAttestation(cluster="prod", token=tok), csr=csr_der(ec_key(), psat_id))))
            check(code == want_code, f"k8s_psat: {what}: {want_code.name}", f"{code} {det}")
        code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(
            k8s_psat=pb.K8sPsatAttestation(cluster="nope", token="good.agent-token.a1"))))
        check(code == C.PERMISSION_DENIED, "k8s_psat: unknown cluster: PERMISSION_DENIED", f"{code}")
        # Several at once: all answered (the thread pool, results applied on the loop).
        results = []

        def one():
            results.append(code_of(lambda: t.attest(pb.AttestAgentRequest(
                k8s_psat=pb.K8sPsatAttestation(cluster="prod", token="good.agent-token.a1"),
                csr=csr_der(ec_key(), psat_id))))[0])
        ths = [threading.Thread(target=one) for _ in range(6)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        check(len(results) == 6 and all(c in (C.OK, C.UNAVAILABLE) for c in results) and C.OK in results,
              "k8s_psat: concurrent attestations all answered", str(results))

    # -- RenewAgent: the old SVID stays usable until the next renewal
    old_stub = a1.stub
    nk = ec_key()
    code, det = code_of(lambda: a1.stub.RenewAgent(pb.RenewAgentRequest(csr=csr_der(nk, TDID + "/someone-else")),
                                                   timeout=RPC_TIMEOUT))
    check(code == C.INVALID_ARGUMENT, "renew: a CSR for another ID is refused", f"{code}")
    ns = a1.stub.RenewAgent(pb.RenewAgentRequest(csr=csr_der(nk, a1.id)), timeout=RPC_TIMEOUT)
    check(ns.spiffe_id == a1.id and split_der(ns.cert_chain)[0] != a1.chain[0], "renew: a new SVID for the agent")
    old_agent = Agent.__new__(Agent)
    old_agent.__dict__.update(a1.__dict__)
    a1.key = nk
    a1.set_svid(ns)
    check(a1.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT).trust_domain == TD,
          "renew: the new SVID works")
    check(old_stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT).trust_domain == TD,
          "renew: the previous SVID still works meanwhile")
    check(w.status is None, "renew: the watch opened with the previous SVID goes on")
    nk2 = ec_key()
    ns2 = a1.stub.RenewAgent(pb.RenewAgentRequest(csr=csr_der(nk2, a1.id)), timeout=RPC_TIMEOUT)
    code, det = code_of(lambda: old_stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code == C.UNAUTHENTICATED, "renew twice: the SVID before last is refused: UNAUTHENTICATED", f"{code} {det}")
    check(w.wait(lambda s: s.status is not None) and w.status[0] == C.UNAUTHENTICATED,
          "renew twice: the watch opened with it ends", str(w.status))
    a1.key = nk2
    a1.set_svid(ns2)

    # -- eviction: the agent's watch ends, then it must attest again
    w = Watch(a1.stub, pb)
    check(w.wait(lambda s: len(s.msgs) >= 1), "evict: a fresh watch")
    srv.cli("agent", "evict", "-spiffeID", a1.id)
    check(w.wait(lambda s: s.status is not None) and w.status[0] == C.PERMISSION_DENIED,
          "evict: the agent's watch ends with PERMISSION_DENIED", str(w.status))
    code, det = code_of(lambda: a1.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code == C.PERMISSION_DENIED and "attest again" in det, "evict: its calls are refused: attest again",
          f"{code} {det}")

    # -- ban: refused, its watch ends, and it cannot attest again
    ban_id = TDID + "/agents/to-ban"
    tok = t.token("-spiffeID", ban_id)
    bk = ec_key()
    ba = Agent(t, "ban", t.attest(pb.AttestAgentRequest(join_token=pb.JoinTokenAttestation(token=tok),
                                                        csr=csr_der(bk, ban_id))).svid, bk)
    t.agents.append(ba)
    bw = Watch(ba.stub, pb)
    check(bw.wait(lambda s: len(s.msgs) >= 1), "ban: a watch")
    srv.cli("agent", "ban", "-spiffeID", ban_id)
    check(bw.wait(lambda s: s.status is not None) and bw.status[0] == C.PERMISSION_DENIED,
          "ban: the agent's watch ends with PERMISSION_DENIED", str(bw.status))
    code, det = code_of(lambda: ba.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code == C.PERMISSION_DENIED and "banned" in det, "ban: its calls are refused: banned", f"{code} {det}")
    tok = t.token("-spiffeID", ban_id)
    code, det = code_of(lambda: t.attest(pb.AttestAgentRequest(join_token=pb.JoinTokenAttestation(token=tok),
                                                               csr=csr_der(ec_key(), ban_id))))
    check(code == C.PERMISSION_DENIED and "banned" in det, "ban: a banned agent cannot attest again", f"{code} {det}")

    # -- bundle sequence in every update; other watch still fine
    check(all(m.bundle_sequence >= 1 for _, m in xw.msgs), "watch: every update carries the bundle sequence")
    xw.cancel()
    return xa


def rotation_phase(t, pb):
    """CA TTL 60 s: at 30 s a successor root is published; watches must say so."""
    a = t.join("rot")
    w = Watch(a.stub, pb)
    check(w.wait(lambda s: len(s.msgs) >= 1), "rotation: a watch")
    seq0 = w.msgs[0][1].bundle_sequence
    b0 = a.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT)
    t0 = time.monotonic()
    got = w.wait(lambda s: any(m.bundle_sequence > seq0 for _, m in s.msgs), timeout=50)
    check(got, "rotation: the watch brings the new bundle sequence", f"after {time.monotonic() - t0:.1f} s")
    if got:
        seq1 = [m.bundle_sequence for _, m in w.msgs if m.bundle_sequence > seq0][0]
        b1 = a.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT)
        check(b1.sequence == seq1 and len(b1.x509_authorities) == len(b0.x509_authorities) + 1,
              "rotation: GetBundle has that sequence and the successor's root",
              f"{b1.sequence} {len(b1.x509_authorities)}")
    check(w.status is None, "rotation: the watch goes on")
    w.cancel()


def expiry_phase(t, pb):
    """Agent SVIDs of 20 s (the floor, lib/caps.h): a watch ends when the SVID it was opened with expires."""
    a = t.join("exp")
    w = Watch(a.stub, pb)
    check(w.wait(lambda s: len(s.msgs) >= 1), "expiry: a watch")
    check(w.wait(lambda s: s.status is not None, timeout=30) and w.status[0] == grpc.StatusCode.UNAUTHENTICATED,
          "expiry: the watch ends when the agent SVID expires: UNAUTHENTICATED", str(w.status))
    code, det = code_of(lambda: a.stub.GetBundle(pb.GetBundleRequest(), timeout=RPC_TIMEOUT))
    check(code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE),
          "expiry: an expired SVID is refused", f"{code} {det}")


def main():
    d = tempfile.mkdtemp(prefix="lanyard-agent-api-")
    tests = []
    httpd = None
    try:
        protoc(PROTO_DIR, d, "agent.proto", system_include=False)
        sys.path.insert(0, d)
        import agent_pb2 as pb
        import agent_pb2_grpc as pb_grpc

        ca_path, node_der, node_key = make_x509pop_pki(d)
        # The fake Kubernetes API (its PKI made with the openssl CLI): a set-up that fails fails the test.
        sys.path.insert(0, HERE)
        import fake_k8s_api as k8s
        kd = os.path.join(d, "k8s")
        os.mkdir(kd)
        k8s.make_pki(kd)
        with open(os.path.join(kd, "token"), "w") as f:
            f.write(k8s.SERVER_TOKEN + "\n")
        httpd, url = k8s.start_server(kd)
        psat_cfg = f"""    k8s_psat:
      clusters:
        prod:
          service_account_allow_list: ["{k8s.NS}:{k8s.SA}"]
          api_server_url: {url}
          ca_file: {kd}/ca.crt
          token_file: {kd}/token
"""
        cfg = os.path.join(d, "server.yaml")
        with open(cfg, "w") as f:
            # The rate limits are off: this scenario attests and signs in bursts to test the protocol;
            # ratelimit.py tests the limits (SPEC §11).
            f.write(f"server:\n  ratelimit: {{attestation: false, signing: false}}\n"
                    f"  node_attestors:\n    join_token: {{}}\n    x509pop:\n"
                    f"      ca_bundle_path: {ca_path}\n{psat_cfg}")
        t = Test(d, pb, pb_grpc)
        tests.append(t)
        t.start(cfg)
        live = scenario(t, pb, node_der, node_key, k8s)
        lw = Watch(live.stub, pb)
        check(lw.wait(lambda s: len(s.msgs) >= 1), "shutdown: a watch open")
        log = t.srv.log_text()
        secrets = ["good.agent-token.a1", "unauth.agent-token.b2", "boom.agent-token.h8", "BEGIN PRIVATE KEY"]
        check(not any(s in log for s in secrets), "the server log holds no token and no key")
        check(not re.search(r"eyJ[A-Za-z0-9_-]+\.eyJ", log), "the server log holds no JWT")
        rc = t.srv.stop()
        check(rc == 0, "server stops cleanly on SIGTERM", f"rc={rc}")
        check(lw.wait(lambda s: s.status is not None) and lw.status[0] == grpc.StatusCode.UNAVAILABLE,
              "shutdown: open watches end with UNAVAILABLE", str(lw.status))
        if failures:
            print("---- server log (tail) ----")
            print("\n".join(t.srv.log_text().splitlines()[-60:]))

        for name, yaml, phase in (("rotation", "server:\n  ca_ttl: 60\n", rotation_phase),
                                  ("expiry", "server:\n  default_x509_svid_ttl: 20\n", expiry_phase)):
            if os.environ.get("LANYARD_QUICK") and name == "rotation":
                skip("rotation", "LANYARD_QUICK is set (the CA rotation phase takes about 35 s)")
                continue
            pd = os.path.join(d, name)
            os.mkdir(pd)
            with open(os.path.join(pd, "server.yaml"), "w") as f:
                f.write(yaml)
            pt = Test(pd, pb, pb_grpc)
            tests.append(pt)
            pt.start(os.path.join(pd, "server.yaml"))
            n_fail = len(failures)
            phase(pt, pb)
            rc = pt.srv.stop()
            check(rc == 0, f"{name}: server stops cleanly", f"rc={rc}")
            if len(failures) > n_fail:
                print("\n".join(pt.srv.log_text().splitlines()[-40:]))
    finally:
        for t in tests:
            for a in t.agents:
                a.close()
            if t.srv is not None and t.srv.proc.poll() is None:
                t.srv.proc.kill()
        if httpd is not None:
            httpd.shutdown()
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
