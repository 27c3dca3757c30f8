#!/usr/bin/env bash
# Builds Lanyard's container image without a Docker engine: a Debian 12
# root (debootstrap, minbase: what debian:bookworm-slim holds) with the
# packages lanyard-server, lanyard-agent and liblanyard-workload1 installed
# by apt, trimmed, its timestamps set to the last commit's, and packed by
# umoci into an OCI image layout; skopeo (if present) also writes a
# docker-archive for `kind load image-archive` and `docker load`.
#
#   scripts/image-build.sh OUTDIR [DEBDIR]
#
# One image for every role (the manifests in k8s/ run lanyard-server,
# lanyard-agent and the example workload from it): the daemons share all
# their libraries, so two images would only repeat the same layer. Its user
# is lanyard (1000:1000, as k8s/server-statefulset.yaml runs it); the agent's
# DaemonSet runs it as root (it reads /proc of other users' processes).
#
# Tags: <version> and <version>-g<commit>; the same commit and the same
# packages make the same layer and config, hence the same digest
# (SOURCE_DATE_EPOCH = the commit's time, for the files, the config and its
# one history entry; Debian's
# packages from the mirror must not have changed in between).
# OUTDIR gets: lanyard-oci/ (OCI layout), lanyard-<version>.docker.tar,
# image.txt (tags, digest, sizes).
# DEBDIR: the .debs (scripts/package-build.sh); built first when absent.
# Needs root (debootstrap, chroot, umoci unpack) and umoci.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n==> %s\n' "$*"; }
die() { echo "image-build: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
command -v umoci >/dev/null || die "umoci not found (apt-get install umoci)"
out=${1:?usage: image-build.sh OUTDIR [DEBDIR]}
mkdir -p "$out"
out=$(cd "$out" && pwd)
t0=$(date +%s)

work=$(mktemp -d /tmp/lanyard-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
debs=${2:-}
if [ -z "$debs" ]; then
  say "building the packages"
  bash "$top/scripts/package-build.sh" "$work/debs"
  debs=$work/debs
fi

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
commit=$(git -C "$top" rev-parse --short=12 HEAD)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  sed -n -e 's/^URIs: *\([^ ]*\).*/\1/p' -e 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\).*/\2/p' |
  grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

cache=${LANYARD_PKGTEST_CACHE:-${HOME:-/root}/.cache/lanyard}
base=$cache/bookworm-minbase-image.tar
if [ ! -f "$base" ]; then
  say "debootstrap bookworm (minbase) from $mirror"
  mkdir -p "$cache" "$work/base"
  nice debootstrap --variant=minbase bookworm "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  tar -C "$work/base" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$work/base"
fi

say "the root file system: Debian 12 minbase + lanyard-server, lanyard-agent, liblanyard-workload1"
rootfs=$work/rootfs
mkdir "$rootfs"
tar -C "$rootfs" -xf "$base"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mkdir "$rootfs/tmp/debs"
for p in lanyard-server lanyard-agent liblanyard-workload1; do cp "$debs"/${p}_*.deb "$rootfs/tmp/debs/"; done
in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
in_root apt-get update -q >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; die "apt-get update failed"; }
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/debs/*.deb' \
  >>"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; die "apt-get install failed"; }
# The user k8s/ runs the server and the example workload as; its home is
# the working directory, where `run` without -dataDir keeps its data (0700).
in_root groupadd --gid 1000 lanyard
in_root useradd --uid 1000 --gid 1000 --home-dir /var/lib/lanyard --no-create-home --shell /usr/sbin/nologin lanyard
install -d -m 0700 -o 1000 -g 1000 "$rootfs/var/lib/lanyard"
# The packages' data dirs belong to their system users (for systemd hosts);
# in k8s a volume is mounted there and the roles run as 1000 or root: the
# daemon makes its data dir (0700) as whoever it runs as.
rm -rf "$rootfs/var/lib/lanyard-server" "$rootfs/var/lib/lanyard-agent"

# Trim what a container does not use: package lists and caches, logs, docs
# (not the copyright files), man pages, locales; no resolv.conf or
# machine-id of this machine.
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/cache/ldconfig/aux-cache "$rootfs"/var/log/* "$rootfs"/tmp/debs \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/machine-id"
echo lanyard >"$rootfs/etc/hostname"
# Reproducible: every file's time is the commit's.
find "$rootfs" -xdev -newermt "@$epoch" -exec touch -h -d "@$epoch" {} +

say "packing with umoci ($(umoci --version))"
layout=$out/lanyard-oci
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs"
mv "$rootfs" "$work/bundle/rootfs"
umoci repack --image "$layout:$version" --history.created "$created" \
  --history.created_by "scripts/image-build.sh (Debian 12 minbase + lanyard $version packages)" "$work/bundle"
umoci config --no-history --image "$layout:$version" --created "$created" \
  --config.user 1000:1000 --config.workingdir /var/lib/lanyard \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd lanyard-server --config.cmd -h \
  --config.label org.opencontainers.image.title=lanyard \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$commit" \
  --config.label "org.opencontainers.image.created=$created" \
  --config.label "org.opencontainers.image.description=Lanyard SPIFFE server and agent"
umoci tag --image "$layout:$version" "$version-g$commit"
umoci gc --layout "$layout"

digest=$(python3 - "$layout" "$version" <<'PY'
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
for m in idx["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])
PY
)
archive=""
if command -v skopeo >/dev/null; then
  archive=$out/lanyard-$version.docker.tar
  rm -f "$archive"
  skopeo copy --quiet "oci:$layout:$version" "docker-archive:$archive:lanyard:$version"
fi
layer_bytes=$(python3 - "$layout" "$digest" <<'PY'
import json, sys
d = sys.argv[2].split(":")[1]
m = json.load(open(f"{sys.argv[1]}/blobs/sha256/{d}"))
print(sum(l["size"] for l in m["layers"]))
PY
)
unpacked=$(du -sb "$work/bundle/rootfs" | cut -f1)
{
  echo "tags: lanyard:$version lanyard:$version-g$commit"
  echo "manifest digest: $digest"
  echo "compressed layer: $layer_bytes bytes ($(( layer_bytes / 1024 / 1024 )) MiB)"
  echo "unpacked root: $unpacked bytes ($(( unpacked / 1024 / 1024 )) MiB)"
  [ -z "$archive" ] || echo "docker-archive: $(basename "$archive") $(stat -c %s "$archive") bytes"
  echo "built in $(( $(date +%s) - t0 ))s"
} | tee "$out/image.txt"
