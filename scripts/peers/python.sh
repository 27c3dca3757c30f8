#!/usr/bin/env bash
# py-spiffe for the interop tests (tests/interop/py/, issue 12): a virtual
# environment of Debian's python3 at ${LANYARD_CACHE:-$HOME/.cache/lanyard}/venv
# holding exactly tests/interop/py/requirements.txt. Idempotent: when the
# environment was made from the same requirements and the same interpreter,
# nothing is downloaded and the script returns at once.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
req="$top/tests/interop/py/requirements.txt"
cache=${LANYARD_CACHE:-$HOME/.cache/lanyard}
venv="$cache/venv"
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)

stamp="$(sha256sum "$req" | cut -d' ' -f1) $("$py" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.lanyard-stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "peers/python: $venv up to date"
  exit 0
fi

if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "peers/python: $py has no venv/ensurepip module (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
echo "peers/python: making $venv with $py"
rm -rf "$venv"
mkdir -p "$cache"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req"
# Nothing beyond the pins: the environment is exactly the requirements file.
extra=$("$venv/bin/python" -m pip freeze --disable-pip-version-check | tr 'A-Z-' 'a-z_' | sort |
  comm -23 - <(grep -v '^#' "$req" | tr 'A-Z-' 'a-z_' | sort))
if [ -n "$extra" ]; then
  echo "peers/python: installed but not pinned in $req: $extra" >&2
  exit 1
fi
"$venv/bin/python" -m pip check --disable-pip-version-check
echo "$stamp" > "$venv/.lanyard-stamp"
echo "peers/python: $venv ready"
