"""workload.py: one py-spiffe workload driven by py_spiffe.py (issue 12).

Run by the interpreter of the py-spiffe virtual environment (a copy of it at
a path of its own, so that the agent tells workloads apart by unix:path):

    workload.py SOCKET_PATH

Reads one JSON command a line on stdin, answers one JSON line on stdout:
  {"cmd": "source"}          an X509Source and a JwtSource (both watch); the
                             first SVID, its bundle and py-spiffe's checks
  {"cmd": "state"}           what the sources have seen since: every X.509
                             update (serial, validity, roots, time seen), JWT
                             bundle updates, the gRPC statuses py-spiffe's watch
                             retried on, streams that ended with OK, streams
                             opened per method, whether a source is closed
  {"cmd": "jwt", "auds": [A, B], "other": C, "foreign": ID}
  {"cmd": "bundles"}         FetchX509Bundles and FetchJWTBundles once
  {"cmd": "denied"}          every fetch by a workload that has no identity
  {"cmd": "listen", "port": P, "id" | "td": ...}
                             a spiffe-tls mTLS server authorizing that peer;
                             each connection: read a line, answer
                             "hello PEER, this is SELF" (the C example's protocol)
  {"cmd": "accepted", "port": P}   the peers it accepted and refused so far
  {"cmd": "dial", "port": P, "id" | "td": ...}
  {"cmd": "quit"}
Nothing here works around Lanyard: the library is used as an application
would use it; the spies only record what py-spiffe does.
"""
import json
import sys
import threading
import time
import traceback

import grpc
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from spiffe import JwtSource, SpiffeId, TrustDomain, WorkloadApiClient, X509Source
from spiffe.svid.jwt_svid import JwtSvid
from spiffe.workloadapi import workload_api_client as wac
import spiffetls
from spiffetls.tlsconfig.authorize import authorize_id, authorize_member_of

SOCKET = "unix://" + sys.argv[1]
OUT = threading.Lock()
LOG = {"x509": [], "jwtb": [], "retried": [], "ok_ends": 0, "opens": {}, "errors": []}
LOGL = threading.Lock()


def now():
    return time.time()


# ---- spies: record, then do exactly what py-spiffe does ----
_should_retry = wac.RetryHandler.should_retry


def spy_should_retry(self, code):
    with LOGL:
        LOG["retried"].append([now(), code.name])
    return _should_retry(self, code)


wac.RetryHandler.should_retry = spy_should_retry
_stream_end = wac.WorkloadApiClient._reconnect_after_stream_end


def spy_stream_end(cancel_handler, retry_handler, on_error):
    if not cancel_handler.is_cancelled():
        with LOGL:
            LOG["ok_ends"] += 1
    return _stream_end(cancel_handler, retry_handler, on_error)


wac.WorkloadApiClient._reconnect_after_stream_end = staticmethod(spy_stream_end)


class _Opens(grpc.UnaryStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):
    def _count(self, details):
        with LOGL:
            LOG["opens"][details.method] = LOG["opens"].get(details.method, 0) + 1

    def intercept_unary_stream(self, cont, details, request):
        self._count(details)
        return cont(details, request)

    def intercept_unary_unary(self, cont, details, request):
        self._count(details)
        return cont(details, request)


_channel = wac.WorkloadApiClient._get_spiffe_grpc_channel
wac.WorkloadApiClient._get_spiffe_grpc_channel = lambda self: grpc.intercept_channel(_channel(self), _Opens())

x509_source = None
jwt_source = None
listeners = {}


def reply(obj):
    with OUT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def serial(cert):
    return format(cert.serial_number, "X")


def chain_verifies(svid, bundle):
    """The leaf walks up the chain to one of the bundle's authorities, every
    link signed by the next, every certificate within its validity now."""
    roots = list(bundle.x509_authorities)
    chain = list(svid.cert_chain)
    t = now()
    for i, c in enumerate(chain):
        if not (c.not_valid_before_utc.timestamp() <= t <= c.not_valid_after_utc.timestamp()):
            return f"certificate {i} of the chain is outside its validity"
    for i in range(len(chain) - 1):
        chain[i].verify_directly_issued_by(chain[i + 1])
    for r in roots:
        try:
            chain[-1].verify_directly_issued_by(r)
            return None
        except Exception:
            continue
    return "no bundle authority signed the top of the chain"


