#!/usr/bin/python3
"""make_sds_seeds.py: writes the seed corpus of fuzz_sds_request
(tests/fuzz/corpus/sds_request/): Envoy SDS v3 DiscoveryRequests as Envoy
sends them (first request, ACK, NACK, node metadata, build version), and
broken ones.

    /usr/bin/python3 tests/fuzz/make_sds_seeds.py

proto/envoy_*.proto are compiled at run time with grpc_tools.protoc
(Debian's python3-grpc-tools) into a temporary directory. Deterministic:
re-running it rewrites the same files.
"""
import importlib
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto")
OUT = os.path.join(HERE, "corpus", "sds_request")
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-sds-seeds-")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", "-I/usr/include", f"--python_out={tmp}",
                    "envoy_core.proto", "google_rpc_status.proto", "envoy_discovery.proto"], check=True)
    sys.path.insert(0, tmp)
    d = importlib.import_module("envoy_discovery_pb2")
    c = importlib.import_module("envoy_core_pb2")
    s = importlib.import_module("google_rpc_status_pb2")

    def node(minor=40, meta=None):
        n = c.Node(id="envoy-a", cluster="frontend", user_agent_name="envoy")
        n.user_agent_build_version.version.major_number = 1
        n.user_agent_build_version.version.minor_number = minor
        if meta:
            n.metadata.update(meta)
        return n

    def req(**kw):
        return d.DiscoveryRequest(type_url=SECRET, **kw).SerializeToString()
    first = req(node=node(), resource_names=["spiffe://example.org/a"])
    seeds = {
        "first_svid": first,
        "first_bundle": req(node=node(), resource_names=["spiffe://example.org"]),
        "defaults": req(node=node(), resource_names=["default", "ROOTCA", "ALL"]),
        "everything": req(node=node()),
        "ack": req(node=node(), resource_names=["spiffe://example.org/a"], version_info="1", response_nonce="0a1b2c3d"),
        "nack": req(node=node(), resource_names=["ROOTCA"], version_info="0", response_nonce="0a1b2c3d",
                    error_detail=s.Status(code=13, message="failed to load certificate chain")),
        "old_envoy": req(node=node(minor=17), resource_names=["ROOTCA"]),
        "meta_disable": req(node=node(meta={"disable_spiffe_cert_validation": True}), resource_names=["ROOTCA"]),
        "version_string": d.DiscoveryRequest(node=c.Node(id="x", user_agent_version="1.2.3"),
                                             resource_names=["default"]).SerializeToString(),
        "empty_names": req(resource_names=["", "default", ""]),
        "bad_type": d.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster").SerializeToString(),
        "ctrl_name": req(resource_names=["a\x01b"]),
        "nul_name": b"\x1a\x03a\x00b",
        "dup_version": first + b"\x0a\x011\x0a\x012",
        "garbage": b"\xff\xff\xff",
        "empty": b"",
        "unknown_fields": first + b"\x3a\x02\x08\x01",
    }
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"sds_request: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
