#!/usr/bin/env bash
# Runs every benchmark (release builds, peers from PyPI, loopback worlds) one after another and
# writes the table at the top of BENCHMARKS.md from what they recorded in this run (ours, the
# peer, the bound, the ratios, CPU, RSS, the command, the date and the machine), so the figures
# there are reproducible with one command and cannot drift from what was measured.
# Usage: Benchmarks/all.sh [NAME…]   (default: every benchmark; names: socketmap collector
#        report-parse check receiver dashboard imap instructions). Logs in .build-bench/all/NAME.log;
#        raw results in .build-bench/all/results.jsonl. NO_WRITE=1 prints the table only.
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(socketmap collector report-parse check receiver dashboard imap instructions)
out=.build-bench/all
rm -rf "$out" && mkdir -p "$out"
export RESULTS=$PWD/$out/results.jsonl
: >"$RESULTS"
scripts/setup.sh >/dev/null
# One build before the clock starts (each script builds what it needs; this makes it a no-op).
scripts/build-release.sh >/dev/null

# The arguments each benchmark runs with here (the command the table names).
declare -A args=(
    [socketmap]="1000 10"
    [collector]="5"
    [report-parse]=""
    [check]="1000"
    [receiver]="2000"
    [dashboard]="20"
    [imap]="1000"
    [instructions]="1000 5"
)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%FT%TZ)
failed=()
for name in "${names[@]}"; do
    [ -n "${args[$name]+x}" ] || { echo "unknown benchmark: $name" >&2; exit 2; }
    echo "== Benchmarks/$name.sh ${args[$name]}  ($(date -u +%T))"
    # shellcheck disable=SC2086
    if ! RUN_BY_ALL=1 bash "Benchmarks/$name.sh" ${args[$name]} >"$out/$name.log" 2>&1; then
        echo "   failed; see $out/$name.log" >&2
        failed+=("$name")
    fi
    python3 -c "import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get('bench') == sys.argv[2]), 'results')" "$RESULTS" "$name" | sed 's/^/   /'
done
python3 - "$out/machine.json" "$started" "$load_start" "${names[*]}" <<'PY'
import json, os, platform, subprocess, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
json.dump({"started": sys.argv[2], "load_start": sys.argv[3], "load_end": " ".join(open("/proc/loadavg").read().split()[:3]),
           "cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 1048576), "kernel": platform.release(),
           "swift": swift[0] if swift else "?", "commit": commit + (" (with uncommitted changes)" if dirty else ""),
           "names": sys.argv[4].split()}, open(sys.argv[1], "w"))
PY
python3 Benchmarks/table.py "$RESULTS" "$out/machine.json" >"$out/table.md"
cat "$out/table.md"
if [ -z "${NO_WRITE:-}" ]; then
    python3 - BENCHMARKS.md "$out/table.md" <<'PY'
import sys
path, table = sys.argv[1], open(sys.argv[2]).read()
begin, end = "<!-- Benchmarks/all.sh: begin -->", "<!-- Benchmarks/all.sh: end -->"
text = open(path).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + begin + "\n" + table + rest[rest.index(end):]
else:
    title, _, body = text.partition("\n")
    text = f"{title}\n\n{begin}\n{table}{end}\n{body}"
open(path, "w").write(text)
PY
    echo "table written to BENCHMARKS.md"
fi
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
