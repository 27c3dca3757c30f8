#!/usr/bin/env bash
# Installs and pins the Go peers of the interop tests (tests/interop/go_spiffe.py,
# docs/compatibility.md), with the machine's Go (1.26):
#   - go-spiffe v2.9.0 and what it needs, as pinned by tests/interop/go/go.mod
#     and go.sum, downloaded into the Go module cache (GOMODCACHE, default
#     ~/go/pkg/mod: kept between runs on the same machine);
#   - the test program tests/interop/go, built into
#     ${LANYARD_CACHE:-~/.cache/lanyard}/interop-go/bin/lanyard-interop-go
#     (the tests rebuild it from the module cache, offline, when it changed);
#   - grpc-health-probe v0.4.63 into the same bin/.
# Called by scripts/install-deps.sh. Idempotent: nothing is fetched again when
# the module cache and the probe are in place. Without a go command it says so
# and exits 0: the interop.go.* tests then report SKIPPED.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cache="${LANYARD_CACHE:-$HOME/.cache/lanyard}/interop-go"
probe_version=v0.4.63

go=$(command -v go || true)
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
  go=/usr/local/go/bin/go
fi
if [ -z "$go" ]; then
  echo "peers/go: no go command: the go-spiffe interop tests will be skipped (install Go 1.26)"
  exit 0
fi
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off
echo "peers/go: $("$go" version)"

mkdir -p "$cache/bin"
cd "$top/tests/interop/go"
# go.sum pins every module; -mod=readonly refuses any change to go.mod/go.sum.
nice "$go" mod download
nice "$go" mod verify >/dev/null
nice "$go" build -o "$cache/bin/lanyard-interop-go.$$" .
mv -f "$cache/bin/lanyard-interop-go.$$" "$cache/bin/lanyard-interop-go"
echo "peers/go: go-spiffe $(grep -o 'go-spiffe/v2 v[0-9.]*' go.mod | cut -d' ' -f2): $cache/bin/lanyard-interop-go"

if "$go" version -m "$cache/bin/grpc-health-probe" 2>/dev/null | grep -qw "$probe_version"; then
  echo "peers/go: grpc-health-probe $probe_version present"
else
  # go install pkg@version: its own go.sum, checked against the checksum database.
  (cd / && GOFLAGS=-buildvcs=false GOBIN="$cache/bin" nice "$go" install \
    "github.com/grpc-ecosystem/grpc-health-probe@$probe_version")
  echo "peers/go: grpc-health-probe $probe_version: $cache/bin/grpc-health-probe"
fi
