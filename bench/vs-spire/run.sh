#!/bin/sh
# run.sh: Lanyard and SPIRE v1.13.3 side by side, the same scenarios, the same machine, one run
# (issue 13). Prints markdown tables on stdout, progress on stderr. Not part of CI.
#
#   bench/vs-spire/run.sh [BUILD_DIR] [--quick] [--only lanyard|spire]
#   bench/vs-spire/run.sh [BUILD_DIR] --only-row paced [--only lanyard|spire] [--rounds N] [--seconds S]
#
# --only-row paced: only row 3's paced measure (100 open connections, 1,000 calls/s, S seconds,
# default 5), both systems up at once with 1 + 1,000 SVIDs on each agent, N rounds (default 3)
# alternating Lanyard and SPIRE (--only: that one alone, e.g. to compare two builds run after run);
# p50/p99/CPU per call, the agent's run-queue wait and the load average per round (about a minute
# for 3 rounds of 5 s); then one client's 200 fetches on a new and on an open connection. VS_SPIRE_PERF=DIR adds one pass per system under
# `perf record -e cpu-clock -g` on its agent (the paced row, then 200 calls on new connections).
# --quick: 1,000 entries, fewer trials (about 7 minutes, most of it SPIRE's 5 s sync cycles and
# the 120 s rotation TTL); without it (about 15 minutes): 1,000 and 10,000 entries, 30 revocation
# trials, 500 rotating SVIDs, and SPIRE's default LRU (1,000) as another storm row. The first
# build of SPIRE takes ~15 minutes more. Results and how to read them: docs/benchmarks.md.
#
# SPIRE is built by build-spire.sh into ${LANYARD_CACHE:-$HOME/.cache/lanyard}/spire-v1.13.3/bin
# (Go from the module proxy; nothing of SPIRE's is kept in the repo); SPIRE_BIN=DIR uses binaries
# built elsewhere. BUILD_DIR: a Lanyard build tree with server/lanyard-server,
# agent/lanyard-agent and bench/bench_wapi_client; without it, an optimised tree is configured
# and built in $LANYARD_BENCH_BUILD (default /tmp/lanyard-bench-build).
# Needs /usr/bin/python3 with grpcio, grpcio-tools and cryptography (as the integration tests).
# LANYARD_BENCH_JSON=FILE also writes the raw figures; LANYARD_BENCH_KEEP=1 keeps the logs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$(dirname "$here")")
build=""
opts=""
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) opts="$opts --quick" ;;
	--only) opts="$opts --only $2"; shift ;;
	--only-row | --rounds | --seconds) opts="$opts $1 $2"; shift ;;
	*) build=$1 ;;
	esac
	shift
done

if [ -z "$build" ]; then
	build=${LANYARD_BENCH_BUILD:-/tmp/lanyard-bench-build}
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	nice cmake --build "$build" --target lanyard-server lanyard-agent bench_wapi_client bench_crypto_floor -j2 >/dev/null
fi
for b in server/lanyard-server agent/lanyard-agent bench/bench_wapi_client; do
	if [ ! -x "$build/$b" ]; then
		echo "run.sh: $build/$b not found (build it first)" >&2
		exit 1
	fi
done
spire_bin=${SPIRE_BIN:-$("$here/build-spire.sh")}

echo "machine: $(nproc) CPUs, kernel $(uname -r); $(openssl version); grpc core $(pkg-config --modversion grpc 2>/dev/null || echo '?');" \
	"lanyard build: $(grep -m1 '^CMAKE_BUILD_TYPE' "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2);" \
	"spire: $("$spire_bin/spire-server" --version 2>&1 | head -1) ($(go version 2>/dev/null | cut -d' ' -f3))"
exec /usr/bin/python3 "$here/vs_spire.py" "$build" "$spire_bin" "$src/proto" $opts
