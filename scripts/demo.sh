#!/usr/bin/env bash
# The README's first command: installs what is needed, builds Lanyard, and
# runs the demo. Until lanyard-server and lanyard-agent land (issues 3 and
# 4), the demo is the library's self-check: X.509-SVID chains and JWT-SVIDs
# made by independent implementations (Python's cryptography, PyJWT, the
# openssl CLI) checked by lib/, and the other way round.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${LANYARD_DEMO_BUILD:-$top/build-demo}

echo "==> installing dependencies (Debian packages)"
bash "$top/scripts/install-deps.sh"

echo "==> building into $build"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null

echo "==> self-check: the SPIFFE library against independent implementations"
/usr/bin/python3 "$top/tests/integration/interop.py" "$build/tests/integration/lib_probe"

echo "==> self-check: the Workload API proto against Google's protobuf"
/usr/bin/python3 "$top/tests/integration/wire_compat.py" "$top/proto" "$build/tests/integration/wire_probe" | tail -n 1

echo "==> done: the library and the wire contract work; the daemons come next (see README, Status)"
