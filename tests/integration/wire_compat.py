#!/usr/bin/python3
"""Workload API wire compatibility: our proto/workload.proto against the
SPIFFE standard's field table, and our protoc-c code against Google's
protobuf runtime (Debian's python3-protobuf), in both directions.

usage: wire_compat.py <proto dir> <wire_probe binary>
Prints 'N passed, N failed' and exits non-zero on any failure.
"""
import importlib
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

PROTO_DIR, PROBE = sys.argv[1], sys.argv[2]

# The SPIFFE Workload API's messages: (message, field, number, label, type).
# These are facts of the standard every client is compiled against.
T = {"string": 9, "bytes": 12, "message": 11}
EXPECTED = [
    ("X509SVIDResponse", "svids", 1, "repeated", "message"),
    ("X509SVIDResponse", "crl", 2, "repeated", "bytes"),
    ("X509SVIDResponse", "federated_bundles", 3, "repeated", "message"),
    ("X509SVID", "spiffe_id", 1, "optional", "string"),
    ("X509SVID", "x509_svid", 2, "optional", "bytes"),
    ("X509SVID", "x509_svid_key", 3, "optional", "bytes"),
    ("X509SVID", "bundle", 4, "optional", "bytes"),
    ("X509SVID", "hint", 5, "optional", "string"),
    ("X509BundlesResponse", "crl", 1, "repeated", "bytes"),
    ("X509BundlesResponse", "bundles", 2, "repeated", "message"),
    ("JWTSVIDRequest", "audience", 1, "repeated", "string"),
    ("JWTSVIDRequest", "spiffe_id", 2, "optional", "string"),
    ("JWTSVIDResponse", "svids", 1, "repeated", "message"),
    ("JWTSVID", "spiffe_id", 1, "optional", "string"),
    ("JWTSVID", "svid", 2, "optional", "string"),
    ("JWTSVID", "hint", 3, "optional", "string"),
    ("JWTBundlesResponse", "bundles", 1, "repeated", "message"),
    ("ValidateJWTSVIDRequest", "audience", 1, "optional", "string"),
    ("ValidateJWTSVIDRequest", "svid", 2, "optional", "string"),
    ("ValidateJWTSVIDResponse", "spiffe_id", 1, "optional", "string"),
    ("ValidateJWTSVIDResponse", "claims", 2, "optional", "message"),
]
EMPTY = ["X509SVIDRequest", "X509BundlesRequest", "JWTBundlesRequest"]
METHODS = {
    "FetchX509SVID": ("X509SVIDRequest", "X509SVIDResponse", True),
    "FetchX509Bundles": ("X509BundlesRequest", "X509BundlesResponse", True),
    "FetchJWTSVID": ("JWTSVIDRequest", "JWTSVIDResponse", False),
    "FetchJWTBundles": ("JWTBundlesRequest", "JWTBundlesResponse", True),
    "ValidateJWTSVID": ("ValidateJWTSVIDRequest", "ValidateJWTSVIDResponse", False),
}

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def probe(mode, msg_type, data=b""):
    r = subprocess.run([PROBE, mode, msg_type], input=data, capture_output=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"wire_probe {mode} {msg_type}: {r.stderr.decode()}")
    return r.stdout


