#!/usr/bin/env bash
# Builds Lanyard's Debian packages (lanyard-server, lanyard-agent,
# liblanyard-workload1, liblanyard-workload-dev; debian/) with
# `dpkg-buildpackage -us -uc -b` from a copy of this tree (the files git
# knows, committed or not: nothing of a build tree), then runs lintian.
#
#   scripts/package-build.sh OUTDIR
#
# OUTDIR gets the .debs, the .changes and .buildinfo, lintian.txt and
# sizes.txt. Build dependencies: debian/control (dpkg-checkbuilddeps says
# what is missing; scripts/install-deps.sh installs them). The build is
# `nice`, without the package's unit tests unless DEB_BUILD_OPTIONS says
# otherwise (default "nocheck parallel=2"): the project's CI runs them.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: package-build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
work=$out/build
src=$work/lanyard-$version
rm -rf "$work"
mkdir -p "$src"
(cd "$top" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -x -C "$src"

export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-nocheck parallel=2}
start=$(date +%s)
(cd "$src" && nice dpkg-buildpackage -us -uc -b) >"$out/dpkg-buildpackage.log" 2>&1 || {
  tail -40 "$out/dpkg-buildpackage.log"
  echo "package-build: dpkg-buildpackage failed (log: $out/dpkg-buildpackage.log)" >&2
  exit 1
}
secs=$(( $(date +%s) - start ))
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out/"
rm -rf "$work"
echo "package-build: dpkg-buildpackage took ${secs}s (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)"

: >"$out/sizes.txt"
for deb in "$out"/*.deb; do
  printf '%-60s %8s bytes, installed %6s KiB\n' "$(basename "$deb")" "$(stat -c %s "$deb")" \
    "$(dpkg-deb -f "$deb" Installed-Size)" >>"$out/sizes.txt"
done
cat "$out/sizes.txt"

if command -v lintian >/dev/null 2>&1; then
  # Overrides (debian/*.lintian-overrides) say why each one is there.
  lintian --info --display-info --pedantic "$out"/*.changes >"$out/lintian.txt" 2>&1 || true
  if grep -Eq '^[EW]: ' "$out/lintian.txt"; then
    echo "package-build: lintian has errors or warnings:"
    grep -E '^[EW]: ' "$out/lintian.txt"
    exit 1
  fi
  echo "package-build: lintian: no errors, no warnings ($(grep -Ec '^[IPX]: ' "$out/lintian.txt") info/pedantic tags in lintian.txt)"
else
  echo "package-build: lintian not installed: not checked"
fi
