#!/usr/bin/python3
"""spire_federation.py: SPIFFE Federation between lanyard-server and a real
SPIRE server (v1.13.3, built by bench/vs-spire/build-spire.sh), both ways,
https_spiffe on both sides (issue 15).

    spire_federation.py LANYARD_SERVER [SPIRE_BIN_DIR]

SPIRE_BIN_DIR defaults to $LANYARD_CACHE or ~/.cache/lanyard, then
spire-v1.13.3/bin; without spire-server there the test exits 77 (SKIP).

  L  lanyard-server, trust domain l.test, bundle endpoint https_spiffe
     (spiffe://l.test/lanyard/server), refresh_hint 4 s; federates with
     s.test (static, endpoint spiffe://s.test/spire/server), bootstrapped
     with `bundle set` from `spire-server bundle show`.
  S  spire-server, trust domain s.test, bundle endpoint https_spiffe,
     refresh_hint 5s; federates with l.test through `spire-server federation
     create ... -trustDomainBundlePath` (L's `bundle show`).
Checks: L stores S's bundle (its X.509 authorities equal S's); S stores L's
(`spire-server bundle list -id spiffe://l.test -format spiffe` has L's
served X.509 authorities and its JWT ones, which only the fetch brings).
"""
import base64
import json
import os
import ssl
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Daemon, check, exit_status, finish, free_port, kill_all, run, skip, wait_for  # noqa: E402

