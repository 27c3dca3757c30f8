#!/usr/bin/env bash
# Boots a real systemd (Debian 12's, in systemd-nspawn) on a fresh Debian 12
# root with Lanyard's packages installed, and runs the two shipped units
# under it, as a host would:
#   - systemctl start lanyard-server, lanyard-agent: Type=notify readiness
#     reached (ActiveState=active, SubState=running);
#   - the directories StateDirectory=/RuntimeDirectory= make, with their modes;
#   - the hardened agent (its own user, two capabilities, the system call
#     filter) attests a workload of another user (nobody) through /proc and
#     returns its SVID;
#   - systemctl reload: SIGHUP re-reads the log level, same main pid;
#   - systemctl stop: inactive, exit status 0, /run directories removed.
#
#   scripts/systemd-boot-test.sh [DEBDIR]
#
# DEBDIR holds the .debs (scripts/package-build.sh OUTDIR); without it they
# are built first. Needs root, systemd-nspawn on the host (Debian's
# systemd-container) and the Debian mirror (the first run caches a root
# with systemd in $LANYARD_PKGTEST_CACHE, default ~/.cache/lanyard).
# Exits 77 with "SKIP ..." when systemd cannot boot here. The container has
# its own network namespace (--private-network: loopback only), so the
# shipped config's fixed port 8081 is its own. nspawn runs with
# --register=no --keep-unit: the host's PID 1 is not systemd (no system
# bus to register a machine or allocate a scope with).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n==> %s\n' "$*"; }
die() { echo "systemd-boot-test: $*" >&2; exit 1; }
skip() { echo "SKIP systemd-boot-test: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn, chroot)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not found (apt-get install systemd-container)"
for t in chroot mount nsenter; do command -v $t >/dev/null || die "$t not found"; done
t0=$(date +%s)

work=$(mktemp -d /tmp/lanyard-sdboot.XXXXXX)
root=$work/root
npid=""
name=lanyard-sdboot-$$
cleanup() {
  if [ -n "$npid" ] && kill -0 "$npid" 2>/dev/null; then
    kill "$npid" 2>/dev/null || true # nspawn: SIGTERM halts the container
    for _ in $(seq 100); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$npid" 2>/dev/null || true
  fi
  if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
  # nspawn leaves it when /run is not a tmpfs ("Attempted to remove disk file system ...").
  rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

debs=${1:-}
if [ -z "$debs" ]; then
  say "building the packages"
  bash "$top/scripts/package-build.sh" "$work/debs"
  debs=$work/debs
fi
ls "$debs"/lanyard-server_*.deb "$debs"/lanyard-agent_*.deb "$debs"/liblanyard-workload1_*.deb >/dev/null ||
  die "$debs lacks one of the packages"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
cache=${LANYARD_PKGTEST_CACHE:-${HOME:-/root}/.cache/lanyard}
sdbase=$cache/bookworm-minbase-systemd.tar
mkdir "$root"
if [ ! -f "$sdbase" ] || [ "${LANYARD_PKGTEST_FRESH:-0}" = 1 ]; then
  [ -f "$cache/bookworm-minbase.tar" ] || die "no $cache/bookworm-minbase.tar: run scripts/package-test.sh once first"
  say "adding systemd to the cached Debian 12 root (once; cached as $sdbase)"
  tar -C "$root" -xf "$cache/bookworm-minbase.tar"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  in_root sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus' \
    >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log"; die "apt-get install systemd failed"; }
  umount "$root/proc"
  tar -C "$root" -cf "$sdbase.tmp.$$" . && mv "$sdbase.tmp.$$" "$sdbase" # two first runs at once: the last wins
else
  say "a fresh Debian 12 root with systemd from $sdbase"
  tar -C "$root" -xf "$sdbase"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

say "installing the packages with apt"
mkdir -p "$root/tmp/debs"
for p in lanyard-server lanyard-agent liblanyard-workload1; do cp "$debs"/${p}_*.deb "$root/tmp/debs/"; done
mount -t proc proc "$root/proc"
in_root sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/debs/*.deb' \
  >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; die "apt-get install failed"; }
umount "$root/proc"
rm -rf "$root/tmp/debs"
echo "installed: $(in_root dpkg-query -W -f '${Package} ${Version}, ' lanyard-server lanyard-agent liblanyard-workload1)"
echo "host: $(systemd-nspawn --version | head -1); container: $(in_root dpkg-query -W -f '${Version}' systemd)"

say "booting systemd (systemd-nspawn -b)"
systemd-nspawn -D "$root" -b -M "$name" --register=no --keep-unit --private-network --console=pipe \
  </dev/null >"$work/nspawn.log" 2>&1 &
npid=$!
leader=""
for _ in $(seq 100); do
  leader=$(ps -o pid=,comm= --ppid "$npid" 2>/dev/null | awk '$2 == "systemd" {print $1; exit}' || true)
  [ -n "$leader" ] && break
  kill -0 "$npid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/nspawn.log"; skip "systemd-nspawn did not start a container: $(tail -1 "$work/nspawn.log")"; }
in_ct() { nsenter -t "$leader" -a /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
state=""
for _ in $(seq 300); do
  state=$(in_ct systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  kill -0 "$npid" 2>/dev/null || break
  sleep 0.1
done
case $state in
  running | degraded) ;;
  *) cat "$work/nspawn.log"; skip "systemd did not boot in the container (is-system-running: '${state:-none}')" ;;
esac
echo "booted in $(( $(date +%s) - t0 ))s: $state, PID 1 is $(in_ct cat /proc/1/comm), $(in_ct systemctl --version | head -1)"
[ "$state" = running ] || in_ct systemctl --failed --no-pager || true

fails=0
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi; }
show() { in_ct systemctl show -p "$2" --value "$1"; }
active() {
  check "$1: $(in_ct systemctl show -p ActiveState,SubState,ExecMainStatus "$1" | tr '\n' ' ')" \
    test "$(show "$1" ActiveState)/$(show "$1" SubState)" = active/running
}

say "systemctl start lanyard-server (Type=notify)"
s0=$(date +%s%N)
in_ct systemctl start lanyard-server || in_ct journalctl -u lanyard-server --no-pager | tail -20
echo "    start returned in $(( ($(date +%s%N) - s0) / 1000000 )) ms"
active lanyard-server.service
check "lanyard-server.service is Type=notify" test "$(show lanyard-server Type)" = notify
check "/var/lib/lanyard-server 700 lanyard-server" test "$(in_ct stat -c '%a %U' /var/lib/lanyard-server)" = "700 lanyard-server"
check "/run/lanyard-server 700 lanyard-server" test "$(in_ct stat -c '%a %U' /run/lanyard-server)" = "700 lanyard-server"
check "/run/lanyard-server/private 700" test "$(in_ct stat -c '%a' /run/lanyard-server/private)" = 700
check "/var/log/lanyard-server 700 lanyard-server" test "$(in_ct stat -c '%a %U' /var/log/lanyard-server)" = "700 lanyard-server"
admin=(-socketPath /run/lanyard-server/private/api.sock)
check "healthcheck on the admin socket" in_ct lanyard-server healthcheck "${admin[@]}"

say "an entry for nobody, a join token, systemctl start lanyard-agent"
token=$(in_ct lanyard-server token generate "${admin[@]}" | awk '/^Token:/ {print $2}')
in_ct sh -c "lanyard-server bundle show -socketPath /run/lanyard-server/private/api.sock > /etc/lanyard/bundle.pem"
in_ct lanyard-server entry create "${admin[@]}" -spiffeID spiffe://example.org/nobody \
  -parentID "spiffe://example.org/lanyard/agent/join_token/$token" \
  -selector unix:uid:65534 -selector unix:path:/usr/sbin/lanyard-agent >/dev/null
printf '  join_token: %s\n' "$token" >>"$root/etc/lanyard/agent.yaml"
s0=$(date +%s%N)
in_ct systemctl start lanyard-agent || in_ct journalctl -u lanyard-agent --no-pager | tail -20
echo "    start returned in $(( ($(date +%s%N) - s0) / 1000000 )) ms"
active lanyard-agent.service
check "/var/lib/lanyard-agent 700 lanyard-agent" test "$(in_ct stat -c '%a %U' /var/lib/lanyard-agent)" = "700 lanyard-agent"
check "/run/lanyard-agent 755 lanyard-agent" test "$(in_ct stat -c '%a %U' /run/lanyard-agent)" = "755 lanyard-agent"
check "/run/lanyard-agent/public 755" test "$(in_ct stat -c '%a' /run/lanyard-agent/public)" = 755
check "the Workload API socket 777" test "$(in_ct stat -c '%a' /run/lanyard-agent/public/api.sock)" = 777
apid=$(show lanyard-agent MainPID)
check "the agent runs as lanyard-agent" test "$(in_ct stat -c %U /proc/"$apid")" = lanyard-agent
capeff=$(in_ct awk '/^CapEff/ {print $2}' /proc/"$apid"/status)
check "the agent's effective capabilities are CAP_DAC_READ_SEARCH|CAP_SYS_PTRACE ($capeff)" test "$capeff" = 0000000000080004
check "the agent has NoNewPrivs and a seccomp filter" \
  in_ct sh -c "grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$apid/status && grep -q '^Seccomp:[[:space:]]*2' /proc/$apid/status"

say "a workload of another user (nobody) fetches its SVID"
out=""
tries=0
for _ in $(seq 50); do
  tries=$((tries + 1))
  out=$(in_ct setpriv --reuid=65534 --regid=65534 --clear-groups \
    lanyard-agent api fetch x509 -socketPath /run/lanyard-agent/public/api.sock 2>&1) && break
  sleep 0.2
done
check "nobody's SVID from the hardened agent (fetch attempts: $tries)" grep -q "spiffe://example.org/nobody" <<<"$out"
grep -q "spiffe://example.org/nobody" <<<"$out" || echo "    $out"

say "systemctl reload (SIGHUP: the log level re-read)"
for u in lanyard-server lanyard-agent; do
  role=${u#lanyard-}
  pid0=$(show $u MainPID)
  sed -i 's/^\(  log_level:\).*/\1 debug/' "$root/etc/lanyard/$role.yaml"
  in_ct systemctl reload $u || { echo "    systemctl reload $u failed:"; in_ct journalctl -u $u --no-pager -n 5 | sed 's/^/    /'; }
  ok=0
  for _ in $(seq 50); do
    in_ct journalctl -u $u --no-pager -o cat | grep -q 'SIGHUP: log level is now debug' && { ok=1; break; }
    sleep 0.1
  done
  check "$u: reload re-read the log level (journal: SIGHUP: log level is now debug)" test $ok = 1
  check "$u: same main pid after reload, still active" \
    test "$(show $u MainPID)/$(show $u ActiveState)" = "$pid0/active"
done

say "systemctl stop"
for u in lanyard-agent lanyard-server; do
  in_ct systemctl stop $u || echo "    systemctl stop $u failed"
  check "$u: $(in_ct systemctl show -p ActiveState,Result,ExecMainStatus $u | tr '\n' ' ')" \
    test "$(show $u ActiveState)/$(show $u Result)/$(show $u ExecMainStatus)" = inactive/success/0
  check "/run/$u removed, /var/lib/$u kept" in_ct sh -c "test ! -e /run/$u && test -d /var/lib/$u"
done
in_ct journalctl -u lanyard-server -u lanyard-agent --no-pager -o cat >"$work/journal.txt" 2>&1 || true
[ $fails -eq 0 ] || tail -40 "$work/journal.txt"

say "poweroff"
in_ct systemctl poweroff --no-block >/dev/null 2>&1 || true # the bus may drop first
for _ in $(seq 200); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
check "the container halted" sh -c "! kill -0 $npid 2>/dev/null"
wait "$npid" 2>/dev/null || true
npid=""

echo
echo "systemd-boot-test: $(( $(date +%s) - t0 ))s in all"
[ $fails -eq 0 ] && echo "systemd-boot-test: passed" || echo "systemd-boot-test: FAILED: $fails failure(s)"
[ $fails -eq 0 ]
