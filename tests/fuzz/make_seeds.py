#!/usr/bin/python3
"""make_seeds.py: writes the seed corpora of the message fuzz targets
(fuzz_wapi_request, fuzz_wapi_validate, fuzz_agentapi_server,
fuzz_agentapi_agent, fuzz_admin_request, fuzz_pbstruct) into tests/fuzz/corpus/<target>/.

    /usr/bin/python3 tests/fuzz/make_seeds.py

Our protos (proto/*.proto) are compiled at run time with grpc_tools.protoc
(Debian's python3-grpc-tools) into a temporary directory. Certificates,
CSRs and tokens are taken from the committed corpora of fuzz_x509svid,
fuzz_csr and fuzz_jwt (no key is made or kept here). Each seed is one
selector byte (the method, as each target's header comment says) and an
encoded message; every target gets valid and invalid examples. The output
is deterministic: re-running it rewrites the same files.
"""
import importlib
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
PROTO = os.path.join(TOP, "proto")
CORPUS = os.path.join(HERE, "corpus")


def compile_protos(out):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", "-I/usr/include", f"--python_out={out}",
                    "workload.proto", "agent.proto", "admin.proto"], check=True)
    sys.path.insert(0, out)
    return (importlib.import_module("workload_pb2"), importlib.import_module("agent_pb2"),
            importlib.import_module("admin_pb2"))


def seed(path):
    with open(os.path.join(CORPUS, path), "rb") as f:
        return f.read()


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


def split_der(data):
    """Concatenated DER certificates, walked by each SEQUENCE's length."""
    out, i = [], 0
    while i < len(data):
        n = data[i + 1]
        hdr, ln = (2, n) if n < 0x80 else (2 + (n & 0x7f), int.from_bytes(data[i + 2:i + 2 + (n & 0x7f)], "big"))
        out.append(data[i:i + hdr + ln])
        i += hdr + ln
    return out


