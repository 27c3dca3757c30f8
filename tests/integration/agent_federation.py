#!/usr/bin/python3
"""agent_federation.py: the agent's side of federation (issue 15, SPEC §3,
§8, §9) against a real lanyard-server, with bundles set by hand
(`bundle set`, no bundle endpoint needed).

    agent_federation.py SERVER AGENT PROTO_DIR

One server (a.test) and one agent on 127.0.0.1; b.test and c.test are
foreign trust domains whose bundles (a CA and a JWT key each, made here with
openssl) the operator sets. Workloads are copies of lanyard-agent (its `api`
verbs), told apart by unix:path:
  fed    spiffe://a.test/fed    -federatesWith spiffe://b.test
  plain  spiffe://a.test/plain  (no federation)
Checks:
  - `api fetch x509` of fed lists b.test as a federated bundle (and not
    c.test, which no entry of it names); plain's lists none;
  - `api fetch jwt-bundles`: fed gets a.test and b.test (JWKS with b.test's
    kid), plain a.test alone;
  - b.test's CA replaced (`bundle set` again): fed's open stream
    (`api watch -write`) gets the new CA in federated_bundle.0.0.pem; the
    time from the `bundle set` to the file is measured;
  - an entry update adding c.test (`entry update -federatesWith` twice):
    the open stream then carries both;
  - Envoy SDS (FetchSecrets from a gRPC client under its own uid, entries
    sds-fed -federatesWith b.test and sds-plain): `ALL` is one SPIFFE
    validator with a.test and b.test for sds-fed, a.test alone for
    sds-plain; `spiffe://b.test` is served to sds-fed and refused
    (INVALID_ARGUMENT "not authorized") to sds-plain; `spiffe://c.test`
    refused to both (no entry of theirs names it);
  - the agent restarted with the server down: fed's federated bundle is
    still served (persisted with the agent's state).
Exits 0 when every check passed, 1 on a failure, 77 (SKIP) when the
federation CLI verbs are missing or, not being root, the SDS checks could
not run (the others still do).
"""
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, check, exit_status, figures, finish, free_port, openssl, protoc, run,  # noqa: E402
                     skip, wait_for)

SDS_CLIENT = r'''
import json, sys, grpc
sys.path.insert(0, sys.argv[1])
import envoy_discovery_pb2 as d
import envoy_tls_pb2 as tls
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ch = grpc.insecure_channel("unix:" + sys.argv[2])
r = d.DiscoveryRequest(type_url=SECRET, resource_names=[n for n in sys.argv[3].split(",") if n])
r.node.id = "probe"
r.node.user_agent_name = "envoy"
r.node.user_agent_build_version.version.major_number = 1
r.node.user_agent_build_version.version.minor_number = 40
try:
    resp = ch.unary_unary("/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
                          request_serializer=d.DiscoveryRequest.SerializeToString,
                          response_deserializer=d.DiscoveryResponse.FromString)(r, timeout=30)
    out = {"code": "OK", "secrets": {}}
    for a in resp.resources:
        sec = tls.Secret.FromString(a.value)
        vc = sec.validation_context
        if vc.HasField("custom_validator_config"):
            cfg = tls.SPIFFECertValidatorConfig.FromString(vc.custom_validator_config.typed_config.value)
            out["secrets"][sec.name] = sorted(t.name for t in cfg.trust_domains)
        else:
            out["secrets"][sec.name] = "other"
except grpc.RpcError as e:
    out = {"code": e.code().name, "details": e.details()}
print(json.dumps(out))
'''

SERVER, AGENT, PROTO = sys.argv[1:4]
# Envoy SDS callers (a Python gRPC client) under uids of their own (setpriv; the test runs as root).
SDS_UIDS = {"sds-fed": 60021, "sds-plain": 60022}
TD = "a.test"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
SKIP = 77


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def ec_xy(key_path, d):
    """The P-256 public point of a PEM key: (x, y) as base64url."""
    der = os.path.join(d, "pub.der")
    openssl("ec", "-in", key_path, "-pubout", "-outform", "DER", "-out", der, cwd=d)
    with open(der, "rb") as f:
        spki = f.read()
    point = spki[-65:]
    assert point[0] == 4
    return b64u(point[1:33]), b64u(point[33:])


