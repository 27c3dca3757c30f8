#!/usr/bin/python3
"""A fake Kubernetes API server for k8s_psat node attestation, and the
scenario that drives lanyard's attestor (server/attest.h) against it.

The fake serves, over HTTPS on 127.0.0.1 with a certificate made at start
in a temporary directory (openssl CLI):
  POST /apis/authentication.k8s.io/v1/tokenreviews
  GET  /api/v1/namespaces/<ns>/pods/<name>
  GET  /api/v1/nodes/<name>
from canned data. Every request must carry the server's own bearer token
(401 otherwise); the TokenReview request body is checked field by field
(400 otherwise). The answer depends on the agent token under review, one
token per case: good, not authenticated, wrong audience, service account
not allowed, pod UID mismatch, HTTP 500, pod gone, oversized pod.

usage: fake_k8s_api.py <psat_probe binary>      run the scenario
       fake_k8s_api.py --serve                  serve until killed (prints URL and CA file)
Prints one line per check and 'N passed, N failed'; exits 1 on any failure.
"""
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port, https_server, make_tls_pki  # noqa: E402

SERVER_TOKEN = "server.sa-token.fake"
AUDIENCE = "lanyard-server"
POD_UID = "7d1f0a52-3c4b-4e8f-9a6d-2b1c0e9f8a7d"
OTHER_UID = "00000000-1111-4222-8333-444444444444"
NODE_UID = "c0ffee00-1234-4abc-8def-0123456789ab"
NODE = "node-a.example"
NS, SA = "lanyard", "lanyard-agent"

PODS = {
    (NS, "lanyard-agent-abcde"): {"uid": POD_UID, "nodeName": NODE},
    (NS, "lanyard-agent-huge"): {"uid": POD_UID, "nodeName": NODE, "huge": True},
    (NS, "lanyard-agent-hugechunk"): {"uid": POD_UID, "nodeName": NODE, "huge": True, "chunked": True},
}
NODES = {NODE: NODE_UID}


def sa_user(ns, sa, pod, uid):
    return {
        "username": f"system:serviceaccount:{ns}:{sa}",
        "uid": "3a5f9c2e-0000-4000-8000-000000000001",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [uid],
            "authentication.kubernetes.io/credential-id": ["JTI=0c4e"],
        },
    }


# agent token -> (HTTP status, TokenReview status given the requested audiences)
def review_for(token, audiences):
    good_user = sa_user(NS, SA, "lanyard-agent-abcde", POD_UID)
    table = {
        "good.agent-token.a1": {"authenticated": True, "audiences": audiences, "user": good_user},
        "unauth.agent-token.b2": {"user": {}, "error": "[invalid bearer token, token has expired]"},
        "wrongaud.agent-token.c3": {"authenticated": True, "audiences": ["https://kubernetes.default.svc"],
                                    "user": good_user},
        "notallowed.agent-token.d4": {"authenticated": True, "audiences": audiences,
                                      "user": sa_user("default", "default", "lanyard-agent-abcde", POD_UID)},
        "uidmismatch.agent-token.e5": {"authenticated": True, "audiences": audiences,
                                       "user": sa_user(NS, SA, "lanyard-agent-abcde", OTHER_UID)},
        "gone.agent-token.f6": {"authenticated": True, "audiences": audiences,
                                "user": sa_user(NS, SA, "lanyard-agent-gone", POD_UID)},
        "huge.agent-token.g7": {"authenticated": True, "audiences": audiences,
                                "user": sa_user(NS, SA, "lanyard-agent-huge", POD_UID)},
        "hugechunk.agent-token.i9": {"authenticated": True, "audiences": audiences,
                                     "user": sa_user(NS, SA, "lanyard-agent-hugechunk", POD_UID)},
    }
    if token == "boom.agent-token.h8":
        return 500, None
    return 201, table.get(token, {"user": {}, "error": "unknown token"})


