#!/usr/bin/env bash
# Builds the deterministic busybox test image and loads it into the local Docker engine
# (no registry involved), then checks that its id is the one pinned by the docker example.
#
# Usage:
#   provider/testdata/image/build.sh            build, load, check the pin
#   provider/testdata/image/build.sh --check    build and check the pin only (no docker)
#
# Needs a static busybox (Debian/Ubuntu: apt-get install busybox-static) at /bin/busybox,
# or PINFOLD_BUSYBOX=/path/to/busybox. The image id is the SHA-256 of a config JSON
# written byte for byte by provider/src/docker/testimage.rs, so it depends only on the
# busybox binary: the pin in task-defs/examples/busybox-sha256sum/taskdef.toml was made
# with Debian bookworm's busybox-static 1:1.35.0-4+deb12u1+b1 (amd64).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
pin="$(sed -n 's/^image = "\(sha256:[0-9a-f]*\)"$/\1/p' "$repo/task-defs/examples/busybox-sha256sum/taskdef.toml")"
if [ -z "$pin" ]; then
    echo "build.sh: no image pin found in the busybox-sha256sum example" >&2
    exit 1
fi

args=(--check "$pin")
case "${1:-}" in
    "") args+=(--load) ;;
    --check) ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
cd "$repo"
cargo run -q -p provider --example test_image -- "${args[@]}"
