"""harness.py: what the integration scripts in this directory share.

A script imports it from its own directory:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import check, failures, figures, free_port, wait_for, Daemon

Helpers, and what each one owns:
  failures, figures, skips
                     the run's results: `failures` lists the name of every
                     check that failed (exit non-zero when it is not empty),
                     `figures` the measured numbers a script prints as one
                     `figures {...}` line, `skips` the (scenario, reason) of
                     every scenario that could not run here. Module globals,
                     shared by reference: a script appends, never rebinds them.
  check(cond, what, detail="")
                     prints `ok   WHAT` or `FAIL WHAT (DETAIL)` (detail only on
                     failure), records a failure, returns cond. A check always
                     tests something: never check(True, ...).
  skip(what, reason) a scenario that cannot run on this machine (no tmpfs, no
                     loop device, a missing tool): prints `SKIP WHAT: REASON`
                     and records it. Decided by testing the precondition
                     itself (shutil.which, a mount's exit status), never by
                     catching an exception from set-up: a set-up that breaks
                     is a failure.
  exit_status()      the script's exit status: 1 when a check failed, else
                     SKIP_RC (77, every integration test's SKIP_RETURN_CODE
                     in ctest) when a scenario was skipped, else 0. Prints the
                     skipped scenarios again last. Scripts end with
                     `sys.exit(exit_status())`.
  free_port()        a TCP port on 127.0.0.1 free at the time of the call.
  wait_for(fn, timeout, step=0.05)
                     calls fn every `step` seconds until it returns something
                     true or `timeout` seconds pass; returns fn's last value
                     (fn is called once more at the deadline).
  poller(step)       a wait_for whose default step is `step` (for scripts that
                     always polled at another pace).
  Daemon(args, log_path, *, uid=None, env=None, err_path=None)
                     a child started with Popen, stdout (and stderr unless
                     err_path is given) appended to log_path; uid runs it
                     through `setpriv --reuid/--regid --clear-groups` (setpriv
                     execs: same pid); env replaces the environment. text() /
                     errors() read the logs, alive(), pid, stop(sig, timeout)
                     sends sig to that pid only, waits `timeout` seconds, then
                     SIGKILL; returns the exit status. The Daemon owns its log
                     files (closed by stop).
  PROCS              every Popen a Daemon started. At interpreter exit any of
                     them still running is killed (SIGKILL, by pid) and
                     reaped: a failing or crashing script leaves no daemon
                     behind. Never a kill by name: others run the same binaries.
  kill_all(*daemons)  SIGKILL (by pid) to each Daemon given that is still
                     running (None entries skipped); waits for each.
  finish(tmp, with_figures=False)
                     the end of a run, in its `finally:`: the `figures {...}`
                     line (with_figures), then `N FAILED; logs in TMP` (tmp
                     kept) or, when nothing failed, tmp removed. The caller
                     exits with `sys.exit(1 if failures else 0)` after it.
  run(cmd, *, timeout=60, env=None, uid=None)
                     a command to completion: (returncode, stdout, stderr) as
                     text; uid as for Daemon.
  one_error_line(err)
                     True when stderr is exactly one line starting "Error: ".
  split_der(data)    concatenated DER certificates (as the Workload API sends
                     them) -> a list of DER certificates, walked by each
                     SEQUENCE's length; ValueError when one is not a SEQUENCE.
  protoc(proto_dir, out_dir, *protos, grpc=True, system_include=True)
                     Python (and grpc) stubs for proto_dir/<proto> generated
                     with grpc_tools.protoc into out_dir (created if needed);
                     raises CalledProcessError when protoc fails. out_dir is
                     the caller's (usually inside its temp dir).

A test PKI with python cryptography:
  make_node_pki(d)   an x509pop node PKI: a P-256 CA CN=node-ca (path length
                     0, 1 day) written to d/node-ca.pem, and a node
                     certificate CN=node1 under it (digitalSignature, not a
                     CA). Returns (ca_path, node_cert, node_key): the node
                     certificate and key stay in memory, the caller writes
                     them where it needs them.

TLS fixtures for fake HTTPS servers (openssl CLI; keys made at test time in
the caller's directory d, which owns them):
  openssl(*args, cwd)  one openssl command in cwd; CalledProcessError on failure.
  make_ca(d, name)     a self-signed P-256 CA: d/NAME.crt, d/NAME.key (1 day).
  make_tls_pki(d, name, cn)
                     d/ca.* and an unrelated d/other-ca.*; d/NAME.crt +
                     d/NAME.key: a serving certificate for IP 127.0.0.1 only
                     (CN=cn, serverAuth) issued by ca.
  QuietServer        a ThreadingHTTPServer (daemon threads) that does not
                     print refused handshakes.
  https_server(d, name, handler)
                     QuietServer on 127.0.0.1:0 with d/NAME.crt + key (TLS 1.2
                     and up), served from a daemon thread; returns (httpd,
                     port). The caller stops it (httpd.shutdown()).
"""
import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer

