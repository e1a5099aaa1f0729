#!/usr/bin/env bash
# Report parsing throughput: `mtasts report parse --json` (release build) against parsedmarc 11.1.0
# (PyPI, offline) on the same files: the interop corpus repeated to at least 10,000 files.
# Usage: Benchmarks/report-parse.sh [COPIES]   (default 182 copies of the 55 interop reports)
# Each measurement is run RUNS times (default 3) and the fastest run is kept: this machine's
# timings vary by tens of percent from run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-182}
runs=${RUNS:-3}
interop=${MTASTS_INTEROP:-../shared/interop}
work=.build-bench
mkdir -p "$work"
source Benchmarks/lib.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/python" -c 'import parsedmarc' 2>/dev/null; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q parsedmarc==11.1.0
fi
scripts/build-release.sh --product mtasts >/dev/null
bin=${MTASTS_BIN:-$(scripts/build-release.sh --show-bin-path)/mtasts}

corpus=$work/corpus
rm -rf "$corpus" && mkdir -p "$corpus"
# Every interop file that is a report (the cron mail and the base64 text are left out).
mapfile -t files < <(find "$interop/reports" -type f ! -name empty.eml ! -name '*.b64' | sort)
for ((i = 0; i < copies; i++)); do
    mkdir -p "$corpus/$i"
    for f in "${files[@]}"; do rel=${f#"$interop/reports/"}; cp "$f" "$corpus/$i/${rel//\//_}"; done
done
n=$(find "$corpus" -type f | wc -l)
bytes=$(du -sb "$corpus" | cut -f1)
echo "corpus: $n files, $bytes bytes ($((${#files[@]})) distinct reports × $copies)"

best_of() {  # output file of /usr/bin/time -v, command…; keeps the fastest of $runs runs
    local out=$1 best=
    shift
    for ((r = 0; r < runs; r++)); do
        # Wall time in nanoseconds around the run (time -v's own clock counts in 10 ms steps, a
        # large part of a run this short); time -v gives the peak RSS.
        local t0 t1 s
        t0=$(date +%s%N)
        /usr/bin/time -v "$@" 2>"$out.try" >"$out.stdout" || true
        t1=$(date +%s%N)
        s=$(python3 -c "print(($t1 - $t0) / 1e9)")
        if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then
            best=$s
            cp "$out.try" "$out"
            cp "$out.stdout" "$out.best-stdout"
        fi
    done
    echo "$best"
}
run_mtasts() {  # label, arguments…
    local label=$1
    shift
    local secs rss
    secs=$(best_of "$work/mtasts.time" "$bin" report parse "$@" "$corpus")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/mtasts.time")
    python3 -c "print(f'$label files=$n seconds={$secs:.4f} reports_per_s={$n/$secs:.0f} mb_per_s={$bytes/$secs/1e6:.2f} max_rss_kb=$rss')"
}
run_peer() {  # label, extra arguments…
    local label=$1
    shift
    best_of "$work/parsedmarc.time" "$work/venv/bin/python" Benchmarks/parsedmarc_parse.py "$corpus" "$@" >/dev/null
    echo "$label $(cat "$work/parsedmarc.time.best-stdout") max_rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/parsedmarc.time")"
}

if [ -n "${MTASTS_ONLY:-}" ]; then  # ours only (a before/after comparison)
    run_mtasts "mtasts --jobs 2 --json:" --json --jobs 2
    run_mtasts "mtasts --jobs 1 --json:" --json --jobs 1
    run_mtasts "mtasts --jobs 2 --quiet:" --quiet --jobs 2
    exit 0
fi
echo "-- parse and write JSON (mtasts report parse --json; parsedmarc parse_report_file + json.dumps)"
run_mtasts "mtasts --jobs 2:  " --json --jobs 2 | tee "$work/ours-json"
run_mtasts "mtasts --jobs 1:  " --json --jobs 1
run_peer   "parsedmarc:       " | tee "$work/peer-json"
echo "-- parse only (mtasts report parse --quiet; parsedmarc parse_report_file)"
run_mtasts "mtasts --jobs 2:  " --quiet --jobs 2 | tee "$work/ours-quiet"
run_mtasts "mtasts --jobs 1:  " --quiet --jobs 1
run_peer   "parsedmarc:       " --no-dump | tee "$work/peer-quiet"
python3 - "$work" <<'PY'
import re, sys
w = sys.argv[1]
rate = lambda f: float(re.search(r"reports_per_s=(\d+)", open(f"{w}/{f}").read()).group(1))
print(f"ratio, parse + JSON: {rate('ours-json') / rate('peer-json'):.1f}x parsedmarc 11.1.0")
print(f"ratio, parse only:   {rate('ours-quiet') / rate('peer-quiet'):.1f}x parsedmarc 11.1.0")
PY
python3 - "$work" "$RESULTS" "$n" <<'PY'
import json, re, sys
w, n = sys.argv[1], sys.argv[3]
field = lambda f, k: float(re.search(k + r"=([\d.]+)", open(f"{w}/{f}").read()).group(1))
with open(sys.argv[2], "a") as out:
    for kind, what, goal in (("json", "parse and write JSON (`report parse --json --jobs 2`; parsedmarc + json.dumps)", "≥ 20× the peer"),
                             ("quiet", "parse only (`report parse --quiet --jobs 2`; parsedmarc)", "≥ 30× the peer")):
        out.write(json.dumps({"bench": "report-parse", "what": f"{what}, {n} files", "unit": "reports/s",
                              "ours": field(f"ours-{kind}", "reports_per_s"), "peer": field(f"peer-{kind}", "reports_per_s"), "peer_name": "parsedmarc 11.1.0",
                              "ours_rss_mb": round(field(f"ours-{kind}", "max_rss_kb") / 1024, 1), "peer_rss_mb": round(field(f"peer-{kind}", "max_rss_kb") / 1024, 1),
                              "goal": goal}) + "\n")
PY
