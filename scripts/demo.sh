#!/usr/bin/env bash
# The README's first command: installs what is needed, builds Lanyard, and
# runs a demo deployment on this machine: lanyard-server (SQLite in a
# temporary data directory), one lanyard-agent enrolled with a join token,
# a registration entry for the current user, and a workload fetching its
# X.509-SVID over the Workload API socket, checked with `openssl verify`;
# then the two example programs (examples/, on liblanyard-workload), each
# registered by its own binary's path, authenticate each other over mTLS
# with their SVIDs and say whom they talk to, and a client expecting
# another server is refused.
# Everything runs on 127.0.0.1 in a temporary directory, and is stopped at
# the end (LANYARD_DEMO_KEEP=1 leaves it running).
# LANYARD_DEMO_BINARIES=<build dir> skips installing and building and runs
# the demo with that build's programs: the test suite does (integration.demo),
# so the README's first command is checked on every CI run.
# LANYARD_DEMO_PREFIX=<prefix> runs it on installed programs instead
# (<prefix>/sbin/lanyard-server, <prefix>/bin/lanyard-agent, the examples in
# <prefix>/libexec/lanyard): the Debian packages' test does, with /usr.
# LANYARD_DEMO_EXAMPLES=<dir> takes the two example programs from <dir>
# (integration.install builds them out of tree against the installed library).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
td=example.org

say() { printf '\n==> %s\n' "$*"; }

if [ -n "${LANYARD_DEMO_PREFIX:-}" ]; then
  say "using the programs installed in $LANYARD_DEMO_PREFIX"
elif [ -n "${LANYARD_DEMO_BINARIES:-}" ]; then
  build=$LANYARD_DEMO_BINARIES
  say "using the programs built in $build"
else
  build=${LANYARD_DEMO_BUILD:-$top/build-demo}
  say "installing dependencies (Debian packages)"
  LANYARD_NO_PEERS=1 bash "$top/scripts/install-deps.sh"   # the demo needs no interop peers

  say "building into $build"
  # The programs only: the tests are the second command's job.
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" >/dev/null
fi
if [ -n "${LANYARD_DEMO_PREFIX:-}" ]; then
  server_bin=$LANYARD_DEMO_PREFIX/sbin/lanyard-server
  agent_bin=$LANYARD_DEMO_PREFIX/bin/lanyard-agent
  examples=$LANYARD_DEMO_PREFIX/libexec/lanyard
else
  server_bin=$build/server/lanyard-server
  agent_bin=$build/agent/lanyard-agent
  examples=$build/examples
fi
examples=${LANYARD_DEMO_EXAMPLES:-$examples}
agent_real=$(readlink -f "$agent_bin")
ex_server=$(readlink -f "$examples/lanyard-example-server")
ex_client=$(readlink -f "$examples/lanyard-example-client")

work=$(mktemp -d /tmp/lanyard-demo.XXXXXX)
chmod 0755 "$work"
admin_sock=$work/server/private/api.sock
agent_sock=$work/agent/public/api.sock
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
cleanup() {
  if [ "${LANYARD_DEMO_KEEP:-0}" != 1 ]; then
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

say "starting lanyard-server (trust domain $td, SQLite in $work/server-data)"
"$server_bin" run -trustDomain "$td" -bindAddress 127.0.0.1 -serverPort "$port" \
  -socketPath "$admin_sock" -dataDir "$work/server-data" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$server_bin" healthcheck -socketPath "$admin_sock" >/dev/null 2>&1 && break
  sleep 0.1
done
"$server_bin" healthcheck -socketPath "$admin_sock"

say "making a join token and the bootstrap bundle"
token=$("$server_bin" token generate -socketPath "$admin_sock" | awk '/^Token:/ {print $2}')
agent_id="spiffe://$td/lanyard/agent/join_token/$token"
"$server_bin" bundle show -socketPath "$admin_sock" >"$work/bundle.pem"
echo "agent will be $agent_id" | sed "s/$token/<token>/"

# Workloads are told apart by who runs them (unix:uid) and which binary
# they run (unix:path): here the agent's own CLI fetching for this user.
say "registering a workload: spiffe://$td/demo/web for unix:uid:$(id -u) running $agent_real"
"$server_bin" entry create -socketPath "$admin_sock" -spiffeID "spiffe://$td/demo/web" \
  -parentID "$agent_id" -selector "unix:uid:$(id -u)" -selector "unix:path:$agent_real" -x509SVIDTTL 600

say "registering the two example programs, each by its binary (unix:path) and this user"
"$server_bin" entry create -socketPath "$admin_sock" -spiffeID "spiffe://$td/demo/example-server" \
  -parentID "$agent_id" -selector "unix:uid:$(id -u)" -selector "unix:path:$ex_server"
"$server_bin" entry create -socketPath "$admin_sock" -spiffeID "spiffe://$td/demo/example-client" \
  -parentID "$agent_id" -selector "unix:uid:$(id -u)" -selector "unix:path:$ex_client"

say "starting lanyard-agent"
"$agent_bin" run -trustDomain "$td" -serverAddress 127.0.0.1 -serverPort "$port" \
  -socketPath "$agent_sock" -dataDir "$work/agent-data" -joinToken "$token" \
  -trustBundle "$work/bundle.pem" >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$agent_bin" healthcheck -socketPath "$agent_sock" >/dev/null 2>&1 && break
  sleep 0.1
done

say "the workload fetches its X.509-SVID over the Workload API"
mkdir -m 0700 "$work/svid"
export SPIFFE_ENDPOINT_SOCKET=unix://$agent_sock
for _ in $(seq 50); do
  "$agent_bin" api fetch x509 -write "$work/svid" >"$work/fetch.out" 2>&1 && break
  sleep 0.2
done
cat "$work/fetch.out"

say "checking the SVID with openssl"
openssl verify -CAfile "$work/svid/bundle.0.pem" -untrusted "$work/svid/svid.0.pem" "$work/svid/svid.0.pem"
openssl x509 -in "$work/svid/svid.0.pem" -noout -ext subjectAltName

mtls_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "mTLS: lanyard-example-server accepts only spiffe://$td/demo/example-client"
"$ex_server" -port "$mtls_port" -peerID "spiffe://$td/demo/example-client" >"$work/example-server.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q '^listening' "$work/example-server.out" && break
  sleep 0.1
done
cat "$work/example-server.out"

say "mTLS: lanyard-example-client accepts only spiffe://$td/demo/example-server"
"$ex_client" -port "$mtls_port" -peerID "spiffe://$td/demo/example-server"

say "mTLS: a client expecting another server is refused (exit code 1 is the point here)"
if "$ex_client" -port "$mtls_port" -peerID "spiffe://$td/demo/someone-else"; then
  echo "demo: the client accepted a server it should have refused" >&2
  exit 1
fi
sleep 0.2
say "what the example server saw"
cat "$work/example-server.out"

say "done: server, agent, a workload with its SPIFFE identity, and two programs talking mTLS (logs in $work while it runs)"
