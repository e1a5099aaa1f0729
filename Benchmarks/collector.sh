#!/usr/bin/env bash
# The TLSRPT collector of `mtasts daemon` (release build) against tlsrpt-collectd 0.6.0 (PyPI
# tlsrpt-reporter) and against the bound: a do-nothing reader of the same socket
# (Benchmarks/dgram_sink.c: recvmmsg, counts, stores nothing). The same sender for all three, on
# the same machine: Benchmarks/dgram_load.c offers libtlsrpt-shaped datagrams at a fixed rate with
# MSG_DONTWAIT and one try each, as Postfix does (EAGAIN = lost at the sender), in paced sendmmsg
# batches; its own CPU share is printed with every run, so that one can see it is not what limits
# the rate. With the kernel's default receive queue (net.unix.max_dgram_qlen 10) and with 512.
# A rate is loss-free when nothing was refused and every sent datagram was stored (the bound:
# received; it gets up to three tries at a rate). A tool that lost datagrams at a rate (or whose
# generator fell behind the rate) is not run at the higher rates of that queue length (ALL=1
# runs every tool at every rate). Then, per queue length, a summary: the highest loss-free rate (every lower rate loss-free too) of the
# bound, mtasts and tlsrpt-collectd, ours as a multiple of the peer's and a share of the bound's,
# CPU per datagram of both at the peer's highest loss-free rate, and the generator's CPU per
# datagram and share of a core. Last, the time to build the reports of a day of 10 million
# sessions over 10,000 domains.
# Readable results in .build-bench/collector/results; one JSON object a line (each run, the
# summaries) appended to $RESULTS (default .build-bench/results.jsonl; see Benchmarks/lib.sh).
# Usage: Benchmarks/collector.sh [SECONDS per rate] [RATES…]   (needs root for the sysctl)
#   default 5 s; rates: qlen 10: 1000 3000 10000 20000; qlen 512: 10000 12500 15000 20000
#   40000 80000 100000 120000 140000 160000 200000 (given RATES are used for both).
#   MTASTS_BIN=path runs that build of mtasts (no swift build).
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib.sh
seconds=${1:-5}
shift || true
if [ $# -gt 0 ]; then
    rates_10=("$@") rates_512=("$@")
else
    rates_10=(1000 3000 10000 20000)
    rates_512=(10000 12500 15000 20000 40000 80000 100000 120000 140000 160000 200000)
fi
work=.build-bench/collector
rm -rf "$work" && mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ ! -x .build-bench/tlsrpt-venv/bin/tlsrpt-collectd ]; then
    python3 -m venv .build-bench/tlsrpt-venv
    .build-bench/tlsrpt-venv/bin/pip install -q tlsrpt-reporter==0.6.0
fi
# The generator and the bound, in C, with the Swift toolchain's clang (or the system's cc).
cc=$(command -v clang || command -v cc)
for tool in dgram_load dgram_sink; do
    "$cc" -O2 -Wall -o ".build-bench/$tool" "Benchmarks/$tool.c"
done
if [ -n "${MTASTS_BIN:-}" ]; then
    bin=$MTASTS_BIN
else
    scripts/build-release.sh --product mtasts >/dev/null
    bin=$(scripts/build-release.sh --show-bin-path)/mtasts
fi
qlen_before=$(cat /proc/sys/net/unix/max_dgram_qlen)
trap 'echo "$qlen_before" > /proc/sys/net/unix/max_dgram_qlen; pkill -f "$work/" 2>/dev/null || true' EXIT
ticks=$(getconf CLK_TCK)
cpu_of() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
load() { .build-bench/dgram_load "$1" "$2" "$seconds"; }  # socket rate
at=$(date -u +%FT%TZ)

