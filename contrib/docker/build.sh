#!/usr/bin/env bash
# Builds a pinfold image from a locally built binary, without pulling anything: the root
# filesystem is the binary plus the shared libraries `ldd` lists (the binaries link glibc
# dynamically), an empty /tmp and a data directory owned by the image's user.
#
# Usage: contrib/docker/build.sh registry|provider BINARY TAG
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 registry|provider BINARY TAG" >&2
    exit 2
fi
kind="$1" bin="$2" tag="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "$kind" in
    registry) name=task-defs ;;
    provider) name=provider ;;
    *)
        echo "build.sh: unknown image $kind (registry or provider)" >&2
        exit 2
        ;;
esac
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable" >&2; exit 2; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/data"
# The provider's node directory holds its data and work directories.
[ "$kind" = provider ] && mkdir -p "$ctx/data/data" "$ctx/data/work"
chmod 1777 "$ctx/rootfs/tmp"
cp "$bin" "$ctx/rootfs/usr/local/bin/$name"
# Every library the dynamic loader resolves, and the loader itself, at the same paths.
ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\// {print $1}' | sort -u | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$here/Dockerfile.$kind" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