REQUESTS = []  # (method, path) of every request that got past the bearer check
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj, chunked=False):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            # No Content-Length: the client learns the size only by reading.
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if not chunked:
                self.wfile.write(body)
                return
            for i in range(0, len(body), 65536):
                part = body[i:i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client hung up: over its cap

    def status_obj(self, code, reason, message):
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
                "code": code}

    def authorized(self):
        if self.headers.get("Authorization") != f"Bearer {SERVER_TOKEN}":
            self.reply(401, self.status_obj(401, "Unauthorized", "Unauthorized"))
            return False
        with LOCK:
            REQUESTS.append((self.command, self.path))
        return True

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length) if length > 0 else b""
        if not self.authorized():
            return
        if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.reply(404, self.status_obj(404, "NotFound", "not found"))
        try:
            req = json.loads(raw)
            ok = (self.headers.get("Content-Type") == "application/json"
                  and req.get("apiVersion") == "authentication.k8s.io/v1" and req.get("kind") == "TokenReview"
                  and isinstance(req["spec"]["token"], str) and isinstance(req["spec"]["audiences"], list)
                  and all(isinstance(a, str) for a in req["spec"]["audiences"]) and set(req) <= {"apiVersion",
                                                                                                 "kind", "spec"})
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            return self.reply(400, self.status_obj(400, "BadRequest", "malformed TokenReview"))
        status, review = review_for(req["spec"]["token"], req["spec"]["audiences"])
        if review is None:
            return self.reply(status, self.status_obj(status, "InternalError", "etcdserver: request timed out"))
        # As the real API server: the request comes back with a status, spec.token included.
        resp = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": req["spec"], "status": review}
        self.reply(status, resp)

    def do_GET(self):
        if not self.authorized():
            return
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)", self.path)
        if m:
            pod = PODS.get((m.group(1), m.group(2)))
            if pod is None:
                return self.reply(404, self.status_obj(404, "NotFound", f'pods "{m.group(2)}" not found'))
            obj = {"kind": "Pod", "apiVersion": "v1",
                   "metadata": {"name": m.group(2), "namespace": m.group(1), "uid": pod["uid"],
                                "labels": {"app": "lanyard-agent"},
                                "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {
                                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                                    "f:spec": {"f:containers": {'k:{"name":"agent"}': {".": {}, "f:image": {}}}}}}]},
                   "spec": {"nodeName": pod["nodeName"], "serviceAccountName": SA,
                            "containers": [{"name": "agent", "image": "lanyard-agent:dev"}]},
                   "status": {"phase": "Running", "podIP": "10.0.0.7"}}
            if pod.get("huge"):
                obj["metadata"]["annotations"] = {"padding": "x" * (2 * 1024 * 1024)}
            return self.reply(200, obj, chunked=pod.get("chunked", False))
        m = re.fullmatch(r"/api/v1/nodes/([^/]+)", self.path)
        if m:
            uid = NODES.get(m.group(1))
            if uid is None:
                return self.reply(404, self.status_obj(404, "NotFound", f'nodes "{m.group(1)}" not found'))
            return self.reply(200, {"kind": "Node", "apiVersion": "v1",
                                    "metadata": {"name": m.group(1), "uid": uid,
                                                 "labels": {"kubernetes.io/hostname": m.group(1)}},
                                    "status": {"images": [{"names": ["lanyard-agent:dev"], "sizeBytes": 1}]}})
        self.reply(404, self.status_obj(404, "NotFound", "not found"))


def make_pki(d):
    """A CA and a server certificate for IP 127.0.0.1 (only) under it; a second, unrelated CA."""
    make_tls_pki(d, "server", "kube-apiserver")


def start_server(d):
    httpd, port = https_server(d, "server", Handler)
    return httpd, f"https://127.0.0.1:{port}"


passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--serve":
        d = tempfile.mkdtemp(prefix="lanyard-fake-k8s-")
        make_pki(d)
        with open(os.path.join(d, "token"), "w") as f:
            f.write(SERVER_TOKEN + "\n")
        httpd, url = start_server(d)
        print(f"url={url} ca={d}/ca.crt token={d}/token", flush=True)
        threading.Event().wait()
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    probe_bin = sys.argv[1]
    d = tempfile.mkdtemp(prefix="lanyard-fake-k8s-")
    try:
        make_pki(d)
        token_file = os.path.join(d, "token")
        with open(token_file, "w") as f:
            f.write(SERVER_TOKEN + "\n")  # as the kubelet writes it: a newline may follow
        bad_token_file = os.path.join(d, "bad-token")
        with open(bad_token_file, "w") as f:
            f.write("someone.elses.token")
        httpd, url = start_server(d)
        ca = os.path.join(d, "ca.crt")
        allow = f"{NS}:{SA},kube-system:other"

        def probe(agent_token, *, api=url, ca_file=ca, tok=token_file, cluster="prod", ask="prod", aud="-"):
            with LOCK:
                REQUESTS.clear()
            r = subprocess.run([probe_bin, api, ca_file, tok, cluster, allow, aud, ask, agent_token],
                               capture_output=True, text=True, timeout=60, check=False)
            out = r.stdout + r.stderr
            with LOCK:
                seen = list(REQUESTS)
            return r.returncode, out, seen

        def refused(name, agent_token, status, words, **kw):
            rc, out, seen = probe(agent_token, **kw)
            ok = rc == 3 and out.startswith(f"ERR {status}:") and all(w in out for w in words)
            check(name, ok, repr(out))
            check(f"{name}: token not in the message", agent_token not in out and SERVER_TOKEN not in out,
                  repr(out))
            return seen

        # The good case: agent ID and the five selectors.
        rc, out, seen = probe("good.agent-token.a1")
        lines = out.splitlines()
        check("good token admitted", rc == 0 and lines[:1] == [f"OK spiffe://example.org/lanyard/agent/k8s_psat/"
                                                               f"prod/{NODE_UID}"], repr(out))
        want = sorted([f"SEL k8s_psat:agent_node_name:{NODE}", f"SEL k8s_psat:agent_node_uid:{NODE_UID}",
                       f"SEL k8s_psat:agent_ns:{NS}", f"SEL k8s_psat:agent_sa:{SA}", "SEL k8s_psat:cluster:prod"])
        check("good token selectors", sorted(lines[1:]) == want, repr(lines[1:]))
        check("good token: review, pod, node requested",
              seen == [("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
                       ("GET", f"/api/v1/namespaces/{NS}/pods/lanyard-agent-abcde"),
                       ("GET", f"/api/v1/nodes/{NODE}")], repr(seen))
        rc, out, _ = probe("good.agent-token.a1", aud="spiffe://example.org/custom-aud")
        check("custom audience admitted", rc == 0, repr(out))

        # Every refusal.
        seen = refused("not authenticated", "unauth.agent-token.b2", "untrusted", ["not authenticated"])
        check("not authenticated: no pod lookup", len(seen) == 1, repr(seen))
        refused("wrong audience", "wrongaud.agent-token.c3", "untrusted", ["audience", AUDIENCE])
        seen = refused("service account not allowed", "notallowed.agent-token.d4", "untrusted",
                       ["default:default", "allow list"])
        check("not allowed: no pod lookup", len(seen) == 1, repr(seen))
        seen = refused("pod UID mismatch", "uidmismatch.agent-token.e5", "untrusted", ["UID"])
        check("pod UID mismatch: no node lookup", len(seen) == 2, repr(seen))
        refused("API server error 500", "boom.agent-token.h8", "i/o error", ["HTTP 500"])
        refused("pod gone", "gone.agent-token.f6", "not found", ["lanyard-agent-gone", "not found"])
        refused("oversized response (Content-Length)", "huge.agent-token.g7", "limit exceeded", ["over"])
        refused("oversized response (chunked)", "hugechunk.agent-token.i9", "limit exceeded", ["over"])
        refused("unknown agent token", "nobody.agent-token.z9", "untrusted", ["not authenticated"])
        refused("unknown cluster", "good.agent-token.a1", "not found", ["unknown cluster staging"], ask="staging")
        seen = refused("server's own token refused (401)", "good.agent-token.a1", "i/o error",
                       ["HTTP 401", "credentials"], tok=bad_token_file)
        check("401: nothing served", seen == [], repr(seen))
        refused("API server unreachable", "good.agent-token.a1", "i/o error", ["unreachable"],
                api=f"https://127.0.0.1:{free_port()}")
        refused("certificate not trusted", "good.agent-token.a1", "i/o error", ["not trusted"],
                ca_file=os.path.join(d, "other-ca.crt"))
        refused("CA file missing", "good.agent-token.a1", "i/o error", ["CA file"],
                ca_file=os.path.join(d, "missing.crt"))
        # The certificate names 127.0.0.1 only: reached as localhost, it does not match.
        refused("host name mismatch", "good.agent-token.a1", "i/o error", ["not trusted"],
                api=url.replace("127.0.0.1", "localhost"))
        rc, out, _ = probe("good.agent-token.a1", api=url.replace("https://", "http://"))
        check("plain http refused by configuration", rc == 2 and "https://" in out, repr(out))
        httpd.shutdown()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
