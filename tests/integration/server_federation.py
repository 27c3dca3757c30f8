#!/usr/bin/python3
"""server_federation.py: the federation verbs of the real lanyard-server
(SPEC §9: `bundle set|list|delete|count`, `federation create|update|list|
show|delete|refresh`, `entry create|update -federatesWith`), driven by its
own CLI against a server run with flags only.

    server_federation.py LANYARD_SERVER [postgres]

With `postgres`, the server's datastore is a throw-away PostgreSQL started
here (initdb in the temp dir, Unix socket only; as nobody when run as
root), so the same verbs run on the other back end; missing PostgreSQL
binaries are a failure, as in server_pg.py.

What it shows: a bundle set from PEM and from SPIFFE JSON (the latter
read back from `bundle list -format spiffe`, so both formats round-trip),
listed, counted, deleted in the three modes; our own trust domain, a
bundle holding another trust domain's CA, garbage and an http URL are
refused with one error line and nothing stored; an entry federating with a
trust domain is refused until its bundle exists, then accepted and shown;
relationships created, listed, shown, updated, deleted; `federation
refresh` says it is not available (no fetcher in this build); `bundle
show -format spiffe` carries spiffe_sequence and spiffe_refresh_hint;
the audit log has a line per change naming the trust domain.

LANYARD_SERVER_WRAP="valgrind --leak-check=full --errors-for-leak-kinds=definite
--error-exitcode=99" runs the server under that command (then its exit
status after SIGTERM is checked too).
Prints ok/FAIL per check and exits 1 on any failure, else 0.
"""
import datetime
import glob
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER = sys.argv[1]
POSTGRES = len(sys.argv) > 2 and sys.argv[2] == "postgres"
WRAP = shlex.split(os.environ.get("LANYARD_SERVER_WRAP", ""))
SLOW = 20 if WRAP else 1
TD = "a.test"
failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (f" ({detail})" if detail and not cond else ""), flush=True)
    if not cond:
        failures.append(what)


def cli(*args, sock, stdin=None):
    r = subprocess.run([SERVER, *args, "-socketPath", sock], capture_output=True, text=True, timeout=60,
                       input=stdin)
    return r.returncode, r.stdout, r.stderr


def one_error_line(err):
    lines = err.splitlines()
    return len(lines) == 1 and lines[0].startswith("Error: ")


