#!/usr/bin/python3
"""agent_helper_mode.py: `lanyard-agent api watch -write DIR -pidFile FILE
-signal HUP`, the helper mode for programs that read their certificates from
files (agent/cli.c, agent/cli_helper.h, docs/agent.md), against a real
lanyard-server and lanyard-agent.

    agent_helper_mode.py LANYARD_SERVER LANYARD_AGENT

Scenarios:
  - bad flags: exit 2 and one `Error:` line each, nothing started;
  - an entry with -x509SVIDTTL 20 (rotated every ~5 s); a "reloader" (a small
    process that writes its pid file and records, at each SIGHUP, the files
    it finds); the helper writes svid.0.pem / svid.0.key / bundle.0.pem with
    modes 0644 / 0600 / 0644, no temporary file left, and signals the
    reloader;
  - rotation: the files hold a new certificate (serial changed), `openssl
    verify -CAfile bundle.0.pem -untrusted svid.0.pem` passes on them, the key
    matches, and every SIGHUP found a complete, matching set (the files of an
    update are all in place before the signal);
  - the agent stopped and restarted: the helper stays up, reconnects, and
    keeps the files current (a new serial after the restart, a new SIGHUP);
  - a pid file holding garbage, then a stale pid: a clear error line, no
    signal to anyone, the files still updated;
  - SIGTERM: exit 0.
Prints ok/FAIL per check; exits non-zero on any failure.
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, check, exit_status, finish, free_port, kill_all, one_error_line, poller,  # noqa: E402
                     run)

wait_for = poller(0.1)

SERVER, AGENT = sys.argv[1], sys.argv[2]
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
SVID_ID = f"spiffe://{TD}/helper/web"


# Records, at each SIGHUP, the certificate and key files it finds in DIR; at each SIGUSR1 (the test's
# barrier), a line in RECORD.marks.
RELOADER = r"""
import json, os, signal, sys, time
pid_file, out_dir, record = sys.argv[1], sys.argv[2], sys.argv[3]
def on_hup(signum, frame):
    files = {}
    for n in ("svid.0.pem", "svid.0.key", "bundle.0.pem"):
        try:
            with open(os.path.join(out_dir, n)) as f:
                files[n] = f.read()
        except OSError as e:
            files[n] = "missing: " + str(e)
    with open(record, "a") as f:
        f.write(json.dumps({"t": time.time(), "files": files}) + "\n")
