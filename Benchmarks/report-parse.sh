#!/usr/bin/env bash
# Report parsing throughput: `mtasts report parse --json` (release build) against parsedmarc 11.1.0
# (PyPI, offline) on the same files: the interop corpus repeated to at least 10,000 files.
# Usage: Benchmarks/report-parse.sh [COPIES]   (default 180 copies of the 56 interop reports)
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-180}
interop=${MTASTS_INTEROP:-../shared/interop}
work=.build-bench
mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ ! -x "$work/venv/bin/python" ] || ! "$work/venv/bin/python" -c 'import parsedmarc' 2>/dev/null; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q parsedmarc==11.1.0
fi
swift build -c release --product mtasts >/dev/null
bin=$(swift build -c release --show-bin-path)/mtasts

corpus=$work/corpus
rm -rf "$corpus" && mkdir -p "$corpus"
# Every interop file that is a report (the cron mail and the base64 text are left out).
mapfile -t files < <(find "$interop/reports" -type f ! -name empty.eml ! -name '*.b64' | sort)
for ((i = 0; i < copies; i++)); do
    mkdir -p "$corpus/$i"
    for f in "${files[@]}"; do cp "$f" "$corpus/$i/$(basename "$(dirname "$f")")-$(basename "$f")"; done
done
n=$(find "$corpus" -type f | wc -l)
bytes=$(du -sb "$corpus" | cut -f1)
echo "corpus: $n files, $bytes bytes ($((${#files[@]})) distinct reports × $copies)"

/usr/bin/time -v "$bin" report parse --json "$corpus" >/dev/null 2>"$work/mtasts.time" || true
secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); print (length(t) == 3 ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2])}' "$work/mtasts.time")
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/mtasts.time")
python3 -c "print(f'mtasts:     files=$n seconds={$secs:.3f} reports_per_s={$n/$secs:.0f} mb_per_s={$bytes/$secs/1e6:.2f} max_rss_kb=$rss')"

/usr/bin/time -v "$work/venv/bin/python" Benchmarks/parsedmarc_parse.py "$corpus" 2>"$work/parsedmarc.time" | sed 's/^/parsedmarc: /' | tee "$work/parsedmarc.out"
prss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/parsedmarc.time")
echo "parsedmarc: max_rss_kb=$prss"
python3 - "$work/parsedmarc.out" "$n" "$secs" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
peer = float(re.search(r"reports_per_s=(\d+)", out).group(1))
ours = float(sys.argv[2]) / float(sys.argv[3])
print(f"ratio: mtasts parses {ours / peer:.1f}x as many reports per second as parsedmarc 11.1.0")
PY
