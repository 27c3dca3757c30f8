#!/bin/sh
# run-issuance.sh: X.509-SVID issuance speed against the crypto floor.
#
#   bench/run-issuance.sh [BUILD_DIR] [SECONDS]
#
# Runs `openssl speed -seconds 3 ecdsap256` and bench_issuance on the same
# core (taskset -c 0 when available), then prints a markdown table: SVIDs
# per second per core for batches of 1, 50 and 500 CSRs, and the ratio to
# the floor measured in this run: one P-256 verify (the CSR) and one sign
# (the leaf) per SVID, floor = 1 / (1/sign_rate + 1/verify_rate).
# Both rates are per CPU second (openssl speed's default divisor, and
# bench_issuance's CLOCK_THREAD_CPUTIME_ID).
#
# BUILD_DIR: a build tree with bench/bench_issuance. Without it, an
# optimised tree is configured and built in $LANYARD_BENCH_BUILD
# (default /tmp/lanyard-bench-build). SECONDS per batch size: default 3.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-}
seconds=${2:-3}

if [ -z "$build" ]; then
	build=${LANYARD_BENCH_BUILD:-/tmp/lanyard-bench-build}
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	cmake --build "$build" --target bench_issuance -j2 >/dev/null
fi
bin=$build/bench/bench_issuance
if [ ! -x "$bin" ]; then
	echo "run-issuance.sh: $bin not found (build the bench_issuance target)" >&2
	exit 1
fi

pin=""
if command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null; then
	pin="taskset -c 0"
fi

speed=$($pin openssl speed -seconds 3 ecdsap256 2>/dev/null | awk '/256 bits ecdsa \(nistp256\)/ { print $(NF-1), $NF }')
if [ -z "$speed" ]; then
	echo "run-issuance.sh: could not parse openssl speed output" >&2
	exit 1
fi
sign=${speed% *}
verify=${speed#* }
out=$($pin "$bin" -t "$seconds")

echo "openssl: $(openssl version); pinned: ${pin:-no}; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo
echo "$out" | awk -v sign="$sign" -v verify="$verify" '
BEGIN {
	floor = 1 / (1 / sign + 1 / verify)
	printf "| measure | per SVID, median (us) | p99 (us) | SVIDs/s per core | wall SVIDs/s | ratio to floor |\n"
	printf "|---|---|---|---|---|---|\n"
	printf "| openssl speed ecdsap256: %.0f sign/s, %.0f verify/s | %.1f | | %.0f (floor) | | 1.00 |\n",
	    sign, verify, 1e6 / floor, floor
}
/^batch=/ {
	for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	printf "| batch of %s CSRs (%s SVIDs) | %s | %s | %s | %s | %.2f |\n",
	    v["batch"], v["svids"], v["median_us"], v["p99_us"], v["svids_per_s"], v["wall_svids_per_s"],
	    v["svids_per_s"] / floor
}
/^lib_csr_parse_us=/ { split($0, kv, "="); lib = kv[2] }
END {
	if (lib != "")
		printf "\nFor comparison, lib/csr.c ly_csr_parse (generic d2i path) alone: %s us per CSR.\n", lib
}'