def main():
    out = tempfile.mkdtemp(prefix="lanyard-wire-")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", "-I/usr/include",
                    f"--python_out={out}", f"{PROTO_DIR}/workload.proto"], check=True)
    sys.path.insert(0, out)
    pb = importlib.import_module("workload_pb2")
    fd = pb.DESCRIPTOR

    check("no proto package", fd.package == "")
    svc = fd.services_by_name.get("SpiffeWorkloadAPI")
    check("service SpiffeWorkloadAPI", svc is not None)
    for name, (req, resp, stream) in METHODS.items():
        m = svc.methods_by_name.get(name) if svc else None
        ok = (m is not None and m.input_type.name == req and m.output_type.name == resp)
        check(f"method /SpiffeWorkloadAPI/{name}", ok)
    # Streaming flags live in the file descriptor proto.
    fdp = descriptor_pb2.FileDescriptorProto.FromString(fd.serialized_pb)
    for method in fdp.service[0].method if fdp.service else []:
        want = METHODS.get(method.name, (None, None, None))[2]
        check(f"method {method.name} server_streaming={want}",
              method.server_streaming == want and not method.client_streaming)
    for msg, field, number, label, ftype in EXPECTED:
        d = fd.message_types_by_name[msg].fields_by_name.get(field)
        ok = (d is not None and d.number == number and d.type == T[ftype]
              and (d.label == 3) == (label == "repeated"))
        check(f"{msg}.{field} = {number} ({label} {ftype})", ok)
    for msg in EMPTY:
        check(f"{msg} has no fields", len(fd.message_types_by_name[msg].fields) == 0)
    for m, key_t in (("X509SVIDResponse", "federated_bundles"), ("X509BundlesResponse", "bundles"),
                     ("JWTBundlesResponse", "bundles")):
        entry = fd.message_types_by_name[m].fields_by_name[key_t].message_type
        check(f"{m}.{key_t} is map<string,bytes>",
              entry.GetOptions().map_entry and entry.fields_by_name["key"].type == 9
              and entry.fields_by_name["value"].type == 12)

    # Python encodes, C decodes and prints what it saw.
    r = pb.X509SVIDResponse()
    s = r.svids.add(spiffe_id="spiffe://example.org/ns/prod/sa/web", x509_svid=b"\x30\x01",
                    x509_svid_key=b"\x30\x02", bundle=b"\x30\x03", hint="internal")
    r.crl.append(b"\xaa")
    r.federated_bundles["spiffe://other.org"] = b"\xbb"
    got = probe("decode", "X509SVIDResponse", r.SerializeToString()).decode()
    want = ("svids[0].spiffe_id=spiffe://example.org/ns/prod/sa/web\nx509_svid=3001\n"
            "x509_svid_key=3002\nbundle=3003\nhint=internal\ncrl=aa\n"
            "federated_bundles.key=spiffe://other.org\nfederated_bundles.value=bb\n")
    check("X509SVIDResponse python->C", got == want, repr(got))

    r = pb.X509BundlesResponse()
    r.crl.append(b"\x01")
    r.bundles["spiffe://example.org"] = b"\x30\x00"
    got = probe("decode", "X509BundlesResponse", r.SerializeToString()).decode()
    check("X509BundlesResponse python->C",
          got == "crl=01\nbundles.key=spiffe://example.org\nbundles.value=3000\n", repr(got))

    r = pb.JWTSVIDRequest(audience=["a", "b"], spiffe_id="spiffe://example.org/w")
    got = probe("decode", "JWTSVIDRequest", r.SerializeToString()).decode()
    check("JWTSVIDRequest python->C", got == "audience=a\naudience=b\nspiffe_id=spiffe://example.org/w\n",
          repr(got))

    r = pb.JWTSVIDResponse()
    r.svids.add(spiffe_id="spiffe://example.org/w", svid="x.y.z", hint="h")
    got = probe("decode", "JWTSVIDResponse", r.SerializeToString()).decode()
    check("JWTSVIDResponse python->C", got == "svids[0]=spiffe://example.org/w|x.y.z|h\n", repr(got))

    r = pb.JWTBundlesResponse()
    r.bundles["spiffe://example.org"] = b'{"keys":[]}'
    got = probe("decode", "JWTBundlesResponse", r.SerializeToString()).decode()
    check("JWTBundlesResponse python->C",
          got == "bundles.key=spiffe://example.org\nbundles.value=7b226b657973223a5b5d7d\n", repr(got))

    r = pb.ValidateJWTSVIDRequest(audience="aud", svid="t.o.k")
    got = probe("decode", "ValidateJWTSVIDRequest", r.SerializeToString()).decode()
    check("ValidateJWTSVIDRequest python->C", got == "audience=aud\nsvid=t.o.k\n", repr(got))

    # C encodes, Python decodes.
    m = pb.ValidateJWTSVIDResponse.FromString(probe("encode", "ValidateJWTSVIDResponse"))
    claims = dict(m.claims)
    check("ValidateJWTSVIDResponse C->python",
          m.spiffe_id == "spiffe://example.org/w" and claims["sub"] == "spiffe://example.org/w"
          and claims["exp"] == 1700000000 and list(claims["aud"]) == ["a", "b"], repr(m))
    m = pb.X509SVIDResponse.FromString(probe("encode", "X509SVIDResponse"))
    ok = (len(m.svids) == 1 and m.svids[0].spiffe_id == "spiffe://example.org/w"
          and m.svids[0].x509_svid == b"\x30\x03\x02\x01\x01" and m.svids[0].x509_svid_key[-1] == 2
          and m.svids[0].bundle[-1] == 3 and m.svids[0].hint == "internal"
          and m.federated_bundles["spiffe://other.org"][-1] == 3)
    check("X509SVIDResponse C->python", ok, repr(m))

    # A message that is not protobuf must be refused by the C side.
    r = subprocess.run([PROBE, "decode", "JWTSVIDRequest"], input=b"\x0a\xff\xff\xff", capture_output=True)
    check("truncated message refused", r.returncode == 1)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
