#!/usr/bin/env bash
# Builds the WebAssembly module of every example task definition from its C
# source: task-defs/examples/<name>/src/<name>.c -> task-defs/examples/<name>/<name>.wasm
#
# Usage:
#   task-defs/examples/build.sh            rebuild the committed .wasm files
#   task-defs/examples/build.sh --check    build into a temporary directory and
#                                          compare byte-for-byte with the committed
#                                          .wasm files; lists those that differ and
#                                          exits 1 if any do (run by CI)
#
# Needs clang with the wasm32-wasi target, wasm-ld and a WASI libc (on Debian/Ubuntu:
# apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 binaryen; clang runs
# binaryen's wasm-opt on the linked module when it is on PATH). Set CC to use another
# clang. The output is deterministic for a given toolchain and does not depend on where
# the repository is checked out (each example is compiled from inside its directory,
# with relative paths and without debug info), but a different clang or wasi-libc
# version produces different bytes: the committed modules were built with the
# toolchain of Debian 12 (clang/lld 14.0.6, wasi-libc 0.0~git20220510.9886d3d, binaryen 108).
set -euo pipefail

CC="${CC:-clang}"
# Identical for every example. -s / --strip-all drop debug info, names and the
# producers section, so no compiler path or version string ends up in the module.
CFLAGS=(--target=wasm32-wasi -O2 -DNDEBUG -Wall -Wextra -s -Wl,--strip-all)

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
if [ $# -gt 1 ]; then
    echo "usage: $0 [--check]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

tmp=""
if [ "$check" -eq 1 ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
fi

names=()
for dir in "$here"/*/; do
    name="$(basename "$dir")"
    [ -f "$dir/src/$name.c" ] || continue
    names+=("$name")
done
if [ ${#names[@]} -eq 0 ]; then
    echo "build.sh: no examples found under $here" >&2
    exit 1
fi

differ=()
for name in "${names[@]}"; do
    if [ "$check" -eq 1 ]; then
        out="$tmp/$name.wasm"
    else
        out="$name.wasm"
    fi
    # Compile from inside the example directory with a relative source path.
    (cd "$here/$name" && "$CC" "${CFLAGS[@]}" -o "$out" "src/$name.c" && chmod 0644 "$out")
    if [ "$check" -eq 1 ]; then
        if ! cmp -s "$out" "$here/$name/$name.wasm"; then
            differ+=("$name/$name.wasm")
        fi
    else
        echo "built $name/$name.wasm ($(wc -c <"$here/$name/$name.wasm") bytes)"
    fi
done

if [ "$check" -eq 1 ]; then
    if [ ${#differ[@]} -gt 0 ]; then
        echo "build.sh --check: these modules are missing or differ from a fresh build of their source:" >&2
        for f in "${differ[@]}"; do
            echo "  task-defs/examples/$f" >&2
        done
        echo "rebuild them with task-defs/examples/build.sh (and check the toolchain version)" >&2
        exit 1
    fi
    echo "build.sh --check: all ${#names[@]} modules match their source"
fi
