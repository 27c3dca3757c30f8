#!/bin/bash
# install_demo.sh BUILD_DIR SOURCE_DIR [SANITIZE]: `cmake --install` with
# DESTDIR into a temporary root (prefix /usr), then, as a workload's
# developer outside this tree would: the two example programs' sources
# (examples/*.c, nothing else of the tree) built against the installed
# header with `pkg-config --cflags --libs lanyard-workload` only, and the
# demo (scripts/demo.sh) run on the installed server and agent with those
# two programs doing mTLS with their SVIDs.
# SANITIZE 1: the tree is built with ASan+UBSan, so the programs are too.
# Prints ok/FAIL per check; exits 1 on any failure.
set -uo pipefail
build=$1
src=$2
cc_flags=""
[ "${3:-0}" = 1 ] && cc_flags="-fsanitize=address,undefined"
tmp=$(mktemp -d /tmp/lanyard-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

root=$tmp/root
if DESTDIR=$root cmake --install "$build" --prefix /usr >"$tmp/install.log" 2>&1; then
  ok "DESTDIR=<tmp> cmake --install --prefix /usr"
else
  fail "cmake --install"; cat "$tmp/install.log"; exit 1
fi
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:[A-Z]*=//p' "$build/CMakeCache.txt")
libdir=${libdir:-lib}
u=$root/usr
check "lanyard-server in sbin" test -x "$u/sbin/lanyard-server"
check "lanyard-agent in sbin" test -x "$u/sbin/lanyard-agent"
check "bin/lanyard-agent -> ../sbin/lanyard-agent" test "$(readlink "$u/bin/lanyard-agent")" = ../sbin/lanyard-agent
check "liblanyard-workload.so.1 (SONAME link)" test -L "$u/$libdir/liblanyard-workload.so.1"
check "liblanyard-workload.so (dev link)" test -L "$u/$libdir/liblanyard-workload.so"
check "liblanyard-workload.a" test -f "$u/$libdir/liblanyard-workload.a"
check "include/lanyard/workload.h" test -f "$u/include/lanyard/workload.h"
check "lanyard-workload.pc" test -f "$u/$libdir/pkgconfig/lanyard-workload.pc"
check "example programs in libexec/lanyard" test -x "$u/libexec/lanyard/lanyard-example-server"
check "example configs" test -f "$(find "$root" -path '*/lanyard/server.yaml' | head -1)"
if [ -f "$build/docs/man/lanyard-server.8" ]; then
  check "man pages in share/man/man8" test -f "$u/share/man/man8/lanyard-server.8" -a -f "$u/share/man/man8/lanyard-agent.8"
else
  echo "note: man pages not built (no pandoc): not checked"
fi
check "systemd units in lib/systemd/system" \
  test -f "$u/lib/systemd/system/lanyard-server.service" -a -f "$u/lib/systemd/system/lanyard-agent.service"
check "exports and SONAME" sh "$src/tests/install/check_exports.sh" "$u/$libdir/liblanyard-workload.so.1" \
  "$u/include/lanyard/workload.h"

# The pkg-config file is relocatable: found through PKG_CONFIG_PATH, its
# flags point into the temporary root, not into this tree or the build.
export PKG_CONFIG_PATH=$u/$libdir/pkgconfig
flags=$(pkg-config --cflags --libs lanyard-workload)
echo "pkg-config: $flags"
inc=$(realpath -m "$(echo "$flags" | grep -o -- '-I[^ ]*' | head -1 | cut -c3-)")
lib=$(realpath -m "$(echo "$flags" | grep -o -- '-L[^ ]*' | head -1 | cut -c3-)")
check "pkg-config -I is the root's include dir" test "$inc" = "$u/include"
check "pkg-config -L is the root's lib dir" test "$lib" = "$u/$libdir"
check "pkg-config names -llanyard-workload" grep -q -- '-llanyard-workload' <<<"$flags"

mkdir "$tmp/src" "$tmp/bin"
cp "$src"/examples/*.c "$src"/examples/*.h "$tmp/src/"
for prog in server client; do
  # shellcheck disable=SC2086
  if (cd "$tmp/src" && cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $cc_flags -o "$tmp/bin/lanyard-example-$prog" \
        $prog.c example_common.c $flags) 2>"$tmp/cc.err"; then
    ok "lanyard-example-$prog built out of tree with pkg-config's flags"
  else
    fail "lanyard-example-$prog does not build out of tree"; cat "$tmp/cc.err"
  fi
done
[ $fails -eq 0 ] || { echo "FAILED: $fails failure(s)"; exit 1; }

check "the out-of-tree program loads the installed library" \
  sh -c "LD_LIBRARY_PATH='$u/$libdir' ldd '$tmp/bin/lanyard-example-client' | grep -q '$u/$libdir/liblanyard-workload.so.1'"

# The demo on the installed programs: the server and agent from the root,
# the examples just built; it ends with mTLS between them and a refusal.
if LANYARD_DEMO_PREFIX=$u LANYARD_DEMO_EXAMPLES=$tmp/bin LD_LIBRARY_PATH=$u/$libdir \
    bash "$src/scripts/demo.sh" >"$tmp/demo.log" 2>&1; then
  ok "demo on the installed programs"
else
  fail "demo on the installed programs"; tail -40 "$tmp/demo.log"
fi
grep -q "using the programs installed in $u" "$tmp/demo.log" && ok "the demo used the installed server and agent" ||
  fail "the demo did not say it used the installed programs"
grep -q "^connected to spiffe://example.org/demo/example-server as spiffe://example.org/demo/example-client" "$tmp/demo.log" &&
  ok "the out-of-tree client authenticated the example server" || fail "no mTLS in the demo's output"

[ $fails -eq 0 ] && echo "passed: 0 failure(s)" || echo "FAILED: $fails failure(s)"
[ $fails -eq 0 ]
