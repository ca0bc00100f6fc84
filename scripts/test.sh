#!/usr/bin/env bash
# Run the whole rossfs test suite: formatting, lints, build and tests, on a Debian 12 machine as
# root. Installs what is missing (fuse3, a C toolchain, pkg-config, rustfmt, clippy, Garage)
# and fails on the first problem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n=== %s ===\n' "$*"; }

section "System packages"
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v cc >/dev/null || missing+=(build-essential)
command -v flock >/dev/null || missing+=(util-linux)
# Real programs the POSIX and packaging tests run on the mount.
command -v git >/dev/null || missing+=(git)
command -v rsync >/dev/null || missing+=(rsync)
command -v socat >/dev/null || missing+=(socat)
command -v openssl >/dev/null || missing+=(openssl)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v man >/dev/null || missing+=(man-db)
command -v groff >/dev/null || missing+=(groff-base)
[[ -f /etc/mime.types ]] || missing+=(media-types)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "fuse3, pkg-config, a C compiler and the test tools are present"
fi
if [[ ! -c /dev/fuse ]]; then
    modprobe fuse 2>/dev/null || true
    [[ -c /dev/fuse ]] || { echo "/dev/fuse is missing: the mount tests cannot run" >&2; exit 1; }
fi

section "Rust toolchain"
command -v cargo >/dev/null || {
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
}
for component in rustfmt clippy; do
    tool=${component/rustfmt/fmt}
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
cargo --version

section "Garage (S3 server for the tests)"
GARAGE_BIN="$(scripts/install-garage.sh | tail -n1)"
export GARAGE_BIN
echo "using $GARAGE_BIN"

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

section "cargo fmt --check"
cargo fmt --all --check

section "cargo build"
cargo build "${locked[@]}" --all-targets

section "cargo clippy"
cargo clippy "${locked[@]}" --all-targets -- -D warnings

section "cargo test"
cargo test "${locked[@]}" --no-fail-fast

section "All checks passed"
