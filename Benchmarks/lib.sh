# Sourced by the benchmark scripts: `record` appends one result to $RESULTS (JSON lines), from
# which Benchmarks/all.sh writes the table of BENCHMARKS.md. Each argument is key=value; a value
# that reads as a number is stored as one. The keys the table knows:
#   bench what unit ours peer peer_name bound  (the rate or time compared, and what it is)
#   better=higher|lower                        (for the ratios; default higher)
#   ours_cpu_us peer_cpu_us bound_cpu_us       (CPU per operation)
#   ours_rss_mb peer_rss_mb ours_p99_us peer_p99_us goal note
# Other keys are kept in the JSON lines (the raw results) but not shown.
: "${RESULTS:=$(pwd)/.build-bench/results.jsonl}"
export RESULTS
mkdir -p "$(dirname "$RESULTS")"

record() {
    python3 - "$@" >>"$RESULTS" <<'PY'
import json, re, sys
row = {}
for arg in sys.argv[1:]:
    key, _, value = arg.partition("=")
    if re.fullmatch(r"-?\d+", value):
        row[key] = int(value)
    elif re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", value):
        row[key] = float(value)
    else:
        row[key] = value
print(json.dumps(row, ensure_ascii=False))
PY
}
