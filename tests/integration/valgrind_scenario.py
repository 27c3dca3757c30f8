#!/usr/bin/python3
"""valgrind_scenario.py: one full server + agent scenario with both daemons
under valgrind's memcheck.

    valgrind_scenario.py LANYARD_SERVER LANYARD_AGENT SUPPRESSIONS

lanyard-server and lanyard-agent run under
    valgrind --leak-check=full --errors-for-leak-kinds=definite
             --error-exitcode=99 --track-fds=no --suppressions=SUPPRESSIONS
on 127.0.0.1 in a temporary directory, through: join-token attestation, an
entry, a workload (the agent's CLI, natively) fetching its X.509-SVID and a
JWT-SVID, the entry deleted (the fetch then refused), SIGTERM to both.
Fails on any memcheck error (invalid read or write, use of uninitialised
memory, bad free, ...) or definite leak: a daemon exiting 99 or an
"ERROR SUMMARY" other than 0 in its valgrind log. Valgrind makes the
daemons 20-50 times slower: every wait is generous.
Prints ok/FAIL per check; exits 1 on any failure (logs are kept).
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
import harness  # noqa: E402
from harness import check, exit_status, finish, free_port, poller  # noqa: E402

wait_for = poller(1.0)

SERVER, AGENT, SUPP = sys.argv[1], sys.argv[2], sys.argv[3]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
WORKLOAD_ID = f"spiffe://{TD}/workload/vg"
SLOW = 240  # seconds: start-up, propagation and shutdown under valgrind


def tail(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Daemon(harness.Daemon):
    """A daemon under memcheck: its own output in <name>.log, valgrind's in <name>.vg."""

    def __init__(self, tmp, name, args):
        self.name = name
        self.vg_path = os.path.join(tmp, name + ".vg")
        super().__init__(["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                          "--track-fds=no", "--num-callers=30", f"--suppressions={SUPP}", f"--log-file={self.vg_path}",
                          *args], os.path.join(tmp, name + ".log"))

    def stop(self, sig=signal.SIGTERM, timeout=SLOW):
        return super().stop(sig, timeout)

    def memcheck(self, rc):
        """Checks the exit status and valgrind's summary; prints the first errors on failure."""
        text = tail(self.vg_path, 10 ** 7)
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        errors = int(m.group(1)) if m else -1
        check(rc == 0, f"{self.name}: SIGTERM -> exit 0 under valgrind (99: memcheck errors)", f"exit {rc}")
        check(errors == 0, f"{self.name}: valgrind ERROR SUMMARY 0 (invalid accesses, definite leaks)",
              f"{errors} errors; {self.vg_path}:\n" + "\n".join(
                  ln for ln in text.splitlines() if not ln.startswith("--"))[:8000])
        lost = re.search(r"definitely lost: ([\d,]+) bytes", text)
        check(lost is None or lost.group(1) == "0", f"{self.name}: nothing definitely lost",
              lost.group(0) if lost else "")


def run(cmd, timeout=120):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired:
        return -1, "", "timeout"


def main():
    # valgrind is installed by scripts/install-deps.sh: missing, it is a failure, not a skip.
    if not check(shutil.which("valgrind") is not None, "valgrind is installed (scripts/install-deps.sh)"):
        sys.exit(exit_status())
    tmp = tempfile.mkdtemp(prefix="lanyard-valgrind-")
    server_sock = os.path.join(tmp, "server", "api.sock")
    agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
    bundle_pem = os.path.join(tmp, "bootstrap.pem")
    port = free_port()
    server = agent = None

    def scli(*args):
        return run([SERVER, *args, "-socketPath", server_sock])

    def acli(*args):
        return run([AGENT, *args, "-socketPath", agent_sock, "-timeout", "60"])

    try:
        t0 = time.time()
        server = Daemon(tmp, "server", [SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1",
                                        "-serverPort", str(port), "-socketPath", server_sock,
                                        "-dataDir", os.path.join(tmp, "server-data"), "-logLevel", "debug"])
        ok = wait_for(lambda: not server.alive() or scli("healthcheck")[0] == 0, SLOW) and server.alive()
        if not check(ok, f"server starts under valgrind ({time.time() - t0:.0f} s)", tail(server.log_path)):
            return
        rc, out, err = scli("bundle", "show")
        check(rc == 0 and "BEGIN CERTIFICATE" in out, "bundle show", err)
        with open(bundle_pem, "w") as f:
            f.write(out)
        rc, out, err = scli("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(rc == 0 and m is not None, "token generate", err):
            return

        t0 = time.time()
        agent = Daemon(tmp, "agent", [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1",
                                      "-serverPort", str(port), "-socketPath", agent_sock,
                                      "-dataDir", os.path.join(tmp, "agent-data"), "-logLevel", "debug",
                                      "-joinToken", m.group(1), "-trustBundle", bundle_pem])
        ok = wait_for(lambda: not agent.alive() or run([AGENT, "healthcheck", "-socketPath", agent_sock])[0] == 0,
                      SLOW) and agent.alive()
        if not check(ok, f"agent attests with the join token under valgrind ({time.time() - t0:.0f} s)",
                     tail(agent.log_path)):
            return
        rc, out, err = scli("agent", "list")
        check(rc == 0 and AGENT_ID in out, "the server lists the agent", out + err)

        rc, out, err = scli("entry", "create", "-spiffeID", WORKLOAD_ID, "-parentID", AGENT_ID,
                            "-selector", f"unix:uid:{os.getuid()}")
        m = re.search(r"Entry ID\s*:\s*(\S+)", out)
        if not check(rc == 0 and m is not None, "entry create", out + err):
            return
        entry_id = m.group(1)

        t0 = time.time()
        res = wait_for(lambda: (lambda r: r if r[0] == 0 and WORKLOAD_ID in r[1] else None)(
            acli("api", "fetch", "x509")), SLOW, step=2.0)
        check(res is not None, f"api fetch x509: the workload's X.509-SVID ({time.time() - t0:.0f} s)",
              tail(agent.log_path))
        rc, out, err = acli("api", "fetch", "jwt", "-audience", "x")
        check(rc == 0 and WORKLOAD_ID in out and re.search(r"token\(.*\):\s+\S+\.\S+\.\S+", out) is not None,
              "api fetch jwt -audience x: a JWT-SVID", out + err)

        rc, out, err = scli("entry", "delete", "-entryID", entry_id)
        check(rc == 0, "entry delete", out + err)
        t0 = time.time()
        gone = wait_for(lambda: (lambda r: r if r[0] != 0 and "PERMISSION_DENIED" in r[2] else None)(
            acli("api", "fetch", "x509")), SLOW, step=2.0)
        check(gone is not None, f"after the delete the workload is refused: PERMISSION_DENIED "
              f"({time.time() - t0:.0f} s)", tail(agent.log_path))
    finally:
        # Agent first (it talks to the server), then the server; each gets SLOW seconds to exit.
        for d in (agent, server):
            if d is not None:
                was_alive = d.alive()
                rc = d.stop(signal.SIGTERM)
                check(was_alive, f"{d.name} still running at the end", tail(d.log_path))
                d.memcheck(rc)
        finish(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
