#!/usr/bin/python3
"""certs_scripts.py: certs/make-dev-ca.sh end to end (certs/README.md).

    certs_scripts.py LANYARD_SERVER LANYARD_AGENT SOURCE_DIR

  - the script writes the upstream CA, the x509pop node CA and a node
    certificate into a temporary directory (0700; keys 0600, certificates
    0644); `openssl verify -x509_strict` accepts them; a second run refuses to
    replace them (keys untouched); bad arguments exit 2;
  - lanyard-server runs with that upstream CA (upstream_ca) and x509pop
    (ca_bundle_path node-ca.pem): `bundle show` is the upstream root;
  - lanyard-agent attests with x509pop using node.pem/node.key, trusting the
    server through upstream-ca.pem alone; its SPIFFE ID is the one the script
    printed; a workload's SVID chains to the upstream root (openssl verify);
  - a node certificate from another node CA is refused;
  - no private key under certs/ in the source tree (certs/dev/ is ignored).
Prints ok/FAIL per check; exits non-zero on any failure.
"""
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Daemon, check, exit_status, finish, free_port, kill_all, poller  # noqa: E402

wait_for = poller(0.2)

SERVER, AGENT, SOURCE = sys.argv[1], sys.argv[2], sys.argv[3]
SCRIPT = os.path.join(SOURCE, "certs", "make-dev-ca.sh")
TD = "example.org"


def run(*args, timeout=60):
    return harness.run(list(args), timeout=timeout)


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def der_of(pem_path):
    return subprocess.run(["openssl", "x509", "-in", pem_path, "-outform", "DER"], capture_output=True,
                          check=True).stdout


