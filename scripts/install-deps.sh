#!/usr/bin/env bash
# Installs every build, test and demo dependency of Lanyard from Debian 12's
# packages. Idempotent: packages already present are left alone, and apt is
# only asked when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libssl-dev openssl
  libprotobuf-c-dev protobuf-c-compiler
  libgrpc-dev
  libuv1-dev
  libcmocka-dev
  libjansson-dev
  libyaml-dev
  libsqlite3-dev sqlite3
  libpq-dev postgresql
  libcurl4-openssl-dev
  clang libclang-rt-14-dev llvm
  python3-venv
  python3-grpcio python3-grpc-tools python3-protobuf python3-jwt python3-cryptography
  protobuf-compiler libprotobuf-dev
  valgrind
  faketime
  yamllint
  # Man pages (docs/man/), unit checks (systemd-analyze), the Debian
  # packages and the container image (scripts/package-*.sh, image-*.sh);
  # systemd-nspawn boots the packaged units under systemd
  # (scripts/systemd-boot-test.sh; tried with 252.39-1~deb12u2).
  pandoc
  systemd systemd-container
  ninja-build debhelper debootstrap lintian fakeroot umoci skopeo
)

# The Kubernetes manifest check (tests/k8s/check_manifests.py) validates k8s/
# with the npm package kubernetes-models, pinned in tests/k8s/package-lock.json
# and installed into tests/k8s/node_modules with the machine's node and npm.
top=$(cd "$(dirname "$0")/.." && pwd)
npm_deps() {
  local dir="$top/tests/k8s"
  if [ -d "$dir/node_modules/kubernetes-models" ] && \
     [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    echo "install-deps: tests/k8s/node_modules up to date"
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    # Not on every Debian machine: Debian's own node and npm do (the check needs node >= 18).
    echo "install-deps: npm not found: installing Debian's nodejs and npm"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
  fi
  echo "install-deps: npm ci in tests/k8s"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
npm_deps

# The real SPIFFE clients of the interop tests (tests/interop/), one script
# per ecosystem: each installs and pins its own, cached between runs.
# LANYARD_NO_PEERS=1 leaves them out (the demo needs none of them).
if [ "${LANYARD_NO_PEERS:-0}" = 1 ]; then
  echo "install-deps: LANYARD_NO_PEERS=1: the interop peers are not installed"
  exit 0
fi
for peer in "$top"/scripts/peers/*.sh; do
  [ -e "$peer" ] || continue
  echo "install-deps: $(basename "$peer")"
  bash "$peer"
done
