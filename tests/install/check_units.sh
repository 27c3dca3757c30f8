#!/bin/bash
# check_units.sh BUILD_DIR: the systemd units (dist/systemd/) as installed
# by `cmake --install` (DESTDIR, prefix /usr) pass `systemd-analyze verify`
# with nothing to say (it exits 0 on unknown keys and bad values, so any
# output fails), their ExecStart= pointed at the installed programs and
# their Documentation= at the installed man pages; and they keep what
# SPEC §2 and docs/operations.md promise: Type=notify, the directory modes,
# the capability sets, the system call filter.
# Exit 77 (skipped) without systemd-analyze (Debian package systemd).
set -uo pipefail
build=$1
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze not found (Debian: apt-get install systemd)"
  exit 77
fi
tmp=$(mktemp -d /tmp/lanyard-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

root=$tmp/root
DESTDIR=$root cmake --install "$build" --prefix /usr >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
mkdir "$tmp/units"
for u in lanyard-server lanyard-agent; do
  f=$(find "$root" -name "$u.service" | head -1)
  [ -n "$f" ] || { fail "$u.service not installed"; continue; }
  ok "$u.service installed (${f#"$root"})"
  sed "s|^ExecStart=[^ ]*/sbin/|ExecStart=$root/usr/sbin/|" "$f" >"$tmp/units/$u.service"
done
man=--man=yes
if [ -z "$(find "$root" -name 'lanyard-server.8*' | head -1)" ]; then
  echo "note: no man pages built (no pandoc): Documentation= not checked"
  man=--man=no
fi
out=$(MANPATH=$root/usr/share/man systemd-analyze verify "$man" "$tmp"/units/*.service 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
  ok "systemd-analyze verify: clean ($(systemd-analyze --version | head -1))"
else
  fail "systemd-analyze verify (exit $rc): $out"
fi

has() { grep -qx "$2" "$tmp/units/$1.service" && ok "$1: $2" || fail "$1: no line '$2'"; }
for u in lanyard-server lanyard-agent; do
  has $u "Type=notify"
  has $u "StateDirectoryMode=0700"
  has $u "NoNewPrivileges=yes"
  has $u "ProtectSystem=strict"
  has $u "ProtectHome=yes"
  has $u "PrivateTmp=yes"
  has $u "SystemCallFilter=@system-service"
  has $u "ExecReload=/bin/sh -c 'kill -HUP \"\$MAINPID\"'"
done
has lanyard-server "RuntimeDirectoryMode=0700"
has lanyard-server "CapabilityBoundingSet="
has lanyard-agent "RuntimeDirectoryMode=0755"
has lanyard-agent "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"
# The agent reads other users' /proc/PID: nothing may hide them.
if grep -Eq '^(ProtectProc|ProcSubset)=' "$tmp/units/lanyard-agent.service"; then
  fail "lanyard-agent: ProtectProc=/ProcSubset= would hide callers' /proc entries"
else
  ok "lanyard-agent: /proc of other users stays visible"
fi
# Every program an Exec*= line runs, but the daemon itself, must be on
# every Debian host: in an Essential package (a minimal Debian 12 has no
# /bin/kill, procps is not Essential: `systemctl reload` failed there,
# scripts/systemd-boot-test.sh). Checked where dpkg knows the file.
for u in lanyard-server lanyard-agent; do
  while read -r prog; do
    case $prog in */$u) continue ;; esac
    pkg=$(dpkg-query -S "$prog" 2>/dev/null | grep -v "^diversion by" | head -1 | cut -d: -f1) || pkg=""
    if [ -z "$pkg" ]; then
      echo "note: $u: $prog not known to dpkg here: not checked"
    elif [ "$(dpkg-query -W -f '${Essential}' "$pkg")" = yes ]; then
      ok "$u: $prog is in $pkg (Essential)"
    else
      fail "$u: $prog is in $pkg, which is not Essential: a minimal host lacks it"
    fi
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$tmp/units/$u.service")
done
# The config files the units name are installed.
for u in server agent; do
  conf=$(sed -n 's/^ExecStart=.* -config \(.*\)$/\1/p' "$tmp/units/lanyard-$u.service")
  [ -f "$root/usr${conf#/usr/local}" ] || [ -f "$root$conf" ] || [ -f "$(find "$root" -path "*/lanyard/$u.yaml" | head -1)" ] &&
    ok "lanyard-$u: its config file $conf is installed" || fail "lanyard-$u: $conf not installed"
done

[ $fails -eq 0 ] && echo "passed: 0 failure(s)" || echo "FAILED: $fails failure(s)"
[ $fails -eq 0 ]
