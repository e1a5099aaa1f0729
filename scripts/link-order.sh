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
# and helpers defined in many objects under one name, which a symbol order cannot place.
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

python3 - "$work/mtasts" "$work/mtasts.map" scripts/link-order.ld "$work"/*.callgrind <<'PY'
import bisect, collections, re, subprocess, sys
binary, link_map, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
# Input sections of .text from the map: (address, size, file, section).
sections = []
in_text = False
line_re = re.compile(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (.*)$")
for line in open(link_map, errors="replace"):
    m = line_re.match(line.rstrip("\n"))
    if not m:
        continue
    rest = m.group(3)
    if not rest.startswith(" "):
        in_text = rest.strip() == ".text"
    elif in_text and not rest.startswith(" " * 16):  # deeper lines are the symbols inside
        f = re.match(r"(.*):\((.*)\)$", rest.strip())
        if f and int(m.group(2), 16) > 0:
            sections.append((int(m.group(1), 16), int(m.group(2), 16), f.group(1), f.group(2)))
sections.sort()
starts = [s[0] for s in sections]
# Executed instruction addresses in the binary, from the profiles (positions uncompressed).
executed, lowest = set(), {}
for path in profiles:
    ours, fn = False, None
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            ours = line[3:].strip() == binary
        elif line.startswith("fn="):
            fn = line[3:].strip()
        elif ours and line.startswith("0x"):
            a = int(line.split()[0], 16)
            executed.add(a)
            if fn not in lowest or a < lowest[fn]:
                lowest[fn] = a
# The profile's addresses against the binary's: the offset most functions named once agree on.
symbols = collections.defaultdict(list)
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    p = line.split()
    if len(p) == 3 and p[1] in "tTwW":
        symbols[p[2]].append(int(p[0], 16))
offsets = collections.Counter(a - symbols[f][0] for f, a in lowest.items() if len(symbols.get(f, [])) == 1)
if not offsets:
    sys.exit("link-order: no function of the profile is in the binary")
offset, agree = offsets.most_common(1)[0]
if agree < 0.9 * sum(offsets.values()):
    sys.exit(f"link-order: the profile does not match the binary ({agree} of {sum(offsets.values())} functions agree)")
ran = set()
for a in executed:
    i = bisect.bisect_right(starts, a - offset) - 1
    if i >= 0 and sections[i][0] <= a - offset < sections[i][0] + sections[i][1] and "<internal>" not in sections[i][2]:
        ran.add(i)

def pattern(path):
    """An input-file pattern that holds wherever the checkout and the toolchain are: the object's
    directory and name (`*ArgumentParser.build/Flag.swift.o`), or the archive and member
    (`*libswiftCore.a:Swift.o`); '?' for a space."""
    m = re.match(r"(?:.*/)?([^/()]+\.a)\(([^()]+)\)$", path)
    name = m.group(1) + ":" + m.group(2) if m else "/".join(path.split("/")[-2:])
    return "*" + name.replace(" ", "?")
by_file = collections.defaultdict(set)
for i in ran:
    by_file[pattern(sections[i][2])].add(sections[i][3])
size = sum(sections[i][1] for i in ran)
with open(out, "w") as f:
    f.write("/* Written by scripts/link-order.sh: the input sections `mtasts daemon` runs, first in .text\n"
            f"   ({len(ran)} sections, hot size {size} bytes). A section not found is left where it would be. */\n")
    f.write("OVERWRITE_SECTIONS {\n  .text : {\n")
    for p in sorted(by_file):
        f.write(f"    {p}({' '.join(sorted(by_file[p]))})\n")
    f.write("  }\n}\n")
unnamed = sum(1 for i in ran if "..L" in sections[i][3])
print(f"{len(ran)} input sections ({size // 1024} kB, {unnamed} without a symbol) from {len(by_file)} files in {out}")
PY
