#!/usr/bin/python3
"""lib/ against independent implementations.

X.509: chains made by Python's cryptography (an independent encoder) are
verified by our library and by `openssl verify`; both must agree on the good
chain and on the broken ones openssl also refuses, and ours must refuse the
SPIFFE-specific breakages openssl does not know about.
JWT: tokens signed by PyJWT are validated by our library; tokens signed by
our library are validated by PyJWT; JWKS documents made here are read by it.

usage: interop.py <lib_probe binary>
"""
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROBE = sys.argv[1]
TD = "example.org"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def probe(*args):
    r = subprocess.run([PROBE, *args], capture_output=True, text=True)
    return r.returncode, r.stdout.strip() + r.stderr.strip()


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ku(digital_signature=False, key_cert_sign=False, crl_sign=False):
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def make_cert(subject_key, issuer_cert, issuer_key, *, ca, uris, not_before=None, not_after=None,
              key_usage=None, ku_critical=True, path_len=None, cn="x"):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name = issuer_cert.subject if issuer_cert is not None else name
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - dt.timedelta(minutes=5))
         .not_valid_after(not_after or NOW + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if key_usage is None:
        key_usage = ku(key_cert_sign=True, crl_sign=True) if ca else ku(digital_signature=True)
    b = b.add_extension(key_usage, critical=ku_critical)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if uris:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def der(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


def pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def x509_tests(tmp):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, None, root_key, ca=True, uris=[f"spiffe://{TD}"], cn="root")
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert(int_key, root, root_key, ca=True, uris=[f"spiffe://{TD}"], path_len=0, cn="signing")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    bundle = os.path.join(tmp, "bundle.pem")
    open(bundle, "wb").write(pem(root))
    now = str(int(NOW.timestamp()))

    def leaf(**kw):
        kw.setdefault("ca", False)
        kw.setdefault("uris", [f"spiffe://{TD}/workload"])
        return make_cert(leaf_key, inter, int_key, **kw)

    def ours(name, chain):
        path = os.path.join(tmp, name + ".der")
        open(path, "wb").write(der(*chain))
        return probe("verify-x509", path, bundle, TD, now)

    def theirs(name, chain):
        lp = os.path.join(tmp, name + ".leaf.pem")
        ip = os.path.join(tmp, name + ".int.pem")
        open(lp, "wb").write(pem(chain[0]))
        open(ip, "wb").write(pem(*chain[1:]))
        r = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", bundle, "-untrusted", ip, lp],
                           capture_output=True, text=True)
        return r.returncode

    good = [leaf(), inter]
    rc, out = ours("good", good)
    check("good chain: lib accepts", rc == 0 and out == f"spiffe://{TD}/workload", out)
    check("good chain: openssl verify accepts", theirs("good", good) == 0)

    # Broken in ways openssl also sees: both refuse.
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    foreign_root = make_cert(foreign_key, None, foreign_key, ca=True, uris=[f"spiffe://{TD}"], cn="root")
    foreign_int = make_cert(int_key, foreign_root, foreign_key, ca=True, uris=[f"spiffe://{TD}"], cn="signing")
    both = {
        "expired leaf": [leaf(not_before=NOW - dt.timedelta(hours=3), not_after=NOW - dt.timedelta(hours=1)),
                         inter],
        "leaf not yet valid": [leaf(not_before=NOW + dt.timedelta(hours=1), not_after=NOW + dt.timedelta(hours=2)),
                               inter],
        "foreign CA": [make_cert(leaf_key, foreign_int, int_key, ca=False, uris=[f"spiffe://{TD}/w"]),
                       foreign_int],
        "missing intermediate": [leaf()],
    }
    for name, chain in both.items():
        rc, out = ours(name.replace(" ", "_"), chain)
        check(f"{name}: lib refuses", rc == 1, out)
        check(f"{name}: openssl verify refuses", theirs(name.replace(" ", "_"), chain) != 0)

    # SPIFFE rules openssl does not enforce: ours refuse.
    # name: (certificate, a fragment the refusal must name)
    spiffe_only = {
        "leaf is a CA": (leaf(ca=True, key_usage=ku(digital_signature=True)), "CA"),
        "two URI SANs": (leaf(uris=[f"spiffe://{TD}/a", f"spiffe://{TD}/b"]), "URI"),
        "no URI SAN": (leaf(uris=[]), "SAN"),
        "https URI SAN": (leaf(uris=["https://example.org/a"]), "scheme"),
        "upper-case trust domain": (leaf(uris=["spiffe://Example.org/a"]), "upper-case"),
        "keyCertSign on leaf": (leaf(key_usage=ku(digital_signature=True, key_cert_sign=True)), "keyCertSign"),
        "key usage not critical": (leaf(ku_critical=False), "not critical"),
        "no digitalSignature": (leaf(key_usage=ku(crl_sign=True)), "digitalSignature"),
        "other trust domain": (leaf(uris=["spiffe://other.org/w"]), "trust domain"),
    }
    for name, (cert, why) in spiffe_only.items():
        rc, out = ours(name.replace(" ", "_"), [cert, inter])
        check(f"{name}: lib refuses ({why})", rc == 1 and why in out, out)


def jwks_doc(keys):
    return json.dumps({"keys": keys, "spiffe_sequence": 1, "spiffe_refresh_hint": 300})


