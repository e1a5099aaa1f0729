#!/usr/bin/env bash
# Socketmap look-ups of cached policies: `mtasts daemon` (memory and SQLite caches) against
# postfix-mta-sts-resolver 1.5.1 (PyPI; internal and sqlite caches) on the same loopback world
# (N domains: dnsmasq on 127.0.0.53:53, one HTTPS policy host, certificates from a CA made for the
# run), with 1 and 16 connections; look-ups/s, p50/p99 latency, daemon CPU per look-up, daemon RSS.
# Then our daemon with 100,000 policies all in memory (RSS) and with 1,000,000 cached where every
# look-up misses the hot layer (SQLite read by a pool of readers).
# Usage: Benchmarks/socketmap.sh [N] [SECONDS]   (defaults 1000 domains, 10 s per run;
#        ONLY=big runs only the 100,000 / 1,000,000-policy part; ONLY=ours the bound and our daemon,
#        without the peer; PERF=1 records a perf profile of our memory-cache daemon at 16
#        connections into .build-bench/socketmap/perf.data, and of the many-policies daemons into
#        perf-LABEL.data; SMAPS=1 writes each server's RSS by mapping (and of the executable by ELF section, and its code by module) after its 16-connection run
#        into .build-bench/socketmap/smaps-LABEL.txt; MTASTS_BIN=path runs that build of mtasts
#        as our daemon, for before/after comparisons)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
secs=${2:-10}
work=$(pwd)/.build-bench/socketmap
rm -rf "$work" && mkdir -p "$work"
scripts/setup.sh
source Benchmarks/lib.sh
venv=.build-bench/resolver-venv
if [ ! -x "$venv/bin/mta-sts-daemon" ] || ! "$venv/bin/python" -c 'import uvloop' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q postfix-mta-sts-resolver==1.5.1 aiosqlite==0.22.1 uvloop==0.21.0
fi
scripts/build-release.sh --product mtasts >/dev/null
scripts/build-release.sh --product mtasts-bench-world >/dev/null
scripts/build-release.sh --product mtasts-bench-socketmap >/dev/null
scripts/build-release.sh --product mtasts-bench-echo >/dev/null
bindir=$(scripts/build-release.sh --show-bin-path)
load="$bindir/mtasts-bench-socketmap"
mtasts=${MTASTS_BIN:-$bindir/mtasts}

pids=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
start_world "$bindir" "$n" "$work"
echo "nameserver 127.0.0.53" >"$work/resolv.conf"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
tick=$(getconf CLK_TCK)

# label, port, daemon pid: warm pass, then 1 and 16 connections.
run() {
    local label=$1 port=$2 pid=$3
    echo "== $label"
    "$load" --port "$port" --domains "$list" --warm | tee -a "$work/results"
    for c in 1 16; do
        local before after out lookups
        before=$(cpu_ticks "$pid")
        if [ -n "${PERF:-}" ] && [ "$label" = mtasts-memory ] && [ "$c" = 16 ]; then
            perf record -F 1999 -g -p "$pid" -o "$work/perf.data" -- sleep "$((secs - 2))" >/dev/null 2>&1 &
        fi
        out=$("$load" --port "$port" --domains "$list" --connections "$c" --seconds "$secs")
        after=$(cpu_ticks "$pid")
        lookups=$(sed -n 's/.*lookups=\([0-9]*\).*/\1/p' <<<"$out")
        echo "$label $out daemon_cpu_us_per_lookup=$(python3 -c "print(round(($after - $before) / $tick * 1e6 / max(1, $lookups), 1))") daemon_rss_kb=$(rss_kb "$pid")" | tee -a "$work/results"
    done
    # SMAPS=1: where the server's RSS is, by mapping, after the 16-connection run.
    if [ -n "${SMAPS:-}" ]; then python3 Benchmarks/smaps.py "$pid" --sections --text >"$work/smaps-$label.txt"; fi
}

ours() {  # label, cache yaml
    local label=$1 cache=$2 port
    port=$(free_port)
    world_daemon_config "$work/mtasts-$label.yml" "$port" "$cache"
    "$mtasts" daemon --config "$work/mtasts-$label.yml" 2>"$work/mtasts-$label.log" &
    local pid=$!
    pids+=($pid)
    wait_port "$port"
    run "mtasts-$label" "$port" "$pid"
    kill -TERM "$pid"; wait "$pid" || true
}

anchor() {  # label, cache yaml[, extra daemon flags]
    local label=$1 cache=$2 flags=${3:-} port
    port=$(free_port)
    cat >"$work/anchor-$label.yml" <<EOF
host: 127.0.0.1
port: $port
$cache
EOF
    # It reads only the system resolver and trust store: a private mount namespace points
    # /etc/resolv.conf at the world's dnsmasq; SSL_CERT_FILE is the world's CA.
    SSL_CERT_FILE="$ca" unshare -m sh -c "mount --bind '$work/resolv.conf' /etc/resolv.conf && exec '$(pwd)/$venv/bin/mta-sts-daemon' $flags -c '$work/anchor-$label.yml'" 2>"$work/anchor-$label.log" &
    local wrapper=$!
    pids+=($wrapper)
    wait_port "$port"
    local pid
    pid=$(pgrep -f "mta-sts-daemon.* -c $work/anchor-$label.yml" | tail -1)
    run "resolver-$label" "$port" "$pid"
    kill -TERM "$pid" 2>/dev/null || true; wait "$wrapper" || true
}

