#!/usr/bin/python3
"""paths.py: squatted and planted paths, fake daemons, the join token's
visibility (issue 19, items 4 and 5; docs/security.md "Attacks").

    paths.py LANYARD_SERVER LANYARD_AGENT SCENARIO...

Another local user is uid 65534 (setpriv); the suite runs as root. A
directory `shared/` (root's, 1777) stands for /tmp, so nothing outside our
own temporary directory is used.
  squat      uid 65534 made shared/lanyard-server (and shared/lanyard-agent)
             first: both daemons refuse to start, one line naming the uid,
             nothing made under it;
  fakeadmin  uid 65534 listens in its own shared/lanyard-server/private:
             `lanyard-server token generate` refuses it before sending a
             byte (the listener counts them), one line; the same listener
             as root in a directory of ours: the CLI talks (the count moves);
  fakeagent  the same for `lanyard-agent api validate` and `healthcheck`;
  planted    a data dir open to all, datastore.sqlite3 (or only its -wal)
             planted by uid 65534 before the first start: the server refuses,
             one line, the file left as it was;
  symlink    -dataDir a symlink to a directory: both daemons refuse, one
             line, the target's mode unchanged;
  joinenv    the agent attests with LANYARD_JOIN_TOKEN instead of -joinToken:
             healthy, the token in neither /proc/<pid>/cmdline nor
             /proc/<pid>/environ; a malformed one: exit 2, one line naming
             the variable, the value not echoed.
Prints ok/FAIL per check; exits non-zero on any failure; exits 77 (SKIP)
when not root or without setpriv.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, failures, free_port, one_error_line, run, wait_for  # noqa: E402

SERVER, AGENT = sys.argv[1], sys.argv[2]
SCENARIOS = sys.argv[3:]
TD = "example.org"
OTHER = 65534
AGENT_ID = f"spiffe://{TD}/node/paths"

# A listener that never answers: it counts the bytes each client sends (appended to COUNT), then closes.
LISTENER = r"""
import os, socket, sys
path, count = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)  # any user may connect, as to a real Workload API socket
s.listen(16)
open(count + ".ready", "w").close()
while True:
    c, _ = s.accept()
    c.settimeout(1.0)
    n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            n += len(b)
    except OSError:
        pass
    c.close()
    with open(count, "a") as f:
        f.write(f"{n}\n")
"""


def as_other(args):
    return ["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", *args]


def mkdir_as_other(path, mode=0o755):
    r = subprocess.run(as_other(["mkdir", "-m", oct(mode)[2:], "-p", path]), capture_output=True, text=True)
    return r.returncode == 0


def start_fails(args, log, timeout=20):
    """Runs a daemon that must refuse to start: (exit code, its stderr text)."""
    d = Daemon(args, log)
    if not wait_for(lambda: not d.alive(), timeout):
        d.stop(signal.SIGKILL)
        return None, d.text()
    rc = d.proc.returncode
    d.stop()
    return rc, d.text()


def refused_one_line(rc, text, needle, what):
    """A daemon's refusal: exit 1, one "lanyard-...: " line (the log lines aside) naming the rule."""
    lines = [ln for ln in text.splitlines() if re.match(r"lanyard-(server|agent): ", ln)]
    check(rc == 1, f"{what}: exit 1", f"rc {rc}: {text[-600:]}")
    check(len(lines) == 1 and needle in lines[0], f"{what}: one line, \"{needle}\"", str(lines))


def server_args(tmp, sock, data):
    return [SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(free_port()),
            "-socketPath", sock, "-dataDir", data]


def agent_args(sock, data, port=None, token="x" * 8):
    return [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(port or free_port()),
            "-socketPath", sock, "-dataDir", data, "-insecureBootstrap", *(["-joinToken", token] if token else [])]