run_bound() {  # rate qlen
    # The bound is what can be reached: up to three tries at a rate, the first loss-free one
    # counts (one scheduling pause of this machine loses datagrams of a do-nothing reader too).
    local rate=$1 qlen=$2 dir=$work/bound-$1-$2 try out received c0 c1 rss pid
    mkdir -p "$dir"
    for try in 1 2 3; do
        .build-bench/dgram_sink "$PWD/$dir/tlsrpt.sock" >"$dir/out" &
        pid=$!
        for _ in $(seq 100); do [ -S "$dir/tlsrpt.sock" ] && break; sleep 0.05; done
        c0=$(cpu_of $pid)
        out=$(load "$PWD/$dir/tlsrpt.sock" "$rate")
        sleep 0.3
        c1=$(cpu_of $pid)
        rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
        kill -TERM $pid; wait $pid || true
        received=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' "$dir/out")
        [ "${received:-0}" = "$(sed -n 's/.*offered=\([0-9]*\).*/\1/p' <<<"$out")" ] && break
        rm -f "$dir/tlsrpt.sock"
    done
    report bound "$rate" "$qlen" "$out" "${received:-0}" "$c0" "$c1" "$rss"
}

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
    local out; out=$(load "$PWD/$dir/tlsrpt.sock" "$rate")
    sleep 1.5
    local c1; c1=$(cpu_of $pid)
    local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    kill $pid; wait $pid 2>/dev/null || true
    local stored; stored=$("$bin" reports status --json --database "$dir/tlsrpt.db" | python3 -c "import json,sys; d=json.load(sys.stdin)['days']; print(sum(x['successful'] + x['failed'] for x in d))")
    report mtasts "$rate" "$qlen" "$out" "$stored" "$c0" "$c1" "$rss"
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
    local out; out=$(load "$PWD/$dir/tlsrpt.sock" "$rate")
    sleep 3  # its commit on the socket time-out
    local c1; c1=$(cpu_of $pid)
    local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    local stored; stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COALESCE(SUM(cntrtotal),0) FROM finalresults').fetchone()[0])" "$dir/collectd.sqlite" 2>/dev/null || echo 0)
    report tlsrpt-collectd "$rate" "$qlen" "$out" "$stored" "$c0" "$c1" "$rss"
}

# One line to read (the results file), one JSON line ($RESULTS), one tab-separated line for the
# summary ($work/runs: tool qlen rate offered sent stored lost cpu_us rss_mb gen_cpu_s gen_seconds
# achieved_rate).
report() {  # tool rate qlen generator-output stored cpu0 cpu1 rss_kb
    python3 - "$@" "$seconds" "$at" "$RESULTS" "$work/runs" <<'PY' | tee -a "$work/results"
import json, re, sys
tool, rate, qlen, out, stored, c0, c1, rss, seconds, at, results, runs = sys.argv[1:13]
f = dict(re.findall(r"(\w+)=([\d.]+)", out))
offered, sent, eagain, stored = int(f["offered"]), int(f["sent"]), int(f["eagain"]), int(stored)
rate, qlen = int(rate), int(qlen)
lost = offered - stored
cpu = (float(c1) - float(c0)) / max(stored, 1) * 1e6
rss_mb = int(rss) / 1024
gen_cpu, gen_s = float(f["client_cpu_s"]), float(f["seconds"])
# The generator is behind when it took longer than offered/rate: then the rate was not offered.
behind = f" GENERATOR BEHIND ({float(f['achieved_rate']):.0f}/s)" if float(f["achieved_rate"]) < 0.98 * rate else ""
ok = "loss-free" if lost == 0 else f"LOST {lost} ({lost / offered * 100:.1f} %: {eagain} refused at the sender, {sent - stored} not stored)"
verb = "received" if tool == "bound" else "stored"
print(f"{tool:<15} qlen {qlen:>3} offered {rate:>6}/s (achieved {f['achieved_rate']}/s): sent {sent}, {verb} {stored}: {ok}; "
      f"CPU {cpu:.1f} µs/datagram; max RSS {rss_mb:.1f} MB; generator {gen_cpu / gen_s * 100:.0f} % of a core, {gen_cpu / offered * 1e6:.2f} µs/datagram{behind}")
with open(results, "a") as o:
    o.write(json.dumps({"bench": "collector", "what": f"offered {rate}/s for {seconds} s, qlen {qlen}", "tool": tool, "rate": rate,
                        "qlen": qlen, "lost": lost, "cpu_us": round(cpu, 2), "rss_mb": round(rss_mb, 1), "offered": offered,
                        "refused": eagain, "stored": stored, "achieved_rate": float(f["achieved_rate"]),
                        "generator_cpu_share": round(gen_cpu / gen_s, 3), "at": at}) + "\n")
with open(runs, "a") as o:
    o.write("\t".join(map(str, (tool, qlen, rate, offered, sent, stored, lost, round(cpu, 2), round(rss_mb, 1), gen_cpu, gen_s,
                                f["achieved_rate"]))) + "\n")
PY
}

