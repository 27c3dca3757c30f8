#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. installs the Debian packages it needs (scripts/install-deps.sh);
#   2. builds with gcc (-Werror) and runs every ctest test: unit, integration,
#      fuzz-corpus replay;
#   3. runs the unit tests under valgrind (memcheck: errors and definite leaks fail);
#   4. rebuilds with ASan+UBSan and runs the whole suite again;
#   5. builds the libFuzzer targets with clang and replays their corpora;
#   6. builds the Debian packages (lintian clean) and tests them in a fresh
#      Debian 12 root (scripts/package-test.sh), then the container image
#      from them and its roles (scripts/image-build.sh, image-test.sh): ~3-5
#      min on 2 cores; needs root; LANYARD_TEST_PACKAGES=0 leaves it out.
# Build trees go to build-test/ (override with LANYARD_TEST_BUILD_ROOT).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
root=${LANYARD_TEST_BUILD_ROOT:-$top/build-test}
jobs=${LANYARD_JOBS:-$(nproc)}

step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
bash "$top/scripts/install-deps.sh"

step "build (gcc, -Werror)"
cmake -S "$top" -B "$root/release" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/release" -j "$jobs"

step "test suite"
(cd "$root/release" && ctest --output-on-failure -j "$jobs")

step "unit tests under valgrind"
(cd "$root/release" && ctest -L unit --output-on-failure -j "$jobs" \
  --overwrite MemoryCheckCommandOptions="--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
  -T memcheck >"$root/valgrind.log" 2>&1) || { cat "$root/valgrind.log"; exit 1; }
if grep -q "Defects:" "$root/valgrind.log"; then
  grep -A20 "Defects:" "$root/valgrind.log"
  echo "valgrind found defects: see $root/release/Testing/Temporary/MemoryChecker.*.log"
  exit 1
fi
tail -n 3 "$root/valgrind.log"

step "build with ASan+UBSan"
cmake -S "$top" -B "$root/asan" -DCMAKE_BUILD_TYPE=Debug -DLANYARD_SANITIZE=ON >/dev/null
cmake --build "$root/asan" -j "$jobs"

step "test suite under ASan+UBSan"
(cd "$root/asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j "$jobs")

step "libFuzzer build (clang) and corpus replay"
CC=clang cmake -S "$top" -B "$root/fuzz" -DCMAKE_BUILD_TYPE=Debug -DLANYARD_FUZZ=ON >/dev/null
cmake --build "$root/fuzz" -j "$jobs"
(cd "$root/fuzz" && ctest -L fuzz --output-on-failure -j "$jobs")

step "Debian packages and the image: build, lintian, a fresh Debian 12 root with the demo, the image's roles"
if [ "${LANYARD_TEST_PACKAGES:-1}" = 0 ]; then
  echo "skipped: LANYARD_TEST_PACKAGES=0"
elif [ "$(id -u)" -ne 0 ]; then
  echo "skipped: scripts/package-test.sh needs root (debootstrap, chroot, mount)"
else
  bash "$top/scripts/package-build.sh" "$root/debs"
  bash "$top/scripts/package-test.sh" "$root/debs"
  bash "$top/scripts/image-build.sh" "$root/image" "$root/debs"
  bash "$top/scripts/image-test.sh" "$root/image/lanyard-oci"
fi

step "all passed"
