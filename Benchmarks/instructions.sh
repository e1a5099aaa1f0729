#!/usr/bin/env bash
# Instructions per cached socketmap look-up, counted by valgrind's callgrind (user space only;
# stable on a noisy machine where CPU time is not): the bound (Benchmarks/Echo, the daemon's stack
# answering fixed bytes), `mtasts daemon` with the memory and the SQLite cache, and
# postfix-mta-sts-resolver 1.5.1 (internal cache), on the benchmark world of Benchmarks/socketmap.sh.
# Each server runs under callgrind with instrumentation off (nothing counted); the cache is warmed
# (twice: the second pass renders the kept replies); counting is switched on
# for SECONDS of 16-connection load and off again before the server stops. Instructions / look-ups.
# Usage: Benchmarks/instructions.sh [N domains, default 1000] [SECONDS, default 5]
#        (NO_PEER=1 leaves out the Python peer)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
secs=${2:-5}
work=$(pwd)/.build-bench/instructions
rm -rf "$work" && mkdir -p "$work"
scripts/setup.sh
source Benchmarks/lib.sh
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
venv=.build-bench/resolver-venv
if [ -z "${NO_PEER:-}" ] && { [ ! -x "$venv/bin/mta-sts-daemon" ] || ! "$venv/bin/python" -c 'import uvloop' 2>/dev/null; }; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q postfix-mta-sts-resolver==1.5.1 aiosqlite==0.22.1 uvloop==0.21.0
fi
for product in mtasts mtasts-bench-world mtasts-bench-socketmap mtasts-bench-echo; do
    scripts/build-release.sh --product "$product" >/dev/null
done
bindir=$(scripts/build-release.sh --show-bin-path)
load="$bindir/mtasts-bench-socketmap"
# valgrind cannot read the toolchain's DWARF 5; counting needs no debug information.
for b in mtasts mtasts-bench-echo; do objcopy --strip-debug "$bindir/$b" "$work/$b"; done

pids=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
start_world "$bindir" "$n" "$work"
echo "nameserver 127.0.0.53" >"$work/resolv.conf"
vg="valgrind --tool=callgrind --instr-atstart=no"

# label port pid: warm (not counted), then SECONDS of 16 connections counted.
count() {
    local label=$1 port=$2 pid=$3 out lookups ir
    # Twice: the first pass fills the cache, the second renders each domain's kept reply (once
    # per entry, not part of a cached look-up's cost).
    "$load" --port "$port" --domains "$list" --warm >/dev/null
    "$load" --port "$port" --domains "$list" --warm >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    out=$("$load" --port "$port" --domains "$list" --connections 16 --seconds "$secs")
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    # (the peer's valgrind is not this shell's child: its profile is written when it is gone)
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    lookups=$(sed -n 's/.*lookups=\([0-9]*\).*/\1/p' <<<"$out")
    # The sum of the self costs (a line after calls= is a call's inclusive cost: not summed).
    ir=$(python3 -c "
import re, sys
total, skip = 0, False
for line in open(sys.argv[1], errors='replace'):
    if skip:
        skip = False
        continue
    if line.startswith('calls='):
        skip = True
        continue
    m = re.match(r'^(?:[+-]?\d+|\*)\s+(\d+)$', line.strip())
    if m:
        total += int(m.group(1))
print(total)" "$work/$label.callgrind")
    echo "$label lookups=$lookups instructions=$ir per_lookup=$((ir / (lookups > 0 ? lookups : 1)))" | tee -a "$work/results"
}

ours() {  # label cache-yaml
    local label=$1 cache=$2 port pid
    port=$(free_port)
    world_daemon_config "$work/$label.yml" "$port" "$cache"
    $vg --callgrind-out-file="$work/$label.callgrind" "$work/mtasts" daemon --config "$work/$label.yml" 2>"$work/$label.log" &
    pid=$!; pids+=($pid)
    wait_port "$port" 60
    count "$label" "$port" "$pid"
}

: >"$work/results"
port=$(free_port)
$vg --callgrind-out-file="$work/echo-bound.callgrind" "$work/mtasts-bench-echo" --port "$port" >"$work/echo.out" 2>&1 &
pid=$!; pids+=($pid)
wait_port "$port" 60
count echo-bound "$port" "$pid"
ours mtasts-memory "cache:
  type: internal
  options:
    cache_size: 100000"
ours mtasts-sqlite "cache:
  type: sqlite
  options:
    filename: $work/cache.db"
if [ -z "${NO_PEER:-}" ]; then
    port=$(free_port)
    cat >"$work/peer.yml" <<YML
host: 127.0.0.1
port: $port
cache:
  type: internal
  options:
    cache_size: 100000
YML
    # As in Benchmarks/socketmap.sh: the peer reads the system resolver and trust store only.
    SSL_CERT_FILE="$ca" unshare -m sh -c "mount --bind '$work/resolv.conf' /etc/resolv.conf && exec $vg --callgrind-out-file='$work/resolver-internal.callgrind' '$(pwd)/$venv/bin/python' '$(pwd)/$venv/bin/mta-sts-daemon' -c '$work/peer.yml'" 2>"$work/peer.log" &
    wrapper=$!; pids+=($wrapper)
    wait_port "$port" 60
    pid=$(pgrep -f "callgrind.*mta-sts-daemon -c $work/peer.yml" | tail -1)
    count resolver-internal "$port" "$pid"
    wait "$wrapper" 2>/dev/null || true
fi
echo
python3 - "$work/results" "$RESULTS" <<'PY'
import json, re, sys
rows = {l.split()[0]: dict(re.findall(r"(\w+)=(\d+)", l)) for l in open(sys.argv[1])}
with open(sys.argv[2], "a") as out:
    for ours, what in (("mtasts-memory", "instructions per cached look-up (callgrind, user space), memory cache (peer: internal), 16 connections"),
                       ("mtasts-sqlite", "instructions per cached look-up (callgrind, user space), SQLite cache (peer: internal), 16 connections")):
        if ours in rows:
            peer = rows.get("resolver-internal")
            out.write(json.dumps({"bench": "instructions", "what": what, "unit": "instructions", "better": "lower",
                                  "ours": int(rows[ours]["per_lookup"]), "bound": int(rows["echo-bound"]["per_lookup"]),
                                  "peer": int(peer["per_lookup"]) if peer else None,
                                  "peer_name": "postfix-mta-sts-resolver 1.5.1" if peer else None,
                                  "goal": "within 25 % of the bound's, or ≤ 1/10 of the peer's"}) + "\n")
bound = int(rows["echo-bound"]["per_lookup"])
for label, f in rows.items():
    per = int(f["per_lookup"])
    print(f"{label:20} {per:>9,} instructions per look-up   {per / bound:5.2f}× the bound")
if "resolver-internal" in rows:
    for ours in ("mtasts-memory", "mtasts-sqlite"):
        print(f"{ours} / resolver-internal: {int(rows[ours]['per_lookup']) / int(rows['resolver-internal']['per_lookup']):.3f}")
PY
