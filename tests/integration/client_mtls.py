#!/usr/bin/python3
"""client_mtls.py: the workload client library (include/lanyard/workload.h)
end to end: a real lanyard-server and lanyard-agent on 127.0.0.1, and the
two example programs talking mTLS with the SVIDs the agent gives them.

    client_mtls.py LANYARD_SERVER LANYARD_AGENT EXAMPLE_SERVER EXAMPLE_CLIENT BUILD_DIR [SANITIZE]

SANITIZE 1: the tree is built with ASan+UBSan (-DLANYARD_SANITIZE=ON), so
the probe programs built against the installed library are too.

Entries tell the two programs apart by `unix:path:<binary>` (plus
`unix:uid:0`). Checks:
  - usage errors exit 2 with one line; an unreachable agent exits 1;
  - server and client authenticate each other and print each other's IDs
    (client by -peerID, by -trustDomain, and through SPIFFE_ENDPOINT_SOCKET);
  - a client expecting another server ID is refused (exit 1, one line), and
    a server expecting another client ID refuses the real client;
  - rotation without restart: the server's entry has -x509SVIDTTL 20; the
    same server process presents a new certificate (another serial) to a
    handshake after the rotation;
  - the agent restarted: the server's watcher reconnects and the same
    process presents the next rotated certificate;
  - a JWT-SVID fetched, the JWT bundles fetched, the token validated by the
    agent (and refused for another audience); a uid with no entry gets
    LANYARD_E_DENIED (through the probe program below);
  - `cmake --install` into a temporary prefix, then a tiny program built
    with `pkg-config --cflags --libs lanyard-workload` (shared, and static
    with --static) fetches its X.509-SVID from the agent.
Prints ok/FAIL per check; exits 1 on any failure, else 77 (a skip, for ctest)
when a case cannot run here (the uid-65534 caller needs root).
"""
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, exit_status, failures, free_port, one_error_line, poller, run, skip  # noqa: E402

wait_for = poller(0.1)

SERVER, AGENT, EX_SERVER, EX_CLIENT, BUILD_DIR = sys.argv[1:6]
SANITIZE = len(sys.argv) > 6 and sys.argv[6].upper() in ("1", "ON", "TRUE")
CC_FLAGS = "-fsanitize=address,undefined" if SANITIZE else ""
TD = "example.org"
AGENT_ID = f"spiffe://{TD}/lanyard/agent/node1"
SERVER_ID = f"spiffe://{TD}/example/server"
CLIENT_ID = f"spiffe://{TD}/example/client"
PROBE_ID = f"spiffe://{TD}/example/probe"


