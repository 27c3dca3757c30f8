#!/usr/bin/python3
"""sd_notify.py: both daemons speak systemd's notify protocol (Type=notify,
lib/sdnotify.h) to a datagram socket of ours, as systemd would listen.

    sd_notify.py LANYARD_SERVER LANYARD_AGENT

Checks:
  - the server (NOTIFY_SOCKET an abstract name, '@...') sends READY=1 and,
    at that moment, its admin socket answers healthcheck at the first try;
  - an agent whose server cannot be reached (no cached SVIDs) listens but
    sends no READY=1: it does not serve yet;
  - an agent with a join token (NOTIFY_SOCKET a path) sends READY=1, and at
    that moment a workload's `api fetch x509` gets its SVID at the first try;
  - SIGTERM: each sends STOPPING=1 and exits 0.
Prints ok/FAIL per check; exits 1 on any failure.
"""
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, failures, finish, free_port, run, wait_for  # noqa: E402

TD = "example.org"


def listener(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    return s


def wait_message(sock, want, timeout):
    """Datagrams until one holds the line `want`; returns all seen, or None on timeout."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        seen.append(msg)
        if want in msg.split("\n"):
            return seen
    return None


def main():
    server_bin, agent_bin = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="lanyard-sdnotify-")
    os.chmod(tmp, 0o755)
    admin = os.path.join(tmp, "server", "private", "api.sock")
    port = free_port()
    abstract = f"\0lanyard-it-sdnotify-{os.getpid()}"
    srv_notify = listener(abstract)
    env = dict(os.environ, NOTIFY_SOCKET="@" + abstract[1:])
    server = Daemon([server_bin, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(port),
                     "-socketPath", admin, "-dataDir", os.path.join(tmp, "server-data")],
                    os.path.join(tmp, "server.log"), env=env)
    seen = wait_message(srv_notify, "READY=1", 60)
    check(seen is not None, "server: READY=1 on an abstract NOTIFY_SOCKET", server.text()[-500:])
    rc, out, err = run([server_bin, "healthcheck", "-socketPath", admin])
    check(rc == 0, "server: healthy at the moment it said READY=1", out + err)

    # An agent that cannot reach its server: the socket listens, nothing is served, no READY=1.
    lonely_notify = os.path.join(tmp, "lonely.notify")
    lonely_sock = listener(lonely_notify)
    lonely_api = os.path.join(tmp, "lonely", "public", "api.sock")
    lonely = Daemon([agent_bin, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1",
                     "-serverPort", str(free_port()), "-socketPath", lonely_api,
                     "-dataDir", os.path.join(tmp, "lonely-data"), "-joinToken", "nope", "-insecureBootstrap"],
                    os.path.join(tmp, "lonely.log"), env=dict(os.environ, NOTIFY_SOCKET=lonely_notify))
    listening = wait_for(lambda: os.path.exists(lonely_api), 30)
    seen = wait_message(lonely_sock, "READY=1", 3)
    check(listening and seen is None, "agent without its server: socket listens, no READY=1 in 3 s",
          f"listening={listening} seen={seen}")
    rc = lonely.stop()
    seen = wait_message(lonely_sock, "STOPPING=1", 5)
    check(rc == 0 and seen is not None, "agent stopped before ready: STOPPING=1, exit 0", f"rc={rc}")

    rc, out, err = run([server_bin, "token", "generate", "-socketPath", admin])
    token = out.split("Token:")[1].split()[0] if rc == 0 else ""
    agent_id = f"spiffe://{TD}/lanyard/agent/join_token/{token}"
    with open(os.path.join(tmp, "bundle.pem"), "w") as f:
        f.write(run([server_bin, "bundle", "show", "-socketPath", admin])[1])
    rc, out, err = run([server_bin, "entry", "create", "-socketPath", admin, "-spiffeID", f"spiffe://{TD}/sdnotify",
                        "-parentID", agent_id, "-selector", f"unix:uid:{os.getuid()}",
                        "-selector", f"unix:path:{os.path.realpath(agent_bin)}"])
    check(rc == 0, "entry for the fetching workload", err)

    agent_notify = os.path.join(tmp, "agent.notify")
    agent_sock = listener(agent_notify)
    api = os.path.join(tmp, "agent", "public", "api.sock")
    agent = Daemon([agent_bin, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(port),
                    "-socketPath", api, "-dataDir", os.path.join(tmp, "agent-data"), "-joinToken", token,
                    "-trustBundle", os.path.join(tmp, "bundle.pem")],
                   os.path.join(tmp, "agent.log"), env=dict(os.environ, NOTIFY_SOCKET=agent_notify))
    seen = wait_message(agent_sock, "READY=1", 60)
    check(seen is not None, "agent: READY=1 on a path NOTIFY_SOCKET", agent.text()[-800:])
    rc, out, err = run([agent_bin, "api", "fetch", "x509", "-socketPath", api])
    check(rc == 0 and f"spiffe://{TD}/sdnotify" in out, "agent: a workload gets its SVID at the first try after READY=1",
          out + err)

    rc = agent.stop()
    check(rc == 0 and wait_message(agent_sock, "STOPPING=1", 5) is not None, "agent: SIGTERM -> STOPPING=1, exit 0",
          f"rc={rc}")
    rc = server.stop()
    check(rc == 0 and wait_message(srv_notify, "STOPPING=1", 5) is not None, "server: SIGTERM -> STOPPING=1, exit 0",
          f"rc={rc}")
    finish(tmp)


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)
