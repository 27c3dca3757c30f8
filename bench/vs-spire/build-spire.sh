#!/bin/sh
# Builds spire-server and spire-agent v1.13.3 with Go from the module proxy into a cache outside
# the repo. Nothing of SPIRE's code is committed. Prints the bin directory on success.
#
# The proxy serves github.com/spiffe/spire v1.13.3 but has no version list for it, so
# `go install github.com/spiffe/spire/cmd/spire-server@v1.13.3` is refused; a scratch module in
# the cache directory that records the two commands as tools resolves the pinned version instead.
set -eu
SPIRE_VERSION=${SPIRE_VERSION:-v1.13.3}
CACHE=${LANYARD_CACHE:-$HOME/.cache/lanyard}/spire-$SPIRE_VERSION
BIN=$CACHE/bin
if [ -x "$BIN/spire-server" ] && [ -x "$BIN/spire-agent" ]; then
    echo "$BIN"; exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-spire: go not found in PATH" >&2; exit 1; }
mkdir -p "$CACHE/mod" "$BIN"
cd "$CACHE/mod"
[ -f go.mod ] || go mod init lanyard.local/spire-build >&2
export GOFLAGS=-buildvcs=false GOBIN="$BIN"
for cmd in spire-server spire-agent; do
    nice go get -tool "github.com/spiffe/spire/cmd/$cmd@$SPIRE_VERSION" >&2
done
for cmd in spire-server spire-agent; do
    nice go install -p 1 "github.com/spiffe/spire/cmd/$cmd" >&2
done
"$BIN/spire-server" --version >&2 2>&1 || true
echo "$BIN"
