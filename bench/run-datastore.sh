#!/bin/sh
# run-datastore.sh: registration entry creation (and reads) through the
# datastore, SQLite against PostgreSQL, on this machine.
#
#   bench/run-datastore.sh [BUILD_DIR] [N]
#
# Runs bench_datastore on a fresh SQLite file and on a fresh database of a
# throw-away PostgreSQL cluster (initdb in a temp dir, Unix socket only,
# fsync and synchronous_commit on: PostgreSQL's defaults; run as nobody
# when started as root), then prints a markdown table. N entries, default
# 1000. Both go through the same calls as the server: one durable
# transaction per entry.
#
# BUILD_DIR: a build tree with bench/bench_datastore. Without it, an
# optimised tree is configured and built in $LANYARD_BENCH_BUILD
# (default /tmp/lanyard-bench-build). PostgreSQL binaries:
# $LANYARD_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${1:-}
n=${2:-1000}

if [ -z "$build" ]; then
	build=${LANYARD_BENCH_BUILD:-/tmp/lanyard-bench-build}
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	cmake --build "$build" --target bench_datastore -j2 >/dev/null
fi
bin=$build/bench/bench_datastore
if [ ! -x "$bin" ]; then
	echo "run-datastore.sh: $bin not found (build the bench_datastore target)" >&2
	exit 1
fi

pgbin=${LANYARD_PG_BINDIR:-}
if [ -z "$pgbin" ]; then
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
		if [ -x "$d/initdb" ]; then pgbin=$d; break; fi
	done
fi
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
	echo "run-datastore.sh: no PostgreSQL binaries (install postgresql, or set LANYARD_PG_BINDIR)" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/lanyard-dsbench-XXXXXX)
chmod 0755 "$tmp"
as=""
if [ "$(id -u)" = 0 ]; then
	chown nobody:nogroup "$tmp"
	as="setpriv --reuid=nobody --regid=nogroup --clear-groups"
fi
cleanup() {
	(cd "$tmp" && $as "$pgbin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1) || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

(cd "$tmp" && $as "$pgbin/initdb" -D "$tmp/data" -U lanyard --auth=trust -E UTF8 --locale=C \
	--no-instructions >/dev/null)
cat >>"$tmp/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$tmp'
port = 5432
EOF
(cd "$tmp" && $as "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/data/postgres.log" -w start >/dev/null)
"$pgbin/psql" -h "$tmp" -p 5432 -U lanyard -d postgres -q -c "CREATE DATABASE bench" >/dev/null

mkdir -p "$tmp/sqlite"
floor=$("$bin" fsync "$tmp/sqlite/floor" "$n")
sq=$("$bin" sqlite "$tmp/sqlite/datastore.sqlite3" "$n")
pg=$("$bin" postgres "host=$tmp port=5432 user=lanyard dbname=bench" "$n")

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
disk=$(df -P "$tmp" | awk 'NR == 2 { print $1 }')
echo "Entry creation, $n entries, one durable transaction each ($(nproc) CPUs, $disk, $("$pgbin/postgres" --version))."
echo "Floor: \`fsync\`, a 4 KiB pwrite + fdatasync on the same disk in the same run."
echo
echo "| back end | create: total s | entries/s | p50 us | p99 us | list all ms | changes since 0 ms | get p50 us |"
echo "|---|---|---|---|---|---|---|---|"
for line in "$floor" "$sq" "$pg"; do
	echo "| $(field "$line" backend) | $(field "$line" create_s) | $(field "$line" create_per_s) |" \
		"$(field "$line" create_p50_us) | $(field "$line" create_p99_us) | $(field "$line" list_ms) |" \
		"$(field "$line" changes_ms) | $(field "$line" get_p50_us) |"
done
