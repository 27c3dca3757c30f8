#!/usr/bin/python3
"""A fake kubelet for the k8s workload attestor, and the scenario that drives
lanyard's attestor (agent/attest_k8s.h, through kubelet_probe) against it.

The fake serves GET /pods over HTTPS on 127.0.0.1, with a certificate made at
start in a temporary directory (openssl CLI), from a canned PodList. Every
request must carry a bearer token the fake knows (401 otherwise); the token
picks the behaviour, one per case:
  good       the PodList, answered after a delay (the loop must keep turning)
  flaky      HTTP 500 twice, then the PodList
  down       HTTP 500 always
  newpod     the new pod's container has no containerID on the first answer
  huge       an answer over the agent's cap (16 MiB)
  garbage    200 with a body that is not JSON
A fake proc root (one directory per fake PID holding cgroup and mountinfo)
puts each PID in a pod of the fixture, in another cgroup shape each.

usage: fake_kubelet.py <kubelet_probe binary>      run the scenario
       fake_kubelet.py --serve                     serve until killed (prints URL, CA file, token file)
Prints one line per check and 'N passed, N failed'; exits 1 on any failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import ssl
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import https_server, make_tls_pki  # noqa: E402

UID_A = "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
UID_B = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
UID_N = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
UID_X = "99999999-9999-4999-8999-999999999999"
CID1 = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
CID3 = "8d461fa5765781bcf5f7eb192f101bc3103d4b932e26236f43feecfa20664f96"
CID4 = "45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814"
CID5 = "b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2"
CID6 = "aff34703e5e1f89443e9a1bffcc80f43f74d4808a2dd22c8f88c08547b323934"
DIGEST = "sha256:bf862e5f5eca0a73e7e538224578c5cf867ce2be91b5eaed22afc153c00363eb"
NODE = "node-1"
TOKENS = {"good": "good.kubelet-token.a1", "flaky": "flaky.kubelet-token.b2", "down": "down.kubelet-token.c3",
          "newpod": "newpod.kubelet-token.d4", "huge": "huge.kubelet-token.e5",
          "garbage": "garbage.kubelet-token.f6"}
BEHAVIOUR = {v: k for k, v in TOKENS.items()}
GOOD_DELAY = 0.4  # seconds the good answer takes


def pod(name, ns, uid, labels, sa, statuses, init_statuses=None):
    p = {"metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels,
                      "ownerReferences": [{"kind": "ReplicaSet", "name": name + "-rs", "uid": UID_X}],
                      "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {"f:conditions": {}}}}]},
         "spec": {"serviceAccountName": sa, "nodeName": NODE,
                  "containers": [{"name": s["name"], "image": s.get("image", "")} for s in statuses]},
         "status": {"phase": "Running", "containerStatuses": statuses}}
    if init_statuses is not None:
        p["status"]["initContainerStatuses"] = init_statuses
    return p


def pod_list(new_pod_ready):
    new_status = {"name": "app", "image": "registry.example/app:2", "ready": False,
                  "state": {"waiting": {"reason": "ContainerCreating"}}}
    if new_pod_ready:
        new_status.update({"containerID": f"containerd://{CID5}", "imageID": f"registry.example/app@{DIGEST}",
                           "ready": True, "state": {"running": {}}})
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        pod("web-5d9c", "prod", UID_A, {"app": "web", "tier": "frontend"}, "web-sa",
            [{"name": "web", "containerID": f"containerd://{CID1}", "image": "docker.io/library/nginx:1.25",
              "imageID": f"docker.io/library/nginx@{DIGEST}", "ready": True, "restartCount": 0}],
            [{"name": "setup", "containerID": f"containerd://{CID3}", "image": "busybox:1.36",
              "imageID": "docker.io/library/busybox@" + DIGEST}]),
        pod("db-0", "data", UID_B, {"app": "db"}, "db",
            [{"name": "db", "containerID": f"cri-o://{CID4}", "image": "postgres:16", "imageID": "postgres:16"}]),
        pod("new-1", "prod", UID_N, {}, "default", [new_status]),
    ]}


LOCK = threading.Lock()
REQUESTS = {}  # behaviour -> requests that got past the bearer check


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client hung up: over its cap

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        who = BEHAVIOUR.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
        if who is None:
            return self.reply(401, b"Unauthorized", "text/plain")
        if self.path != "/pods":
            return self.reply(404, b"404 page not found", "text/plain")
        with LOCK:
            REQUESTS[who] = REQUESTS.get(who, 0) + 1
            n = REQUESTS[who]
        if who == "good":
            time.sleep(GOOD_DELAY)
            return self.reply(200, json.dumps(pod_list(True)).encode())
        if who == "flaky":
            if n <= 2:
                return self.reply(500, b"etcd is sad", "text/plain")
            return self.reply(200, json.dumps(pod_list(True)).encode())
        if who == "down":
            return self.reply(500, b"internal error", "text/plain")
        if who == "newpod":
            return self.reply(200, json.dumps(pod_list(n >= 2)).encode())
        if who == "huge":
            doc = pod_list(True)
            doc["metadata"]["padding"] = "x" * (17 * 1024 * 1024)
            return self.reply(200, json.dumps(doc).encode())
        if who == "garbage":
            return self.reply(200, b"<html>not json</html>")
        return self.reply(500, b"?", "text/plain")


def make_pki(d):
    """A CA and a kubelet serving certificate for IP 127.0.0.1 (only) under it; a second, unrelated CA."""
    make_tls_pki(d, "kubelet", NODE)


def start_server(d):
    return https_server(d, "kubelet", Handler)


# Fake PIDs: each one's cgroup file (and mountinfo) in another shape.
MOUNTINFO_PLAIN = ("22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw\n"
                   "30 22 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n")
PROCS = {
    # cgroup v1, cgroupfs driver, burstable QoS: pod web-5d9c, container web
    101: ("12:memory:/kubepods/burstable/pod%s/%s\n1:name=systemd:/kubepods/burstable/pod%s/%s\n0::/\n"
          % (UID_A, CID1, UID_A, CID1), MOUNTINFO_PLAIN),
    # systemd driver with cri-o: pod db-0
    102: ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod%s.slice/crio-%s.scope\n"
          % (UID_B.replace("-", "_"), CID4), MOUNTINFO_PLAIN),
    # containerd colon form: web-5d9c's init container
    103: ("0::/kubepods-burstable-pod%s.slice:cri-containerd:%s\n" % (UID_A.replace("-", "_"), CID3),
          MOUNTINFO_PLAIN),
    # cgroup v2 seen through a cgroup namespace: the new pod
    104: ("0::/../../pod%s/%s\n" % (UID_N, CID5), MOUNTINFO_PLAIN),
    # not in a pod
    105: ("0::/user.slice/user-1000.slice/session-2.scope\n", MOUNTINFO_PLAIN),
    # a container ID without pod UID (cri-o + kubeedge): found by searching every pod
    106: ("0::/../crio-%s.scope\n" % CID4, MOUNTINFO_PLAIN),
    # a plain docker container of the node, listed by no pod
    107: ("0::/system.slice/docker-%s.scope\n" % CID6, MOUNTINFO_PLAIN),
    # a pod the kubelet does not list
    108: ("0::/kubepods/pod%s/%s\n" % (UID_X, CID6), MOUNTINFO_PLAIN),
    # the cgroup file names nothing: mountinfo's cgroup2 root does (pod web-5d9c)
    109: ("0::/\n", "22 1 0:21 / / rw - overlay overlay rw\n"
                    "30 22 0:26 /kubepods/burstable/pod%s/%s /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
          % (UID_A, CID1)),
}

WEB = sorted(["k8s:ns:prod", "k8s:sa:web-sa", "k8s:pod-name:web-5d9c", f"k8s:pod-uid:{UID_A}",
              "k8s:pod-label:app:web", "k8s:pod-label:tier:frontend", "k8s:container-name:web",
              "k8s:container-image:docker.io/library/nginx:1.25", f"k8s:container-image:docker.io/library/nginx@{DIGEST}",
              f"k8s:node-name:{NODE}"])
DB = sorted(["k8s:ns:data", "k8s:sa:db", "k8s:pod-name:db-0", f"k8s:pod-uid:{UID_B}", "k8s:pod-label:app:db",
             "k8s:container-name:db", "k8s:container-image:postgres:16", f"k8s:node-name:{NODE}"])
SETUP = sorted(["k8s:ns:prod", "k8s:sa:web-sa", "k8s:pod-name:web-5d9c", f"k8s:pod-uid:{UID_A}",
                "k8s:pod-label:app:web", "k8s:pod-label:tier:frontend", "k8s:container-name:setup",
                "k8s:container-image:busybox:1.36", f"k8s:container-image:docker.io/library/busybox@{DIGEST}",
                f"k8s:node-name:{NODE}"])
NEW = sorted(["k8s:ns:prod", "k8s:sa:default", "k8s:pod-name:new-1", f"k8s:pod-uid:{UID_N}",
              "k8s:container-name:app", "k8s:container-image:registry.example/app:2",
              f"k8s:container-image:registry.example/app@{DIGEST}", f"k8s:node-name:{NODE}"])

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def parse(out):
    """{pid: ("OK", [selectors]) or ("ERR", message)}, {counter: value}"""
    res, counters, cur = {}, {}, None
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "PID":
            cur = int(parts[1])
            res[cur] = ("OK", []) if parts[2] == "OK" else ("ERR", parts[2][4:])
        elif parts[0] == "SEL" and cur is not None:
            res[cur][1].append(line[4:])
        elif len(parts) == 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return res, counters


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--serve":
        d = tempfile.mkdtemp(prefix="lanyard-fake-kubelet-")
        make_pki(d)
        with open(os.path.join(d, "token"), "w") as f:
            f.write(TOKENS["good"] + "\n")
        _, port = start_server(d)
        print(f"url=https://127.0.0.1:{port}/pods ca={d}/ca.crt token={d}/token", flush=True)
        threading.Event().wait()
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    probe_bin = sys.argv[1]
    d = tempfile.mkdtemp(prefix="lanyard-fake-kubelet-")
    try:
        make_pki(d)
        proc = os.path.join(d, "proc")
        for pid, (cgroup, mountinfo) in PROCS.items():
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), "cgroup"), "w") as f:
                f.write(cgroup)
            with open(os.path.join(proc, str(pid), "mountinfo"), "w") as f:
                f.write(mountinfo)
        token_files = {}
        for who, tok in list(TOKENS.items()) + [("stranger", "someone.elses.token")]:
            token_files[who] = os.path.join(d, f"token-{who}")
            with open(token_files[who], "w") as f:
                f.write(tok + "\n")  # as the kubelet mounts it: a newline may follow
        httpd, port = start_server(d)
        ca = os.path.join(d, "ca.crt")

        def probe(who, pids, *, attempts=3, interval=50, host="127.0.0.1", ca_file=ca, skip=False, extra=()):
            with LOCK:
                REQUESTS.clear()
            args = [probe_bin, "--host", host, "--port", str(port), "--token", token_files[who],
                    "--proc-root", proc, "--attempts", str(attempts), "--interval-ms", str(interval),
                    "--timeout-ms", "10000", *extra]
            args += ["--skip-verify"] if skip else ["--ca", ca_file]
            r = subprocess.run(args + [str(p) for p in pids], capture_output=True, text=True, timeout=120,
                               check=False)
            out = r.stdout + r.stderr
            with LOCK:
                seen = dict(REQUESTS)
            res, counters = parse(r.stdout)
            check(f"{who} {pids}: no token in the output", all(t not in out for t in TOKENS.values()), out)
            return r.returncode, res, counters, seen, out

        # Five workloads at once: one fetch, shared; each gets its own pod's selectors.
        rc, res, c, seen, out = probe("good", [101, 102, 103, 105, 106, 109])
        check("good: all attested", rc == 0, out)
        check("cgroup v1 cgroupfs: web selectors", res.get(101) == ("OK", WEB), repr(res.get(101)))
        check("systemd + cri-o: db selectors", res.get(102) == ("OK", DB), repr(res.get(102)))
        check("containerd colon form, init container", res.get(103) == ("OK", SETUP), repr(res.get(103)))
        check("not in a pod: no selectors, no error", res.get(105) == ("OK", []), repr(res.get(105)))
        check("container without pod UID found by search", res.get(106) == ("OK", DB), repr(res.get(106)))
        check("mountinfo fallback", res.get(109) == ("OK", WEB), repr(res.get(109)))
        check("concurrent lookups share one fetch", seen == {"good": 1} and c.get("FETCHES") == 1, f"{seen} {c}")
        # The answer took GOOD_DELAY: a loop blocked on it would show no ticks and one long gap.
        check("loop kept turning during the fetch",
              c.get("TICKS", 0) >= int(GOOD_DELAY * 1000 / 10 / 2) and c.get("MAXGAP", 10 ** 6) < 150, repr(c))

        # Waves: the second one is served from the cached list.
        rc, res, c, seen, out = probe("good", [101, "+", 102, "+", 103])
        check("cache: later lookups served from the list", rc == 0 and seen == {"good": 1}
              and c.get("CACHE_HITS") == 2, f"{seen} {c} {out}")
        rc, res, c, seen, out = probe("good", [101, "+", 102], extra=("--cache-ms", "50", "--wave-gap-ms", "100"))
        check("cache expiry: a stale list is fetched again", rc == 0 and seen == {"good": 2}, f"{seen} {c}")

        # Closed while the fetch is in flight: answered "closing", nothing left open.
        rc, res, c, seen, out = probe("good", [101, 102], extra=("--close-after-ms", "100"))
        check("closed during the fetch", rc == 3 and "LOOP NOT EMPTY" not in out
              and all(res.get(p, ("",))[0] == "ERR" and "closing" in res[p][1] for p in (101, 102)), out)

        # 500, 500, then 200: retried.
        rc, res, c, seen, out = probe("flaky", [101], attempts=5)
        check("HTTP 500 then 200: retried and attested", rc == 0 and res.get(101) == ("OK", WEB)
              and seen == {"flaky": 3}, f"{seen} {out}")
        rc, res, c, seen, out = probe("flaky", [101], attempts=2)
        check("HTTP 500 past the attempts: refused", rc == 3 and "HTTP 500" in res.get(101, ("", ""))[1]
              and "lookup 2 of 2" in out and seen == {"flaky": 2}, f"{seen} {out}")
        rc, res, c, seen, out = probe("down", [101, 102], attempts=3)
        check("kubelet failing: bounded retries, shared", rc == 3 and seen == {"down": 3}
              and res.get(101, ("",))[0] == "ERR" and res.get(102, ("",))[0] == "ERR", f"{seen} {out}")

        # A new pod whose container is not listed yet: found on the next fetch.
        rc, res, c, seen, out = probe("newpod", [104], attempts=4)
        check("new pod: retried until listed", rc == 0 and res.get(104) == ("OK", NEW)
              and seen == {"newpod": 2}, f"{seen} {out}")
        rc, res, c, seen, out = probe("newpod", [104], attempts=1)
        check("new pod, one attempt: not found", rc == 3 and "not listed in pod" in out, out)

        rc, res, c, seen, out = probe("good", [108], attempts=2, interval=10)
        check("pod not listed: not found after the attempts", rc == 3 and "not found" in out
              and "is not listed by the kubelet" in out and seen == {"good": 2}, f"{seen} {out}")
        rc, res, c, seen, out = probe("good", [107], attempts=2, interval=10)
        check("node's own container listed by no pod: no selectors", rc == 0 and res.get(107) == ("OK", [])
              and seen == {"good": 2}, f"{seen} {out}")

        # Refusals that are not retried.
        rc, res, c, seen, out = probe("huge", [101])
        check("answer over the cap", rc == 3 and "limit exceeded" in out and seen == {"huge": 1}, f"{seen} {out}")
        rc, res, c, seen, out = probe("garbage", [101])
        check("answer not JSON", rc == 3 and "ERR invalid" in out and "not JSON" in out
              and seen == {"garbage": 1}, f"{seen} {out}")

        # Credentials and TLS.
        rc, res, c, seen, out = probe("stranger", [101], attempts=1)
        check("401 without the right bearer token", rc == 3 and "HTTP 401" in out and seen == {}, out)
        rc, res, c, seen, out = probe("good", [101], attempts=1, ca_file=os.path.join(d, "other-ca.crt"))
        check("certificate not trusted", rc == 3 and "not trusted" in out and seen == {}, out)
        rc, res, c, seen, out = probe("good", [101], attempts=1, ca_file=os.path.join(d, "missing.crt"))
        check("CA file missing", rc == 3 and "CA file" in out and seen == {}, out)
        rc, res, c, seen, out = probe("good", [101], attempts=1, host="localhost")
        check("host name not in the certificate", rc == 3 and "not trusted" in out and seen == {}, out)
        rc, res, c, seen, out = probe("good", [101], attempts=1, ca_file=os.path.join(d, "other-ca.crt"),
                                      skip=True)
        check("skip verification: attested", rc == 0 and res.get(101) == ("OK", WEB), out)
        rc, res, c, seen, out = probe("good", [0], attempts=1)
        check("PID 0 refused", rc == 3 and "ERR unsupported" in out and seen == {}, out)
        httpd.shutdown()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