def shared_dir(tmp):
    """shared/: root's, 1777, as /tmp; tmp itself made reachable by uid 65534."""
    os.chmod(tmp, 0o755)
    shared = os.path.join(tmp, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    return shared


# ---- scenarios ----

def sc_squat(tmp):
    shared = shared_dir(tmp)
    squat = os.path.join(shared, "lanyard-server")
    check(mkdir_as_other(squat), "uid 65534 makes shared/lanyard-server first")
    sock = os.path.join(squat, "private", "api.sock")
    rc, text = start_fails(server_args(tmp, sock, os.path.join(tmp, "sdata")), os.path.join(tmp, "squat-server.log"))
    refused_one_line(rc, text, "owned by uid 65534", "server in a squatted directory")
    check(not os.path.exists(os.path.dirname(sock)), "nothing made under the squatted directory")
    # Open to all but root's (not sticky): refused too.
    opened = os.path.join(tmp, "open")
    os.mkdir(opened)
    os.chmod(opened, 0o777)
    rc, text = start_fails(server_args(tmp, os.path.join(opened, "s", "api.sock"), os.path.join(tmp, "sdata2")),
                           os.path.join(tmp, "open-server.log"))
    refused_one_line(rc, text, "writable by others", "server under a directory anyone may write")

    asquat = os.path.join(shared, "lanyard-agent")
    check(mkdir_as_other(asquat), "uid 65534 makes shared/lanyard-agent first")
    asock = os.path.join(asquat, "public", "api.sock")
    rc, text = start_fails(agent_args(asock, os.path.join(tmp, "adata")), os.path.join(tmp, "squat-agent.log"))
    refused_one_line(rc, text, "owned by uid 65534", "agent in a squatted directory")
    check(not os.path.exists(os.path.dirname(asock)), "nothing made under the agent's squatted directory")


class Listener:
    def __init__(self, tmp, sock, name, uid=None):
        self.count = os.path.join(tmp, f"{name}.count")
        os.makedirs(os.path.dirname(sock), exist_ok=True)
        args = ["/usr/bin/python3", "-c", LISTENER, sock, self.count]
        if uid is not None:
            # The count files live in a directory it may write.
            cdir = os.path.join(tmp, f"{name}-counts")
            os.mkdir(cdir)
            os.chown(cdir, uid, uid)
            self.count = os.path.join(cdir, "count")
            args = as_other(["/usr/bin/python3", "-c", LISTENER, sock, self.count])
        self.proc = subprocess.Popen(args)
        check(wait_for(lambda: os.path.exists(self.count + ".ready"), 10), f"{name}: listening")

    def counts(self):
        try:
            with open(self.count) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fake_at(tmp, shared, name, sub, mode):
    """uid 65534's listener in its own shared/<name>/<sub>: returns (socket, listener)."""
    squat = os.path.join(shared, name)
    check(mkdir_as_other(squat, 0o755) and mkdir_as_other(os.path.join(squat, sub), mode),
          f"uid 65534 makes shared/{name} first")
    sock = os.path.join(squat, sub, "api.sock")
    return sock, Listener(tmp, sock, name, uid=OTHER)


def control(tmp, sub, mode, cli):
    """The same listener as root in a directory of ours: the CLI talks to it (the count moves)."""
    own = os.path.join(tmp, "own", sub, "api.sock")
    os.makedirs(os.path.dirname(own), mode=mode)
    ctl = Listener(tmp, own, f"control-{sub}")
    try:
        rc, out, err = run([*cli, "-socketPath", own], timeout=90)
        time.sleep(1.5)
        check(rc == 1 and sum(ctl.counts()) > 0, "control: the CLI talks to root's listener (bytes counted)",
              f"rc {rc} counts {ctl.counts()} err {err!r}")
    finally:
        ctl.stop()


def sc_fakeadmin(tmp):
    shared = shared_dir(tmp)
    sock, fake = fake_at(tmp, shared, "lanyard-server", "private", 0o700)
    try:
        rc, out, err = run([SERVER, "token", "generate", "-spiffeID", AGENT_ID, "-socketPath", sock], timeout=60)
        check(rc == 1 and one_error_line(err), "token generate against uid 65534's listener: exit 1, one line",
              f"rc {rc} out {out!r} err {err!r}")
        print("     " + err.strip(), flush=True)
        check("runs as uid 65534" in err, "the error names the listener's uid", err)
        check("Token" not in out and out == "", "nothing printed on stdout", out)
        time.sleep(1.5)
        check(sum(fake.counts()) == 0, "not a byte sent to it", str(fake.counts()))
        rc, out, err = run([SERVER, "healthcheck", "-socketPath", sock], timeout=60)
        check(rc == 1 and "runs as uid 65534" in err, "healthcheck refuses it too", err)
    finally:
        fake.stop()
    control(tmp, "private", 0o700, [SERVER, "healthcheck"])

def sc_fakeagent(tmp):
    shared = shared_dir(tmp)
    sock, fake = fake_at(tmp, shared, "lanyard-agent", "public", 0o755)
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9hIn0."
    try:
        rc, out, err = run([AGENT, "api", "validate", "-audience", "a", "-svid", token, "-socketPath", sock])
        check(rc == 1 and one_error_line(err), "api validate against uid 65534's listener: exit 1, one line",
              f"rc {rc} out {out!r} err {err!r}")
        print("     " + err.strip(), flush=True)
        check("runs as uid 65534" in err, "the error names the listener's uid", err)
        check(out == "", "nothing believed or printed", out)
        rc, out, err = run([AGENT, "healthcheck", "-socketPath", sock])
        check(rc == 1 and one_error_line(err) and "runs as uid 65534" in err, "healthcheck refuses it too", err)
        # As a workload of another uid (not the listener's): refused the same.
        rc, out, err = run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                            AGENT, "api", "fetch", "x509", "-socketPath", sock])
        check(rc == 1 and "runs as uid 65534" in err, "api fetch as uid 1000 refuses it too", err)
        time.sleep(1.5)
        check(sum(fake.counts()) == 0, "not a byte sent to it", str(fake.counts()))
    finally:
        fake.stop()
    control(tmp, "public", 0o755, [AGENT, "healthcheck"])

