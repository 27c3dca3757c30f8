#!/bin/sh
# run-agent.sh: lanyard-agent figures (issue 4) next to floors measured in
# the same run. Prints markdown tables on stdout, progress on stderr.
#
#   bench/run-agent.sh [BUILD_DIR] [--quick]
#
# Starts a lanyard-server and two lanyard-agents on 127.0.0.1, everything in
# a temporary directory (removed on success, kept and named on failure), and
# stops each by its pid. bench/agent_bench.py does the work:
#   1. FetchX509SVID first-response latency, 1 / 100 / 1,000 clients at once,
#      each on its own connection (bench_wapi_client, C on gRPC core), and at
#      a steady rate over open connections; floors: a socketpair ping-pong and
#      grpc.health.v1.Health/Check round trips on the same agent socket;
#   2. agent VmRSS / VmHWM with 1, 1,000 and 10,000 cached SVIDs;
#   3. a storm of 10,000 SVIDs issued at once, then their renewal in the
#      [45%, 55%] window (TTL 120 s), against a crypto floor from
#      `openssl speed ecdsap256` in the same run;
#   4. revocation: DeleteEntry (admin API, and the CLI) -> the update on an
#      open FetchX509SVID stream, 50 + 20 trials.
# About 2.5-3 minutes (a minute of it waiting for the renewal window);
# --quick: smaller counts, about 1.5 minutes (the renewal wait is fixed by
# the TTL). --storm: only the storm and the RSS after it (about a minute).
#
# BUILD_DIR: a build tree with server/lanyard-server, agent/lanyard-agent and
# bench/bench_wapi_client. Without it, an optimised tree is configured and
# built in $LANYARD_BENCH_BUILD (default /tmp/lanyard-bench-build).
# Needs /usr/bin/python3 with grpcio, grpcio-tools and cryptography (as the
# integration tests). LANYARD_BENCH_JSON=FILE also writes the raw figures.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=""
quick=""
for a in "$@"; do
	case "$a" in
	--quick) quick=--quick ;;
	--storm) quick="$quick --storm" ;;
	*) build=$a ;;
	esac
done

if [ -z "$build" ]; then
	build=${LANYARD_BENCH_BUILD:-/tmp/lanyard-bench-build}
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	cmake --build "$build" --target lanyard-server lanyard-agent bench_wapi_client -j2 >/dev/null
fi
for b in server/lanyard-server agent/lanyard-agent bench/bench_wapi_client; do
	if [ ! -x "$build/$b" ]; then
		echo "run-agent.sh: $build/$b not found (build it first)" >&2
		exit 1
	fi
done

echo "openssl: $(openssl version); grpc core: $(pkg-config --modversion grpc 2>/dev/null || echo '?');" \
	"kernel: $(uname -r); build: $(grep -m1 '^CMAKE_BUILD_TYPE' "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2)"
exec /usr/bin/python3 "$here/agent_bench.py" "$build/server/lanyard-server" "$build/agent/lanyard-agent" \
	"$build/bench/bench_wapi_client" "$src/proto" $quick
