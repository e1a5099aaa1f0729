#!/usr/bin/env bash
# The dashboard of `mtasts serve` (release build) over 1,000,000 stored failure-detail rows
# (Benchmarks/million_db.py: 100 domains × 30 days × 10 senders, 30,000 reports): the time to
# render the overview, a domain page, a drill-down and a report page, each requested RUNS times
# (default 20) one after another by curl; the median, the slowest, and serve's max RSS.
# The window is the data's (?until=2026-10-30). Usage: Benchmarks/dashboard.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
work=.build-bench/dashboard
rm -rf "$work" && mkdir -p "$work"
source Benchmarks/lib.sh
scripts/build-release.sh --product mtasts >/dev/null
bin=$(scripts/build-release.sh --show-bin-path)/mtasts
db=$work/million.db
"$bin" reports list --database "$db" >/dev/null
python3 Benchmarks/million_db.py "$db"
port=$((20000 + RANDOM % 20000))
"$bin" serve --listen "127.0.0.1:$port" --database "$db" 2>"$work/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
base="http://127.0.0.1:$port"
echo "machine: $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
printf '%-44s %10s %10s %8s\n' "page" "median ms" "max ms" "KB"
for page in "/?until=2026-10-30" "/domains/d7.example?until=2026-10-30" "/domains/d7.example/reports?until=2026-10-30&mx=mx1.d7.example" \
            "/domains/d7.example/reports?until=2026-10-30&type=certificate-expired" "/reports/7"; do
    : >"$work/times"
    for _ in $(seq "$runs"); do
        curl -s -o "$work/page" -w '%{time_total} %{http_code} %{size_download}\n' "$base$page" >>"$work/times"
    done
    python3 - "$work/times" "$page" "$RESULTS" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
codes = {r[1] for r in rows}
assert codes == {"200"}, f"{sys.argv[2]}: status {codes}"
t = [float(r[0]) * 1000 for r in rows]
print(f"{sys.argv[2]:<44} {statistics.median(t):10.1f} {max(t):10.1f} {int(rows[-1][2]) / 1024:8.0f}")
with open(sys.argv[3], "a") as out:
    out.write(json.dumps({"bench": "dashboard", "what": f"GET {sys.argv[2]} over 1,000,000 failure rows (median of {len(t)}; slowest {max(t):.0f} ms)",
                          "unit": "ms", "better": "lower", "ours": round(statistics.median(t), 1)}) + "\n")
PY
done
echo "serve max RSS: $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$serve/status") MB"
record bench=dashboard "what=serve's max RSS after the pages above" unit=MB better=lower ours="$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$serve/status")" "goal=< 128 MB"
