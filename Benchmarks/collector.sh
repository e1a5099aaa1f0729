#!/usr/bin/env bash
# The TLSRPT collector (release build) against tlsrpt-collectd 0.6.0 (PyPI tlsrpt-reporter), same
# sender, same machine: libtlsrpt-shaped datagrams offered at increasing rates with MSG_DONTWAIT
# (Benchmarks/dgram_load.py; EAGAIN = lost at the sender, as with Postfix), with the kernel's
# default receive queue (net.unix.max_dgram_qlen 10) and with 512. A rate is loss-free when
# nothing was refused (EAGAIN) and every sent session was stored. Also CPU per datagram, RSS,
# and the time to build the reports of a day of 10 million sessions over 10,000 domains.
# Usage: Benchmarks/collector.sh [SECONDS per rate] [RATES…]   (needs root for the sysctl)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(500 1000 3000 10000 20000 40000)
work=.build-bench/collector
rm -rf "$work" && mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ ! -x .build-bench/tlsrpt-venv/bin/tlsrpt-collectd ]; then
    python3 -m venv .build-bench/tlsrpt-venv
    .build-bench/tlsrpt-venv/bin/pip install -q tlsrpt-reporter==0.6.0
fi
swift build -c release --product mtasts >/dev/null
bin=$(swift build -c release --show-bin-path)/mtasts
qlen_before=$(cat /proc/sys/net/unix/max_dgram_qlen)
trap 'echo "$qlen_before" > /proc/sys/net/unix/max_dgram_qlen; pkill -f "$work/" 2>/dev/null || true' EXIT
ticks=$(getconf CLK_TCK)
cpu_of() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"; }

run_ours() {  # rate qlen
    local rate=$1 qlen=$2 dir=$work/ours-$1-$2
    mkdir -p "$dir"
    cat >"$dir/d.yml" <<EOF
host: 127.0.0.1
port: $((20000 + RANDOM % 20000))
cache:
  type: internal
tlsrpt_database: $PWD/$dir/tlsrpt.db
collector:
  socket: $PWD/$dir/tlsrpt.sock
EOF
    "$bin" daemon --config "$dir/d.yml" 2>"$dir/log" &
    local pid=$!
    for _ in $(seq 100); do grep -q "socketmap on" "$dir/log" && break; sleep 0.05; done
    local c0; c0=$(cpu_of $pid)
    local load; load=$(python3 Benchmarks/dgram_load.py "$PWD/$dir/tlsrpt.sock" "$rate" "$seconds")
    sleep 1.5
    local c1; c1=$(cpu_of $pid)
    local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    kill $pid; wait $pid 2>/dev/null || true
    local stored; stored=$("$bin" reports status --json --database "$dir/tlsrpt.db" | python3 -c "import json,sys; d=json.load(sys.stdin)['days']; print(sum(x['successful'] + x['failed'] for x in d))")
    report "mtasts         " "$rate" "$qlen" "$load" "$stored" "$c0" "$c1" "$rss"
}

run_peer() {  # rate qlen
    local rate=$1 qlen=$2 dir=$work/peer-$1-$2
    mkdir -p "$dir"
    .build-bench/tlsrpt-venv/bin/tlsrpt-collectd --storage "sqlite://$PWD/$dir/collectd.sqlite" --socketname "$PWD/$dir/tlsrpt.sock" \
        --socketmode 0666 --sockettimeout 1 --logfilename "$PWD/$dir/log" --log_level warning --pidfilename "$PWD/$dir/pid" \
        --dump_path_for_invalid_datagram "$PWD/$dir/invalid" >"$dir/out" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do [ -S "$dir/tlsrpt.sock" ] && break; sleep 0.05; done
    local c0; c0=$(cpu_of $pid)
    local load; load=$(python3 Benchmarks/dgram_load.py "$PWD/$dir/tlsrpt.sock" "$rate" "$seconds")
    sleep 3  # its commit on the socket time-out
    local c1; c1=$(cpu_of $pid)
    local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    local stored; stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COALESCE(SUM(cntrtotal),0) FROM finalresults').fetchone()[0])" "$dir/collectd.sqlite" 2>/dev/null || echo 0)
    report "tlsrpt-collectd" "$rate" "$qlen" "$load" "$stored" "$c0" "$c1" "$rss"
}

report() {  # label rate qlen load stored cpu0 cpu1 rss_kb
    python3 - "$@" <<'PY' | tee -a "$work/results"
import re, sys
label, rate, qlen, load, stored, c0, c1, rss = sys.argv[1:9]
f = dict(re.findall(r"(\w+)=([\d.]+)", load))
sent, eagain, stored = int(f["sent"]), int(f["eagain"]), int(stored)
lost = int(f["offered"]) - stored
cpu = (float(c1) - float(c0)) / max(stored, 1) * 1e6
ok = "loss-free" if lost == 0 else f"LOST {lost} ({lost / int(f['offered']) * 100:.1f} %: {eagain} refused at the sender, {sent - stored} not stored)"
print(f"{label} qlen {qlen:>3} offered {int(rate):>6}/s (achieved {f['achieved_rate']}/s): sent {sent}, stored {stored}: {ok}; CPU {cpu:.1f} µs/datagram; max RSS {int(rss) / 1024:.1f} MB")
PY
}

for qlen in 10 512; do
    echo "$qlen" > /proc/sys/net/unix/max_dgram_qlen
    for rate in "${rates[@]}"; do
        run_ours "$rate" "$qlen"
        run_peer "$rate" "$qlen"
    done
done

echo "-- report build: 10,000,000 sessions over 10,000 domains in one day"
db=$work/build.db
"$bin" reports status --database "$db" >/dev/null
python3 - "$db" <<'PY'
import json, random, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
random.seed(3)
day = "2026-11-29"
rows, fails = [], []
for d in range(10000):
    domain = f"d{d}.example"
    record = f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"
    strings = json.dumps(["version: STSv1", "mode: enforce", f"mx: mx.{domain}", "max_age: 604800"], separators=(",", ":"))
    mx = json.dumps([f"mx.{domain}"], separators=(",", ":"))
    key = json.dumps(["sts", domain, json.loads(strings), json.loads(mx)], separators=(",", ":"))
    ok = 990; failed = 10
    rows.append((day, domain, record, key, "sts", domain, strings, mx, ok, failed))
    for k, t in enumerate(["certificate-expired", "validation-failure"]):
        fails.append((day, domain, record, key, f'["{t}",{k}]', t, "192.0.2.1", f"mx.{domain}", None, f"198.51.100.{k}", None, None, 5))
db.executemany("INSERT INTO tlsrpt_sessions VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
db.executemany("INSERT INTO tlsrpt_failures VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", fails)
db.commit()
print("sessions:", db.execute("SELECT SUM(successful + failed) FROM tlsrpt_sessions").fetchone()[0], "domains:", db.execute("SELECT COUNT(DISTINCT domain) FROM tlsrpt_sessions").fetchone()[0])
PY
printf 'reporting:\n  organization: Bench\n  submitter: sender.example\n' >"$work/build.yml"
/usr/bin/time -f "%e %M" -o "$work/build.time" "$bin" reports build --day 2026-11-29 --out "$work/out" --config "$work/build.yml" --database "$db" >/dev/null
read -r s kb <"$work/build.time"
echo "report build: $(ls "$work/out" | wc -l) reports in $s s, max RSS $((kb / 1024)) MB" | tee -a "$work/results"
