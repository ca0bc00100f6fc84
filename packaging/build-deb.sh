#!/usr/bin/env bash
# Build the rossfs Debian package with dpkg-deb (no debhelper, no extra crates).
#
# usage: packaging/build-deb.sh [OUTPUT_DIR]        (default OUTPUT_DIR: target/debian)
#
# Packages target/release/rossfs, running `cargo build --release` first when it is missing.
# Prints the path of the .deb as the last line of its output.
#
# Environment:
#   ROSSFS_DEB_BINARY       package this rossfs binary instead (e.g. target/debug/rossfs, which
#                           the tests use to avoid a release build); it must exist
#   ROSSFS_DEB_COMPRESSION  dpkg-deb compressor: xz (default), gzip, zstd or none
#   ROSSFS_DEB_MAINTAINER   the Maintainer field
#   SOURCE_DATE_EPOCH       timestamp for the man page and the file dates (reproducible builds)
#
# Contents:
#   /usr/bin/rossfs                                    the program (stripped)
#   /sbin/mount.fuse.rossfs                            mount(8) helper, from mount-helper/
#   /usr/share/man/man8/rossfs.8.gz                    generated from `rossfs --help` (gen-man.sh)
#   /usr/share/man/man8/mount.fuse.rossfs.8.gz         pointer to rossfs(8)
#   /usr/share/bash-completion/completions/rossfs      bash completion
#   /usr/share/doc/rossfs/{README.Debian,copyright,examples/}
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-$repo/target/debian}
compression=${ROSSFS_DEB_COMPRESSION:-xz}
maintainer=${ROSSFS_DEB_MAINTAINER:-rossfs developers <rossfs@users.noreply.invalid>}

die() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

for tool in dpkg-deb dpkg gzip awk; do
    command -v "$tool" >/dev/null || die "'$tool' is needed (apt-get install dpkg gzip mawk)"
done

if [[ -n ${ROSSFS_DEB_BINARY:-} ]]; then
    bin=$ROSSFS_DEB_BINARY
    [[ -x $bin ]] || die "ROSSFS_DEB_BINARY=$bin is not an executable file"
else
    bin=$repo/target/release/rossfs
    if [[ ! -x $bin ]]; then
        echo "build-deb.sh: $bin is missing, building it" >&2
        locked=()
        [[ -f $repo/Cargo.lock ]] && locked=(--locked)
        (cd "$repo" && cargo build --release "${locked[@]}" --bin rossfs) >&2
    fi
fi

version=$("$bin" --version | awk '{ print $NF }')
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "'$bin --version' gave no usable version ('$version')"
arch=$(dpkg --print-architecture)
: "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

stage=$(mktemp -d "${TMPDIR:-/tmp}/rossfs-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/rossfs_${version}_$arch
doc=$root/usr/share/doc/rossfs

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/sbin" "$root/usr/share/man/man8" \
    "$root/usr/share/bash-completion/completions" "$doc/examples"

install -m 0755 "$bin" "$root/usr/bin/rossfs"
if command -v strip >/dev/null; then
    strip --strip-unneeded "$root/usr/bin/rossfs"
fi
install -m 0755 "$repo/mount-helper/mount.fuse.rossfs" "$root/sbin/mount.fuse.rossfs"

"$here/gen-man.sh" "$bin" >"$stage/rossfs.8"
gzip -9n <"$stage/rossfs.8" >"$root/usr/share/man/man8/rossfs.8.gz"
printf '.so man8/rossfs.8\n' | gzip -9n >"$root/usr/share/man/man8/mount.fuse.rossfs.8.gz"

install -m 0644 "$here/completions/rossfs.bash" "$root/usr/share/bash-completion/completions/rossfs"
install -m 0644 "$here/debian/README.Debian" "$here/debian/copyright" "$doc/"
install -m 0644 "$here/examples/mnt-data.mount" "$here/examples/mnt-data.automount" \
    "$here/examples/fstab" "$doc/examples/"
install -m 0755 "$here/debian/postinst" "$root/DEBIAN/postinst"

# Depends: fuse3 (fusermount3 for non-root mounts, /dev/fuse set up) and the shared libraries
# the binary links, found through dpkg -S; libc6 versioned by the newest GLIBC_ symbol used.
libs=()
while read -r soname; do
    # No early exit in the awk programs below: with pipefail, a writer cut off by SIGPIPE
    # would fail the whole script (exit 141) whenever awk stopped reading first.
    path=$(ldconfig -p | awk -v so="$soname" '$1 == so && !found { print $NF; found = 1 }')
    [[ -n $path ]] || die "cannot find $soname, which rossfs links"
    # dpkg knows the path as packaged (/lib/... on bookworm even with merged /usr).
    pkg=$(dpkg -S "$path" 2>/dev/null | awk -F: 'NR == 1 { print $1 }') ||
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | awk -F: 'NR == 1 { print $1 }') || true
    [[ -n $pkg ]] || die "no package owns $path ($soname)"
    if [[ $pkg == libc6 ]] && command -v objdump >/dev/null; then
        glibc=$(objdump -T "$root/usr/bin/rossfs" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' |
            sort -u -V | tail -n1)
        [[ -n $glibc ]] && pkg="libc6 (>= $glibc)"
    fi
    libs+=("$pkg")
done < <(objdump -p "$root/usr/bin/rossfs" 2>/dev/null | awk '$1 == "NEEDED" { print $2 }')
depends=$(printf '%s\n' fuse3 "${libs[@]}" | awk '!seen[$0]++' | paste -sd, - | sed 's/,/, /g')

description=$(awk -F' = ' '$1 == "description" { gsub(/"/, "", $2); print $2; exit }' "$repo/Cargo.toml")
homepage=$(awk -F' = ' '$1 == "repository" { gsub(/"/, "", $2); print $2; exit }' "$repo/Cargo.toml")
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<EOF
Package: rossfs
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: utils
Priority: optional
Homepage: $homepage
Description: ${description:-mount an S3 bucket through FUSE}
 rossfs mounts a bucket of an S3-compatible object store (AWS S3, Alibaba OSS,
 MinIO, Garage, Ceph RGW) as a directory tree. It reads the metadata s3fs-fuse
 and ossfs write, reports S3 errors with the server's reason, and works with
 mount(8), /etc/fstab and systemd mount units (type fuse.rossfs).
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb=$(cd "$out" && pwd)/rossfs_${version}_$arch.deb
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >&2
echo "$deb"
