#!/usr/bin/python3
"""make_admin_fed_seeds.py: writes the federation seeds of fuzz_admin_request
(tests/fuzz/corpus/admin_request/, first byte 0xF0..0xF4: see the target):
SetFederatedBundle with a PEM and a SPIFFE bundle, one holding another
trust domain's CA, DeleteFederatedBundle, relationships (https_spiffe with
a bootstrap bundle, https_web), a TrustDomain and an empty request.

    /usr/bin/python3 tests/fuzz/make_admin_fed_seeds.py

proto/admin.proto is compiled at run time with grpc_tools.protoc (Debian's
python3-grpc-tools). The CA keys are fixed, so re-running it writes the
same certificates only up to their validity dates: the seeds are files,
not a contract.
"""
import base64
import datetime
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto")
OUT = os.path.join(HERE, "corpus", "admin_request")


def ca(td, seed):
    key = ec.derive_private_key(seed, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{td} ca")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(seed).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def b64u(n):
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def jwks(cert, key):
    pub = key.public_key().public_numbers()
    der = cert.public_bytes(serialization.Encoding.DER)
    return json.dumps({"keys": [{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": b64u(pub.x), "y": b64u(pub.y),
                                 "x5c": [base64.b64encode(der).decode()]}],
                       "spiffe_sequence": 3, "spiffe_refresh_hint": 300}).encode()


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-admin-seeds-")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={tmp}", "agent.proto",
                    "admin.proto"], check=True)
    sys.path.insert(0, tmp)
    a = importlib.import_module("admin_pb2")
    b_cert, b_key = ca("b.test", 1001)
    c_cert, _ = ca("c.test", 1002)
    b_pem = b_cert.public_bytes(serialization.Encoding.PEM)
    c_pem = c_cert.public_bytes(serialization.Encoding.PEM)
    seeds = [
        (0xF0, a.SetFederatedBundleRequest(trust_domain="spiffe://b.test",
                                           bundle=a.BundleData(format="pem", data=b_pem))),
        (0xF0, a.SetFederatedBundleRequest(trust_domain="b.test",
                                           bundle=a.BundleData(format="spiffe", data=jwks(b_cert, b_key)))),
        (0xF0, a.SetFederatedBundleRequest(trust_domain="b.test", bundle=a.BundleData(format="pem", data=c_pem))),
        (0xF1, a.DeleteFederatedBundleRequest(trust_domain="b.test", mode="dissociate")),
        (0xF2, a.FederationRelationship(trust_domain="b.test", bundle_endpoint_url="https://b.test:8443/bundle",
                                        bundle_endpoint_profile="https_spiffe",
                                        endpoint_spiffe_id="spiffe://b.test/lanyard/server",
                                        trust_domain_bundle=a.BundleData(format="pem", data=b_pem))),
        (0xF2, a.FederationRelationship(trust_domain="c.test", bundle_endpoint_url="https://c.example/bundle.json",
                                        bundle_endpoint_profile="https_web")),
        (0xF3, a.TrustDomain(trust_domain="spiffe://b.test")),
        (0xF4, a.CountFederatedBundlesRequest()),
    ]
    for method, msg in seeds:
        data = bytes([method]) + msg.SerializeToString()
        with open(os.path.join(OUT, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds written to {OUT}")


main()
