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
  libcurl4-openssl-dev
  clang libclang-rt-14-dev llvm
  python3-grpcio python3-grpc-tools python3-protobuf python3-jwt python3-cryptography
  protobuf-compiler libprotobuf-dev
  valgrind
  faketime
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