: >"$work/runs"
for qlen in 10 512; do
    echo "$qlen" > /proc/sys/net/unix/max_dgram_qlen
    declare -A lossy=()
    if [ "$qlen" = 10 ]; then rates=("${rates_10[@]}"); else rates=("${rates_512[@]}"); fi
    for rate in "${rates[@]}"; do
        for tool in bound ours peer; do
            [ -z "${lossy[$tool]:-}" ] || [ -n "${ALL:-}" ] || continue
            "run_$tool" "$rate" "$qlen"
            # Lost datagrams, or a generator that fell behind the rate, end this tool's series.
            tail -n 1 "$work/runs" | awk -F'\t' '{ exit !($7 == 0 && $12 >= 0.98 * $3) }' || lossy[$tool]=1
        done
    done
    unset lossy
done

echo "-- summary"
python3 - "$work/runs" "$RESULTS" "$at" <<'PY' | tee -a "$work/results"
import json, sys
runs = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
results, at = sys.argv[2], sys.argv[3]
rows = [dict(tool=r[0], qlen=int(r[1]), rate=int(r[2]), offered=int(r[3]), lost=int(r[6]), cpu=float(r[7]), rss=float(r[8]),
             gen_cpu=float(r[9]), gen_s=float(r[10]), achieved=float(r[11])) for r in runs]