def on_x509_update():
    try:
        ctx = x509_source.get_x509_context()
        s = ctx.default_svid
        b = ctx.x509_bundle_set.get_bundle_for_trust_domain(s.spiffe_id.trust_domain)
        rec = {"t": now(), "id": str(s.spiffe_id), "serial": serial(s.leaf),
               "nb": s.leaf.not_valid_before_utc.timestamp(), "na": s.leaf.not_valid_after_utc.timestamp(),
               "roots": sorted(serial(r) for r in b.x509_authorities) if b else [],
               "verify": chain_verifies(s, b) if b else "no bundle for the SVID's trust domain"}
    except Exception as e:
        rec = {"t": now(), "error": repr(e)}
    with LOGL:
        LOG["x509"].append(rec)


def on_jwt_update():
    try:
        rec = {"t": now(), "kids": sorted(k for b in jwt_source.bundles for k in b.jwt_authorities)}
    except Exception as e:
        rec = {"t": now(), "error": repr(e)}
    with LOGL:
        LOG["jwtb"].append(rec)


def cmd_source(c):
    global x509_source, jwt_source
    x509_source = X509Source(socket_path=SOCKET, timeout_in_seconds=c.get("timeout", 20))
    x509_source.subscribe_for_updates(on_x509_update)
    on_x509_update()
    jwt_source = JwtSource(socket_path=SOCKET, timeout_in_seconds=c.get("timeout", 20))
    jwt_source.subscribe_for_updates(on_jwt_update)
    on_jwt_update()
    ctx = x509_source.get_x509_context()
    s = ctx.default_svid
    b = ctx.x509_bundle_set.get_bundle_for_trust_domain(s.spiffe_id.trust_domain)
    pub = s.leaf.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    kpub = s.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"id": str(s.spiffe_id), "chain": len(s.cert_chain), "serial": serial(s.leaf),
            "td": str(s.spiffe_id.trust_domain), "authorities": len(b.x509_authorities) if b else 0,
            "verify": chain_verifies(s, b) if b else "no bundle", "key_matches": pub == kpub,
            "jwt_tds": sorted(str(x.trust_domain) for x in jwt_source.bundles)}


def cmd_state(c):
    with LOGL:
        st = json.loads(json.dumps(LOG))
    st["x509_closed"] = x509_source.is_closed() if x509_source else None
    st["jwt_closed"] = jwt_source.is_closed() if jwt_source else None
    for name, src in (("x509_error", x509_source), ("jwt_error", jwt_source)):
        err = getattr(src, "_error", None) if src else None
        st[name] = repr(err) if err else None
    return st


def cmd_jwt(c):
    a, b = c["auds"]
    other = c["other"]
    r = {}
    with WorkloadApiClient(SOCKET) as client:
        svid = client.fetch_jwt_svid({a, b})
        r["id"] = str(svid.spiffe_id)
        r["aud"] = sorted(svid.audience)
        r["exp_in"] = svid.expiry - now()
        for aud in (a, b):
            r[f"agent_{aud}"] = str(client.validate_jwt_svid(svid.token, aud).spiffe_id)
        try:
            client.validate_jwt_svid(svid.token, other)
            r["agent_other"] = "accepted"
        except Exception as e:
            r["agent_other"] = f"refused: {e}"
        r["subject_own"] = str(client.fetch_jwt_svid({a}, subject=svid.spiffe_id).spiffe_id)
        try:
            client.fetch_jwt_svid({a}, subject=SpiffeId(c["foreign"]))
            r["subject_foreign"] = "issued"
        except Exception as e:
            r["subject_foreign"] = f"refused: {e}"
        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        r["kids"] = sorted(bundle.jwt_authorities) if bundle else []
        for aud in (a, b):
            r[f"local_{aud}"] = str(JwtSvid.parse_and_validate(svid.token, bundle, {aud}).spiffe_id)
        r["local_both"] = str(JwtSvid.parse_and_validate(svid.token, bundle, {a, b}).spiffe_id)
        try:
            JwtSvid.parse_and_validate(svid.token, bundle, {other})
            r["local_other"] = "accepted"
        except Exception as e:
            r["local_other"] = f"refused: {type(e).__name__}: {e}"
    # The JwtSource's own path (FetchJWTSVID each time, bundles from its watch).
    js = jwt_source.fetch_svid({a})
    jb = jwt_source.get_bundle_for_trust_domain(js.spiffe_id.trust_domain)
    r["source_local"] = str(JwtSvid.parse_and_validate(js.token, jb, {a}).spiffe_id)
    return r


