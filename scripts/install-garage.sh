#!/usr/bin/env bash
# Make a Garage S3 server binary available for the tests and the demo, building it once.
#
# Order of preference:
#   1. $GARAGE_BIN, if it names an executable;
#   2. a previous build in ${ROSSFS_CACHE:-$HOME/.cache/rossfs}/garage-2.5.0/bin/garage;
#   3. a fresh `cargo install` into that directory (about 16 minutes on two cores).
# Progress goes to stderr; the last line on stdout is the path of the binary.
set -euo pipefail

GARAGE_VERSION=2.5.0
cache="${ROSSFS_CACHE:-$HOME/.cache/rossfs}"
root="$cache/garage-$GARAGE_VERSION"
bin="$root/bin/garage"

if [[ -n "${GARAGE_BIN:-}" && -f "$GARAGE_BIN" && -x "$GARAGE_BIN" ]]; then
    echo "$GARAGE_BIN"
    exit 0
fi
if [[ -n "${GARAGE_BIN:-}" ]]; then
    echo "install-garage: GARAGE_BIN=$GARAGE_BIN is not executable; ignoring it" >&2
fi
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

command -v cargo >/dev/null || {
    echo "install-garage: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
}
mkdir -p "$cache"
# One build at a time per cache: a second caller waits for the first and reuses its result.
exec 9>"$cache/garage-$GARAGE_VERSION.lock"
if ! flock -n 9; then
    echo "install-garage: another build holds $cache/garage-$GARAGE_VERSION.lock; waiting" >&2
    flock 9
fi
if [[ ! -x "$bin" ]]; then
    echo "install-garage: building Garage $GARAGE_VERSION into $root (takes a while)" >&2
    cargo install "garage@$GARAGE_VERSION" --locked --no-default-features \
        --features lmdb,bundled-libs --root "$root" >&2
fi
"$bin" --version >&2
echo "$bin"
