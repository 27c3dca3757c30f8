#!/usr/bin/python3
"""wapi_large.py: one workload entitled to many X.509-SVIDs, served whole.

    wapi_large.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR WL_PROBE

The SPIRE benchmark (docs/benchmarks.md) found that gRPC's 4 MiB default
message cap kept a workload entitled to more than ~2,400 X.509-SVIDs from
getting anything from FetchX509SVID (the agent logged and sent nothing).
The caps are now set explicitly (lib/caps.h LY_RPC_RESPONSE_MAX) on the
Workload API's server, the agent's channel to the server and the server's
agent API. A real lanyard-server and lanyard-agent on 127.0.0.1, entries
made over the admin API (Python grpcio, stubs generated here):
  - 3,000 entries for this test's uid: one FetchX509SVID message holds all
    3,000 SVIDs (over 4 MiB), each chain for its own SPIFFE ID; a
    FetchJWTSVID for one of them, and FetchX509Bundles, still served; Envoy
    SDS's FetchSecrets of everything: 3,000 certificates and the bundle in
    one DiscoveryResponse; the C client library (lib/workload, linked as
    the shared library by wl_probe) takes all 3,000 too, once
    (lanyard_fetch_x509_context) and through its watcher
    (lanyard_x509_source), every SVID checked; so does `lanyard-agent api
    fetch x509` (the library's transport);
  - the agent restarted (its identity kept) with
    `workload_api.max_response_bytes: 1048576`: the same caller gets
    RESOURCE_EXHAUSTED with the sizes and the cap in its details, not
    silence, from FetchX509SVID and from SDS's FetchSecrets; a caller
    entitled to one SVID is still served.
Prints ok/FAIL per check and the measured figures; exits 1 on any failure.
"""
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (check, failures, figures, finish, free_port, kill_all, protoc, run, skip,  # noqa: E402
                     wait_for, exit_status, Daemon)

SERVER, AGENT, PROTO_DIR, WL_PROBE = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
MD = (("workload.spiffe.io", "true"),)
N = 3000
UID = os.getuid()


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.server_sock = os.path.join(tmp, "server", "api.sock")
        self.agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
        self.agent_data = os.path.join(tmp, "agent-data")
        self.bundle_pem = os.path.join(tmp, "bootstrap.pem")
        self.port = free_port()
        self.server = self.agent = None

    def server_cli(self, *args):
        return run([SERVER, *args, "-socketPath", self.server_sock])

    def start_server(self):
        self.server = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1",
                              "-serverPort", str(self.port), "-socketPath", self.server_sock,
                              "-dataDir", os.path.join(self.tmp, "server-data")],
                             os.path.join(self.tmp, "server.log"))
        return wait_for(lambda: not self.server.alive() or self.server_cli("healthcheck")[0] == 0, 30) \
            and self.server.alive()

    def start_agent(self, token=None, config=None):
        args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(self.port),
                "-socketPath", self.agent_sock, "-dataDir", self.agent_data, "-trustBundle", self.bundle_pem]
        if config:
            args += ["-config", config]
        if token:
            args += ["-joinToken", token]
        self.agent = Daemon(args, os.path.join(self.tmp, "agent.log"))
        return wait_for(lambda: not self.agent.alive() or
                        run([AGENT, "healthcheck", "-socketPath", self.agent_sock])[0] == 0, 60) \
            and self.agent.alive()


def create_entries(env, admin_pb2_grpc, agent_pb2, grpc, n):
    """CreateEntry over the admin API, 128 in flight (the CLI has no bulk mode): over the
    100 streams the server advertises, so its one connection stays at that limit (the
    bridge must not shut it down: tests/integration/rpc_streams.py)."""
    ch = grpc.insecure_channel("unix:" + env.server_sock)
    admin = admin_pb2_grpc.AdminStub(ch)
    futs, ok = [], 0
    t0 = time.monotonic()
    for i in range(n):
        e = agent_pb2.Entry(spiffe_id=f"spiffe://{TD}/large/w{i:05d}", parent_id=AGENT_ID,
                            selectors=[agent_pb2.Selector(type="unix", value=f"uid:{UID}")])
        futs.append(admin.CreateEntry.future(e, timeout=120))
        if len(futs) >= 128:
            futs.pop(0).result()
            ok += 1
    for f in futs:
        f.result()
        ok += 1
    figures["create_entries_s"] = round(time.monotonic() - t0, 2)
    ch.close()
    return ok


def first_x509(stub, pb, timeout=60):
    """The first FetchX509SVID message, or the status code and details."""
    import grpc
    try:
        for resp in stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=MD, timeout=timeout):
            return resp, None, None
    except grpc.RpcError as e:
        return None, e.code(), e.details()
    return None, None, None


