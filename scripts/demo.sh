#!/usr/bin/env bash
# Quick start: mount an S3 bucket with rossfs against a local Garage server.
#
# Installs fuse3 and Garage if needed, builds rossfs in release mode, starts (or reuses) a
# single-node Garage whose state lives in $ROSSFS_DEMO_DIR (default /tmp/rossfs-demo), creates
# the bucket `demo` and mounts it at $ROSSFS_DEMO_DIR/mnt. Running it again reuses everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

demo_dir="${ROSSFS_DEMO_DIR:-/tmp/rossfs-demo}"
mkdir -p "$demo_dir"
demo_dir="$(cd "$demo_dir" && pwd)"
mnt="$demo_dir/mnt"
bucket=demo

step() { printf '\n--- %s\n' "$*"; }

step "checking system packages"
if ! command -v fusermount3 >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3
fi

step "getting Garage"
GARAGE_BIN="$(scripts/install-garage.sh | tail -n1)"
export GARAGE_BIN

step "building rossfs (release)"
locked=()
[[ -f Cargo.lock ]] && locked=(--locked)
cargo build --release "${locked[@]}" --bin rossfs
rossfs="${CARGO_TARGET_DIR:-$repo/target}/release/rossfs"

step "starting Garage"
envfile="$(scripts/garage-server.sh start "$demo_dir/garage" | tail -n1)"
# shellcheck source=/dev/null
source "$envfile"
garage() { "$GARAGE_BIN" -c "$demo_dir/garage/garage.toml" "$@"; }

step "creating bucket $bucket"
if garage bucket info "$bucket" >/dev/null 2>&1; then
    echo "bucket $bucket already exists"
else
    garage bucket create "$bucket" >/dev/null
    echo "created bucket $bucket"
fi
garage bucket allow "$bucket" --read --write --owner --key "$S3_ACCESS_KEY" >/dev/null

step "mounting"
passwd="$demo_dir/passwd"
(umask 077 && printf '%s:%s\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$passwd")
chmod 600 "$passwd"
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
    echo "$mnt is already mounted; leaving it as it is"
else
    "$rossfs" "$bucket" "$mnt" \
        -o "url=$S3_ENDPOINT,use_path_request_style,region=$S3_REGION,passwd_file=$passwd"
fi

cat <<DONE

rossfs is serving bucket '$bucket' at:   $mnt
  try:          echo hello > $mnt/hello.txt && ls -l $mnt
  S3 endpoint:  $S3_ENDPOINT (region $S3_REGION, credentials in $passwd)
  unmount:      fusermount3 -u $mnt
  stop Garage:  $repo/scripts/garage-server.sh stop $demo_dir/garage
DONE
