#!/usr/bin/env bash
# Tests Lanyard's Debian packages the way a new host gets them: a fresh
# Debian 12 root (debootstrap, minbase), the four packages installed there
# with apt (their dependencies from the Debian mirror), then, in that root
# (chroot, its own /proc mounted so that the agent can attest callers):
#   - the maintainer scripts' work: system users, /var/lib/lanyard-* 0700,
#     the config files, units and man pages in place;
#   - the packaged server started as the packaged service would (its user,
#     /etc/lanyard/server.yaml, /run/lanyard-server made as RuntimeDirectory=
#     would) answers healthcheck;
#   - the demo (scripts/demo.sh, LANYARD_DEMO_PREFIX=/usr) on the installed
#     programs: server, agent, a workload's SVID checked with openssl, the
#     two example programs doing mTLS;
#   - purge removes the data directories.
#
#   scripts/package-test.sh [DEBDIR]
#
# DEBDIR holds the .debs (scripts/package-build.sh OUTDIR); without it they
# are built first into a temporary directory. Needs root (debootstrap,
# chroot, mount) and the network to the Debian mirror apt is configured
# with. The bootstrapped root is cached as a tarball in
# $LANYARD_PKGTEST_CACHE (default ~/.cache/lanyard); LANYARD_PKGTEST_FRESH=1
# makes it again. Takes 20-60 s with the cache (~1 min more without);
# scripts/test.sh (CI) runs it in its last step, after package-build.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n==> %s\n' "$*"; }
die() { echo "package-test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
for t in debootstrap chroot mount; do command -v $t >/dev/null || die "$t not found (scripts/install-deps.sh)"; done
t0=$(date +%s)

work=$(mktemp -d /tmp/lanyard-pkgtest.XXXXXX)
root=$work/root
cleanup() {
  if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

debs=${1:-}
if [ -z "$debs" ]; then
  say "building the packages"
  bash "$top/scripts/package-build.sh" "$work/debs"
  debs=$work/debs
fi
ls "$debs"/lanyard-server_*.deb "$debs"/lanyard-agent_*.deb "$debs"/liblanyard-workload1_*.deb \
  "$debs"/liblanyard-workload-dev_*.deb >/dev/null || die "$debs lacks one of the four packages"

# The mirror apt uses here (deb822 URIs: or a one-line deb entry), not the security archive.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  sed -n -e 's/^URIs: *\([^ ]*\).*/\1/p' -e 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\).*/\2/p' |
  grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
cache=${LANYARD_PKGTEST_CACHE:-${HOME:-/root}/.cache/lanyard}
base=$cache/bookworm-minbase.tar
if [ ! -f "$base" ] || [ "${LANYARD_PKGTEST_FRESH:-0}" = 1 ]; then
  say "debootstrap bookworm (minbase) from $mirror"
  mkdir -p "$cache" "$work/base"
  # python3-minimal: the demo picks free ports with it; openssl: it checks the SVID.
  nice debootstrap --variant=minbase --include=openssl,python3-minimal,ca-certificates \
    bookworm "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  tar -C "$work/base" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$work/base"
fi
say "a fresh Debian 12 root from $base"
mkdir "$root"
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
# In the background, as one process: chroot, env and setpriv exec, so $! is the daemon's pid.
in_root_bg() { (exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@") & }

say "installing the packages with apt (dependencies from $mirror)"
mkdir "$root/tmp/debs"
for p in lanyard-server lanyard-agent liblanyard-workload1 liblanyard-workload-dev; do
  cp "$debs"/${p}_*.deb "$root/tmp/debs/"
done
in_root apt-get update -q >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; die "apt-get update failed"; }
t1=$(date +%s)
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/debs/*.deb' \
  >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; die "apt-get install failed"; }
echo "installed in $(( $(date +%s) - t1 ))s: $(in_root dpkg-query -W -f '${Package} ${Version}, ' \
  lanyard-server lanyard-agent liblanyard-workload1 liblanyard-workload-dev)"

fails=0
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi; }
say "what the maintainer scripts and packages put in place"
for role in server agent; do
  check "system user lanyard-$role" in_root sh -c "getent passwd lanyard-$role >/dev/null"
  check "/var/lib/lanyard-$role is 0700 lanyard-$role" \
    test "$(in_root stat -c '%a %U' /var/lib/lanyard-$role)" = "700 lanyard-$role"
  check "/etc/lanyard/$role.yaml is a conffile" in_root sh -c "dpkg-query -W -f '\${Conffiles}' lanyard-$role | grep -q /etc/lanyard/$role.yaml"
  check "lanyard-$role.service installed" test -f "$root/lib/systemd/system/lanyard-$role.service"
  check "lanyard-$role(8) installed" test -f "$root/usr/share/man/man8/lanyard-$role.8.gz"
done
check "lanyard-agent on every user's PATH (/usr/bin)" test -L "$root/usr/bin/lanyard-agent"
check "liblanyard-workload.so.1 found by ld.so" in_root sh -c "ldconfig -p | grep -q 'liblanyard-workload.so.1 '"

say "the packaged server as its service runs it: user lanyard-server, /etc/lanyard/server.yaml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
in_root install -d -m 0700 -o lanyard-server -g lanyard-server /run/lanyard-server
in_root_bg setpriv --reuid=lanyard-server --regid=lanyard-server --init-groups \
  lanyard-server run -config /etc/lanyard/server.yaml -bindAddress 127.0.0.1 -serverPort "$port" \
  >"$work/service.log" 2>&1
spid=$!
ok=0
for _ in $(seq 100); do
  if in_root lanyard-server healthcheck -socketPath /run/lanyard-server/private/api.sock >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
check "healthcheck on /run/lanyard-server/private/api.sock" test $ok = 1
check "the server's data in /var/lib/lanyard-server, owned by lanyard-server" \
  test "$(in_root stat -c %U /var/lib/lanyard-server/ca 2>/dev/null || in_root sh -c 'stat -c %U /var/lib/lanyard-server/* | head -1')" = lanyard-server
[ $ok = 1 ] || tail -20 "$work/service.log"

say "the packaged agent as its service runs it: user lanyard-agent, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only"
admin=(-socketPath /run/lanyard-server/private/api.sock)
token=$(in_root lanyard-server token generate "${admin[@]}" | awk '/^Token:/ {print $2}')
in_root sh -c "lanyard-server bundle show -socketPath /run/lanyard-server/private/api.sock > /etc/lanyard/bundle.pem"
in_root lanyard-server entry create "${admin[@]}" -spiffeID spiffe://example.org/nobody \
  -parentID "spiffe://example.org/lanyard/agent/join_token/$token" \
  -selector unix:uid:65534 -selector unix:path:/usr/sbin/lanyard-agent >/dev/null
in_root install -d -m 0755 -o lanyard-agent -g lanyard-agent /run/lanyard-agent
caps=+sys_ptrace,+dac_read_search
agent_run() {
  in_root_bg setpriv --reuid=lanyard-agent --regid=lanyard-agent --init-groups "$@" \
    lanyard-agent run -config /etc/lanyard/agent.yaml -serverPort "$port" -joinToken "$token" >>"$work/agent.log" 2>&1
  apid=$!
}
agent_stop() { kill "$apid" 2>/dev/null || true; wait "$apid" 2>/dev/null || true; }
fetch_as_nobody() {
  in_root setpriv --reuid=65534 --regid=65534 --clear-groups \
    lanyard-agent api fetch x509 -socketPath /run/lanyard-agent/public/api.sock 2>&1
}
agent_run --inh-caps=$caps --ambient-caps=$caps
out=""
for _ in $(seq 100); do
  out=$(fetch_as_nobody) && break
  sleep 0.2
done
check "a workload of another user (nobody) gets its SVID from the agent with the unit's capabilities" \
  grep -q "spiffe://example.org/nobody" <<<"$out"
check "the agent ran as lanyard-agent" test "$(in_root stat -c %U "/proc/$apid")" = lanyard-agent
agent_stop
# The same agent (its SVID kept in /var/lib/lanyard-agent) without the two
# capabilities cannot read a caller's /proc/PID/exe: the unit needs them.
agent_run
for _ in $(seq 100); do
  in_root lanyard-agent healthcheck -socketPath /run/lanyard-agent/public/api.sock >/dev/null 2>&1 && break
  sleep 0.1
done
out=$(fetch_as_nobody) && got=1 || got=0
echo "    without: $out"
check "without them, the same caller is refused (the capabilities are needed)" test $got = 0
agent_stop
kill "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true

say "the demo on the installed programs (chroot)"
cp "$top/scripts/demo.sh" "$root/tmp/demo.sh"
if in_root LANYARD_DEMO_PREFIX=/usr bash /tmp/demo.sh >"$work/demo.log" 2>&1; then
  echo "ok: demo"
else
  echo "FAIL: demo"; fails=$((fails + 1))
fi
grep -E '^(==>|connected to|OK|/tmp/.*: OK)|: OK$' "$work/demo.log" | sed 's/^/    /'
check "the demo ran the installed programs" grep -q "using the programs installed in /usr" "$work/demo.log"
check "the example client authenticated the example server over mTLS" \
  grep -q "^connected to spiffe://example.org/demo/example-server" "$work/demo.log"
[ $fails -eq 0 ] || tail -30 "$work/demo.log"

say "purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q lanyard-server lanyard-agent >>"$work/apt.log" 2>&1
check "purge removed /var/lib/lanyard-server and /var/lib/lanyard-agent" \
  test ! -e "$root/var/lib/lanyard-server" -a ! -e "$root/var/lib/lanyard-agent"

echo
echo "package-test: $(( $(date +%s) - t0 ))s in all"
[ $fails -eq 0 ] && echo "package-test: passed" || echo "package-test: FAILED: $fails failure(s)"
[ $fails -eq 0 ]