def main():
    tmp = tempfile.mkdtemp(prefix="lanyard-mtls-")
    os.chmod(tmp, 0o755)  # uid 65534 runs a probe from here and reaches the agent's socket
    server_sock = os.path.join(tmp, "server", "api.sock")
    agent_sock = os.path.join(tmp, "agent", "public", "api.sock")
    port = free_port()
    daemons = []

    def srv(*args):
        return run([SERVER, *args, "-socketPath", server_sock])

    try:
        # ---- usage ----
        rc, out, err = run([EX_CLIENT, "-socketPath", agent_sock, "-peerID", SERVER_ID])
        check(rc == 2 and one_error_line(err) and "-port" in err, "client without -port: exit 2, one line", err)
        rc, out, err = run([EX_SERVER, "-port", "1", "-socketPath", agent_sock])
        check(rc == 2 and one_error_line(err), "server without -peerID/-trustDomain: exit 2, one line", err)
        rc, out, err = run([EX_CLIENT, "-port", "1", "-peerID", SERVER_ID, "-socketPath", "tcp://127.0.0.1:1"])
        check(rc == 2 and one_error_line(err) and "unix" in err, "tcp: address refused: exit 2", err)
        rc, out, err = run([EX_CLIENT, "-port", "1", "-peerID", "spiffe://Example.org/x", "-socketPath", agent_sock])
        check(rc == 2 and one_error_line(err), "bad -peerID refused: exit 2", err)
        env_nosock = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
        rc, out, err = run([EX_CLIENT, "-port", "1", "-peerID", SERVER_ID], env=env_nosock)
        check(rc == 2 and one_error_line(err) and "SPIFFE_ENDPOINT_SOCKET" in err,
              "no -socketPath and no SPIFFE_ENDPOINT_SOCKET: exit 2", err)
        rc, out, err = run([EX_CLIENT, "-port", "1", "-peerID", SERVER_ID, "-socketPath", agent_sock,
                            "-timeout", "1"])
        check(rc == 1 and one_error_line(err), "no agent: exit 1, one line", err)

        # ---- server and agent ----
        sport = free_port()
        s = Daemon([SERVER, "run", "-trustDomain", TD, "-bindAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", server_sock, "-dataDir", os.path.join(tmp, "server-data")],
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
        def agent_args(token):
            args = [AGENT, "run", "-trustDomain", TD, "-serverAddress", "127.0.0.1", "-serverPort", str(sport),
                    "-socketPath", agent_sock, "-dataDir", os.path.join(tmp, "agent-data")]
            return args + (["-joinToken", token, "-trustBundle", bundle_pem] if token else [])

        a = Daemon(agent_args(m.group(1)), os.path.join(tmp, "agent.log"))
        daemons.append(a)
        if not check(wait_for(lambda: not a.alive() or run([AGENT, "healthcheck", "-socketPath", agent_sock])[0] == 0,
                              30) and a.alive(), "lanyard-agent starts", a.text()[-2000:]):
            return
        ex_server = os.path.realpath(EX_SERVER)
        ex_client = os.path.realpath(EX_CLIENT)
        for sid, sel, ttl in ((SERVER_ID, f"unix:path:{ex_server}", "20"),
                              (CLIENT_ID, f"unix:path:{ex_client}", None)):
            args = ["entry", "create", "-spiffeID", sid, "-parentID", AGENT_ID, "-selector", "unix:uid:0",
                    "-selector", sel]
            if ttl:
                args += ["-x509SVIDTTL", ttl]
            rc, out, err = srv(*args)
            check(rc == 0, f"entry create {sid}", err)

        # ---- mTLS ----
        srv_env = dict(os.environ, SPIFFE_ENDPOINT_SOCKET="unix://" + agent_sock)
        es = Daemon([EX_SERVER, "-port", str(port), "-peerID", CLIENT_ID], os.path.join(tmp, "ex-server.log"),
                    env=srv_env)
        daemons.append(es)
        check(wait_for(lambda: "listening on" in es.text() or not es.alive(), 30) and es.alive(),
              "example server starts (SPIFFE_ENDPOINT_SOCKET) and listens", es.text()[-2000:])
        check(f"as {SERVER_ID}" in es.text(), "example server holds the server SVID", es.text()[-500:])

        def client(*extra, peer=SERVER_ID):
            args = [EX_CLIENT, "-port", str(port), "-socketPath", agent_sock]
            args += ["-peerID", peer] if peer else []
            return run(args + list(extra))

        rc, out, err = client()
        check(rc == 0 and f"connected to {SERVER_ID} as {CLIENT_ID}" in out, "client: talks to the server ID",
              out + err)
        check(f"answer: hello {CLIENT_ID}, this is {SERVER_ID}" in out, "client: answer names both identities",
              out + err)
        check(wait_for(lambda: f"accepted {CLIENT_ID}" in es.text(), 5), "server: accepted the client ID",
              es.text()[-1000:])
        check("TLSv1.3" in out, "TLS 1.3 negotiated", out)
        m = re.search(r"serial ([0-9A-F]+)", out)
        serial1 = m.group(1) if m else None
        t_first = time.time()
        check(serial1 is not None, "client prints the server certificate serial", out)

        rc, out, err = client(peer=None, *["-trustDomain", TD])
        check(rc == 0 and f"connected to {SERVER_ID}" in out, "client -trustDomain example.org accepts the server",
              out + err)
        rc, out, err = client(peer=None, *["-trustDomain", "other.org"])
        check(rc == 1 and one_error_line(err) and "not a member of trust domain other.org" in err,
              "client -trustDomain other.org refuses the server: exit 1, one line", out + err)

        wrong = f"spiffe://{TD}/example/not-the-server"
        rc, out, err = client(peer=wrong)
        check(rc == 1 and one_error_line(err) and "not authorized" in err and SERVER_ID in err,
              "client expecting another server ID is refused: exit 1, one line", out + err)
        check("connected to" not in out, "refused client printed no connection", out)

        port2 = free_port()
        es2 = Daemon([EX_SERVER, "-port", str(port2), "-peerID", f"spiffe://{TD}/example/someone-else",
                      "-socketPath", agent_sock], os.path.join(tmp, "ex-server2.log"))
        daemons.append(es2)
        wait_for(lambda: "listening on" in es2.text() or not es2.alive(), 30)
        rc, out, err = run([EX_CLIENT, "-port", str(port2), "-socketPath", agent_sock, "-peerID", SERVER_ID])
        check(rc == 1 and one_error_line(err) and "answer:" not in out,
              "server expecting another client ID: the client gets no answer (exit 1, one line)", out + err)
        check(wait_for(lambda: "refused" in es2.text() and "not authorized" in es2.text(), 5)
              and f"accepted {CLIENT_ID}" not in es2.text(),
              "server expecting another client ID refuses the client and says why", es2.text()[-1000:])
        check(es2.alive(), "server goes on after a refused handshake")
        es2.stop()

        # ---- rotation without restart (TTL 20 s: renewed at ~10 s) ----
        pid = es.proc.pid
        serial2 = None
        deadline = time.time() + 40
        while time.time() < deadline:
            rc, out, err = client()
            m = re.search(r"serial ([0-9A-F]+)", out)
            if rc == 0 and m and m.group(1) != serial1:
                serial2 = m.group(1)
                break
            time.sleep(1)
        check(serial2 is not None, "after rotation the server presents a new certificate (serial differs)",
              f"{serial1} -> {serial2}")
        print(f"figure: new server certificate seen {time.time() - t_first:.1f} s after the first handshake",
              flush=True)
        check(es.alive() and es.proc.pid == pid, "the server process was not restarted")
        rc, out, err = client()
        check(rc == 0 and f"answer: hello {CLIENT_ID}, this is {SERVER_ID}" in out,
              "handshake after rotation still authenticates both sides", out + err)

        # ---- the agent restarts: the server's watcher reconnects (backoff) and keeps rotating ----
        a.stop()
        a = Daemon(agent_args(None), os.path.join(tmp, "agent.log"))
        daemons.append(a)
        check(wait_for(lambda: not a.alive() or run([AGENT, "healthcheck", "-socketPath", agent_sock])[0] == 0,
                       30) and a.alive(), "lanyard-agent restarts without a token", a.text()[-2000:])
        serial3 = None
        deadline = time.time() + 45
        while time.time() < deadline:
            rc, out, err = client()
            m = re.search(r"serial ([0-9A-F]+)", out)
            if rc == 0 and m and m.group(1) not in (serial1, serial2):
                serial3 = m.group(1)
                break
            time.sleep(1)
        check(serial3 is not None and es.alive() and es.proc.pid == pid,
              "after the agent's restart the same server process takes the next rotation", f"{serial2} -> {serial3}")

        # ---- install + pkg-config ----
        pkg_checks(tmp, agent_sock, srv)
    finally:
        for d in reversed(daemons):
            d.stop()
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}")


