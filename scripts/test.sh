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
source scripts/suites.sh  # $endtoend
# 1. Every library in-process (no child process), then 2. end to end. Apart, so that the end-to-end
# tests, which wait on child processes, do not hold the threads the in-process servers run on. Each
# run has a watchdog: a hang fails the run with the stacks of the hung test process, instead of
# waiting for CI's limit. A test process that has printed its result and then does not exit
# within 2 minutes is stopped the same way, stacks printed; the result it printed stands.
run() {
    local what=$1; shift
    local started=$SECONDS log
    log=$(mktemp)
    swift test --skip-build "$@" > >(tee "$log") 2>&1 &
    local pid=$! limit=$((SECONDS + 1200)) finished=
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $limit ]; do
        if [ -z "$finished" ] && grep -qE 'Test run with [0-9]+ tests?.* (passed|failed) after' "$log"; then finished=$SECONDS; fi
        if [ -n "$finished" ] && [ $((SECONDS - finished)) -ge 120 ]; then break; fi
        sleep 2
    done
    if kill -0 "$pid" 2>/dev/null; then
        if [ -n "$finished" ]; then
            echo "test: the $what tests finished, but the test process did not exit in 2 minutes; what it was doing:" >&2
        else
            echo "test: the $what tests hung past 20 minutes; what each test process was doing:" >&2
        fi
        hung "$pid"
        kill -KILL -- $(descendants "$pid") "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -z "$finished" ] || ! grep -qE 'Test run with [0-9]+ tests?.* passed after' "$log" || grep -qE 'with [1-9][0-9]* failures?' "$log"; then
            echo "test: the $what tests failed" >&2
            exit 1
        fi
    elif ! wait "$pid"; then
        echo "test: the $what tests failed" >&2
        exit 1
    fi
    rm -f "$log"
    echo "test: $what tests took $((SECONDS - started)) s"
}
# Every process below $1 (children first, depth first).
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do descendants "$c"; echo "$c"; done
}
# The process tree under $1, and every thread's stack of each test process in it.
hung() {
    ps -o pid,ppid,stat,etime,args -p "$(descendants "$1" | tr '\n' ,)$1" >&2 || true
    local p
    for p in $(descendants "$1"); do
        case "$(tr '\0' ' ' < /proc/"$p"/cmdline 2>/dev/null)" in
            *.xctest*) gdb -p "$p" -batch -nx -ex "thread apply all bt 30" >&2 2>&1 || true ;;
        esac
    done
}
run in-process --skip "$endtoend"
run end-to-end --filter "$endtoend"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