def foreign_bundle(d, td, tag):
    """A SPIFFE bundle (JSON) for `td`: a fresh CA (URI SAN spiffe://td) and a fresh JWT key (kid `tag`)."""
    name = f"{td}-{tag}"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", f"subjectAltName=URI:spiffe://{td}", cwd=d)
    openssl("x509", "-in", f"{name}.crt", "-outform", "DER", "-out", f"{name}.der", cwd=d)
    with open(os.path.join(d, f"{name}.der"), "rb") as f:
        ca_der = f.read()
    cx, cy = ec_xy(os.path.join(d, f"{name}.key"), d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}-jwt.key", cwd=d)
    jx, jy = ec_xy(os.path.join(d, f"{name}-jwt.key"), d)
    doc = {"keys": [
        {"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": cx, "y": cy,
         "x5c": [base64.b64encode(ca_der).decode()]},
        {"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": jx, "y": jy, "kid": f"kid-{name}"}],
        "spiffe_sequence": 1, "spiffe_refresh_hint": 60}
    path = os.path.join(d, f"{name}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    with open(os.path.join(d, f"{name}.crt")) as f:
        pem = f.read()
    return path, pem


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-agentfed-")
    pki = os.path.join(tmp, "pki")
    os.makedirs(pki)
    sock = os.path.join(tmp, "server", "api.sock")
    asock = os.path.join(tmp, "agent", "public", "api.sock")
    port = free_port()
    cfg = os.path.join(tmp, "server.yaml")
    with open(cfg, "w") as f:
        f.write(f"server:\n  trust_domain: {TD}\n  bind_address: 127.0.0.1\n  server_port: {port}\n"
                f"  socket_path: {sock}\n  data_dir: {tmp}/server-data\n")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    fed_bin = shutil.copy2(AGENT, os.path.join(bindir, "fed"))
    plain_bin = shutil.copy2(AGENT, os.path.join(bindir, "plain"))
    server = agent = watch = None

    def srv(*args):
        return run([SERVER, *args, "-socketPath", sock])

    def start_server():
        d = Daemon([SERVER, "run", "-config", cfg], os.path.join(tmp, "server.log"))
        ok = wait_for(lambda: not d.alive() or srv("healthcheck")[0] == 0, 40) and d.alive()
        return d if check(bool(ok), "lanyard-server starts", d.text()[-1000:]) else None

    def start_agent(token=None):
        args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(port),
                "-socketPath", asock, "-dataDir", os.path.join(tmp, "agent-data"), "-logLevel", "debug"]
        if token:
            args += ["-joinToken", token, "-trustBundle", os.path.join(tmp, "bootstrap.pem")]
        d = Daemon(args, os.path.join(tmp, "agent.log"))
        ok = wait_for(lambda: not d.alive() or run([AGENT, "healthcheck", "-socketPath", asock])[0] == 0, 40)
        return d if check(bool(ok) and d.alive(), "lanyard-agent starts" + ("" if token else " again"),
                          d.text()[-1500:]) else None

    def fetch_x509(prog):
        rc, out, err = run([prog, "api", "fetch", "x509", "-socketPath", asock], timeout=30)
        return rc, re.findall(r"Federated bundle:\s+(\S+)", out), out + err

    def fetch_jwt_bundles(prog):
        rc, out, err = run([prog, "api", "fetch", "jwt-bundles", "-socketPath", asock], timeout=30)
        return rc, dict(re.findall(r"bundle\((\S+)\):\s*\n\s*(\S+)", out)), out + err

    try:
        server = start_server()
        if server is None:
            return
        rc, out, err = srv("bundle", "count")
        if rc != 0:
            print(f"SKIPPED: the federation CLI verbs are not available ({err.strip()[:120]})", flush=True)
            sys.exit(SKIP)
        b1, b1_pem = foreign_bundle(pki, "b.test", "1")
        c1, c1_pem = foreign_bundle(pki, "c.test", "1")
        for td, path in (("b.test", b1), ("c.test", c1)):
            rc, out, err = srv("bundle", "set", "-id", f"spiffe://{td}", "-path", path, "-format", "spiffe")
            check(rc == 0, f"bundle set -id spiffe://{td} -format spiffe", err)
        rc, bundle, err = srv("bundle", "show")
        with open(os.path.join(tmp, "bootstrap.pem"), "w") as f:
            f.write(bundle)
        rc, out, err = srv("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, "token generate", err):
            return
        agent = start_agent(m.group(1))
        if agent is None:
            return
        ids = {}
        for name, prog, extra in (("fed", fed_bin, ["-federatesWith", "spiffe://b.test"]), ("plain", plain_bin, [])):
            rc, out, err = srv("entry", "create", "-spiffeID", f"spiffe://{TD}/{name}", "-parentID", AGENT_ID,
                               "-selector", "unix:uid:0", "-selector", f"unix:path:{os.path.realpath(prog)}", *extra)
            mm = re.search(r"Entry ID\s*:\s*(\S+)", out)
            check(rc == 0 and mm is not None, f"entry create spiffe://{TD}/{name} {' '.join(extra)}", err)
            ids[name] = mm.group(1) if mm else None

        # ---- what each workload sees ----
        got = wait_for(lambda: fetch_x509(fed_bin)[1] == ["spiffe://b.test"] or None, 30, 0.2)
        rc, feds, text = fetch_x509(fed_bin)
        check(bool(got), "fed: FetchX509SVID carries b.test in federated_bundles (not c.test, not a.test)", text)
        rc, feds, text = fetch_x509(plain_bin)
        check(rc == 0 and feds == [], "plain: no federated bundle", text)
        rc, jb, text = fetch_jwt_bundles(fed_bin)
        check(rc == 0 and sorted(jb) == ["spiffe://a.test", "spiffe://b.test"] and "kid-b.test-1" in jb.get(
            "spiffe://b.test", ""), "fed: FetchJWTBundles holds a.test and b.test (its JWT key)", text)
        rc, jb, text = fetch_jwt_bundles(plain_bin)
        check(rc == 0 and sorted(jb) == ["spiffe://a.test"], "plain: FetchJWTBundles holds a.test alone", text)

        # ---- Envoy SDS: ALL and spiffe://<td> ----
        if os.geteuid() != 0:
            skip("the SDS checks", "they need root (their callers run under uids of their own)")
        else:
            os.chmod(tmp, 0o755)
            stubs = os.path.join(tmp, "stubs")
            protoc(PROTO, stubs, "envoy_core.proto", "google_rpc_status.proto", "envoy_discovery.proto",
                   "envoy_tls.proto", grpc=False)
            client_py = os.path.join(tmp, "sds_client.py")
            with open(client_py, "w") as f:
                f.write(SDS_CLIENT)
            for p in [stubs] + [os.path.join(stubs, x) for x in os.listdir(stubs)] + [client_py]:
                os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
            os.chmod(os.path.dirname(asock), 0o755)
            for name, extra in (("sds-fed", ["-federatesWith", "spiffe://b.test"]), ("sds-plain", [])):
                rc, out, err = srv("entry", "create", "-spiffeID", f"spiffe://{TD}/{name}", "-parentID", AGENT_ID,
                                   "-selector", f"unix:uid:{SDS_UIDS[name]}", *extra)
                check(rc == 0, f"entry create spiffe://{TD}/{name} {' '.join(extra)}", err)

            def sds(who, names):
                rc, out, err = run(["/usr/bin/python3", client_py, stubs, asock, names], uid=SDS_UIDS[who], timeout=60)
                try:
                    return json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    return {"code": "CLIENT_FAILED", "details": (out + err)[-800:]}
            r = wait_for(lambda: (lambda x: x if x.get("code") == "OK" else None)(sds("sds-fed", "ALL")), 30, 0.3)
            r = r or sds("sds-fed", "ALL")
            check(r.get("secrets", {}).get("ALL") == ["a.test", "b.test"],
                  "SDS: ALL for sds-fed is one SPIFFE validator with a.test and b.test", json.dumps(r))
            r = wait_for(lambda: (lambda x: x if x.get("code") == "OK" else None)(sds("sds-plain", "ALL")), 30, 0.3)
            r = r or sds("sds-plain", "ALL")
            check(r.get("secrets", {}).get("ALL") == ["a.test"], "SDS: ALL for sds-plain holds a.test alone",
                  json.dumps(r))
            r = sds("sds-fed", "spiffe://b.test")
            check(r.get("secrets", {}).get("spiffe://b.test") == ["b.test"],
                  "SDS: spiffe://b.test is served to sds-fed (its entry federates with b.test)", json.dumps(r))
            for who in ("sds-plain", "sds-fed"):
                for name in (["spiffe://b.test", "spiffe://c.test"] if who == "sds-plain" else ["spiffe://c.test"]):
                    r = sds(who, name)
                    check(r.get("code") == "INVALID_ARGUMENT" and "not authorized" in r.get("details", ""),
                          f"SDS: {name} refused to {who} (INVALID_ARGUMENT, not authorized)", json.dumps(r))

        # ---- a change pushed on an open stream ----
        wdir = os.path.join(tmp, "watch")
        os.makedirs(wdir)
        watch = Daemon([fed_bin, "api", "watch", "-socketPath", asock, "-write", wdir],
                       os.path.join(tmp, "watch.log"))
        fb = os.path.join(wdir, "federated_bundle.0.0.pem")

        def file_has(path, pem):
            try:
                with open(path) as f:
                    return pem.strip() in f.read()
            except OSError:
                return False
        check(bool(wait_for(lambda: file_has(fb, b1_pem), 30, 0.05)),
              "fed's open stream (api watch -write): b.test's CA in federated_bundle.0.0.pem", watch.text()[-500:])
        b2, b2_pem = foreign_bundle(pki, "b.test", "2")
        t0 = time.monotonic()
        rc, out, err = srv("bundle", "set", "-id", "spiffe://b.test", "-path", b2, "-format", "spiffe")
        check(rc == 0, "bundle set: b.test's CA replaced", err)
        got = wait_for(lambda: file_has(fb, b2_pem), 30, 0.02)
        if check(bool(got), "the new b.test CA reaches fed's open stream", watch.text()[-500:]):
            figures["bundle_set_to_open_stream_s"] = round(time.monotonic() - t0, 3)
        check(not file_has(fb, b1_pem), "the old b.test CA is gone from it (replaced, not merged)")

        # ---- the entry starts to federate with c.test too ----
        if ids.get("fed"):
            rc, out, err = srv("entry", "update", "-entryID", ids["fed"], "-spiffeID", f"spiffe://{TD}/fed",
                               "-parentID", AGENT_ID, "-selector", "unix:uid:0", "-selector",
                               f"unix:path:{os.path.realpath(fed_bin)}", "-federatesWith", "spiffe://b.test",
                               "-federatesWith", "spiffe://c.test")
            check(rc == 0, "entry update: fed federates with b.test and c.test", err)
            fc = os.path.join(wdir, "federated_bundle.0.1.pem")
            check(bool(wait_for(lambda: file_has(fb, b2_pem) and file_has(fc, c1_pem), 30, 0.05)),
                  "fed's open stream now carries b.test and c.test", os.listdir(wdir))
        watch.stop()
        watch = None

        # ---- served from the persisted state with the server down ----
        rcs = [agent.stop(), server.stop()]
        server = None
        check(rcs == [0, 0], "the agent and the server exit 0 on SIGTERM", str(rcs))
        agent = start_agent()
        if agent is not None:
            rc, feds, text = fetch_x509(fed_bin)
            check(rc == 0 and feds == ["spiffe://b.test", "spiffe://c.test"],
                  "agent restarted with the server down: fed still gets b.test and c.test (persisted)", text)
            rc, feds, text = fetch_x509(plain_bin)
            check(rc == 0 and feds == [], "... and plain still none", text)
    finally:
        for d in (watch, agent, server):
            if d is not None:
                d.stop()
        # An ASan build aborts or reports into the daemons' logs: none may.
        reports = []
        for name in ("server.log", "agent.log"):
            try:
                with open(os.path.join(tmp, name), errors="replace") as f:
                    reports += [ln for ln in f if "Sanitizer" in ln or "runtime error:" in ln]
            except OSError:
                pass
        check(not reports, "no sanitizer report in the daemons' logs", "".join(reports[:5]))
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
