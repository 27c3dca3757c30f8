#!/usr/bin/env bash
# Runs libFuzzer targets for a while, one at a time or several in parallel.
#   scripts/fuzz.sh [-t SECONDS] [-c CPU_SECONDS] [-j PARALLEL] [-m] [TARGET ...]
# TARGET is a name under tests/fuzz/corpus/ (default: all of them). New
# inputs go to fuzz-out/<target>/corpus (not committed); crashes to
# fuzz-out/<target>/. A summary line per target gives executions and time.
#   -t SECONDS      wall-clock time per target (default 60)
#   -c CPU_SECONDS  stop a target once it has used this much CPU, its
#                   LeakSanitizer tracer tasks included, however long that
#                   takes on the wall: a fair measure on a machine shared
#                   with other work (the wall-clock cap becomes 4x this)
#   -j PARALLEL     targets run at once (default 1)
#   -m              merge each run's new coverage into the committed corpus
#                   tests/fuzz/corpus/<target> (-merge=1) after it ends
# A run stopped by -c exits libFuzzer with SIGINT (it prints its final
# statistics then), which counts as ok.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
cpu_limit=0
parallel=1
merge=0
while getopts "t:c:j:m" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    c) cpu_limit=$OPTARG ;;
    j) parallel=$OPTARG ;;
    m) merge=1 ;;
    *) echo "usage: $0 [-t SECONDS] [-c CPU_SECONDS] [-j PARALLEL] [-m] [TARGET ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for v in "$seconds" "$cpu_limit" "$parallel"; do
  case $v in
    ''|*[!0-9]*) echo "fuzz.sh: -t, -c and -j take whole numbers" >&2; exit 2 ;;
  esac
done
if [ "$cpu_limit" -gt 0 ]; then
  seconds=$((cpu_limit * 4))
fi

build=${LANYARD_FUZZ_BUILD:-$top/build-fuzz}
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(ls "$top/tests/fuzz/corpus")
fi
for t in "${targets[@]}"; do
  if [ ! -d "$top/tests/fuzz/corpus/$t" ]; then
    echo "fuzz.sh: no target $t (see tests/fuzz/corpus/)" >&2
    exit 2
  fi
done

CC=clang cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLANYARD_FUZZ=ON >/dev/null
for t in "${targets[@]}"; do
  cmake --build "$build" -j "$(nproc)" --target "fuzz_$t" >/dev/null
done

# CPU seconds used by process $1 and its reaped children (utime, stime,
# cutime, cstime: fields 14-17 of /proc/PID/stat; the name field holds no
# space here).
cpu_of() {
  local st
  read -r -a st <"/proc/$1/stat" || return 1
  echo $(((st[13] + st[14] + st[15] + st[16]) / $(getconf CLK_TCK)))
}

run_one() {
  local t=$1 out=$top/fuzz-out/$1 rc pid cpu=0 start
  mkdir -p "$out/corpus"
  start=$(date +%s)
  "$build/tests/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus" "$top/tests/fuzz/corpus/$t" >"$out/log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    cpu=$(cpu_of "$pid") || break
    if [ "$cpu_limit" -gt 0 ] && [ "$cpu" -ge "$cpu_limit" ]; then
      kill -INT "$pid"
      break
    fi
    sleep 2
  done
  rc=0
  wait "$pid" || rc=$?
  # libFuzzer exits 72 after SIGINT: the stop we asked for.
  if [ "$cpu_limit" -gt 0 ] && [ "$rc" -eq 72 ] && [ "$cpu" -ge "$cpu_limit" ]; then
    rc=0
  fi
  local execs merged=""
  execs=$(grep -E '^stat::number_of_executed_units' "$out/log" | awk '{print $2}')
  if [ "$rc" -eq 0 ] && [ "$merge" -eq 1 ]; then
    "$build/tests/fuzz_$t" -merge=1 -rss_limit_mb=2048 "$top/tests/fuzz/corpus/$t" "$out/corpus" \
      >"$out/merge.log" 2>&1 || rc=$?
    merged=$(grep -oE '[0-9]+ new files with [0-9]+ new features' "$out/merge.log" | head -n 1)
  fi
  printf '%-16s wall %6ss  cpu %6ss  %12s executions  %s%s\n' "$t" "$(($(date +%s) - start))" "$cpu" \
    "${execs:-?}" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (rc $rc, see $out/log)")" \
    "${merged:+  merged: $merged}"
  return "$rc"
}

export -f run_one cpu_of
export top build seconds cpu_limit merge
printf '%s\n' "${targets[@]}" | xargs -P "$parallel" -I{} bash -c 'run_one {}'