peer_name = "tlsrpt-collectd 0.6.0"
out = open(results, "a")
for qlen in sorted({r["qlen"] for r in rows}):
    def limit(tool):
        """(highest loss-free rate below the first loss or 0, first losing rate or None, highest rate run,
        the run where the generator fell behind or None: that ends the search too, its rate was not offered)"""
        mine = sorted((r for r in rows if r["qlen"] == qlen and r["tool"] == tool), key=lambda r: r["rate"])
        best, first = 0, None
        for r in mine:
            if r["achieved"] < 0.98 * r["rate"]:
                return best, None, best, r
            if r["lost"]:
                first = r["rate"]
                break
            best = r["rate"]
        return best, first, (mine[-1]["rate"] if mine else 0), None
    def at_rate(tool, rate):
        return next((r for r in rows if r["qlen"] == qlen and r["tool"] == tool and r["rate"] == rate), None)
    def told(tool, name):
        best, first, top, behind = limit(tool)
        if behind:
            return (f"{name}: loss-free up to {best:,}/s; then the generator fell behind ({behind['achieved']:,.0f}/s "
                    f"of {behind['rate']:,}/s offered): not counted")
        if not top:
            return f"{name}: not run"
        if first is None:
            return f"{name}: loss-free up to {best:,}/s, the highest rate run (its limit is higher)"
        return f"{name}: loss-free up to {best:,}/s; loses at {first:,}/s" if best else f"{name}: loses already at {first:,}/s"
    (bound, bound_first, *_), (ours, ours_first, *_), (peer, peer_first, *_) = limit("bound"), limit("mtasts"), limit("tlsrpt-collectd")
    print(f"qlen {qlen}:")
    print("  " + told("bound", "bound (do-nothing reader)"))
    print("  " + told("mtasts", "mtasts"))
    print("  " + told("tlsrpt-collectd", peer_name))
    ratio = ours / peer if peer else None
    share = ours / bound if bound else None
    print("  mtasts: " + (f"{ratio:.1f}× the peer's loss-free rate" if ratio else "no ratio to the peer (it has no loss-free rate here)")
          + "; " + (f"{share * 100:.0f} % of the bound's" if share else "no share of the bound (it has no loss-free rate here)")
          + ("" if ours_first or not ours else " (ours did not lose: at least that)"))
    # CPU compared at the peer's highest loss-free rate; without one, at the lowest rate both ran.
    both = sorted({r["rate"] for r in rows if r["qlen"] == qlen and r["tool"] == "mtasts"}
                  & {r["rate"] for r in rows if r["qlen"] == qlen and r["tool"] == "tlsrpt-collectd"})
    cpu_rate = peer or (both[0] if both else 0)
    o, p = at_rate("mtasts", cpu_rate), at_rate("tlsrpt-collectd", cpu_rate)
    cpu_ratio = p["cpu"] / o["cpu"] if o and p and o["cpu"] else None
    if cpu_ratio:
        print(f"  CPU per datagram at {cpu_rate:,}/s ({'the peer' + chr(39) + 's highest loss-free rate' if peer else 'no loss-free rate of the peer: the lowest rate run'}): "
              f"mtasts {o['cpu']:.1f} µs, peer {p['cpu']:.1f} µs (ours {1 / cpu_ratio:.2f} of the peer's)")
    # The bound stops a collector when it loses where the do-nothing reader loses too.
    stops = lambda best, first: first is not None and bound_first is not None and best >= bound
    ours_stopped, peer_stopped = stops(ours, ours_first), stops(peer, peer_first)
    met_rate = bool(ratio and ratio >= 10)
    met_cpu = bool(cpu_ratio and cpu_ratio >= 10)
    print(f"  goal (≥ 10× the peer's loss-free rate, or where the bound stops both, ≤ 1/10 of its CPU per datagram at the same rate): "
          + ("met by the rate" if met_rate else
             f"met by CPU ({cpu_ratio:.1f}× less), the bound stopping {'both' if peer_stopped else 'ours (not the peer)'}" if ours_stopped and met_cpu else
             f"not met (rate {f'{ratio:.1f}×' if ratio else 'n/a'}, CPU {f'{cpu_ratio:.1f}×' if cpu_ratio else 'n/a'} less; "
             f"the bound stops ours: {'yes' if ours_stopped else 'no'}, the peer: {'yes' if peer_stopped else 'no'})"))
    gen = [r for r in rows if r["qlen"] == qlen]
    top = max(gen, key=lambda r: r["rate"])
    busiest = max(gen, key=lambda r: r["gen_cpu"] / r["gen_s"])
    print(f"  generator: {top['gen_cpu'] / top['offered'] * 1e6:.2f} µs CPU per datagram at {top['rate']:,}/s "
          f"({top['gen_cpu'] / top['gen_s'] * 100:.0f} % of a core); at most {busiest['gen_cpu'] / busiest['gen_s'] * 100:.0f} % of a core "
          f"in any run ({busiest['tool']} at {busiest['rate']:,}/s)")
    b = at_rate("bound", bound) if bound else None
    ob = at_rate("mtasts", ours) if ours else None
    out.write(json.dumps({"bench": "collector", "what": f"loss-free rate, qlen {qlen}", "unit": "datagrams/s", "ours": ours or "none", "peer": peer or "none",
                          "peer_name": peer_name, "bound": bound or "none", "ratio": round(ratio, 2) if ratio else None,
                          "ours_cpu_us": o["cpu"] if o else None, "peer_cpu_us": p["cpu"] if p else None,
                          "bound_cpu_us": at_rate("bound", cpu_rate)["cpu"] if at_rate("bound", cpu_rate) else None,
                          "cpu_rate": cpu_rate,
                          "ours_rss_mb": ob["rss"] if ob else None, "peer_rss_mb": p["rss"] if p else None,
                          "cpu_ratio": round(cpu_ratio, 2) if cpu_ratio else None,
                          "generator_cpu_us": round(top["gen_cpu"] / top["offered"] * 1e6, 2), "generator_cpu_share": round(busiest["gen_cpu"] / busiest["gen_s"], 3),
                          "goal": "≥ 10× the peer's loss-free rate, or ≤ 1/10 of its CPU per datagram where the bound stops both",
                          "note": f"CPU µs per datagram at {cpu_rate}/s ({'the peer' + chr(39) + 's loss-free rate' if peer else 'the lowest rate run'}), ours' RSS at its own loss-free rate; "
                                  + (f"the do-nothing reader loses from {bound_first}/s" if bound_first else "the do-nothing reader did not lose"),
                          "at": at}) + "\n")
PY

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
record bench=collector "what=reports built for a day of 10,000,000 sessions over 10,000 domains" unit=s better=lower \
    ours="$s" ours_rss_mb="$((kb / 1024))" "at=$at"
