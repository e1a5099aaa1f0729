#!/usr/bin/env bash
# Writes scripts/link-order.ld: the code `mtasts daemon` runs (start, socketmap look-ups of cached
# and uncached policies with the memory and the SQLite cache, TLSRPT datagrams, stop), as the
# linker's input sections, for the release link to lay out together at the start of `.text`
# (Package.swift). Without it the few thousand functions the daemon runs are spread over 30 MB of
# code and the kernel maps 64 kB around each page touched: most of the daemon's resident code was
# code it never ran (BENCHMARKS.md, "Where the daemon's memory is"). Run it again after large
# changes; a stale layout costs memory only, never correctness.
# How: the release binary is linked with a link map (MTASTS_LINK_MAP, read by Package.swift), then
# run under valgrind's callgrind against the benchmark world (Benchmarks/World: dnsmasq and a
# policy host for N domains) and the socketmap load generator, with every executed instruction's
# address in the profile. Each address is looked up in the map: the input section holding it
# (object file and section name) goes into the script. Input sections, not symbol names: the
# compiler emits many small functions without a symbol (value witnesses, `.text..L__unnamed_N`),
# and helpers defined in many objects under one name, which a symbol order cannot place. Then a
# few passes on the real CPU add what callgrind cannot see (page faults outside the hot span).
# The work is done by scripts/link-order.py.
# Usage: scripts/link-order.sh [N domains, default 200]   (PASSES=N real-CPU passes, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
work=$(pwd)/.build-bench/link-order
rm -rf "$work" && mkdir -p "$work"
scripts/setup.sh
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
cc=$(command -v clang || command -v cc)
"$cc" -O2 -Wall -o "$work/dgram_load" Benchmarks/dgram_load.c
for product in mtasts-bench-world mtasts-bench-socketmap; do
    scripts/build-release.sh --product "$product" >/dev/null
done
bindir=$(scripts/build-release.sh --show-bin-path)
# The binary profiled is linked with a map of where each input section went (then linked again
# without it, by the next release build: the layout is the same).
rm -f "$bindir/mtasts"
MTASTS_LINK_MAP="$work/mtasts.map" scripts/build-release.sh --product mtasts >/dev/null
[ -s "$work/mtasts.map" ] || { echo "link-order: the release link wrote no map" >&2; exit 1; }
# valgrind cannot read the toolchain's DWARF 5; the symbol table is all it needs.
objcopy --strip-debug "$bindir/mtasts" "$work/mtasts"
rm -f "$bindir/mtasts"

source Benchmarks/lib.sh
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
start_world "$bindir" "$n" "$work"

profile() {  # label, cache yaml
    local label=$1 cache=$2 port pid
    port=$(free_port)
    world_daemon_config "$work/$label.yml" "$port" "$cache" "tlsrpt_database: $work/$label-tlsrpt.db
collector:
  socket: $work/$label-tlsrpt.sock"
    valgrind --tool=callgrind --demangle=no --dump-instr=yes --dump-line=no --compress-pos=no --compress-strings=no \
        --callgrind-out-file="$work/$label.callgrind" \
        "$work/mtasts" daemon --config "$work/$label.yml" 2>"$work/$label.log" &
    pid=$!
    pids+=($pid)
    for _ in $(seq 600); do grep -q "socketmap on" "$work/$label.log" && break; sleep 0.1; done
    grep -q "socketmap on" "$work/$label.log" || { cat "$work/$label.log"; exit 1; }
    # Uncached (DNS, HTTPS fetch, store), then cached, on 1 and 16 connections; datagrams.
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --warm >/dev/null
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --warm >/dev/null
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --connections 1 --seconds 3 >/dev/null
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --connections 16 --seconds 3 >/dev/null
    "$work/dgram_load" "$work/$label-tlsrpt.sock" 200 2 >/dev/null
    sleep 2
    kill -TERM "$pid"; wait "$pid" || true
}
profile memory "cache:
  type: internal"
profile sqlite "cache:
  type: sqlite
  options:
    filename: $work/cache.db"

python3 scripts/link-order.py callgrind "$work/mtasts" "$work/mtasts.map" scripts/link-order.ld "$work"/*.callgrind

# Then on the real CPU, PASSES times (default 3): link with the new script and a map, run the
# daemon under the same load with every page fault recorded, and add the input sections outside
# the hot span where it faulted (code valgrind's CPU never takes; each such fault maps 64 kB).
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
faults() {  # label, cache yaml: the daemon under the load with every page fault recorded
    local label=$1 cache=$2 port pid
    port=$(free_port)
    world_daemon_config "$work/faults-$label.yml" "$port" "$cache"
    perf record -q -c 1 -e page-faults -d -o "$work/faults-$label.data" -- "$bindir/mtasts" daemon --config "$work/faults-$label.yml" 2>"$work/faults-$label.log" &
    pid=$!
    pids+=($pid)
    wait_port "$port"
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --warm >/dev/null
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --warm >/dev/null
    "$bindir/mtasts-bench-socketmap" --port "$port" --domains "$list" --connections 16 --seconds 3 >/dev/null
    pkill -TERM -f "^$bindir/mtasts daemon --config $work/faults-$label.yml"; wait "$pid" || true
    perf script -i "$work/faults-$label.data" -F addr --show-mmap-events >"$work/faults-$label.txt" 2>/dev/null
}
for pass in $(seq "${PASSES:-3}"); do
    rm -f "$bindir/mtasts"
    MTASTS_LINK_MAP="$work/mtasts.map" scripts/build-release.sh --product mtasts >/dev/null
    faults memory "cache:
  type: internal"
    faults sqlite "cache:
  type: sqlite
  options:
    filename: $work/faults-cache.db"
    echo -n "pass $pass: "
    python3 scripts/link-order.py faults "$(readlink -f "$bindir/mtasts")" "$work/mtasts.map" scripts/link-order.ld "$work"/faults-*.txt
done
rm -f "$bindir/mtasts"