def sc_planted(tmp):
    os.chmod(tmp, 0o755)
    for side in ("", "-wal"):
        data = os.path.join(tmp, f"data{side or '-db'}")
        os.mkdir(data)
        os.chmod(data, 0o777)
        planted = os.path.join(data, "datastore.sqlite3" + side)
        r = subprocess.run(as_other(["sh", "-c", f"umask 0; printf x > '{planted}'"]), capture_output=True)
        check(r.returncode == 0 and os.stat(planted).st_uid == OTHER, f"uid 65534 plants datastore.sqlite3{side}")
        sock = os.path.join(tmp, f"sock{side or '-db'}", "api.sock")
        rc, text = start_fails(server_args(tmp, sock, data), os.path.join(tmp, f"planted{side}.log"))
        refused_one_line(rc, text, "owned by uid 65534", f"server with a planted datastore.sqlite3{side}")
        st = os.stat(planted)
        check(st.st_uid == OTHER and st.st_size == 1, f"datastore.sqlite3{side} left as it was")


def sc_symlink(tmp):
    real = os.path.join(tmp, "real")
    os.mkdir(real)
    os.chmod(real, 0o755)
    link = os.path.join(tmp, "link")
    os.symlink(real, link)
    rc, text = start_fails(server_args(tmp, os.path.join(tmp, "s", "api.sock"), link), os.path.join(tmp, "sl-s.log"))
    refused_one_line(rc, text, "is a link", "server with -dataDir a symlink")
    check(os.stat(real).st_mode & 0o7777 == 0o755 and not os.listdir(real), "its target untouched (0755, empty)")
    rc, text = start_fails(agent_args(os.path.join(tmp, "a", "api.sock"), link), os.path.join(tmp, "sl-a.log"))
    refused_one_line(rc, text, "is a link", "agent with -dataDir a symlink")
    check(os.stat(real).st_mode & 0o7777 == 0o755 and not os.listdir(real), "its target untouched (0755, empty)")


def sc_joinenv(tmp):
    ssock = os.path.join(tmp, "server", "api.sock")
    port = free_port()
    server = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(port),
                     "-socketPath", ssock, "-dataDir", os.path.join(tmp, "sdata")], os.path.join(tmp, "server.log"))
    agent = None
    try:
        if not check(wait_for(lambda: not server.alive() or run([SERVER, "healthcheck", "-socketPath", ssock])[0] == 0,
                              30) and server.alive(), "server starts"):
            return
        rc, out, err = run([SERVER, "token", "generate", "-spiffeID", AGENT_ID, "-socketPath", ssock])
        token = re.search(r"Token: (\S+)", out).group(1)
        asock = os.path.join(tmp, "agent", "public", "api.sock")
        env = dict(os.environ, LANYARD_JOIN_TOKEN=token)
        agent = Daemon(agent_args(asock, os.path.join(tmp, "adata"), port=port, token=None),
                       os.path.join(tmp, "agent.log"), env=env)
        healthy = wait_for(lambda: not agent.alive() or run([AGENT, "healthcheck", "-socketPath", asock])[0] == 0, 30)
        check(healthy and agent.alive(), "the agent attests with LANYARD_JOIN_TOKEN", agent.text()[-1500:])
        with open(f"/proc/{agent.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{agent.pid}/environ", "rb") as f:
            environ = f.read()
        check(token.encode() not in cmdline, "the token is not in /proc/<pid>/cmdline")
        check(token.encode() not in environ, "the token is not in /proc/<pid>/environ (wiped after reading)")
        rc, out, err = run([SERVER, "agent", "list", "-socketPath", ssock])
        check(AGENT_ID in out, "the server lists the agent under the token's SPIFFE ID", out)
        check(token not in agent.text(), "the token is not in the agent's log")
        agent.stop()
        agent = None
        # Malformed: refused before anything else, named, not echoed.
        bad = "bad token\tvalue"
        d = subprocess.run(agent_args(os.path.join(tmp, "a2", "api.sock"), os.path.join(tmp, "adata2"), port=port,
                                      token=None), capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, LANYARD_JOIN_TOKEN=bad))
        lines = d.stderr.strip().splitlines()
        check(d.returncode == 2 and len(lines) == 1 and "LANYARD_JOIN_TOKEN" in lines[0],
              "a malformed LANYARD_JOIN_TOKEN: exit 2, one line naming the variable", d.stderr)
        check(bad not in d.stderr and "value" not in d.stderr, "the value is not echoed", d.stderr)
    finally:
        for d in (agent, server):
            if d is not None and d.alive():
                d.stop()


ALL = {"squat": sc_squat, "fakeadmin": sc_fakeadmin, "fakeagent": sc_fakeagent, "planted": sc_planted,
       "symlink": sc_symlink, "joinenv": sc_joinenv}


def main():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        print("skip: needs root and setpriv (another uid is the attacker)")
        sys.exit(77)
    for name in SCENARIOS:
        tmp = tempfile.mkdtemp(prefix=f"lanyard-paths-{name}-")
        print(f"== {name}", flush=True)
        before = len(failures)
        ALL[name](tmp)
        if len(failures) == before:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"{name}: logs in {tmp}", flush=True)
    if failures:
        print(f"{len(failures)} FAILED", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