def jwk_of(pub, kid):
    n = pub.public_numbers()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = (pub.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384", 521: "P-521"}[pub.curve.key_size]
        return {"kty": "EC", "crv": crv, "x": b64u(n.x.to_bytes(size, "big")), "y": b64u(n.y.to_bytes(size, "big")),
                "use": "jwt-svid", "kid": kid}
    e = n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64u(e),
            "use": "jwt-svid", "kid": kid}


def jwt_tests(tmp):
    keys = {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
        "RS256": rsa.generate_private_key(65537, 2048),
    }
    keys["PS256"] = keys["RS256"]
    jwks = os.path.join(tmp, "bundle.jwks")
    open(jwks, "w").write(jwks_doc([jwk_of(k.public_key(), f"kid-{a}") for a, k in keys.items() if a != "PS256"]))
    now = int(NOW.timestamp())
    claims = {"sub": f"spiffe://{TD}/web", "aud": ["backend"], "exp": now + 300, "iat": now}

    for alg, key in keys.items():
        kid = f"kid-{'RS256' if alg == 'PS256' else alg}"
        tok = pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
        rc, out = probe("jwt-validate", jwks, TD, "backend", str(now), tok)
        check(f"PyJWT {alg} token: lib accepts", rc == 0 and out == f"spiffe://{TD}/web", out)

    tok = pyjwt.encode(claims, keys["ES256"], algorithm="ES256", headers={"kid": "kid-ES256"})
    check("wrong audience refused", probe("jwt-validate", jwks, TD, "other", str(now), tok)[0] == 1)
    check("expired refused", probe("jwt-validate", jwks, TD, "backend", str(now + 3600), tok)[0] == 1)
    tok = pyjwt.encode(claims, keys["ES256"], algorithm="ES256", headers={"kid": "unknown"})
    check("unknown kid refused", probe("jwt-validate", jwks, TD, "backend", str(now), tok)[0] == 1)
    tok = pyjwt.encode(dict(claims, sub="spiffe://other.org/web"), keys["ES256"], algorithm="ES256",
                       headers={"kid": "kid-ES256"})
    check("foreign trust domain refused", probe("jwt-validate", jwks, TD, "backend", str(now), tok)[0] == 1)
    # ES384 header over a P-256 key's signature: algorithm bound to the key type.
    tok = pyjwt.encode(claims, keys["ES384"], algorithm="ES384", headers={"kid": "kid-ES256"})
    check("alg/key mismatch refused", probe("jwt-validate", jwks, TD, "backend", str(now), tok)[0] == 1)

    def forge(header, secret):
        h = b64u(json.dumps(header).encode())
        p = b64u(json.dumps(claims).encode())
        sig = b64u(hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()) if secret else ""
        return f"{h}.{p}.{sig}"

    pub_pem = keys["ES256"].public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    rc, out = probe("jwt-validate", jwks, TD, "backend", str(now), forge({"alg": "HS256", "kid": "kid-ES256"}, pub_pem))
    check("HS256 keyed with the public key refused", rc == 1 and "HS256" in out, out)
    rc, out = probe("jwt-validate", jwks, TD, "backend", str(now), forge({"alg": "none", "kid": "kid-ES256"}, None) + "x")
    check("alg none refused", rc == 1 and "none" in out, out)

    # Our tokens, checked by PyJWT.
    for alg, key in (("ES256", keys["ES256"]), ("ES384", keys["ES384"]), ("ES512", keys["ES512"]),
                     ("RS256", keys["RS256"]), ("PS256", keys["RS256"])):
        kp = os.path.join(tmp, f"{alg}.key")
        open(kp, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(kp, 0o600)
        rc, tok = probe("jwt-sign", kp, "k1", f"spiffe://{TD}/web", "backend", str(now + 300), alg)
        try:
            got = pyjwt.decode(tok, key.public_key(), algorithms=[alg], audience="backend")
            hdr = pyjwt.get_unverified_header(tok)
            ok = rc == 0 and got["sub"] == f"spiffe://{TD}/web" and hdr["kid"] == "k1" and hdr["alg"] == alg
        except Exception as e:  # noqa: BLE001 - report any PyJWT refusal as a failure
            ok, tok = False, f"{tok} {e}"
        check(f"lib {alg} token: PyJWT accepts", ok, tok)


def jwks_x509_tests(tmp):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, None, root_key, ca=True, uris=[f"spiffe://{TD}"], cn="root")
    k = jwk_of(root_key.public_key(), "")
    del k["kid"]
    k["use"] = "x509-svid"
    k["x5c"] = [base64.b64encode(der(root)).decode()]
    path = os.path.join(tmp, "x509.jwks")
    open(path, "w").write(jwks_doc([k]))
    rc, out = probe("jwks-to-pem", path, TD)
    r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=out, capture_output=True,
                       text=True)
    want = root.fingerprint(hashes.SHA256()).hex(":").upper()
    check("x509-svid JWKS read, PEM written, openssl agrees", rc == 0 and want in r.stdout, out[:80])
    k["kid"] = "not-allowed"
    open(path, "w").write(jwks_doc([k]))
    check("x509-svid key with kid refused", probe("jwks-to-pem", path, TD)[0] == 1)


def main():
    with tempfile.TemporaryDirectory(prefix="lanyard-interop-") as tmp:
        x509_tests(tmp)
        jwt_tests(tmp)
        jwks_x509_tests(tmp)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