def cmd_bundles(c):
    with WorkloadApiClient(SOCKET) as client:
        xb = client.fetch_x509_bundles()
        jb = client.fetch_jwt_bundles()
        return {"x509": {str(b.trust_domain): len(b.x509_authorities) for b in xb.bundles},
                "jwt": {str(b.trust_domain): sorted(b.jwt_authorities) for b in jb.bundles}}


def cmd_denied(c):
    """A workload with no entry: what each call raises, and an X509Source that
    keeps retrying until its timeout (PERMISSION_DENIED is retried)."""
    r = {}
    with WorkloadApiClient(SOCKET) as client:
        for name, fn in (("x509_svid", client.fetch_x509_svid), ("x509_bundles", client.fetch_x509_bundles),
                         ("jwt_bundles", client.fetch_jwt_bundles),
                         ("jwt_svid", lambda: client.fetch_jwt_svid({"aud-one"}))):
            try:
                fn()
                r[name] = "answered"
            except Exception as e:
                r[name] = f"{type(e).__name__}: {e}"
    try:
        X509Source(socket_path=SOCKET, timeout_in_seconds=c.get("source_timeout", 2)).close()
        r["source"] = "made"
    except Exception as e:
        r["source"] = f"{type(e).__name__}: {e}"
    with LOGL:
        r["retried"] = sorted({code for _, code in LOG["retried"]})
    return r


def authorizer(c):
    if "id" in c:
        return authorize_id(SpiffeId(c["id"]))
    return authorize_member_of(TrustDomain(c["td"]))


def peer_id(conn):
    cert = conn.get_peer_certificate().to_cryptography()
    from cryptography import x509
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    return uris[0], serial(cert)


def serve(port, lst, seen):
    me = str(x509_source.get_x509_context().default_svid.spiffe_id)
    while True:
        try:
            conn, _ = lst.accept()
        except Exception:
            return
        try:
            conn.do_handshake()
            peer, _ = peer_id(conn)
            line = b""
            while not line.endswith(b"\n") and len(line) < 4096:
                d = conn.recv(4096)
                if not d:
                    break
                line += d
            conn.sendall(f"hello {peer}, this is {me}\n".encode())
            seen.append({"accepted": peer, "line": line.decode(errors="replace").strip(),
                         "version": conn.get_protocol_version_name()})
            conn.shutdown()
        except Exception as e:
            seen.append({"refused": f"{type(e).__name__}: {e}"})
        finally:
            try:
                conn.close()
            except Exception:
                pass


def cmd_listen(c):
    lst = spiffetls.listen(f"127.0.0.1:{c['port']}", x509_source,
                           spiffetls.ListenOptions(authorize_fn=authorizer(c)))
    seen = []
    listeners[c["port"]] = (lst, seen)
    threading.Thread(target=serve, args=(c["port"], lst, seen), daemon=True).start()
    return {"listening": c["port"]}


def cmd_accepted(c):
    return {"seen": list(listeners[c["port"]][1])}


def cmd_dial(c):
    me = str(x509_source.get_x509_context().default_svid.spiffe_id)
    try:
        conn = spiffetls.dial(f"127.0.0.1:{c['port']}", x509_source, authorize_fn=authorizer(c))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e} ({e.__cause__!r})"}
    try:
        peer, ser = peer_id(conn)
        conn.sendall(f"hello from {me}\n".encode())
        ans = b""
        while not ans.endswith(b"\n"):
            d = conn.recv(4096)
            if not d:
                break
            ans += d
        return {"peer": peer, "serial": ser, "answer": ans.decode(errors="replace").strip(),
                "version": conn.get_protocol_version_name()}
    except SSL.Error as e:
        return {"error": f"SSL.Error after the handshake: {e}"}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


CMDS = {"source": cmd_source, "denied": cmd_denied, "state": cmd_state, "jwt": cmd_jwt, "bundles": cmd_bundles,
        "listen": cmd_listen, "accepted": cmd_accepted, "dial": cmd_dial}


def main():
    for line in sys.stdin:
        c = json.loads(line)
        if c["cmd"] == "quit":
            break
        try:
            reply({"ok": True, **CMDS[c["cmd"]](c)})
        except Exception as e:
            reply({"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]})
    for src in (x509_source, jwt_source):
        if src:
            src.close()


if __name__ == "__main__":
    main()
