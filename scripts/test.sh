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
# Real peers (dnsmasq, Postfix, postmap, PostgreSQL, curl, dkimpy, the mtasts binary): these suites.
# (PolicyResolverTests runs with the in-process group: its look-ups are async and time-limited, and
# the synchronous end-to-end tests would hold the cooperative threads they need; it starts dnsmasq
# but waits on nothing else.)
endtoend='^(DaemonTests|ReceiverTests|SenderTests|MTASTSCheckTests|MTASTSCLITests|MailDNSTests)\.'
# 1. Every library in-process (no child process), then 2. end to end. Apart, so that the end-to-end
# tests, which wait on child processes, do not hold the threads the in-process servers run on. Each
# run has a watchdog: a hang fails the run with a message instead of waiting for CI's limit.
run() {
    local what=$1; shift
    local started=$SECONDS
    if ! timeout --signal=KILL 1200 swift test --skip-build "$@"; then
        echo "test: the $what tests failed (or hung past 20 minutes)" >&2
        exit 1
    fi
    echo "test: $what tests took $((SECONDS - started)) s"
}
run in-process --skip "$endtoend"
run end-to-end --filter "$endtoend"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
