#!/usr/bin/python3
"""rust_spiffe.py: the Rust crate `spiffe` (crates.io, pinned in Cargo.toml
and Cargo.lock) against a real lanyard-server and lanyard-agent (issue 12).

    rust_spiffe.py LANYARD_SERVER LANYARD_AGENT

The probe (src/main.rs) is built by scripts/peers/rust.sh into
${LANYARD_CACHE:-$HOME/.cache/lanyard}/rust-target; here cargo only checks
it is up to date (--offline: nothing is downloaded during the test). No
cargo, or a probe never built: exit 77 (ctest SKIP_RETURN_CODE) with the
reason. The probe is registered by unix:path and checks the X.509-SVID, the
X.509 bundles, the first message of the X.509 and JWT bundle streams, a JWT-SVID for two audiences validated by the agent and
locally, and a third audience refused (its own ok/FAIL lines).
"""
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration"))
from harness import Daemon, check, failures, finish, free_port, poller, run  # noqa: E402

wait_for = poller(0.1)
SKIP = 77
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
RUST_ID = f"spiffe://{TD}/rust/probe"


def probe_or_skip():
    cache = os.environ.get("LANYARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lanyard")
    target = os.path.join(cache, "rust-target")
    exe = os.path.join(target, "debug", "lanyard-interop-rust")
    cargo = shutil.which("cargo")
    rustup_cargo = os.path.join(os.path.expanduser("~"), ".cargo", "bin", "cargo")
    if cargo is None and os.access(rustup_cargo, os.X_OK):
        cargo = rustup_cargo  # rustup's, when ctest runs without it on PATH
    if cargo is None:
        print("SKIPPED: no cargo on this machine (the Rust crate spiffe needs it)", flush=True)
        sys.exit(SKIP)
    if not os.path.exists(exe):
        print(f"SKIPPED: {exe} not built (run scripts/peers/rust.sh)", flush=True)
        sys.exit(SKIP)
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    rc, out, err = run(["nice", cargo, "build", "--locked", "--offline", "-q", "--manifest-path",
                        os.path.join(HERE, "Cargo.toml")], env=env, timeout=600)
    if not check(rc == 0, "the probe is up to date with its sources (cargo build --locked --offline)", err[-2000:]):
        sys.exit(1)
    return exe


def main():
    server_bin, agent_bin = sys.argv[1:3]
    exe = probe_or_skip()
    tmp = tempfile.mkdtemp(prefix="lanyard-rust-")
    server_sock = os.path.join(tmp, "server", "api.sock")
    agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
    daemons = []

    def srv(*args):
        return run([server_bin, *args, "-socketPath", server_sock])

    try:
        sport = free_port()
        s = Daemon([server_bin, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", server_sock, "-dataDir", os.path.join(tmp, "sdata")],
                   os.path.join(tmp, "server.log"))
        daemons.append(s)
        if not check(wait_for(lambda: not s.alive() or srv("healthcheck")[0] == 0, 30) and s.alive(),
                     "lanyard-server starts", s.text()[-2000:]):
            return
        rc, bundle, err = srv("bundle", "show")
        bundle_pem = os.path.join(tmp, "bootstrap.pem")
        with open(bundle_pem, "w") as f:
            f.write(bundle)
        rc, out, err = srv("token", "generate", "-spiffeID", AGENT_ID)
        m = re.search(r"Token: (\S+)", out)
        if not check(m is not None, "token generate", err):
            return
        a = Daemon([agent_bin, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", agent_sock, "-dataDir", os.path.join(tmp, "adata"), "-joinToken", m.group(1),
                    "-trustBundle", bundle_pem], os.path.join(tmp, "agent.log"))
        daemons.append(a)
        if not check(wait_for(lambda: not a.alive() or run([agent_bin, "healthcheck", "-socketPath", agent_sock])[0]
                              == 0, 30) and a.alive(), "lanyard-agent starts", a.text()[-2000:]):
            return
        rc, out, err = srv("entry", "create", "-spiffeID", RUST_ID, "-parentID", AGENT_ID, "-selector", "unix:uid:0",
                           "-selector", f"unix:path:{os.path.realpath(exe)}")
        check(rc == 0, f"entry create {RUST_ID}", err)
        # The entry reaches the agent's cache asynchronously: retry until the
        # probe gets an identity (PERMISSION_DENIED before that).
        res = wait_for(lambda: (lambda r: r if r[0] == 0 else None)(run([exe, agent_sock, RUST_ID])), 15, step=0.5)
        rc, out, err = res or run([exe, agent_sock, RUST_ID])
        print(out, end="", flush=True)
        check(rc == 0, "the Rust spiffe crate: every check of the probe passed", err[-2000:])
    finally:
        for d in reversed(daemons):
            if d.alive():
                d.stop()
        finish(tmp)


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)", flush=True)
    sys.exit(1 if failures else 0)