def script_checks(tmp):
    pki = os.path.join(tmp, "pki")
    rc, out, err = run("bash", SCRIPT, "-t", TD, "-n", "node1", pki)
    if not check(rc == 0, "make-dev-ca.sh writes the PKI", err):
        return None
    check(mode(pki) == 0o700, "the directory is 0700", oct(mode(pki)))
    for f in ("upstream-ca.key", "node-ca.key", "node.key"):
        p = os.path.join(pki, f)
        check(os.path.exists(p) and mode(p) == 0o600, f"{f} is 0600")
        with open(p) as fh:
            check("BEGIN PRIVATE KEY" in fh.read(), f"{f} is a PKCS#8 PEM key")
    for f in ("upstream-ca.pem", "node-ca.pem", "node.pem", "node.spiffe-id"):
        p = os.path.join(pki, f)
        check(os.path.exists(p) and mode(p) == 0o644, f"{f} is 0644")
    check(sorted(os.listdir(pki)) == sorted(["upstream-ca.pem", "upstream-ca.key", "node-ca.pem", "node-ca.key",
                                             "node.pem", "node.key", "node.spiffe-id"]),
          "exactly the seven files, no temporary left", str(os.listdir(pki)))
    up, node_ca, node = (os.path.join(pki, f) for f in ("upstream-ca.pem", "node-ca.pem", "node.pem"))
    rc, out, err = run("openssl", "verify", "-x509_strict", "-CAfile", up, up)
    check(rc == 0, "openssl verify -x509_strict: the upstream root", out + err)
    rc, out, err = run("openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", node_ca, node)
    check(rc == 0, "openssl verify -x509_strict -purpose sslclient: the node certificate", out + err)
    rc, text, err = run("openssl", "x509", "-in", up, "-noout", "-text")
    check(re.search(r"Basic Constraints: critical\s+CA:TRUE", text) is not None and
          re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", text) is not None and
          "ASN1 OID: prime256v1" in text, "upstream CA: EC P-256, cA critical, keyCertSign + cRLSign critical")
    rc, text, err = run("openssl", "x509", "-in", node, "-noout", "-text")
    check(re.search(r"Key Usage: critical\s+Digital Signature", text) is not None and "CA:FALSE" in text and
          "DNS:node1" in text and "CN = node1" in text, "node certificate: digitalSignature, not a CA, CN and DNS SAN")
    with open(os.path.join(pki, "node.spiffe-id")) as f:
        agent_id = f.read().strip()
    check(re.fullmatch(rf"spiffe://{TD}/lanyard/agent/x509pop/[0-9a-f]{{40}}", agent_id) is not None,
          "node.spiffe-id holds the x509pop agent ID", agent_id)
    # Refusals: a second run does not replace anything; bad arguments exit 2.
    with open(os.path.join(pki, "upstream-ca.key"), "rb") as f:
        key_before = f.read()
    rc, out, err = run("bash", SCRIPT, pki)
    with open(os.path.join(pki, "upstream-ca.key"), "rb") as f:
        check(rc == 1 and "refusing to replace" in err and f.read() == key_before,
              "a second run refuses to replace the keys (they are untouched)", err)
    for args, what in ((["-t", "Example.ORG"], "upper-case trust domain"), (["-n", "a b"], "node name with a space"),
                       (["-d", "0"], "zero days"), (["-d", "abc"], "days not a number"),
                       (["-x"], "unknown option"), (["a", "b"], "two directories")):
        rc, out, err = run("bash", SCRIPT, *args, os.path.join(tmp, "never"))
        check(rc == 2 and not os.path.exists(os.path.join(tmp, "never", "upstream-ca.key")),
              f"make-dev-ca.sh {' '.join(args)}: exit 2 ({what})", f"rc={rc} {err}")
    return pki, agent_id


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-certs-")
    port = free_port()
    server_sock = os.path.join(tmp, "server", "api.sock")
    agent_sock = os.path.join(tmp, "agent", "api.sock")
    server = agent = None
    try:
        got = script_checks(tmp)
        if got is None:
            return
        pki, agent_id = got
        p = lambda f: os.path.join(pki, f)  # noqa: E731
        with open(os.path.join(tmp, "server.yaml"), "w") as f:
            f.write(f"server:\n  trust_domain: {TD}\n  bind_address: 127.0.0.1\n  server_port: {port}\n"
                    f"  socket_path: {server_sock}\n  data_dir: {tmp}/server-data\n"
                    f"  upstream_ca:\n    cert_file: {p('upstream-ca.pem')}\n    key_file: {p('upstream-ca.key')}\n"
                    f"  node_attestors:\n    x509pop:\n      ca_bundle_path: {p('node-ca.pem')}\n")
        server = Daemon([SERVER, "run", "-config", os.path.join(tmp, "server.yaml")], os.path.join(tmp, "server.log"))
        up = wait_for(lambda: not server.alive() or run(SERVER, "healthcheck", "-socketPath", server_sock)[0] == 0, 30)
        if not check(up and server.alive(), "lanyard-server runs with the upstream CA and x509pop",
                     server.text()[-1500:]):
            return
        check("under the upstream CA" in server.text(), "the signing CA is issued under the upstream CA")
        rc, out, err = run(SERVER, "bundle", "show", "-socketPath", server_sock)
        bundle_path = os.path.join(tmp, "bundle.pem")
        with open(bundle_path, "w") as f:
            f.write(out)
        check(rc == 0 and out.count("BEGIN CERTIFICATE") == 1 and der_of(bundle_path) == der_of(p("upstream-ca.pem")),
              "bundle show: the upstream root, alone", out[:200] + err)

        def agent_cfg(name, cert, key):
            path = os.path.join(tmp, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(f"agent:\n  trust_domain: {TD}\n  server_address: 127.0.0.1\n  server_port: {port}\n"
                        f"  socket_path: {tmp}/{name}/api.sock\n  data_dir: {tmp}/{name}-data\n"
                        f"  trust_bundle_path: {p('upstream-ca.pem')}\n"
                        f"  node_attestor:\n    x509pop:\n      certificate_path: {cert}\n"
                        f"      private_key_path: {key}\n")
            return path

        agent = Daemon([AGENT, "run", "-config", agent_cfg("agent", p("node.pem"), p("node.key"))],
                       os.path.join(tmp, "agent.log"))
        healthy = wait_for(lambda: not agent.alive() or run(AGENT, "healthcheck", "-socketPath", agent_sock)[0] == 0,
                           30)
        check(healthy and agent.alive(), "lanyard-agent attests with x509pop (node.pem) and is healthy",
              agent.text()[-1500:])
        rc, out, err = run(SERVER, "agent", "show", "-spiffeID", agent_id, "-socketPath", server_sock)
        check(rc == 0 and "Attestation type  : x509pop" in out and "x509pop:san:dns:node1" in out,
              "agent show: the ID from node.spiffe-id, attested by x509pop", out + err)
        rc, out, err = run(SERVER, "entry", "create", "-spiffeID", f"spiffe://{TD}/certs-test", "-parentID", agent_id,
                           "-selector", f"unix:uid:{os.getuid()}", "-socketPath", server_sock)
        check(rc == 0, "entry create under the x509pop agent", err)
        wdir = os.path.join(tmp, "svid")
        os.makedirs(wdir)
        ok = wait_for(lambda: run(AGENT, "api", "fetch", "x509", "-socketPath", agent_sock, "-write", wdir)[0] == 0,
                      20, 0.5)
        check(ok, "the workload gets its SVID")
        chain = os.path.join(wdir, "svid.0.pem")
        rc, out, err = run("openssl", "verify", "-CAfile", p("upstream-ca.pem"), "-untrusted", chain, chain)
        check(rc == 0 and ": OK" in out, "its chain verifies to the upstream root (openssl verify)", out + err)

        # A node certificate from another node CA: refused.
        rc, out, err = run("bash", SCRIPT, "-n", "rogue", os.path.join(tmp, "other"))
        check(rc == 0, "a second PKI (another node CA)", err)
        rogue = Daemon([AGENT, "run", "-config", agent_cfg("rogue", os.path.join(tmp, "other", "node.pem"),
                                                          os.path.join(tmp, "other", "node.key"))],
                       os.path.join(tmp, "rogue.log"))
        refused = wait_for(lambda: re.search(r"refused|untrusted|unable to get", rogue.text(), re.I), 15)
        check(refused is not None and run(AGENT, "healthcheck", "-socketPath", f"{tmp}/rogue/api.sock")[0] != 0,
              "a node certificate from another CA is refused", rogue.text()[-1500:])
        rogue.stop(signal.SIGKILL)
        rc, out, err = run(SERVER, "agent", "list", "-socketPath", server_sock)
        check("rogue" not in out and out.count("SPIFFE ID") == 1, "agent list: only the first agent", out)

        # No private key committed under certs/ (certs/dev/ is where keys land, and it is ignored).
        keys = []
        for root, dirs, files in os.walk(os.path.join(SOURCE, "certs")):
            if os.path.relpath(root, os.path.join(SOURCE, "certs")).split(os.sep)[0] == "dev":
                continue
            for fn in files:
                with open(os.path.join(root, fn), "rb") as f:
                    if b"PRIVATE KEY-----" in f.read() and not fn.endswith((".sh", ".md")):
                        keys.append(fn)
        check(not keys, "no private key file under certs/ outside certs/dev/", str(keys))
        with open(os.path.join(SOURCE, ".gitignore")) as f:
            check("certs/dev/" in f.read().split(), ".gitignore ignores certs/dev/")
        check(agent.stop() == 0 and server.stop() == 0, "agent and server stop cleanly (exit 0)")
    finally:
        kill_all(agent, server)
        finish(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
