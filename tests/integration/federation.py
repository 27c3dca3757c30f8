#!/usr/bin/python3
"""federation.py: SPIFFE Federation between real lanyard-servers (issue 15,
SPEC §9): the bundle endpoint and the server's fetcher.

    federation.py LANYARD_SERVER

Servers, each with its own data dir, socket and free ports on 127.0.0.1:
  B  b.test  bundle endpoint https_spiffe (its own X.509-SVID), ca_ttl 60 s
             (its CA rotates during the test), refresh_hint 4 s;
  C  c.test  bundle endpoint https_web with a certificate of a test CA made
             here with `openssl`, ca_ttl 60 s, refresh_hint 2 s;
  D  d.test  bundle endpoint https_spiffe, for a dynamic relationship;
  A  a.test  federates with b.test statically (https_spiffe, bootstrapped
             with `bundle set`), with c.test statically (https_web, anchors
             from server.federation.https_web_ca_file), with d.test
             dynamically (`federation create`),
             with f.test statically through a Python endpoint whose answers
             the test switches, and with imp.test through an impostor
             (a certificate the test CA never signed).
Checks: the endpoint's JSON (Python's ssl, and `openssl s_client` for the
certificates), 404/405/400/431 answers, 32 connections per address, an
idle connection closed after 10 s;
https_web: a key file readable by others refused at start, a new
certificate served after the files change and at once on SIGHUP. A's
fetcher: f.test's endpoint down, slow, garbage, 500, oversized, a third
domain's bundle: the last good bundle stays, every refusal is counted in
A's /metrics and logged once; impostors refused (an https_web certificate
the CA file does not trust; B's SVID where D's is expected); one audit line per
change; C's (static, https_web) and B's (static, https_spiffe after
`bundle set`) CA rotations reach A within their refresh hints and before
they sign with the new CA; d.test (dynamic, `federation create
-trustDomainBundlePath`); a dynamic relationship does not replace a static
one; `bundle list`; `federation refresh`.
Figures: bundle change to stored on A (C's and B's CA rotations, from the
log lines of both servers; f.test's new sequence), the endpoint's requests
per second (sequential, one TLS connection each, Python client).

Exits 0 when every check passed, 1 on a failure, 77 (SKIP) when a scenario
cannot run here (the admin verbs of the federation CLI missing).
"""
import base64
import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, check, exit_status, figures, finish, free_port, kill_all, make_tls_pki,  # noqa: E402
                     openssl, run, skip, wait_for, QuietServer)

SERVER = sys.argv[1]
# One context for every request (loading the system store per request would be what the rate measures).
NO_VERIFY = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
NO_VERIFY.check_hostname = False
NO_VERIFY.verify_mode = ssl.CERT_NONE


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def start_server(tmp, name, td, extra):
    d = os.path.join(tmp, name)
    os.makedirs(d, mode=0o700)
    sock = os.path.join(d, "sock", "api.sock")
    cfg = os.path.join(d, "server.yaml")
    write(cfg, f"server:\n  trust_domain: {td}\n  bind_address: 127.0.0.1\n  server_port: {free_port()}\n"
               f"  socket_path: {sock}\n  data_dir: {d}/data\n  log_level: debug\n" + extra)
    daemon = Daemon([SERVER, "run", "-config", cfg], os.path.join(d, "log"))
    return daemon, sock


def cli(sock, *args, timeout=30):
    return run([SERVER, *args, "-socketPath", sock], timeout=timeout)


