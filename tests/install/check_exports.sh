#!/bin/sh
# check_exports.sh LIBRARY HEADER: the shared client library exports exactly
# the functions its public header declares (lib/workload/exports.map), and
# its SONAME is liblanyard-workload.so.1 (the Debian package
# liblanyard-workload1 is named after it). A name that leaks out, or a
# declared function that is not exported, fails with the name.
set -eu
lib=$1
header=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [ "$soname" = liblanyard-workload.so.1 ]; then
  echo "ok: SONAME $soname"
else
  echo "FAIL: SONAME is '$soname', not liblanyard-workload.so.1"
  fail=1
fi

# Defined, global, dynamic symbols (functions and data); the version node
# names that GNU ld adds are not symbols of ours.
nm -D --defined-only --extern-only "$lib" | awk '$2 != "A" {print $3}' | sed 's/@.*//' | sort -u >"$tmp/exported"
# Functions the header declares: the preprocessor drops the comments (and
# expands what OpenSSL's headers bring, which are not lanyard_ names).
${CC:-cc} -E -P -x c "$header" | tr '\n' ' ' |
  grep -o '[A-Za-z_][A-Za-z0-9_]* *(' | sed 's/ *($//' | grep '^lanyard_' | sort -u >"$tmp/declared"
# Typedef'd callback types are not functions.
${CC:-cc} -E -P -x c "$header" | grep -o 'typedef [^;]*(\*\(lanyard_[a-z0-9_]*\))' |
  sed 's/.*(\*\(.*\))/\1/' | sort -u >"$tmp/types"
comm -23 "$tmp/declared" "$tmp/types" >"$tmp/functions"

extra=$(comm -23 "$tmp/exported" "$tmp/functions")
missing=$(comm -13 "$tmp/exported" "$tmp/functions")
if [ -n "$extra" ]; then
  echo "FAIL: exported but not in $header:" $extra
  fail=1
fi
if [ -n "$missing" ]; then
  echo "FAIL: declared in $header but not exported:" $missing
  fail=1
fi
n=$(wc -l <"$tmp/exported")
[ -n "$extra$missing" ] || echo "ok: $n exported names, all and only the header's functions"
[ "$n" -gt 20 ] || { echo "FAIL: only $n names found: the header parse broke"; fail=1; }
exit $fail
