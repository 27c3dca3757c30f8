#!/bin/sh
# run.sh: the scale proof of issue 16 on this machine: a throw-away PostgreSQL, one or two
# lanyard-servers on it, and bench_agentsim simulating the agents (real join-token attestation,
# real mTLS, real watch streams and renewals, many agents per process). Prints markdown tables
# on stdout, progress on stderr. Not part of CI. Figures and how to read them:
# docs/benchmarks.md, "Scale: simulated agents".
#
#   bench/ha-scale/run.sh [BUILD_DIR] [--agents N] [--entries N] [--servers 1|2] [--steady S]
#                         [--trials N] [--ramp N] [--resync S] [--x509-ttl S] [--agent-ttl S]
#                         [--share-ca] [--server-bin PATH] [--json FILE] [--keep]
#                         [--log-level debug|info|warn|error]
#
# Defaults: 100 agents, 5,000 entries, one server. BUILD_DIR: a tree with server/lanyard-server
# and bench/bench_agentsim; without it, an optimised tree is configured and built in
# $LANYARD_BENCH_BUILD (default /tmp/lanyard-bench-build). Needs /usr/bin/python3 with grpcio
# and grpcio-tools (as the integration tests) and PostgreSQL's binaries ($LANYARD_PG_BINDIR, else
# the newest /usr/lib/postgresql/N/bin). Every process it starts runs under `nice -n 5`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$(dirname "$here")")
build=""
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
	build=$1
	shift
fi
if [ -z "$build" ]; then
	build=${LANYARD_BENCH_BUILD:-/tmp/lanyard-bench-build}
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	nice cmake --build "$build" --target lanyard-server bench_agentsim -j2 >/dev/null
fi
exec /usr/bin/python3 "$here/run.py" "$build" "$@"
