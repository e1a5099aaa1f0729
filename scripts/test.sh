#!/usr/bin/env bash
# The whole test suite: set-up, debug build, every test (unit, golden vectors, the CLI binary over
# the interop corpus), then a short run of every fuzz target. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
interop=${MTASTS_INTEROP:-../shared/interop}
[ -d "$interop/reports" ] || { echo "test: no interop data at $interop (set MTASTS_INTEROP)" >&2; exit 1; }
export MTASTS_INTEROP=$(cd "$interop" && pwd)
swift build --build-tests
swift test --skip-build
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
