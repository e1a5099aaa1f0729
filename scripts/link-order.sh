#!/usr/bin/env bash
# Writes scripts/link-order.txt: the functions `mtasts daemon` runs (start, socketmap look-ups of
# cached and uncached policies with the memory and the SQLite cache, TLSRPT datagrams, stop), by
# their symbol names, for the release link to lay out together (Package.swift). Without the order
# those few thousand functions are spread over 30 MB of code and the kernel maps 64 kB around each
# page touched: about 13 MB of the daemon's resident memory was code it never ran (BENCHMARKS.md,
# "Where the daemon's memory is"). Run it again after large changes; a stale order costs memory
# only, never correctness.
# How: valgrind's callgrind on a copy of the release binary without debug information, against the
# benchmark world (Benchmarks/World: dnsmasq and a policy host for N domains) and the socketmap
# load generator; every function callgrind saw executed goes into the order (sorted by name: the
# file does not change with addresses).
# Usage: scripts/link-order.sh [N domains, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
work=$(pwd)/.build-bench/link-order
rm -rf "$work" && mkdir -p "$work"
scripts/setup.sh
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
cc=$(command -v clang || command -v cc)
"$cc" -O2 -Wall -o "$work/dgram_load" Benchmarks/dgram_load.c
for product in mtasts mtasts-bench-world mtasts-bench-socketmap; do
    scripts/build-release.sh --product "$product" >/dev/null
done
bindir=$(scripts/build-release.sh --show-bin-path)
# valgrind cannot read the toolchain's DWARF 5; the symbol table is all the order needs.
objcopy --strip-debug "$bindir/mtasts" "$work/mtasts"

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
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$label.callgrind" \
        "$work/mtasts" daemon --config "$work/$label.yml" 2>"$work/$label.log" &
    pid=$!
    pids+=($pid)
    for _ in $(seq 600); do grep -q "socketmap on" "$work/$label.log" && break; sleep 0.1; done
    grep -q "socketmap on" "$work/$label.log" || { cat "$work/$label.log"; exit 1; }
    # Uncached (DNS, HTTPS fetch, store), then cached, on 1 and 16 connections; datagrams.
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

# The libraries of the toolchain, and the objects of this build, whose code is one section of
# over 32 kB (FoundationEssentials, _RegexParser, parts of the Swift runtime: built without one
# section per function): the linker moves such a section whole.
static=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")/lib/swift_static/linux
python3 - "$work/mtasts" scripts/link-order.txt "$static" "$bindir" "$work"/*.callgrind <<'PY'
import glob, os, re, subprocess, sys
binary, out, static, bindir, profiles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
ran = set()
for path in profiles:
    names = {}
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            name = names.get(m.group(2))
            if name:
                ran.add(re.sub(r"'\d+$", "", name))  # callgrind marks recursion levels so
defined = {}
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    p = line.split()
    if len(p) == 3 and p[1] in "tTwW":
        defined[p[2]] = defined.get(p[2], 0) + 1
whole = set()
files = sorted(glob.glob(os.path.join(static, "*.a"))) + sorted(glob.glob(os.path.join(bindir, "**", "*.o"), recursive=True))
for path in files:
    text = subprocess.run(["readelf", "-SsW", path], capture_output=True, encoding="utf-8", errors="replace").stdout
    big = set()
    for line in text.splitlines():
        if line.startswith("File:"):
            big = set()
            continue
        m = re.match(r"\s*\[\s*(\d+)\]\s+\.text\s+PROGBITS\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16) > 32768:
            big.add(m.group(1))
            continue
        m = re.match(r"\s*\d+:\s+[0-9a-f]+\s+\d+\s+FUNC\s+\S+\s+\S+\s+(\d+)\s+(\S+)", line)
        if m and m.group(1) in big:
            whole.add(m.group(2))
# A name defined more than once is a local helper of many objects (`objectdestroyTm`, a partial
# application thunk): the linker moves the section of every copy, and a copy inside a whole
# module's section would drag all of that module's code along. Such names stay out; a name
# defined once is in the section that ran anyway.
dragging = {n for n in ran if defined.get(n, 0) > 1 and n in whole}
order = sorted(n for n in ran if n in defined and n not in dragging)
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in order))
print(f"{len(order)} functions in {out}; left out: {len(dragging)} local helpers with a copy in a whole module's section, "
      f"{len(ran - set(defined))} names not in the binary (the C library's, unnamed code)")
PY