# The bound: the same load against a socketmap server that does no look-up (Benchmarks/Echo).
# It runs before our daemon and again after it; the summary takes the better of the two runs
# (this machine's rate moves by tens of percent from minute to minute).
echo_bound() {  # label
    local port
    port=$(free_port)
    "$bindir/mtasts-bench-echo" --port "$port" >"$work/echo.out" 2>&1 &
    local pid=$!
    pids+=($pid)
    wait_port "$port"
    run "$1" "$port" "$pid"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

: >"$work/results"
if [ "${ONLY:-}" != big ]; then
echo_bound echo-bound-before
ours memory "cache:
  type: internal
  options:
    cache_size: 100000"
ours sqlite "cache:
  type: sqlite
  options:
    filename: $work/ours-cache.db"
echo_bound echo-bound-after
# The peer with uvloop (its fastest event loop, used when installed) and without.
if [ "${ONLY:-}" != ours ]; then
anchor internal "cache:
  type: internal
  options:
    cache_size: 100000"
anchor internal-no-uvloop "cache:
  type: internal
  options:
    cache_size: 100000" --disable-uvloop
anchor sqlite "cache:
  type: sqlite
  options:
    filename: $work/anchor-cache.db"
fi
fi

# Many cached policies: an SQLite cache filled beforehand with COUNT valid policies (two mx
# patterns each; the most recently used are the last ones), the daemon started on it with a hot
# layer of HOT entries (loaded at start), then 16 connections ask for the domains from the first
# one on, each connection from its own place: with 100,000 and a hot layer of 100,000 every
# look-up is a hit in memory; with 1,000,000 and the default hot layer no domain is asked twice
# and none was loaded at start, so every look-up misses the hot layer and is read from SQLite.
many() {  # label count hot
    local label=$1 count=$2 hot=$3
    python3 - "$work/$label.db" "$work/$label-domains.txt" "$count" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("""CREATE TABLE sts_policy_cache (domain TEXT PRIMARY KEY, policy TEXT, sts_id TEXT, fetched_at REAL NOT NULL,
  expires_at REAL NOT NULL, checked_at REAL NOT NULL, failed_id TEXT, failed_at REAL, failure TEXT, reason TEXT,
  dane INTEGER NOT NULL DEFAULT 0, last_used REAL NOT NULL, mx_hosts TEXT)""")
now, n = time.time(), int(sys.argv[3])
def rows():
    for k in range(n):
        policy = f"version: STSv1\nmode: enforce\nmx: mx{k}.mail-provider.example\nmx: *.backup{k % 97}.mail-provider.example\nmax_age: 604800\n"
        yield (f"big{k}.example", policy, f"id{k}", now, now + 604800, now, None, None, None, None, 0, now - n + k, f"mx{k}.mail-provider.example")
db.executemany("INSERT INTO sts_policy_cache VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows())
db.commit()
with open(sys.argv[2], "w") as f:
    f.writelines(f"big{k}.example\n" for k in range(n))
PY
    local port
    port=$(free_port)
    cat >"$work/mtasts-$label.yml" <<EOF
host: 127.0.0.1
port: $port
cache:
  type: sqlite
  options:
    filename: $work/$label.db
limits:
  hot_cache_size: $hot
dns_server: 127.0.0.53:53
ca_file: $ca
system_roots: false
EOF
    "$mtasts" daemon --config "$work/mtasts-$label.yml" 2>"$work/mtasts-$label.log" &
    local pid=$!
    pids+=($pid)
    wait_port "$port"
    local start_rss before after out lookups
    start_rss=$(rss_kb "$pid")
    before=$(cpu_ticks "$pid")
    if [ -n "${PERF:-}" ]; then
        perf record -F 1999 -g -p "$pid" -o "$work/perf-$label.data" -- sleep "$((secs - 2))" >/dev/null 2>&1 &
    fi
    out=$("$load" --port "$port" --domains "$work/$label-domains.txt" --connections 16 --seconds "$secs")
    after=$(cpu_ticks "$pid")
    lookups=$(sed -n 's/.*lookups=\([0-9]*\).*/\1/p' <<<"$out")
    echo "mtasts-$label cached=$count hot_layer=$hot loaded_at_start=$(grep -o '[0-9]* valid entries loaded' "$work/mtasts-$label.log" | cut -d' ' -f1) rss_after_start_kb=$start_rss $out daemon_cpu_us_per_lookup=$(python3 -c "print(round(($after - $before) / $tick * 1e6 / max(1, $lookups), 1))") rss_kb=$(rss_kb "$pid") peak_rss_kb=$(hwm_kb "$pid")" | tee -a "$work/results"
    kill -TERM "$pid"; wait "$pid" || true
    rm -f "$work/$label.db"*
}
if [ -z "${ONLY:-}" ] || [ "${ONLY:-}" = big ]; then
    many 100k-hot 100000 100000
    many 1m-miss 1000000 10000
fi
echo
# Ours against the bound and the peer, per connection count; the same rows for Benchmarks/all.sh.
python3 - "$work/results" "$RESULTS" <<'PY'
import json, re, sys
rows, big = {}, {}
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=([\w.]+)", line))
    label = line.split()[0]
    if label in ("mtasts-100k-hot", "mtasts-1m-miss"):
        big[label] = f
    elif "lookups_per_s" in f:
        rows[(label, f["connections"])] = f
# The bound: the better of its two runs, per connection count.
for c in {c for (_, c) in rows}:
    runs = [rows.pop((l, c)) for l in ("echo-bound-before", "echo-bound-after") if (l, c) in rows]
    if runs:
        rows[("echo-bound", c)] = max(runs, key=lambda f: int(f["lookups_per_s"]))
rows = dict(sorted(rows.items(), key=lambda kv: (not kv[0][0].startswith("echo"), not kv[0][0].startswith("mtasts"), kv[0][0], int(kv[0][1]))))
print("| server | conns | look-ups/s | of the bound | p99 µs | server CPU µs/look-up | client CPU µs/look-up | RSS MB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for (label, c), f in rows.items():
    bound = rows.get(("echo-bound", c))
    share = f"{100 * int(f['lookups_per_s']) / int(bound['lookups_per_s']):.0f} %" if bound else ""
    print(f"| {label} | {c} | {int(f['lookups_per_s']):,} | {share} | {f['p99_us']} | {f.get('daemon_cpu_us_per_lookup', '')} | {f.get('client_cpu_us_per_lookup', '')} | {int(f.get('daemon_rss_kb', 0)) / 1024:.0f} |")
peer_name = "postfix-mta-sts-resolver 1.5.1"
with open(sys.argv[2], "a") as out:
    def record(**row):
        out.write(json.dumps({"bench": "socketmap", **row}) + "\n")
    for ours, peer, what in (("mtasts-memory", "resolver-internal", "cached look-ups, memory cache (peer: internal, uvloop)"),
                             ("mtasts-memory", "resolver-internal-no-uvloop", "cached look-ups, memory cache (peer: internal, no uvloop)"),
                             ("mtasts-sqlite", "resolver-sqlite", "cached look-ups, SQLite cache (peer: sqlite)")):
        for c in ("16", "1"):
            o, p, b = rows.get((ours, c)), rows.get((peer, c)), rows.get(("echo-bound", c))
            if not o or (not p and "no-uvloop" in peer):
                continue
            val = lambda r, k: float(r[k]) if r and k in r else None
            mb = lambda r: round(int(r["daemon_rss_kb"]) / 1024, 1) if r and "daemon_rss_kb" in r else None
            record(what=f"{what}, {c} connection{'s' if c != '1' else ''}", unit="look-ups/s", ours=int(o["lookups_per_s"]),
                   peer=int(p["lookups_per_s"]) if p else None, peer_name=peer_name if p else None, bound=int(b["lookups_per_s"]) if b else None,
                   ours_cpu_us=val(o, "daemon_cpu_us_per_lookup"), peer_cpu_us=val(p, "daemon_cpu_us_per_lookup"), bound_cpu_us=val(b, "daemon_cpu_us_per_lookup"),
                   ours_p99_us=val(o, "p99_us"), peer_p99_us=val(p, "p99_us"), ours_rss_mb=mb(o), peer_rss_mb=mb(p),
                   client_cpu_us=val(o, "client_cpu_us_per_lookup"),
                   goal="≥ 80 % of the bound, p99 < 1 ms, CPU within 25 % of the bound's" if c == "16" else "")
    for label, what, goal in (("mtasts-100k-hot", "100,000 policies all in the hot layer, each asked for in turn, 16 connections", "RSS < 64 MB"),
                              ("mtasts-1m-miss", "1,000,000 cached policies, every look-up misses the hot layer (SQLite readers), 16 connections",
                               "≥ 20,000/s, RSS < 256 MB")):
        if label in big:
            f = big[label]
            record(what=what, unit="look-ups/s", ours=int(f["lookups_per_s"]), ours_p99_us=float(f["p99_us"]),
                   ours_cpu_us=float(f["daemon_cpu_us_per_lookup"]), ours_rss_mb=round(int(f["peak_rss_kb"]) / 1024, 1), goal=goal)
for label, f in big.items():
    print(f"{label}: {int(f['lookups_per_s']):,} look-ups/s, p99 {f['p99_us']} µs, {f['daemon_cpu_us_per_lookup']} µs CPU each, "
          f"RSS {int(f['rss_after_start_kb']) / 1024:.0f} MB after start, peak {int(f['peak_rss_kb']) / 1024:.0f} MB")
PY
echo "results in $work/results"
