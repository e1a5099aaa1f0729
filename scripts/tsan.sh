#!/usr/bin/env bash
# Data races in the mtasts binary: the end-to-end tests (every role, run as child processes) and
# the domain checks, against an mtasts built with ThreadSanitizer. Fails when the tests fail or
# ThreadSanitizer reports anything; its reports are printed. Not part of scripts/test.sh (the
# instrumented build takes about 10 minutes on 2 cores and the tests run 2-3 times slower).
# Usage: scripts/tsan.sh [test filter]   (default: the end-to-end suites of scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
interop=${MTASTS_INTEROP:-../shared/interop}
export MTASTS_INTEROP=$(cd "$interop" && pwd)
source scripts/suites.sh
filter=${1:-$endtoend}
swift build --build-tests
swift build --sanitize=thread --scratch-path .build-tsan --product mtasts
bin=$(swift build --sanitize=thread --scratch-path .build-tsan --show-bin-path)/mtasts
reports=$(mktemp -d)
status=0
MTASTS_BIN=$bin TSAN_OPTIONS="log_path=$reports/report halt_on_error=0 exitcode=0" swift test --skip-build --filter "$filter" || status=$?
if compgen -G "$reports/report*" >/dev/null; then
    cat "$reports"/report*
    echo "tsan: ThreadSanitizer reported $(cat "$reports"/report* | grep -c '^WARNING: ThreadSanitizer') races (above)" >&2
    exit 1
fi
[ "$status" = 0 ] || { echo "tsan: the tests failed" >&2; exit "$status"; }
echo "tsan: no report"