def sel(b, msg):
    return bytes([b]) + (msg if isinstance(msg, bytes) else msg.SerializeToString())


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-seeds-")
    w, a, adm = compile_protos(tmp)
    chain = seed("x509svid/chain-valid")
    csr = seed("csr/p256")
    tok = seed("jwt/valid-es256").strip()
    tok_rs = seed("jwt/valid-rs256").strip()
    tok_bad_aud = seed("jwt/wrong-aud").strip()
    tok_none = seed("jwt/alg-none").strip()
    eid = "0b8a5e4c-3c2f-4b8e-9a57-2f1d3c4b5a69"
    td_id = "spiffe://example.org/ns/fuzz/sa/w"

    # A field repeated (protobuf-c keeps the last) and a string with a NUL: refused by workload_msg.
    jwt_req = w.JWTSVIDRequest(audience=["fuzz"]).SerializeToString()
    write("wapi_request", {
        "x509svid_empty": sel(0, b""),
        "x509svid_unknown_field": sel(0, b"\x08\x01"),
        "x509svid_garbage": sel(0, b"\xff\xff\xff"),
        "x509bundles_empty": sel(1, b""),
        "x509bundles_truncated": sel(1, b"\x0a\x05ab"),
        "jwtbundles_empty": sel(2, b""),
        "jwt_one_aud": sel(3, jwt_req),
        "jwt_aud_and_id": sel(3, w.JWTSVIDRequest(audience=["a", "b"], spiffe_id=td_id)),
        "jwt_no_aud": sel(3, w.JWTSVIDRequest(spiffe_id=td_id)),
        "jwt_empty_aud": sel(3, w.JWTSVIDRequest(audience=[""])),
        "jwt_td_id": sel(3, w.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org")),
        "jwt_bad_id": sel(3, w.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://Example.org/x")),
        "jwt_ctrl_aud": sel(3, w.JWTSVIDRequest(audience=["a\x01b"])),
        "jwt_nul_aud": sel(3, b"\x0a\x03a\x00b"),
        "jwt_dup_id": sel(3, jwt_req + b"\x12\x03abc\x12\x03def"),
        "jwt_many_aud": sel(3, w.JWTSVIDRequest(audience=["x"] * 40)),
    })

    def vreq(aud, svid):
        return w.ValidateJWTSVIDRequest(audience=aud, svid=svid.decode()).SerializeToString()
    write("wapi_validate", {
        "valid_es256": vreq("fuzz", tok),
        "valid_rs256": vreq("fuzz", tok_rs),
        "wrong_aud": vreq("other", tok),
        "token_wrong_aud": vreq("fuzz", tok_bad_aud),
        "alg_none": vreq("fuzz", tok_none),
        "no_aud": vreq("", tok),
        "no_svid": vreq("fuzz", b""),
        "garbage_svid": vreq("fuzz", b"not.a.jwt"),
        "truncated": vreq("fuzz", tok)[:40],
        "nul_in_svid": b"\x0a\x04fuzz\x12\x05ab\x00cd",
        "dup_aud": vreq("fuzz", tok) + b"\x0a\x01x",
        "empty": b"",
    })

    att = a.AttestAgentRequest
    write("agentapi_server", {
        "attest_join": sel(0, att(join_token=a.JoinTokenAttestation(token="abc"), csr=csr)),
        "attest_join_no_csr": sel(0, att(join_token=a.JoinTokenAttestation(token="abc"))),
        "attest_bad_csr": sel(0, att(join_token=a.JoinTokenAttestation(token="abc"), csr=csr[:-3])),
        "attest_x509pop_1": sel(0, att(x509pop=a.X509PopAttestation(certificate_chain=chain))),
        "attest_x509pop_2": sel(0, att(x509pop=a.X509PopAttestation(certificate_chain=chain,
                                                                   challenge_nonce=b"\x01" * 32,
                                                                   challenge_signature=b"\x02" * 64), csr=csr)),
        "attest_x509pop_junk": sel(0, att(x509pop=a.X509PopAttestation(certificate_chain=b"\x30\x82\xff\xff"))),
        "attest_psat": sel(0, att(k8s_psat=a.K8sPsatAttestation(cluster="c1", token="t.t.t"))),
        "attest_ticket": sel(0, att(ticket=b"\x07" * 32, csr=csr)),
        "attest_none": sel(0, att()),
        "renew": sel(1, a.RenewAgentRequest(csr=csr)),
        "renew_empty": sel(1, a.RenewAgentRequest()),
        "watch": sel(2, a.WatchEntriesRequest(since_revision=5)),
        "watch_negative": sel(2, a.WatchEntriesRequest(since_revision=-1)),
        "batch": sel(3, a.BatchNewX509SVIDRequest(params=[a.X509SVIDParams(entry_id=eid, csr=csr),
                                                           a.X509SVIDParams(entry_id="../x", csr=csr)])),
        "jwt": sel(4, a.NewJWTSVIDRequest(entry_id=eid, audience=["fuzz", "b"])),
        "jwt_no_aud": sel(4, a.NewJWTSVIDRequest(entry_id=eid)),
        "bundle": sel(5, b""),
    })

    bundle = a.Bundle(trust_domain="example.org", x509_authorities=[split_der(chain)[-1]],
                      sequence=3)
    svid = a.AgentSVID(spiffe_id="spiffe://example.org/lanyard/agent/node1", cert_chain=chain, expires_at=2000000000)
    write("agentapi_agent", {
        "attest_svid": sel(0, a.AttestAgentResponse(svid=svid)),
        "attest_nonce": sel(0, a.AttestAgentResponse(challenge_nonce=b"\x01" * 32)),
        "attest_ticket": sel(0, a.AttestAgentResponse(agent_id="spiffe://example.org/a", ticket=b"\x02" * 32)),
        "renew": sel(1, svid),
        "renew_bundle": sel(1, a.AgentSVID(spiffe_id=svid.spiffe_id, cert_chain=chain, bundle=bundle)),
        "renew_junk_chain": sel(1, a.AgentSVID(spiffe_id=svid.spiffe_id, cert_chain=b"\x30\x03\x02\x01\x01")),
        "renew_no_id": sel(1, a.AgentSVID(cert_chain=chain)),
        "batch": sel(2, a.BatchNewX509SVIDResponse(results=[
            a.X509SVIDResult(entry_id=eid, spiffe_id=td_id, cert_chain=chain, expires_at=2000000000),
            a.X509SVIDResult(entry_id=eid, status_code=7, status_message="denied")])),
        "batch_trailing": sel(2, a.BatchNewX509SVIDResponse(results=[
            a.X509SVIDResult(entry_id=eid, spiffe_id=td_id, cert_chain=chain + b"\x00")])),
        "jwt_valid": sel(3, a.NewJWTSVIDResponse(token=tok.decode(), issued_at=1699999940, expires_at=2015360000)),
        "jwt_wrong_aud": sel(3, a.NewJWTSVIDResponse(token=tok_bad_aud.decode())),
        "jwt_empty": sel(3, a.NewJWTSVIDResponse()),
        "junk": sel(0, b"\xff\x01\x02"),
        "federated": sel(4, a.FederatedBundles(bundles=[
            a.Bundle(trust_domain="b.test", x509_authorities=[split_der(chain)[-1]], sequence=2),
            a.Bundle(trust_domain="c.test", sequence=1)], sequence=7)),
        "federated_own_td": sel(4, a.FederatedBundles(bundles=[bundle], sequence=1)),
        "federated_twice": sel(4, a.FederatedBundles(bundles=[a.Bundle(trust_domain="b.test"),
                                                               a.Bundle(trust_domain="b.test")])),
        "federated_bad_td": sel(4, a.FederatedBundles(bundles=[a.Bundle(trust_domain="B.test")])),
        "federated_junk_ca": sel(4, a.FederatedBundles(bundles=[
            a.Bundle(trust_domain="b.test", x509_authorities=[b"\x30\x03\x02\x01\x01"])])),
    })

    def entry(**kw):
        base = dict(spiffe_id=td_id, parent_id="spiffe://example.org/lanyard/agent/node1",
                    selectors=[a.Selector(type="unix", value="uid:1000")])
        base.update(kw)
        return a.Entry(**base)
    write("admin_request", {
        "create": sel(0, entry()),
        "create_dns_hint": sel(0, entry(dns_names=["a.example.org"], hint="h", x509_svid_ttl=60, jwt_svid_ttl=60)),
        "create_other_td": sel(0, entry(spiffe_id="spiffe://other.org/w")),
        "create_bad_selector": sel(0, entry(selectors=[a.Selector(type="unix", value="")])),
        "create_negative_ttl": sel(0, entry(x509_svid_ttl=-5)),
        "update": sel(1, entry(entry_id=eid)),
        "update_no_id": sel(1, entry()),
        "delete": sel(2, adm.EntryID(entry_id=eid)),
        "delete_bad_id": sel(2, adm.EntryID(entry_id="x/../y")),
        "filter_id": sel(3, adm.EntryFilter(entry_id=eid)),
        "filter_sels": sel(3, adm.EntryFilter(spiffe_id=td_id, selectors=[a.Selector(type="unix", value="uid:0")])),
        "filter_bad_parent": sel(3, adm.EntryFilter(parent_id="http://x")),
        "token": sel(4, adm.TokenRequest(ttl=60)),
        "token_id": sel(4, adm.TokenRequest(spiffe_id="spiffe://example.org/node/a", ttl=600)),
        "token_ttl_big": sel(4, adm.TokenRequest(ttl=2 ** 31 - 1)),
        "bundle": sel(5, b""),
        "list_agents": sel(6, b""),
        "evict": sel(7, adm.AgentID(spiffe_id="spiffe://example.org/lanyard/agent/node1")),
        "health": sel(8, b""),
        "junk": sel(0, b"\x0a\xff\xff\xff\xff\x0f"),
    })

    write("pbstruct", pbstruct_seeds())


def pbstruct_seeds():
    """fuzz_pbstruct: byte 0 even + JSON claims; odd + a packed google.protobuf.Struct."""
    from google.protobuf import struct_pb2
    claims = (b'{"aud":["spiffe://example.org/db"],"exp":1700000000,"iat":1699999700,'
              b'"sub":"spiffe://example.org/ns/fuzz/sa/w"}')

    def packed(obj):
        st = struct_pb2.Struct()
        st.update(obj)
        return b"\x01" + st.SerializeToString()
    deep = {}
    cur = deep
    for _ in range(40):
        cur["n"] = {}
        cur = cur["n"]
    return {
        "json_claims": b"\x00" + claims,
        "json_kinds": b'\x00{"n":null,"t":true,"f":false,"i":-3,"r":0.5,"big":9007199254740993,"s":"\xc3\xa9",'
                      b'"a":[1,[2,{"x":[]}],{}],"o":{"k":{}}}',
        "json_not_object": b"\x00[1,2]",
        "json_deep": b"\x00" + b'{"a":' * 40 + b"1" + b"}" * 40,
        "wire_claims": packed({"aud": ["spiffe://example.org/db"], "exp": 1700000000, "sub": "spiffe://example.org/w"}),
        "wire_kinds": packed({"n": None, "t": True, "r": -0.25, "a": [1, "x", [], {}], "o": {"k": {"z": 1}}}),
        "wire_deep": packed(deep),
        "wire_empty": b"\x01",
        "wire_garbage": b"\x01\x0a\xff\xff\x01",
    }


if __name__ == "__main__":
    main()