failures = []
figures = {}
skips = []
PROCS = []
SKIP_RC = 77  # ctest's SKIP_RETURN_CODE for every integration test (tests/integration/CMakeLists.txt)


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (f" ({detail})" if detail and not cond else ""), flush=True)
    if not cond:
        failures.append(what)
    return cond


def skip(what, reason):
    print(f"SKIP {what}: {reason}", flush=True)
    skips.append((what, reason))


def exit_status():
    if skips:
        print(f"{len(skips)} scenario(s) SKIPPED: " + "; ".join(f"{w} ({r})" for w, r in skips), flush=True)
    if failures:
        return 1
    return SKIP_RC if skips else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(fn, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def poller(step):
    def wait(fn, timeout, step=step):
        return wait_for(fn, timeout, step)
    return wait


def as_uid(args, uid):
    if uid is None:
        return list(args)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *args]


class Daemon:
    def __init__(self, args, log_path, *, uid=None, env=None, err_path=None):
        self.log_path, self.err_path = log_path, err_path
        self.log = open(log_path, "a")
        self.err = open(err_path, "a") if err_path else None
        self.proc = subprocess.Popen(as_uid(args, uid), stdout=self.log, stderr=self.err or subprocess.STDOUT,
                                     env=env)
        PROCS.append(self.proc)

    @property
    def pid(self):
        """The daemon's own pid (setpriv execs, so it is the same)."""
        return self.proc.pid

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def errors(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        if self.err:
            self.err.close()
        return rc


@atexit.register
def _kill_leftovers():
    for p in PROCS:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass


def kill_all(*daemons):
    for d in daemons:
        if d is not None and d.alive():
            d.stop(signal.SIGKILL)


def finish(tmp, with_figures=False):
    if with_figures:
        print("figures " + json.dumps(figures), flush=True)
    if failures:
        print(f"{len(failures)} FAILED; logs in {tmp}", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cmd, *, timeout=60, env=None, uid=None):
    r = subprocess.run(as_uid(cmd, uid), capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


def one_error_line(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ")


def protoc(proto_dir, out_dir, *protos, grpc=True, system_include=True):
    os.makedirs(out_dir, exist_ok=True)
    cmd = ["/usr/bin/python3", "-m", "grpc_tools.protoc", f"-I{proto_dir}"]
    if system_include:
        cmd.append("-I/usr/include")
    cmd.append(f"--python_out={out_dir}")
    if grpc:
        cmd.append(f"--grpc_python_out={out_dir}")
    subprocess.run(cmd + [os.path.join(proto_dir, p) for p in protos], check=True)


def split_der(data):
    """Concatenated DER certificates, walked by each SEQUENCE's definite length (as X.509 requires).
    A truncated header or body raises ValueError rather than yielding a short certificate."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise ValueError("not a DER SEQUENCE")
        n = data[i + 1]
        if n < 0x80:
            hdr, ln = 2, n
        else:
            k = n & 0x7f
            if k == 0 or k > 4 or i + 2 + k > len(data):
                raise ValueError("bad DER length")
            hdr, ln = 2 + k, int.from_bytes(data[i + 2:i + 2 + k], "big")
        if i + hdr + ln > len(data):
            raise ValueError("DER SEQUENCE runs past the data")
        out.append(data[i:i + hdr + ln])
        i += hdr + ln
    return out


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=d)


def make_tls_pki(d, name, cn):
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # refused handshakes (untrusted certificate tests) are expected


def https_server(d, name, handler):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
    httpd = QuietServer(("127.0.0.1", 0), handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def make_node_pki(d):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    node_key = ec.generate_private_key(ec.SECP256R1())
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")])).issuer_name(ca_name)
            .public_key(node_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path = os.path.join(d, "node-ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    return ca_path, node, node_key


def openssl_verify(vdir, roots, inter, leaf_files):
    """`openssl verify -x509_strict` of the PEM files `leaf_files` against the DER certificates `roots`
    (CA file) and `inter` (untrusted intermediates), written as PEM into `vdir`.
    Returns (the CompletedProcess, how many leaves printed ": OK")."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def pem_file(name, ders):
        p = os.path.join(vdir, name)
        with open(p, "wb") as f:
            for d in ders:
                f.write(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM))
        return p
    args = ["openssl", "verify", "-x509_strict", "-CAfile", pem_file("bundle.pem", roots)]
    if inter:
        args += ["-untrusted", pem_file("inter.pem", inter)]
    r = subprocess.run(args + leaf_files, capture_output=True, text=True)
    return r, sum(1 for ln in r.stdout.splitlines() if ln.endswith(": OK"))