PROBE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lanyard/workload.h>

static int
fail(const char *what, const struct lanyard_error *err)
{
	fprintf(stderr, "Error: %s: %s: %s\n", what, lanyard_status_str(err->code), err->msg);
	return 1;
}

int
main(int argc, char **argv)
{
	struct lanyard_error err;
	lanyard_client *c = NULL;
	lanyard_x509_context *ctx = NULL;
	lanyard_jwt_svids *js = NULL;
	lanyard_jwt_bundles *jb = NULL;
	const char *aud[1] = { "probe-audience" };
	char id[LANYARD_SPIFFE_ID_MAX + 1];
	char *claims = NULL;
	int rc = 1;

	if (argc != 2)
		return 2;
	if (lanyard_client_new(argv[1], &c, &err) != LANYARD_OK) {
		rc = fail("client", &err);
		goto out;
	}
	if (lanyard_fetch_x509_context(c, &ctx, &err) != LANYARD_OK) {
		rc = fail("x509", &err);
		goto out;
	}
	printf("version %s id %s bundles %zu\n", lanyard_version(),
	    lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, 0)), lanyard_x509_context_bundle_count(ctx));
	if (lanyard_fetch_jwt_svids(c, aud, 1, NULL, &js, &err) != LANYARD_OK) {
		rc = fail("jwt", &err);
		goto out;
	}
	if (lanyard_fetch_jwt_bundles(c, &jb, &err) != LANYARD_OK) {
		rc = fail("jwt bundles", &err);
		goto out;
	}
	if (lanyard_validate_jwt_svid(c, lanyard_jwt_svids_token(js, 0), "probe-audience", id, &claims, &err) !=
	    LANYARD_OK) {
		rc = fail("validate", &err);
		goto out;
	}
	printf("jwt %s bundles %zu (%s) validated %s claims-have-aud %d\n", lanyard_jwt_svids_id(js, 0),
	    lanyard_jwt_bundles_count(jb), lanyard_jwt_bundles_td(jb, 0), id, strstr(claims, "probe-audience") != NULL);
	if (lanyard_validate_jwt_svid(c, lanyard_jwt_svids_token(js, 0), "other-audience", id, NULL, &err) ==
	    LANYARD_OK) {
		fprintf(stderr, "Error: a token for another audience was accepted\n");
		goto out;
	}
	printf("wrong audience refused: %s\n", lanyard_status_str(err.code));
	rc = 0;
