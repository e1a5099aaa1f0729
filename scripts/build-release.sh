#!/usr/bin/env bash
# The release build of mtasts, one recipe for the README's install line, the quickstart and the
# benchmarks: the Swift runtime and Foundation linked in (--static-swift-stdlib: nothing to install
# on the mail server), one section per function (-function-sections for Swift and C, so the linker can lay out the
# code the daemons run together: Package.swift, scripts/link-order.ld).
# Usage: scripts/build-release.sh [swift build arguments, e.g. --product mtasts, --show-bin-path]
set -euo pipefail
cd "$(dirname "$0")/.."
exec swift build -c release --static-swift-stdlib -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections "$@"