def all_svids(env, pb, pb_grpc, grpc, want, deadline):
    """Waits until one FetchX509SVID message holds `want` SVIDs; the last message seen."""
    last = None
    while time.monotonic() < deadline:
        ch = grpc.insecure_channel("unix:" + env.agent_sock,
                                   options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
        resp, code, details = first_x509(pb_grpc.SpiffeWorkloadAPIStub(ch), pb)
        ch.close()
        if resp is not None:
            last = resp
            if len(resp.svids) >= want:
                return resp, None
        elif code is not None and code != grpc.StatusCode.UNAVAILABLE:
            return None, (code, details)
        time.sleep(0.5)
    return last, None


SDS = "/envoy.service.secret.v3.SecretDiscoveryService/"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def fetch_secrets(env, grpc, d):
    """SDS FetchSecrets of everything (no names): (response, code, details)."""
    r = d.DiscoveryRequest(type_url=SECRET)
    r.node.id = "wapi-large"
    r.node.user_agent_name = "envoy"
    ch = grpc.insecure_channel("unix:" + env.agent_sock,
                               options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
    try:
        resp = ch.unary_unary(SDS + "FetchSecrets", request_serializer=d.DiscoveryRequest.SerializeToString,
                              response_deserializer=d.DiscoveryResponse.FromString)(r, timeout=60)
        return resp, None, None
    except grpc.RpcError as e:
        return None, e.code(), e.details()
    finally:
        ch.close()


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-wapi-large-")
    os.chmod(tmp, 0o755)  # uid 65534 reaches the socket
    env = Env(tmp)
    pb_dir = os.path.join(tmp, "pb")
    protoc(PROTO_DIR, pb_dir, "workload.proto")
    protoc(PROTO_DIR, pb_dir, "agent.proto", "admin.proto", system_include=False)
    protoc(PROTO_DIR, pb_dir, "envoy_core.proto", "google_rpc_status.proto", "envoy_discovery.proto",
           "envoy_tls.proto", grpc=False)
    sys.path.insert(0, pb_dir)
    import grpc
    import admin_pb2_grpc
    import agent_pb2
    import workload_pb2 as pb
    import workload_pb2_grpc as pb_grpc
    import envoy_discovery_pb2 as d

    try:
        if not check(env.start_server(), "server up", env.server.text()[-2000:] if env.server else ""):
            return
        rc, out, err = env.server_cli("bundle", "show")
        with open(env.bundle_pem, "w") as f:
            f.write(out)
        rc, out, err = env.server_cli("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token:\s*(\S+)", out)
        if not check(rc == 0 and m is not None, "join token", err):
            return
        if not check(env.start_agent(token=m.group(1)), "agent up", env.agent.text()[-2000:]):
            return

        try:
            made = create_entries(env, admin_pb2_grpc, agent_pb2, grpc, N)
        except grpc.RpcError:
            # The server's own lines (not its audit lines) say why.
            print("\n".join(l for l in env.server.text().splitlines() if "ly_audit_write" not in l)[-4000:])
            raise
        check(made == N, f"{N} entries created for uid {UID}")

        # All of them in one message (gRPC's default 4 MiB held ~2,400).
        t0 = time.monotonic()
        resp, refused = all_svids(env, pb, pb_grpc, grpc, N, time.monotonic() + 240)
        figures["all_svids_s"] = round(time.monotonic() - t0, 2)
        got = len(resp.svids) if resp is not None else 0
        size = resp.ByteSize() if resp is not None else 0
        figures["x509_response_bytes"] = size
        figures["x509_response_svids"] = got
        check(refused is None, "FetchX509SVID not refused", str(refused))
        if not check(got == N, f"one FetchX509SVID message holds all {N} SVIDs", f"got {got}"):
            return
        check(size > 4 * 1024 * 1024, f"that message is over gRPC's 4 MiB default ({size} bytes)")
        ids = {s.spiffe_id for s in resp.svids}
        check(len(ids) == N and all(i.startswith(f"spiffe://{TD}/large/w") for i in ids),
              f"{N} distinct SPIFFE IDs, all of this caller's entries")
        sample = resp.svids[N // 2]
        check(sample.spiffe_id.encode() in sample.x509_svid and len(sample.x509_svid_key) > 0,
              "an SVID in the middle carries its own ID in its chain, and its key")

        ch = grpc.insecure_channel("unix:" + env.agent_sock)
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        try:
            jr = stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["large"], spiffe_id=sample.spiffe_id),
                                   metadata=MD, timeout=60)
            check(len(jr.svids) == 1 and jr.svids[0].spiffe_id == sample.spiffe_id,
                  "FetchJWTSVID for one of them served")
        except grpc.RpcError as e:
            check(False, "FetchJWTSVID for one of them served", f"{e.code()} {e.details()}")
        try:
            b = next(iter(stub.FetchX509Bundles(pb.X509BundlesRequest(), metadata=MD, timeout=30)))
            check(f"spiffe://{TD}" in b.bundles, "FetchX509Bundles served")
        except grpc.RpcError as e:
            check(False, "FetchX509Bundles served", f"{e.code()} {e.details()}")
        ch.close()

        # The C client library: once, and through its watcher (all 3,000 checked).
        for verb in ("fetch-x509", "source-x509"):
            t0 = time.monotonic()
            rc, out, err = run([WL_PROBE, verb, "unix://" + env.agent_sock], timeout=180)
            figures[f"wl_probe_{verb}_s"] = round(time.monotonic() - t0, 2)
            check(rc == 0 and f"svids {N}\n" in out and f"first spiffe://{TD}/large/w" in out,
                  f"the C client library ({verb}) takes all {N} SVIDs of that message", (out + err).strip()[-500:])
        rc, out, err = run([AGENT, "api", "fetch", "x509", "-socketPath", env.agent_sock, "-timeout", "120"],
                           timeout=180)
        check(rc == 0 and f"Received {N} svids" in out,
              f"`lanyard-agent api fetch x509` (the library's transport) receives all {N}",
              (out[:300] + err).strip()[-500:])

        resp, code, details = fetch_secrets(env, grpc, d)
        n = len(resp.resources) if resp is not None else 0
        figures["sds_fetch_all_bytes"] = resp.ByteSize() if resp is not None else 0
        check(n == N + 1 and resp.ByteSize() > 4 * 1024 * 1024,
              f"SDS FetchSecrets of everything: {N} certificates and the bundle in one message (over 4 MiB)",
              f"{n} resources, {code} {details}")

        # A lower cap: the caller is told why, not left with nothing.
        rc = env.agent.stop()
        check(rc == 0, "agent stopped (SIGTERM -> 0)")
        conf = os.path.join(tmp, "agent.yaml")
        with open(conf, "w") as f:
            f.write("agent:\n  workload_api:\n    max_response_bytes: 1048576\n")
        if not check(env.start_agent(config=conf), "agent restarted with a 1 MiB response cap (identity kept)",
                     env.agent.text()[-2000:]):
            return
        ch = grpc.insecure_channel("unix:" + env.agent_sock,
                                   options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
        stub = pb_grpc.SpiffeWorkloadAPIStub(ch)
        code = details = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            resp, code, details = first_x509(stub, pb)
            if code != grpc.StatusCode.UNAVAILABLE:
                break
            time.sleep(0.5)
        ch.close()
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED,
              "over the configured cap: RESOURCE_EXHAUSTED, not silence", f"{code} {details}")
        check(details is not None and f"{N} X.509-SVIDs" in details and "1048576-byte message cap" in details,
              "its details give the count, the size and the cap", str(details))
        figures["over_cap_details"] = details
        check("over the agent's 1048576-byte message cap" in env.agent.text(), "the agent logs it")
        resp, code, details = fetch_secrets(env, grpc, d)
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED and details is not None and
              f"{N + 1} resources" in details and "1048576-byte message cap" in details,
              "SDS FetchSecrets over the cap: RESOURCE_EXHAUSTED with the count, the size and the cap",
              f"{code} {details}")

        # A caller entitled to one SVID is served under the same cap (another uid's entry).
        if os.geteuid() != 0:
            skip("a caller with one SVID under the cap", "needs root (setpriv to uid 65534)")
        else:
            env.server_cli("entry", "create", "-spiffeID", f"spiffe://{TD}/small", "-parentID", AGENT_ID,
                           "-selector", "unix:uid:65534")
            fetch = [AGENT, "api", "fetch", "x509", "-socketPath", env.agent_sock]
            rc, out, err = run(fetch, uid=65534, timeout=120)
            deadline = time.monotonic() + 60
            while rc != 0 and time.monotonic() < deadline:
                time.sleep(0.5)
                rc, out, err = run(fetch, uid=65534, timeout=120)
            check(rc == 0 and f"spiffe://{TD}/small" in out, "a caller with one SVID is served under the cap",
                  err.strip()[-500:])
        rc = env.agent.stop()
        check(rc == 0, "agent: SIGTERM -> exit 0")
    finally:
        kill_all(env.agent, env.server)
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