def https_get(port, path="/", method="GET", raw=None, timeout=10):
    """One request to the endpoint (no verification: what it serves is checked apart). Returns (status, body)."""
    ctx = NO_VERIFY
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # As Go's and curl's clients do: without it the request waits for the server's delayed ACK (40 ms).
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(s) as t:
            t.sendall(raw if raw is not None else f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while True:
                try:
                    chunk = t.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return (int(m.group(1)) if m else 0), body


def log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    return datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp() if m else None


def metric(port, name, labels):
    """The value of one sample of A's /metrics, 0 when absent."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
    except OSError:
        return 0
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0


def stored_lines(daemon, td):
    return [ln for ln in daemon.text().splitlines() if f"federation: bundle of {td} stored" in ln]


# ---- a bundle for f.test, made here (a CA of our own, no SPIFFE ID) ----

def b64u(n, size):
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def make_f_bundle(d, seq):
    from cryptography.hazmat.primitives import serialization
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"f{seq}.key", "-out", f"f{seq}.crt", "-days", "2", "-subj", f"/CN=f.test CA {seq}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectAltName=URI:spiffe://f.test", cwd=d)
    from cryptography import x509
    with open(os.path.join(d, f"f{seq}.crt"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    pub = cert.public_key().public_numbers()
    key = {"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": b64u(pub.x, 32), "y": b64u(pub.y, 32),
           "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    return json.dumps({"keys": [key], "spiffe_sequence": seq, "spiffe_refresh_hint": 2}).encode(), \
        cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeEndpoint:
    """An https_web bundle endpoint whose answer the test switches (mode)."""

    def __init__(self, d, cert_name):
        self.mode, self.body, self.third = "good", b"", b""
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                m = outer.mode
                if m == "slow":
                    time.sleep(13)
                if m == "500":
                    body, code = b"no", 500
                elif m == "garbage":
                    body, code = b"<html>this is not a bundle</html>", 200
                elif m == "third":
                    body, code = outer.third, 200
                elif m == "oversized":
                    body, code = b'{"keys":[' + b" " * (2 * 1024 * 1024) + b"]}", 200
                else:
                    body, code = outer.body, 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        self.handler, self.d, self.cert_name = H, d, cert_name
        self.port = free_port()
        self.up()

    def up(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.d, f"{self.cert_name}.crt"), os.path.join(self.d, f"{self.cert_name}.key"))
        self.httpd = QuietServer(("127.0.0.1", self.port), self.handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def rotation(a, srv, port, td, hint):
    """srv's CA rotation (ca_ttl 60 s) reaches A within the refresh hint, before srv signs with the new CA."""
    seq0 = json.loads(https_get(port)[1]).get("spiffe_sequence", 0)

    def seq():
        try:
            return json.loads(https_get(port)[1]).get("spiffe_sequence", 0)
        except (OSError, ValueError):
            return 0
    changed = wait_for(lambda: seq() > seq0, 70, 0.5)
    if not check(bool(changed), f"{td}'s CA rotation changes its served bundle (ca_ttl 60 s)"):
        return
    seq1 = seq()
    got = wait_for(lambda: [ln for ln in stored_lines(a, td) if f"-> {seq1}," in ln], 20, 0.05)
    slines = [ln for ln in srv.text().splitlines() if f"trust bundle changed: sequence={seq1}" in ln]
    if not check(bool(got) and bool(slines), f"{td}'s bundle sequence {seq1} stored on A", a.text()[-500:]):
        return
    lat = log_time(got[0]) - log_time(slines[0])
    figures[f"{td}_rotation_to_stored_on_a_s"] = round(lat, 3)
    check(lat < hint, f"{td}'s new bundle stored on A within its refresh hint ({hint} s)", str(lat))
    signs = [ln for ln in srv.text().splitlines() if "CA: X.509 authority" in ln and " signs" in ln]
    late = wait_for(lambda: [ln for ln in srv.text().splitlines()
                             if "CA: X.509 authority" in ln and " signs" in ln][len(signs):], 60, 0.5)
    check(bool(late) and log_time(late[0]) > log_time(got[0]), f"A holds {td}'s new CA before {td} signs with it")


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-federation-")
    pki = os.path.join(tmp, "pki")
    os.makedirs(pki)
    make_tls_pki(pki, "ep", "127.0.0.1")  # ca.crt signs ep.crt (IP:127.0.0.1); other-ca is the impostor's
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "imp.key",
            "-out", "imp.csr", "-subj", "/CN=127.0.0.1", cwd=pki)
    openssl("x509", "-req", "-in", "imp.csr", "-CA", "other-ca.crt", "-CAkey", "other-ca.key", "-CAcreateserial",
            "-out", "imp.crt", "-days", "1", "-extfile", "ep.ext", cwd=pki)
    os.chmod(os.path.join(pki, "ep.key"), 0o600)
    daemons = []
    try:
        # ---- an https_web key readable by others is refused at start ----
        bad_key = os.path.join(pki, "ep-open.key")
        with open(os.path.join(pki, "ep.key")) as f:
            write(bad_key, f.read(), 0o644)
        pbad = free_port()
        bad, _ = start_server(tmp, "bad", "bad.test",
                              f"  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pbad}\n"
                              f"      profile:\n        https_web:\n          serving_cert_file:\n"
                              f"            cert_file_path: {pki}/ep.crt\n            key_file_path: {bad_key}\n")
        rc = bad.stop(timeout=20) if wait_for(lambda: not bad.alive(), 15) else bad.stop()
        check(rc == 1 and "gives access to others" in bad.text(),
              "https_web: a key file readable by others is refused at start (exit 1)", bad.text()[-300:])

        # ---- B and C ----
        pb, pc = free_port(), free_port()
        b, bsock = start_server(tmp, "b", "b.test",
                                f"  ca_ttl: 60\n  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n"
                                f"      port: {pb}\n      refresh_hint: 4s\n      profile:\n        https_spiffe: {{}}\n")
        c, csock = start_server(tmp, "c", "c.test",
                                f"  ca_ttl: 60\n  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pc}\n"
                                f"      refresh_hint: 2s\n      profile:\n        https_web:\n          serving_cert_file:\n"
                                f"            cert_file_path: {pki}/ep.crt\n            key_file_path: {pki}/ep.key\n")
        daemons += [b, c]
        def both_up():
            try:
                return b.alive() and c.alive() and https_get(pb)[0] == 200 and https_get(pc)[0] == 200
            except OSError:
                return False
        up = wait_for(both_up, 30, 0.2)
        if not check(bool(up), "B and C serve their bundle endpoints", b.text()[-500:] + c.text()[-500:]):
            return
        st, body = https_get(pb)
        doc = json.loads(body)
        uses = sorted({k.get("use") for k in doc.get("keys", [])})
        check(st == 200 and doc.get("spiffe_refresh_hint") == 4 and doc.get("spiffe_sequence", 0) >= 1 and
              uses == ["jwt-svid", "x509-svid"],
              "GET / on B: SPIFFE bundle JSON with spiffe_sequence, spiffe_refresh_hint 4, x509-svid and jwt-svid keys",
              body[:300])
        sc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{pb}", "-showcerts"], input=b"",
                            capture_output=True, timeout=20)
        x = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=sc.stdout,
                           capture_output=True, timeout=20)
        check(b"URI:spiffe://b.test/lanyard/server" in x.stdout,
              "openssl s_client: B's endpoint presents spiffe://b.test/lanyard/server (https_spiffe)", x.stdout[:200])
        cdoc = json.loads(https_get(pc)[1])
        ok = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{pc}", "-CAfile", f"{pki}/ca.crt",
                             "-verify_return_error", "-verify_ip", "127.0.0.1"], input=b"", capture_output=True,
                            timeout=20)
        check(ok.returncode == 0 and cdoc.get("spiffe_refresh_hint") == 2,
              "openssl s_client: C's endpoint verifies with the test CA (https_web)", ok.stdout[-300:])
        check(https_get(pb, "/x")[0] == 404 and https_get(pb, method="POST")[0] == 405 and
              https_get(pb, raw=b"GET / HTTP/1.1\nHost: x\n\n")[0] == 400 and
              https_get(pb, raw=b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")[0] == 431,
              "B's endpoint: 404 for another path, 405 for POST, 400 for a bare LF, 431 for a huge head")

        # ---- the fake endpoints and A ----
        fbody1, _ = make_f_bundle(pki, 1)
        fbody2, _ = make_f_bundle(pki, 2)
        fake = FakeEndpoint(pki, "ep")
        fake.body = fbody1
        fake.third = json.dumps(cdoc).encode()  # c.test's bundle served as f.test's
        imp = FakeEndpoint(pki, "imp")
        imp.body = fbody1
        ph = free_port()
        a, asock = start_server(
            tmp, "a", "a.test",
            f"  health_checks:\n    listener_enabled: true\n    bind_port: {ph}\n"
            f"  federation:\n    https_web_ca_file: {pki}/ca.crt\n    federates_with:\n"
            f"      \"b.test\":\n        bundle_endpoint_url: https://127.0.0.1:{pb}\n"
            f"        bundle_endpoint_profile:\n          https_spiffe:\n"
            f"            endpoint_spiffe_id: spiffe://b.test/lanyard/server\n"
            f"      \"c.test\":\n        bundle_endpoint_url: https://127.0.0.1:{pc}\n"
            f"        bundle_endpoint_profile:\n          https_web: {{}}\n"
            f"      \"f.test\":\n        bundle_endpoint_url: https://127.0.0.1:{fake.port}/\n"
            f"        bundle_endpoint_profile:\n          https_web: {{}}\n"
            f"      \"imp.test\":\n        bundle_endpoint_url: https://127.0.0.1:{imp.port}\n"
            f"        bundle_endpoint_profile:\n          https_web: {{}}\n")
        daemons.append(a)
        if not check(bool(wait_for(lambda: a.alive() and "lanyard-server started" in a.text(), 30, 0.1)),
                     "A starts with four static relationships", a.text()[-800:]):
            return
        R = "lanyard_server_federation_refusals_total"

        # f.test (https_web, static): stored; then each failure keeps it and is counted.
        got = wait_for(lambda: stored_lines(a, "f.test"), 20, 0.1)
        check(bool(got) and "-> 1," in got[0], "f.test's bundle (https_web, static) stored on A", a.text()[-800:])
        fake.mode = "good"
        fake.body = fbody2
        t0 = time.time()
        got = wait_for(lambda: [ln for ln in stored_lines(a, "f.test") if "-> 2," in ln], 20, 0.02)
        if check(bool(got), "f.test's sequence 2 stored on A"):
            figures["f_test_change_to_stored_s"] = round(time.time() - t0, 3)
        n_stored = len(stored_lines(a, "f.test"))
        for mode, reason, wait_s in (("garbage", "bad_bundle", 10), ("500", "http", 10), ("third", "wrong_trust_domain", 10),
                                     ("oversized", "oversized", 15), ("slow", "timeout", 30), ("down", "connect", 10)):
            before = metric(ph, R, {"trust_domain": "f.test", "reason": reason})
            if mode == "down":
                fake.down()
            else:
                fake.mode = mode
            counted = wait_for(lambda: metric(ph, R, {"trust_domain": "f.test", "reason": reason}) > before, wait_s, 0.2)
            check(bool(counted) and len(stored_lines(a, "f.test")) == n_stored,
                  f"f.test endpoint {mode}: refused as {reason}, counted in /metrics, the last good bundle stays",
                  a.text()[-600:])
            if mode == "down":
                fake.up()
            fake.mode = "good"
        logged = [ln for ln in a.text().splitlines() if "bundle of f.test from" in ln and "not taken (bad_bundle)" in ln]
        check(len(logged) == 1, "a refusal is logged once (warn) while it repeats", str(len(logged)))
        check(metric(ph, R, {"trust_domain": "imp.test", "reason": "tls"}) >= 1 and not stored_lines(a, "imp.test"),
              "imp.test: an endpoint certificate the CA file does not trust is refused (tls), nothing stored")
        audit = [ln for ln in a.text().splitlines() if '"action":"bundle.refresh"' in ln and '"trust_domain":"f.test"' in ln]
        check(len(audit) == 2, "one audit line per bundle change (f.test: 2)", str(len(audit)))

        # ---- a connection that sends nothing is closed after 10 s (watched during the rotation below) ----
        idle_closed = {}

        def watch_idle():
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", pc), timeout=40) as sk:
                try:
                    sk.recv(1)
                except OSError:
                    pass
            idle_closed["after"] = time.monotonic() - t0
        watcher = threading.Thread(target=watch_idle, daemon=True)
        watcher.start()

        # ---- C's CA rotation reaches A (static, https_web) before C signs with the new CA ----
        rotation(a, c, pc, "c.test", 2)
        watcher.join(30)
        check(9 <= idle_closed.get("after", 0) <= 15,
              "C's endpoint closes a connection that sends nothing after 10 s", str(idle_closed))

        # ---- https_web: a new certificate is served after the files change, and at once on SIGHUP ----
        def serial(port):
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"], input=b"",
                               capture_output=True, timeout=20)
            x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=r.stdout, capture_output=True, timeout=20)
            return x.stdout.strip()

        def new_cert(tag, link=False):
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{tag}.key",
                    "-out", f"{tag}.csr", "-subj", "/CN=127.0.0.1", cwd=pki)
            openssl("x509", "-req", "-in", f"{tag}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", f"{tag}.crt", "-days", "1", "-extfile", "ep.ext", cwd=pki)
            os.chmod(os.path.join(pki, f"{tag}.key"), 0o600)
            for ext in ("key", "crt"):
                if link:  # as certbot's live/ names: links to the files
                    os.symlink(f"{tag}.{ext}", os.path.join(pki, f"{tag}-link.{ext}"))
                    os.rename(os.path.join(pki, f"{tag}-link.{ext}"), os.path.join(pki, f"ep.{ext}"))
                else:
                    os.rename(os.path.join(pki, f"{tag}.{ext}"), os.path.join(pki, f"ep.{ext}"))
        s0 = serial(pc)
        new_cert("ep2")
        s1 = wait_for(lambda: serial(pc) != s0 and serial(pc), 12, 0.5)
        check(bool(s1), "https_web: C serves its new certificate after the files changed (checked every 5 s)")
        new_cert("ep3", link=True)
        c.proc.send_signal(signal.SIGHUP)
        s2 = wait_for(lambda: serial(pc) not in (s0, s1) and serial(pc), 2, 0.2)
        check(bool(s2) and "bundle endpoint certificate reloaded" in c.text(),
              "https_web: SIGHUP reloads C's certificate at once (files given through links)")

        # ---- the endpoint's requests per second ----
        n, t0 = 300, time.time()
        okc = sum(1 for _ in range(n) if https_get(pb)[0] == 200)
        dt = time.time() - t0
        figures["endpoint_rps_sequential_tls"] = round(n / dt, 1)
        check(okc == n, f"{n} sequential GETs on B's endpoint answered 200")

        check(all(d.alive() for d in daemons), "every server still runs")

        # ---- the CLI side (fed-store's verbs): bootstrap b.test, a dynamic d.test, static wins ----
        rc, out, err = cli(asock, "bundle", "count")
        if rc != 0:
            skip("b.test (static https_spiffe), d.test (dynamic)", f"`bundle count` fails: {err.strip()[:120]}")
            return
        rc, bpem, err = cli(bsock, "bundle", "show")
        write(os.path.join(tmp, "b.pem"), bpem)
        rc, out, err = cli(asock, "bundle", "set", "-id", "spiffe://b.test", "-path", os.path.join(tmp, "b.pem"))
        check(rc == 0, "A: bundle set -id spiffe://b.test (the https_spiffe bootstrap)", err)
        got = wait_for(lambda: stored_lines(a, "b.test"), 20, 0.1)
        check(bool(got), "b.test's bundle fetched over https_spiffe after the bootstrap", a.text()[-600:])
        pd = free_port()
        dd, dsock = start_server(tmp, "d", "d.test",
                                 f"  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pd}\n"
                                 f"      refresh_hint: 4s\n")
        daemons.append(dd)
        wait_for(lambda: dd.alive() and "lanyard-server started" in dd.text(), 30, 0.1)
        rc, dpem, err = cli(dsock, "bundle", "show")
        write(os.path.join(tmp, "d.pem"), dpem)
        rc, out, err = cli(asock, "federation", "create", "-trustDomain", "d.test", "-bundleEndpointURL",
                           f"https://127.0.0.1:{pd}", "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID",
                           "spiffe://d.test/lanyard/server", "-trustDomainBundlePath", os.path.join(tmp, "d.pem"))
        check(rc == 0, "A: federation create -trustDomain d.test (https_spiffe, bootstrap bundle, dynamic)", err)
        got = wait_for(lambda: stored_lines(a, "d.test"), 20, 0.1)
        check(bool(got), "d.test's bundle fetched (dynamic relationship)", a.text()[-600:])
        # https_spiffe impostor: B's endpoint where D's (spiffe://d.test/lanyard/server) is expected.
        rc, out, err = cli(asock, "federation", "create", "-trustDomain", "e.test", "-bundleEndpointURL",
                           f"https://127.0.0.1:{pb}", "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID",
                           "spiffe://d.test/lanyard/server")
        counted = wait_for(lambda: metric(ph, R, {"trust_domain": "e.test", "reason": "tls"}) >= 1, 15, 0.2)
        check(rc == 0 and bool(counted) and not stored_lines(a, "e.test"),
              "https_spiffe: an endpoint whose SVID is not the expected ID under that domain's bundle is refused (tls)",
              err + a.text()[-400:])
        # A dynamic relationship for c.test towards the impostor: the static one wins.
        before = metric(ph, R, {"trust_domain": "c.test", "reason": "tls"})
        rc, out, err = cli(asock, "federation", "create", "-trustDomain", "c.test", "-bundleEndpointURL",
                           f"https://127.0.0.1:{imp.port}", "-bundleEndpointProfile", "https_web")
        if rc == 0:
            time.sleep(4)
            check(metric(ph, R, {"trust_domain": "c.test", "reason": "tls"}) == before,
                  "a dynamic relationship for c.test does not replace the static one")
        rc, out, err = cli(asock, "bundle", "list", "-format", "spiffe")
        check(rc == 0 and all(td in out for td in ("b.test", "c.test", "d.test", "f.test")),
              "A: bundle list shows b.test, c.test, d.test and f.test", out[:300] + err)
        n_d = len(stored_lines(a, "d.test"))
        rc, out, err = cli(asock, "federation", "refresh", "-id", "d.test")
        check(rc == 0, "A: federation refresh -id d.test", err)
        rc, out, err = cli(asock, "federation", "refresh", "-id", "b.test")
        check(rc == 0, "A: federation refresh -id b.test (a static relationship, from the config)", out + err)
        rc, out, err = cli(asock, "federation", "refresh", "-id", "f.test")
        check(rc == 0, "A: federation refresh -id f.test answers once the fetch is done", out + err)
        rc, out, err = cli(asock, "federation", "refresh", "-id", "imp.test")
        check(rc != 0 and "not taken (tls)" in err, "A: federation refresh -id imp.test says why it was refused", err)
        rc, out, err = cli(asock, "federation", "refresh", "-id", "nope.test")
        check(rc != 0, "A: federation refresh of an unknown trust domain is refused", out + err)
        rotation(a, b, pb, "b.test", 4)

        # ---- at most 32 connections from one address: the 33rd is closed at once ----
        idle = [socket.create_connection(("127.0.0.1", pd), timeout=5) for _ in range(32)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", pd), timeout=5)
        try:
            closed = extra.recv(1) == b""
        except OSError:
            closed = True
        extra.close()
        for sk in idle:
            sk.close()
        time.sleep(0.3)
        check(closed and https_get(pd)[0] == 200,
              "d.test's endpoint: the 33rd connection from one address is closed, a GET works once they go")
        check(all(d.alive() for d in daemons), "every server still runs")
    finally:
        kill_all(*daemons)
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
