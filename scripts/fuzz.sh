#!/usr/bin/env bash
# Runs libFuzzer targets for a while, one at a time or several in parallel.
#   scripts/fuzz.sh [-t SECONDS] [-j PARALLEL] [TARGET ...]
# TARGET is a name under tests/fuzz/corpus/ (default: all of them). New
# inputs go to fuzz-out/<target>/corpus (not committed); crashes to
# fuzz-out/<target>/. A summary line per target gives executions and time.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
parallel=1
while getopts "t:j:" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    j) parallel=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [-j PARALLEL] [TARGET ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

build=${LANYARD_FUZZ_BUILD:-$top/build-fuzz}
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(ls "$top/tests/fuzz/corpus")
fi

CC=clang cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLANYARD_FUZZ=ON >/dev/null
for t in "${targets[@]}"; do
  cmake --build "$build" -j "$(nproc)" --target "fuzz_$t" >/dev/null
done

run_one() {
  local t=$1 out=$top/fuzz-out/$1
  mkdir -p "$out/corpus"
  "$build/tests/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus" "$top/tests/fuzz/corpus/$t" >"$out/log" 2>&1
  local rc=$?
  local execs
  execs=$(grep -E '^stat::number_of_executed_units' "$out/log" | awk '{print $2}')
  printf '%-12s %6ss  %12s executions  %s\n' "$t" "$seconds" "${execs:-?}" \
    "$([ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc, see $out/log)")"
  return $rc
}

export -f run_one
export top build seconds
printf '%s\n' "${targets[@]}" | xargs -P "$parallel" -I{} bash -c 'run_one {}'
