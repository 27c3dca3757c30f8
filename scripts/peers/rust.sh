#!/usr/bin/env bash
# The Rust crate `spiffe` for the interop tests (tests/interop/rust/, issue 12):
# the crates in tests/interop/rust/Cargo.lock downloaded by cargo (its own
# cache, ~/.cargo/registry) and the probe built into
# ${LANYARD_CACHE:-$HOME/.cache/lanyard}/rust-target, outside the repository.
# Idempotent: cargo does nothing when the lock file and sources are unchanged.
# Without cargo it says so and exits 0: interop.rust_spiffe then reports SKIPPED.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${LANYARD_CACHE:-$HOME/.cache/lanyard}
export CARGO_TARGET_DIR="$cache/rust-target"
# rustup's cargo even when ~/.cargo/bin is not on PATH (a non-login shell).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "peers/rust: no cargo on this machine; the Rust interop test will be skipped"
  exit 0
fi
cd "$top/tests/interop/rust"
nice cargo fetch --locked -q
nice cargo build --locked -q
echo "peers/rust: $CARGO_TARGET_DIR/debug/lanyard-interop-rust ready ($(cargo --version))"