SERVER = sys.argv[1]
SPIRE_BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.environ.get("LANYARD_CACHE", os.path.expanduser("~/.cache/lanyard")), "spire-v1.13.3", "bin")
CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def get_bundle(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with CTX.wrap_socket(s) as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                try:
                    c = t.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not c:
                    break
                data += c
    head, _, body = data.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        out, rest = b"", body
        while rest:
            n, _, rest = rest.partition(b"\r\n")
            size = int(n, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return json.loads(body)


def x5cs(doc):
    return sorted(k["x5c"][0] for k in doc.get("keys", []) if k.get("use") == "x509-svid")


def kids(doc):
    return sorted(k.get("kid", "") for k in doc.get("keys", []) if k.get("use") == "jwt-svid")


def main():
    spire = os.path.join(SPIRE_BIN, "spire-server")
    if not os.access(spire, os.X_OK):
        skip("lanyard <-> SPIRE federation", f"no spire-server in {SPIRE_BIN} (bench/vs-spire/build-spire.sh)")
        return
    tmp = tempfile.mkdtemp(prefix="lanyard-spire-fed-")
    daemons = []
    try:
        pl, ps = free_port(), free_port()
        lsock = os.path.join(tmp, "l", "sock", "api.sock")
        ssock = os.path.join(tmp, "s", "api.sock")
        os.makedirs(os.path.join(tmp, "l"), mode=0o700)
        os.makedirs(os.path.join(tmp, "s"), mode=0o700)
        lcfg = os.path.join(tmp, "l", "server.yaml")
        with open(lcfg, "w") as f:
            f.write(f"server:\n  trust_domain: l.test\n  bind_address: 127.0.0.1\n  server_port: {free_port()}\n"
                    f"  socket_path: {lsock}\n  data_dir: {tmp}/l/data\n  log_level: debug\n"
                    f"  federation:\n    bundle_endpoint:\n      address: 127.0.0.1\n      port: {pl}\n"
                    f"      refresh_hint: 4s\n    federates_with:\n      \"s.test\":\n"
                    f"        bundle_endpoint_url: https://127.0.0.1:{ps}\n        bundle_endpoint_profile:\n"
                    f"          https_spiffe:\n            endpoint_spiffe_id: spiffe://s.test/spire/server\n")
        scfg = os.path.join(tmp, "s", "server.conf")
        with open(scfg, "w") as f:
            f.write(f'''server {{
    bind_address = "127.0.0.1"
    bind_port = "{free_port()}"
    socket_path = "{ssock}"
    trust_domain = "s.test"
    data_dir = "{tmp}/s/data"
    log_level = "DEBUG"
    ca_key_type = "ec-p256"
    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {ps}
            refresh_hint = "5s"
            profile "https_spiffe" {{}}
        }}
    }}
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{tmp}/s/data/datastore.sqlite3"
        }}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
''')
        lsrv = Daemon([SERVER, "run", "-config", lcfg], os.path.join(tmp, "l", "log"))
        ssrv = Daemon([spire, "run", "-config", scfg], os.path.join(tmp, "s", "log"))
        daemons += [lsrv, ssrv]
        up = wait_for(lambda: run([spire, "healthcheck", "-socketPath", ssock])[0] == 0 and
                      "lanyard-server started" in lsrv.text(), 60, 0.3)
        if not check(bool(up), "lanyard-server and spire-server start", ssrv.text()[-800:] + lsrv.text()[-500:]):
            return
        # L trusts S's bundle for S's endpoint.
        rc, spem, err = run([spire, "bundle", "show", "-socketPath", ssock])
        with open(os.path.join(tmp, "s.pem"), "w") as f:
            f.write(spem)
        rc, out, err = run([SERVER, "bundle", "set", "-id", "spiffe://s.test", "-path", os.path.join(tmp, "s.pem"),
                            "-socketPath", lsock])
        check(rc == 0, "lanyard: bundle set -id spiffe://s.test (S's bundle, to authenticate S's endpoint)", err)
        sdoc = wait_for(lambda: get_bundle(ps), 20, 0.5)
        got = wait_for(lambda: [ln for ln in lsrv.text().splitlines() if "bundle of s.test stored" in ln or
                                "bundle of s.test from" in ln], 20, 0.2)
        refused = [ln for ln in lsrv.text().splitlines() if "bundle of s.test from" in ln and "not taken" in ln
                   and "no_trust_bundle" not in ln]
        check(bool(got) and not refused,
              "lanyard fetches SPIRE's bundle over https_spiffe (spiffe://s.test/spire/server) and takes it",
              "\n".join(refused[-3:]))
        def lanyard_holds():
            rc, out, err = run([SERVER, "bundle", "list", "-id", "spiffe://s.test", "-format", "spiffe",
                                "-socketPath", lsock])
            try:
                doc = json.loads(out[out.index("{"):])
            except ValueError:
                return None
            return doc if x5cs(doc) == x5cs(sdoc) and kids(doc) == kids(sdoc) else None
        check(bool(wait_for(lanyard_holds, 20, 0.5)),
              "lanyard holds SPIRE's X.509 and JWT authorities for s.test (the JWT ones came with the fetch)",
              run([SERVER, "bundle", "list", "-id", "spiffe://s.test", "-format", "spiffe", "-socketPath", lsock])[1][:300])
        # S fetches L's bundle.
        rc, lpem, err = run([SERVER, "bundle", "show", "-socketPath", lsock])
        with open(os.path.join(tmp, "l.pem"), "w") as f:
            f.write(lpem)
        rc, out, err = run([spire, "federation", "create", "-trustDomain", "l.test", "-bundleEndpointURL",
                            f"https://127.0.0.1:{pl}", "-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID",
                            "spiffe://l.test/lanyard/server", "-trustDomainBundlePath", os.path.join(tmp, "l.pem"),
                            "-socketPath", ssock])
        check(rc == 0, "spire-server federation create -trustDomain l.test (https_spiffe, bootstrap)", out + err)
        run([spire, "federation", "refresh", "-id", "l.test", "-socketPath", ssock])
        ldoc = get_bundle(pl)

        def spire_holds():
            rc, out, err = run([spire, "bundle", "list", "-id", "spiffe://l.test", "-format", "spiffe",
                                "-socketPath", ssock])
            try:
                doc = json.loads(out[out.index("{"):])
            except ValueError:
                return None
            # The bootstrap PEM had the X.509 authorities only: the JWT ones come from the fetch.
            return doc if x5cs(doc) == x5cs(ldoc) and kids(doc) == kids(ldoc) and kids(doc) else None
        held = wait_for(spire_holds, 30, 0.5)
        check(bool(held) and x5cs(held) == x5cs(ldoc),
              "SPIRE fetched lanyard's bundle over https_spiffe (spiffe://l.test/lanyard/server): the same X.509 "
              "and JWT authorities", run([spire, "bundle", "list", "-id", "spiffe://l.test", "-format", "spiffe",
                                  "-socketPath", ssock])[1][:400])
        check(lsrv.alive() and ssrv.alive(), "both servers still run")
    finally:
        kill_all(*daemons)
        finish(tmp)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
