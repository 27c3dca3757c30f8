#!/usr/bin/env bash
# Tests the container image (scripts/image-build.sh) without a container
# engine (none runs on these machines): its root file system unpacked by
# umoci and entered with chroot (its own /proc mounted), the roles run the
# way k8s/ runs them:
#   - the runtime config umoci derives: user 1000:1000, working dir
#     /var/lib/lanyard;
#   - lanyard-server as uid 1000 (the image's user) with flags only;
#   - lanyard-agent as root (the DaemonSet's user), join token, bundle;
#   - a workload as uid 1001 (the example workload's user) fetches its
#     X.509-SVID with `lanyard-agent api fetch x509`, attested by uid and path.
#
#   scripts/image-test.sh LAYOUT [TAG]     (LAYOUT: OUTDIR/lanyard-oci)
set -euo pipefail
say() { printf '\n==> %s\n' "$*"; }
die() { echo "image-test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (umoci unpack, chroot, mount)"
layout=${1:?usage: image-test.sh LAYOUT [TAG]}
tag=${2:-$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$layout")}
work=$(mktemp -d /tmp/lanyard-imagetest.XXXXXX)
rootfs=$work/bundle/rootfs
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if mountpoint -q "$rootfs/proc" 2>/dev/null; then umount -l "$rootfs/proc" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi; }

say "unpacking lanyard:$tag from $layout"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
read -r uid gid cwd < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["process"]; print(p["user"]["uid"], p["user"]["gid"], p["cwd"])' "$work/bundle/config.json")
check "the image runs as 1000:1000 (not root) by default" test "$uid:$gid" = 1000:1000
check "working directory /var/lib/lanyard, 0700 for its user" \
  test "$cwd $(stat -c '%a %u' "$rootfs/var/lib/lanyard")" = "/var/lib/lanyard 700 1000"
mount -t proc proc "$rootfs/proc"
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/lanyard "$@"; }
bg() { (exec chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/lanyard "$@") & pids+=($!); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)

say "lanyard-server as uid 1000, flags only"
bg setpriv --reuid=1000 --regid=1000 --clear-groups sh -c \
  "cd /var/lib/lanyard && exec lanyard-server run -trustDomain example.org -bindAddress 127.0.0.1 -serverPort $port" \
  >"$work/server.log" 2>&1
spid=${pids[-1]}
ok=0
for _ in $(seq 100); do
  in_root setpriv --reuid=1000 --regid=1000 --clear-groups lanyard-server healthcheck >/dev/null 2>&1 && { ok=1; break; }
  sleep 0.1
done
check "the server is healthy" test $ok = 1
check "the server runs as uid 1000" test "$(stat -c %u "/proc/$spid")" = 1000
srv() { in_root setpriv --reuid=1000 --regid=1000 --clear-groups lanyard-server "$@"; }
token=$(srv token generate | awk '/^Token:/ {print $2}')
srv bundle show >"$rootfs/tmp/bundle.pem"
srv entry create -spiffeID spiffe://example.org/ns/default/sa/example -selector unix:uid:1001 \
  -selector unix:path:/usr/sbin/lanyard-agent -parentID "spiffe://example.org/lanyard/agent/join_token/$token" >/dev/null
check "join token and entry made through the admin socket" test -n "$token"

say "lanyard-agent as root, as the DaemonSet runs it"
bg lanyard-agent run -trustDomain example.org -serverAddress 127.0.0.1 -serverPort "$port" -joinToken "$token" \
  -trustBundle /tmp/bundle.pem -dataDir /var/lib/lanyard-agent >"$work/agent.log" 2>&1

say "a workload as uid 1001 fetches its X.509-SVID"
out=""
for _ in $(seq 100); do
  out=$(in_root setpriv --reuid=1001 --regid=1001 --clear-groups lanyard-agent api fetch x509 2>&1) && break
  sleep 0.2
done
echo "$out" | sed 's/^/    /' | head -8
check "uid 1001 got spiffe://example.org/ns/default/sa/example" grep -q "spiffe://example.org/ns/default/sa/example" <<<"$out"
[ $fails -eq 0 ] || { tail -20 "$work/server.log"; tail -20 "$work/agent.log"; }
[ $fails -eq 0 ] && echo "image-test: passed" || echo "image-test: FAILED: $fails failure(s)"
[ $fails -eq 0 ]