def ca_pem(td):
    """A self-signed CA certificate whose URI SAN is spiffe://td (X509-SVID §3)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{td} ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Postgres:
    """A throw-away cluster in `tmp`/pg: trust auth over its Unix socket only (nobody else can reach it)."""

    def __init__(self, tmp):
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
        self.bindir = next((d for d in dirs if os.access(os.path.join(d, "initdb"), os.X_OK)), None)
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL binaries in /usr/lib/postgresql/*/bin")
        self.dir = os.path.join(tmp, "pg")
        self.data = os.path.join(self.dir, "data")
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
        self.run("initdb", "-D", self.data, "-U", "lanyard", "--auth=trust", "-E", "UTF8", "--locale=C",
                 "--no-sync", "--no-instructions")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.dir}'\nmax_connections = 20\n"
                    "shared_buffers = 16MB\n")
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "postgres.log"), "-w", "-t", "60", "start")
        self.run("createdb", "-h", self.dir, "-U", "lanyard", "lanyard")

    def run(self, prog, *args):
        r = subprocess.run(self.prefix + [os.path.join(self.bindir, prog), *args], capture_output=True, text=True,
                           cwd=self.dir, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{prog} failed: {r.stdout}{r.stderr}")

    def stop(self):
        subprocess.run(self.prefix + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                                      "stop"], capture_output=True, timeout=120, cwd=self.dir)

    def conninfo(self):
        return f"host={self.dir} user=lanyard dbname=lanyard"


def main():
    tmp = tempfile.mkdtemp(prefix="ly-fed-store-")
    sock = os.path.join(tmp, "admin", "api.sock")
    audit = os.path.join(tmp, "audit.log")
    cfg = os.path.join(tmp, "server.yaml")
    pg = None
    if POSTGRES:
        try:
            pg = Postgres(tmp)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            check(False, "PostgreSQL started", str(e))
            shutil.rmtree(tmp, ignore_errors=True)
            return
    with open(cfg, "w") as f:
        f.write(f"server:\n  audit_log: {audit}\n")
        if pg is not None:
            f.write(f"  datastore:\n    database_type: postgres\n    connection_string: \"{pg.conninfo()}\"\n")
    os.chmod(cfg, 0o600)
    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(WRAP + [SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", "0",
                             "-socketPath", sock, "-dataDir", os.path.join(tmp, "data"), "-config", cfg],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30 * SLOW
        ready = False
        while time.time() < deadline and proc.poll() is None:
            if cli("healthcheck", sock=sock)[0] == 0:
                ready = True
                break
            time.sleep(0.1)
        check(ready, "server ready")
        if not ready:
            print(open(log_path).read())
            return
        scenarios(tmp, sock, audit)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30 * SLOW)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        check(rc == 0, "server exits 0 on SIGTERM", f"rc={rc}")
        if pg is not None:
            check(not os.path.exists(os.path.join(tmp, "data", "datastore.sqlite3")), "no SQLite file with postgres")
            pg.stop()
        if failures:
            print(open(log_path).read()[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)


def scenarios(tmp, sock, audit):
    b_pem, c_pem = ca_pem("b.test"), ca_pem("c.test")
    b_path = os.path.join(tmp, "b.pem")
    with open(b_path, "w") as f:
        f.write(b_pem)

    # Our own bundle in the SPIFFE format carries its sequence and refresh hint (SPEC §9).
    rc, out, err = cli("bundle", "show", "-format", "spiffe", sock=sock)
    doc = json.loads(out) if rc == 0 else {}
    check("spiffe_sequence" in doc and "spiffe_refresh_hint" in doc,
          "bundle show -format spiffe has spiffe_sequence and spiffe_refresh_hint", out[:200] + err)

    # Nothing yet.
    rc, out, err = cli("bundle", "count", sock=sock)
    check(rc == 0 and out.strip() == "0 federated bundles", "bundle count: 0", out + err)

    # An entry federating with b.test is refused while no bundle exists.
    entry = ["-spiffeID", f"spiffe://{TD}/web", "-parentID", f"spiffe://{TD}/lanyard/agent/n1",
             "-selector", "unix:uid:1000", "-federatesWith", "spiffe://b.test"]
    rc, out, err = cli("entry", "create", *entry, sock=sock)
    check(rc == 1 and one_error_line(err) and "no bundle for trust domain b.test" in err,
          "entry create -federatesWith without the bundle: refused, one line", err)
    rc, out, err = cli("entry", "show", sock=sock)
    check("spiffe://a.test/web" not in out, "nothing stored", out)

    # bundle set from a file (PEM) and from standard input.
    rc, out, err = cli("bundle", "set", "-id", "spiffe://b.test", "-path", b_path, sock=sock)
    check(rc == 0 and "spiffe://b.test" in out, "bundle set -path (pem)", out + err)
    rc, out, err = cli("bundle", "set", "-id", "spiffe://c.test", sock=sock, stdin=c_pem)
    check(rc == 0, "bundle set from standard input", err)
    rc, out, err = cli("bundle", "count", sock=sock)
    check(rc == 0 and out.strip() == "2 federated bundles", "bundle count: 2", out + err)

    # Listed in both formats; the SPIFFE one sets back (a round trip through the other parser).
    rc, out, err = cli("bundle", "list", sock=sock)
    check(rc == 0 and "* spiffe://b.test" in out and "* spiffe://c.test" in out and
          out.count("BEGIN CERTIFICATE") == 2, "bundle list (pem): both, with banners", out + err)
    rc, out, err = cli("bundle", "list", "-id", "spiffe://b.test", "-format", "pem", sock=sock)
    got = x509.load_pem_x509_certificate(out.encode()) if rc == 0 else None
    want = x509.load_pem_x509_certificate(b_pem.encode())
    check(got is not None and got == want, "bundle list -id: the certificate given", err)
    rc, out, err = cli("bundle", "list", "-id", "spiffe://b.test", "-format", "spiffe", sock=sock)
    doc = json.loads(out) if rc == 0 else {}
    check(rc == 0 and len(doc.get("keys", [])) == 1 and doc["keys"][0].get("use") == "x509-svid",
          "bundle list -format spiffe: one x509-svid key", out + err)
    doc["spiffe_sequence"] = 7
    doc["spiffe_refresh_hint"] = 60
    spiffe_path = os.path.join(tmp, "b.json")
    with open(spiffe_path, "w") as f:
        json.dump(doc, f)
    rc, out, err = cli("bundle", "set", "-id", "spiffe://b.test", "-path", spiffe_path, "-format", "spiffe",
                       sock=sock)
    check(rc == 0, "bundle set -format spiffe", err)
    rc, out, err = cli("bundle", "list", "-id", "spiffe://b.test", "-format", "spiffe", sock=sock)
    doc = json.loads(out) if rc == 0 else {}
    check(doc.get("spiffe_sequence") == 7 and doc.get("spiffe_refresh_hint") == 60,
          "the SPIFFE bundle's sequence and refresh hint kept", out + err)

    # Refusals: one line each, nothing stored.
    refusals = [
        (["bundle", "set", "-id", f"spiffe://{TD}", "-path", b_path], 1, "our own trust domain", "own trust domain"),
        (["bundle", "set", "-id", "spiffe://d.test"], 1, "a bundle of another trust domain's CA", "trust domain c.test",
         c_pem),
        (["bundle", "set", "-id", "spiffe://d.test"], 1, "garbage", "bundle for d.test", "not a bundle\n"),
        (["bundle", "set", "-id", "spiffe://d.test", "-format", "spiffe"], 1, "malformed JSON", "bundle for d.test",
         "{\"keys\": 3}"),
        (["bundle", "set", "-id", "spiffe://D.TEST", "-path", b_path], 2, "an upper-case trust domain", "-id"),
        (["bundle", "set", "-path", b_path], 2, "no -id", "-id is required"),
        (["bundle", "set", "-id", "spiffe://d.test", "-path", b_path, "-format", "der"], 2, "an unknown format",
         "-format"),
        (["bundle", "delete", "-id", "spiffe://b.test", "-mode", "everything"], 2, "an unknown mode", "-mode"),
        (["federation", "create", "-trustDomain", "d.test", "-bundleEndpointURL", "http://d.test/",
          "-bundleEndpointProfile", "https_web"], 2, "an http URL", "https://"),
        (["federation", "create", "-trustDomain", "d.test", "-bundleEndpointURL", "https://d.test/",
          "-bundleEndpointProfile", "https_spiffe"], 2, "https_spiffe without an endpoint ID", "-endpointSpiffeID"),
        (["federation", "create", "-trustDomain", TD, "-bundleEndpointURL", "https://a.test/",
          "-bundleEndpointProfile", "https_web"], 1, "a relationship with our own trust domain", "own trust domain"),
        (["federation", "create", "-trustDomain", "d.test", "-bundleEndpointURL", "https://user@d.test/",
          "-bundleEndpointProfile", "https_web"], 1, "a URL with user info", "user info"),
        (["federation", "create", "-trustDomain", "d.test", "-bundleEndpointURL", "https://d.test/",
          "-bundleEndpointProfile", "https_web", "-trustDomainBundlePath", b_path], 1,
         "a bootstrap bundle of another trust domain", "trust domain b.test"),
    ]
    for r in refusals:
        args, code, what, needle = r[0], r[1], r[2], r[3]
        stdin = r[4] if len(r) > 4 else None
        rc, out, err = cli(*args, sock=sock, stdin=stdin)
        check(rc == code and one_error_line(err) and needle in err, f"refused: {what} (exit {code}, one line)",
              f"rc={rc} {err!r}")
    rc, out, err = cli("bundle", "count", sock=sock)
    check(out.strip() == "2 federated bundles", "refusals stored nothing", out)
    rc, out, err = cli("federation", "list", sock=sock)
    check(rc == 0 and out.startswith("Found 0 federation relationships"), "no relationship stored", out + err)

    # The entry is accepted now, and shown with its trust domains.
    rc, out, err = cli("entry", "create", *entry, "-federatesWith", "c.test", sock=sock)
    entry_id = re.search(r"Entry ID\s*:\s*(\S+)", out).group(1) if rc == 0 else None
    check(rc == 0 and "FederatesWith    : spiffe://b.test" in out and "FederatesWith    : spiffe://c.test" in out,
          "entry create -federatesWith after bundle set", out + err)
    rc, out, err = cli("entry", "show", "-entryID", str(entry_id), "-output", "json", sock=sock)
    shown = json.loads(out) if rc == 0 else []
    check(rc == 0 and shown and shown[0].get("federates_with") == ["b.test", "c.test"],
          "entry show -output json: federates_with", out + err)
    rc, out, err = cli("entry", "update", "-entryID", str(entry_id), *entry[:6], "-federatesWith",
                       "spiffe://e.test", sock=sock)
    check(rc == 1 and one_error_line(err) and "no bundle for trust domain e.test" in err,
          "entry update -federatesWith an unknown trust domain: refused", err)
    rc, out, err = cli("entry", "update", "-entryID", str(entry_id), *entry, sock=sock)
    check(rc == 0 and "spiffe://c.test" not in out, "entry update: c.test dropped", out + err)

    # Delete modes: restrict refuses while used; dissociate keeps the entry without it.
    rc, out, err = cli("bundle", "delete", "-id", "spiffe://b.test", sock=sock)
    check(rc == 1 and one_error_line(err) and "used by 1 entry" in err, "bundle delete (restrict): refused in use",
          err)
    rc, out, err = cli("bundle", "delete", "-id", "spiffe://c.test", sock=sock)
    check(rc == 0, "bundle delete (restrict): an unused one goes", err)
    rc, out, err = cli("bundle", "delete", "-id", "spiffe://b.test", "-mode", "dissociate", sock=sock)
    check(rc == 0, "bundle delete -mode dissociate", err)
    rc, out, err = cli("entry", "show", "-entryID", str(entry_id), sock=sock)
    check(rc == 0 and "FederatesWith" not in out, "the entry stays, without b.test", out + err)
    rc, out, err = cli("bundle", "set", "-id", "spiffe://b.test", "-path", b_path, sock=sock)
    rc, out, err = cli("entry", "update", "-entryID", str(entry_id), *entry, sock=sock)
    rc, out, err = cli("bundle", "delete", "-id", "spiffe://b.test", "-mode", "delete", sock=sock)
    check(rc == 0, "bundle delete -mode delete", err)
    rc, out, err = cli("entry", "show", "-entryID", str(entry_id), sock=sock)
    check(rc == 1 and one_error_line(err), "the entry went with it", out + err)
    rc, out, err = cli("bundle", "delete", "-id", "spiffe://b.test", sock=sock)
    check(rc == 1 and one_error_line(err) and "no bundle" in err, "bundle delete of a missing one: refused", err)

    # Relationships.
    rc, out, err = cli("federation", "create", "-trustDomain", "b.test", "-bundleEndpointURL",
                       "https://127.0.0.1:8443/bundle", "-bundleEndpointProfile", "https_spiffe",
                       "-endpointSpiffeID", "spiffe://b.test/lanyard/server", "-trustDomainBundlePath", b_path,
                       sock=sock)
    check(rc == 0 and "Bundle endpoint profile   : https_spiffe" in out and
          "Trust domain bundle       : sequence 0, 1 X.509 authority" in out,
          "federation create (https_spiffe, bootstrap bundle stored)", out + err)
    rc, out, err = cli("federation", "create", "-trustDomain", "b.test", "-bundleEndpointURL",
                       "https://127.0.0.1:8443/bundle", "-bundleEndpointProfile", "https_web", sock=sock)
    check(rc == 1 and one_error_line(err) and "already exists" in err, "federation create twice: refused", err)
    rc, out, err = cli("federation", "create", "-trustDomain", "spiffe://c.test", "-bundleEndpointURL",
                       "https://127.0.0.1:1/bundle.json", "-bundleEndpointProfile", "https_web", sock=sock)
    check(rc == 0 and "Trust domain              : c.test" in out, "federation create (https_web)", out + err)
    rc, out, err = cli("federation", "list", sock=sock)
    check(rc == 0 and out.startswith("Found 2 federation relationships") and out.index("b.test") < out.index("c.test"),
          "federation list: 2, ordered", out + err)
    rc, out, err = cli("federation", "update", "-trustDomain", "b.test", "-bundleEndpointURL",
                       "https://127.0.0.1:1/bundle", "-bundleEndpointProfile", "https_web", sock=sock)
    check(rc == 0 and "https://127.0.0.1:1/bundle" in out and "Endpoint SPIFFE ID" not in out,
          "federation update to https_web", out + err)
    rc, out, err = cli("federation", "show", "-trustDomain", "b.test", sock=sock)
    check(rc == 0 and "https_web" in out and "1 X.509 authority" in out, "federation show", out + err)
    rc, out, err = cli("federation", "update", "-trustDomain", "d.test", "-bundleEndpointURL", "https://d.test/",
                       "-bundleEndpointProfile", "https_web", sock=sock)
    check(rc == 1 and one_error_line(err) and "no federation relationship with d.test" in err,
          "federation update of a missing one: refused", err)
    rc, out, err = cli("federation", "refresh", "-id", "b.test", sock=sock)
    # The fetcher (fed-endpoint) fetches now and answers with the outcome: nothing listens on port 1.
    # (Loopback URLs only: the fetcher really connects, and a name would go to the resolver.)
    check(rc == 1 and one_error_line(err) and "bundle of b.test not taken (connect)" in err,
          "federation refresh: the fetch's refusal comes back (nothing listens there)", err)
    rc, out, err = cli("federation", "delete", "-id", "c.test", sock=sock)
    check(rc == 0, "federation delete", err)
    rc, out, err = cli("federation", "show", "-trustDomain", "c.test", sock=sock)
    check(rc == 1 and one_error_line(err), "federation show of a deleted one: refused", err)
    rc, out, err = cli("bundle", "count", sock=sock)
    check(out.strip() == "1 federated bundle", "the bootstrap bundle stays after its relationship goes", out)

    # The audit log: one line per change, naming the trust domain.
    with open(audit) as f:
        lines = [json.loads(line) for line in f]
    actions = [(r.get("action"), r.get("trust_domain"), r.get("result")) for r in lines]
    check(("bundle.set", "b.test", "ok") in actions and ("bundle.delete", "c.test", "ok") in actions and
          ("federation.create", "b.test", "ok") in actions and ("federation.delete", "c.test", "ok") in actions and
          ("bundle.set", TD, "INVALID_ARGUMENT") in actions,
          "audit lines for bundle and federation changes", str(actions[-12:]))
    dis = [r for r in lines if r.get("action") == "bundle.delete" and r.get("detail") == "mode dissociate"]
    check(len(dis) == 1 and dis[0]["result"] == "ok", "the delete mode in the audit line", str(dis))


main()
sys.exit(1 if failures else 0)