out:
	free(claims);
	lanyard_jwt_svids_free(js);
	lanyard_jwt_bundles_free(jb);
	lanyard_x509_context_free(ctx);
	lanyard_client_free(c);
	return rc;
}
"""


def pkg_checks(tmp, agent_sock, srv):
    prefix = os.path.join(tmp, "prefix")
    rc, out, err = run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], timeout=300)
    check(rc == 0, "cmake --install into a temporary prefix", err[-2000:])
    for rel in ("include/lanyard/workload.h", "lib/pkgconfig/lanyard-workload.pc", "lib/liblanyard-workload.so",
                "lib/liblanyard-workload.a"):
        check(os.path.exists(os.path.join(prefix, rel)), f"installed {rel}")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    rc, flags, err = run(["pkg-config", "--cflags", "--libs", "lanyard-workload"], env=env)
    check(rc == 0 and "-llanyard-workload" in flags and
          os.path.normpath(re.search(r"-I(\S+)", flags).group(1)) == os.path.join(prefix, "include"),
          "pkg-config --cflags --libs lanyard-workload", flags + err)
    src = os.path.join(tmp, "probe.c")
    with open(src, "w") as f:
        f.write(PROBE_C)
    exe = os.path.join(tmp, "probe")
    rc, out, err = run(["sh", "-c", f"cc -Wall -Werror {CC_FLAGS} -o {exe} {src} $(pkg-config --cflags --libs lanyard-workload)"],
                       env=env)
    check(rc == 0, "a program builds with pkg-config's flags (shared)", err)
    rc, sflags, err = run(["pkg-config", "--static", "--libs", "lanyard-workload"], env=env)
    exe_s = os.path.join(tmp, "probe-static")
    libdir = os.path.join(prefix, "lib")
    static_flags = sflags.replace("-llanyard-workload", os.path.join(libdir, "liblanyard-workload.a"))
    rc2, out, err2 = run(["sh", "-c", f"cc -Wall -Werror {CC_FLAGS} -o {exe_s} {src} "
                          f"$(pkg-config --cflags lanyard-workload) {static_flags}"], env=env)
    check(rc == 0 and rc2 == 0, "a program builds against liblanyard-workload.a (pkg-config --static)",
          err + err2)
    if not (os.path.exists(exe) and os.path.exists(exe_s)):
        return
    for name, path in (("shared", exe), ("static", exe_s)):
        rc, out, err = srv("entry", "create", "-spiffeID", f"{PROBE_ID}-{name}", "-parentID", AGENT_ID,
                           "-selector", "unix:uid:0", "-selector", f"unix:path:{os.path.realpath(path)}")
        check(rc == 0, f"entry for the {name} probe", err)
    time.sleep(0.5)
    rc, out, err = run(["sh", "-c", f"LD_LIBRARY_PATH={libdir} {exe} unix://{agent_sock}"])
    if rc != 0:
        rc, out, err = wait_for(lambda: (lambda r: r if r[0] == 0 else None)(
            run(["sh", "-c", f"LD_LIBRARY_PATH={libdir} {exe} unix://{agent_sock}"])), 10) or (rc, out, err)
    check(rc == 0 and f"id {PROBE_ID}-shared" in out and "version 0.1.0" in out,
          "the installed shared library fetches the probe's X.509-SVID", out + err)
    rc, out, err = run([exe_s, agent_sock])
    check(rc == 0 and f"id {PROBE_ID}-static" in out, "the static build fetches its X.509-SVID", out + err)
    check(f"jwt {PROBE_ID}-static bundles 1 (spiffe://{TD}) validated {PROBE_ID}-static claims-have-aud 1" in out,
          "JWT-SVID fetched, JWT bundles fetched, token validated by the agent with its claims", out + err)
    check("wrong audience refused: rpc error" in out, "a token for another audience is refused (INVALID_ARGUMENT)",
          out + err)
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        skip("a uid with no entry", "needs root and setpriv (a caller of uid 65534)")
    else:
        rc, out, err = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe_s, agent_sock])
        check(rc == 1 and "x509: permission denied" in err, "a uid with no entry gets LANYARD_E_DENIED", out + err)
    rc, out, err = run(["sh", "-c", f"ldd {exe_s} | grep -c lanyard-workload || true"])
    check(out.strip() == "0", "the static build does not load liblanyard-workload.so", out)


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(exit_status())