def on_usr1(signum, frame):
    with open(record + ".marks", "a") as f:
        f.write("mark\n")
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGUSR1, on_usr1)
with open(pid_file + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(pid_file + ".tmp", pid_file)
while True:
    time.sleep(0.05)
"""


def server_cli(ctx, *args):
    return run([SERVER, *args, "-socketPath", ctx["server_sock"]])


def agent_healthy(ctx, timeout=30):
    def ok():
        if not ctx["agent"].alive():
            return True
        r = subprocess.run([AGENT, "healthcheck", "-socketPath", ctx["agent_sock"]], capture_output=True,
                           timeout=30)
        return r.returncode == 0
    return wait_for(ok, timeout, 0.2) and ctx["agent"].alive()


def start_agent(ctx, token=None):
    args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(ctx["port"]),
            "-socketPath", ctx["agent_sock"], "-dataDir", ctx["agent_data"], "-trustBundle", ctx["bundle"]]
    if token:
        args += ["-joinToken", token]
    ctx["agent"] = Daemon(args, os.path.join(ctx["tmp"], "agent.log"))
    return agent_healthy(ctx)


def bad_flags(ctx):
    out_dir, pid_file = ctx["out"], ctx["pid_file"]
    cases = [
        (["-write", out_dir, "-pidFile", pid_file, "-signal", "KILL"], "unknown signal"),
        (["-write", out_dir, "-pidFile", pid_file, "-signal", "9"], "unknown signal"),
        (["-write", out_dir, "-pidFile", pid_file, "-signal", "hup"], "unknown signal"),
        (["-write", out_dir, "-signal", "HUP"], "-signal needs -pidFile"),
        (["-pidFile", pid_file], "need -write"),
        (["-signal", "USR1"], "need -write"),
        (["-write", os.path.join(ctx["tmp"], "nonexistent")], "No such file or directory"),
        (["-write", os.path.join(ctx["tmp"], "server.log")], "Not a directory"),
        (["-write", ""], "must not be empty"),
        (["-write", out_dir, "-pidFile", ""], "must not be empty"),
        (["-write", out_dir, "-frobnicate"], "frobnicate"),
        (["-write", out_dir, "extra"], "unexpected argument"),
    ]
    for args, why in cases:
        r = subprocess.run([AGENT, "api", "watch", *args, "-socketPath", ctx["agent_sock"]], capture_output=True,
                           text=True, timeout=30)
        check(r.returncode == 2 and one_error_line(r.stderr) and why in r.stderr,
              f"api watch {' '.join(args)}: exit 2, one line naming the problem", f"rc={r.returncode} {r.stderr!r}")
    check(not os.listdir(out_dir), "bad flags: nothing written")


def read_files(out_dir):
    try:
        with open(os.path.join(out_dir, "svid.0.pem"), "rb") as f:
            chain = f.read()
        with open(os.path.join(out_dir, "svid.0.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(out_dir, "bundle.0.pem"), "rb") as f:
            bundle = f.read()
    except OSError:
        return None
    return chain, key, bundle


def serial_now(out_dir):
    f = read_files(out_dir)
    if f is None:
        return None
    return x509.load_pem_x509_certificate(f[0]).serial_number


def key_matches(chain_pem, key_pem):
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except ValueError:
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    return (leaf.public_key().public_bytes(serialization.Encoding.DER, pub) ==
            key.public_key().public_bytes(serialization.Encoding.DER, pub))


def openssl_verify(out_dir):
    chain = os.path.join(out_dir, "svid.0.pem")
    r = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(out_dir, "bundle.0.pem"), "-untrusted", chain,
                        chain], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr


def hups(record):
    try:
        with open(record) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def reloader_barrier(reloader, record):
    """True once the reloader has handled a SIGUSR1 sent now. A SIGHUP sent to it before is handled first
    (the kernel delivers, and Python runs handlers, lowest signal number first), so a SIGHUP the helper
    sent before it logged its decision is in `record` by then: "no new SIGHUP" after the barrier means
    none was sent, where a sleep would only mean none recorded yet."""
    def marks():
        try:
            with open(record + ".marks") as f:
                return f.read().count("mark")
        except OSError:
            return 0
    n = marks()
    os.kill(reloader.pid, signal.SIGUSR1)
    return wait_for(lambda: marks() > n, 10)


def files_checks(out_dir, label):
    modes = {"svid.0.pem": 0o644, "svid.0.key": 0o600, "bundle.0.pem": 0o644}
    for name, mode in modes.items():
        p = os.path.join(out_dir, name)
        got = stat.S_IMODE(os.stat(p).st_mode) if os.path.exists(p) else None
        check(got == mode, f"{label}: {name} mode {oct(mode)}", f"got {oct(got) if got is not None else 'none'}")
    extra = sorted(set(os.listdir(out_dir)) - set(modes))
    check(not extra, f"{label}: no other file in the directory (no temporary left)", str(extra))
    f = read_files(out_dir)
    check(f is not None and key_matches(f[0], f[1]), f"{label}: the key matches the certificate")
    ok, detail = openssl_verify(out_dir)
    check(ok, f"{label}: openssl verify -CAfile bundle.0.pem -untrusted svid.0.pem passes", detail)
    leaf = x509.load_pem_x509_certificate(f[0]) if f else None
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) if leaf else []
    check(uris == [SVID_ID], f"{label}: the certificate is the entry's SVID", str(uris))


def hups_consistent(record):
    """Every SIGHUP found a complete set whose key matches its certificate."""
    bad = []
    for i, h in enumerate(hups(record)):
        fl = h["files"]
        if any(v.startswith("missing") for v in fl.values()) or \
                not key_matches(fl["svid.0.pem"].encode(), fl["svid.0.key"].encode()):
            bad.append(i)
    return bad


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-helper-")
    ctx = {"tmp": tmp, "port": free_port(), "server_sock": os.path.join(tmp, "server", "api.sock"),
           "agent_sock": os.path.join(tmp, "agent", "api.sock"), "agent_data": os.path.join(tmp, "agent-data"),
           "bundle": os.path.join(tmp, "bootstrap.pem"), "out": os.path.join(tmp, "out"),
           "pid_file": os.path.join(tmp, "reloader.pid"), "agent": None}
    os.makedirs(ctx["out"])
    record = os.path.join(tmp, "hups.jsonl")
    server = helper = reloader = None
    try:
        server = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort",
                         str(ctx["port"]), "-socketPath", ctx["server_sock"], "-dataDir",
                         os.path.join(tmp, "server-data")], os.path.join(tmp, "server.log"))
        up = wait_for(lambda: not server.alive() or server_cli(ctx, "healthcheck")[0] == 0, 30, 0.2)
        if not check(up and server.alive(), "server starts", server.text()[-2000:]):
            return
        bad_flags(ctx)
        rc, out, err = server_cli(ctx, "bundle", "show")
        with open(ctx["bundle"], "w") as f:
            f.write(out)
        rc, out, err = server_cli(ctx, "token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, "token generate", err):
            return
        if not check(start_agent(ctx, m.group(1)), "agent starts", ctx["agent"].text()[-2000:]):
            return
        rc, out, err = server_cli(ctx, "entry", "create", "-spiffeID", SVID_ID, "-parentID", AGENT_ID,
                                  "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", "20")
        check(rc == 0, "entry create -x509SVIDTTL 20", err)

        reloader = subprocess.Popen(["/usr/bin/python3", "-c", RELOADER, ctx["pid_file"], ctx["out"], record])
        check(wait_for(lambda: os.path.exists(ctx["pid_file"]), 10), "reloader wrote its pid file")
        helper = Daemon([AGENT, "api", "watch", "-write", ctx["out"], "-pidFile", ctx["pid_file"], "-signal", "HUP",
                         "-socketPath", ctx["agent_sock"]], os.path.join(tmp, "helper.out"),
                        err_path=os.path.join(tmp, "helper.err"))

        # First update.
        first = wait_for(lambda: serial_now(ctx["out"]), 30)
        check(first is not None, "helper wrote svid.0.pem, svid.0.key, bundle.0.pem", helper.errors()[-2000:])
        if first is None:
            return
        check(wait_for(lambda: len(hups(record)) >= 1, 10), "the reloader got SIGHUP after the first update",
              helper.text()[-1000:] + helper.errors()[-1000:])
        files_checks(ctx["out"], "first update")
        check(re.search(rf"Sent SIGHUP to process {reloader.pid} \(pid file ", helper.text()) is not None,
              "helper says whom it signalled", helper.text()[-500:])

        # Rotation.
        n_hups = len(hups(record))
        second = wait_for(lambda: (serial_now(ctx["out"]) or first) != first and serial_now(ctx["out"]), 40)
        check(bool(second), "rotation: svid.0.pem holds a new certificate (serial changed)")
        check(wait_for(lambda: len(hups(record)) > n_hups, 10), "rotation: a new SIGHUP arrived")
        files_checks(ctx["out"], "after rotation")
        bad = hups_consistent(record)
        check(not bad, f"each of {len(hups(record))} SIGHUPs found a complete, matching set of files", str(bad))

        # The agent restarted: the helper stays and reconnects.
        rc = ctx["agent"].stop(signal.SIGTERM)
        check(rc == 0, "agent stopped (SIGTERM)")
        time.sleep(2.0)
        check(helper.alive(), "helper still running while the agent is down", helper.errors()[-1000:])
        check("reconnecting in" in helper.errors(), "helper reports that it reconnects", helper.errors()[-1000:])
        received_before = helper.text().count("Received ")
        check(start_agent(ctx), "agent restarted (no token: its state persisted)", ctx["agent"].text()[-2000:])
        check(wait_for(lambda: helper.text().count("Received ") > received_before, 30),
              "helper reconnected: a response after the restart", helper.errors()[-1000:])
        cur = serial_now(ctx["out"])
        n_hups = len(hups(record))
        third = wait_for(lambda: serial_now(ctx["out"]) not in (cur, None) and serial_now(ctx["out"]), 40)
        check(bool(third), "after the restart: the files are updated again (new serial)")
        check(wait_for(lambda: len(hups(record)) > n_hups, 10), "after the restart: a new SIGHUP arrived")
        files_checks(ctx["out"], "after the agent's restart")
        check(helper.alive(), "helper still running")

        # Garbage in the pid file: a clear error, no signal, files still written.
        with open(ctx["pid_file"], "w") as f:
            f.write(f"{reloader.pid} garbage\n")
        n_hups = len(hups(record))
        cur = serial_now(ctx["out"])
        nxt = wait_for(lambda: serial_now(ctx["out"]) not in (cur, None) and serial_now(ctx["out"]), 40)
        check(bool(nxt), "pid file with garbage: files still updated")
        check(wait_for(lambda: "not a digit" in helper.errors(), 10),
              "pid file with garbage: a clear error line", helper.errors()[-600:])
        line = [ln for ln in helper.errors().splitlines() if "not a digit" in ln]
        check(bool(line) and line[0].startswith("Error: api watch: no signal sent: ") and ctx["pid_file"] in line[0],
              "the error line names the pid file and says nothing was sent", str(line[:1]))
        check(reloader_barrier(reloader, record) and len(hups(record)) == n_hups,
              "pid file with garbage: no signal sent (a SIGUSR1 sent after the error line was handled first)")

        # A stale pid (a process that has exited): an error, no signal.
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        with open(ctx["pid_file"], "w") as f:
            f.write(f"{dead.pid}\n")
        cur = serial_now(ctx["out"])
        nxt = wait_for(lambda: serial_now(ctx["out"]) not in (cur, None) and serial_now(ctx["out"]), 40)
        check(bool(nxt) and wait_for(lambda: f"no process {dead.pid}" in helper.errors(), 10),
              "stale pid file: files updated, error names the missing process", helper.errors()[-600:])
        check(reloader_barrier(reloader, record) and len(hups(record)) == n_hups and reloader.poll() is None,
              "stale pid file: no signal to the reloader (a SIGUSR1 sent after the error line was handled first)")

        # The pid file fixed: signals resume.
        with open(ctx["pid_file"], "w") as f:
            f.write(f"{reloader.pid}\n")
        check(wait_for(lambda: len(hups(record)) > n_hups, 40), "pid file fixed: SIGHUPs resume")
        check(not hups_consistent(record), "every SIGHUP found a complete, matching set of files")

        rc = helper.stop(signal.SIGTERM)
        check(rc == 0, "helper: SIGTERM -> exit 0", helper.errors()[-500:])
        check("Stopped by a signal" in helper.text(), "helper says it stopped on a signal")
        check(not [n for n in os.listdir(ctx["out"]) if n.startswith(".")], "no temporary file left behind")
        with open(ctx["out"] + "/svid.0.key", "rb") as f:
            key_pem = f.read()
        check(key_pem.decode() not in helper.text() + helper.errors(), "the key is never printed")
        # SIGINT ends it as well.
        h2 = Daemon([AGENT, "api", "watch", "-write", ctx["out"], "-socketPath", ctx["agent_sock"]],
                    os.path.join(tmp, "helper2.out"), err_path=os.path.join(tmp, "helper2.err"))
        wait_for(lambda: "Received " in h2.text(), 20)
        check(h2.stop(signal.SIGINT) == 0, "helper without -pidFile: SIGINT -> exit 0", h2.errors()[-500:])
    finally:
        kill_all(helper, ctx.get("agent"), server)
        if reloader is not None and reloader.poll() is None:
            reloader.kill()
            reloader.wait()
        finish(tmp)
    sys.exit(exit_status())


if __name__ == "__main__":
    main()
    sys.exit(exit_status())  # also after an early return from main() on a failed check
