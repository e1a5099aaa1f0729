#!/usr/bin/env bash
# The release build of mtasts, one recipe for the README's install line, the quickstart and the
# benchmarks: the Swift runtime and Foundation linked in (--static-swift-stdlib: nothing to install
# on the mail server), one section per function (-function-sections for Swift and C, so the linker can lay out the
# code the daemons run together: Package.swift, scripts/link-order.ld).
# Usage: scripts/build-release.sh [swift build arguments, e.g. --product mtasts, --show-bin-path]
set -euo pipefail
cd "$(dirname "$0")/.."
# The C and C++ libraries the daemon calls are linked in from their static archives (libstdc++,
# SQLite, zlib): only the code it uses, laid out with its own by scripts/link-order.ld, instead of
# shared objects mapped whole (1.2 MB resident for libsqlite3 alone). Package.swift searches this
# directory first (MTASTS_STATIC_LIBS). glibc's own libraries stay shared: libm.a does not link
# into a dynamic executable, and libresolv.a would bind the binary to glibc's private symbols.
static=$(pwd)/.build/static-libs
rm -rf "$static" && mkdir -p "$static"  # (no link left from an earlier list)
for archive in libstdc++.a libsqlite3.a libz.a; do
    path=$(clang -print-file-name="$archive")
    [ -f "$path" ] || { echo "build-release: $archive not found (scripts/setup.sh installs it)" >&2; exit 1; }
    ln -sfn "$path" "$static/$archive"
done
export MTASTS_STATIC_LIBS=$static
exec swift build -c release --static-swift-stdlib -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections "$@"
