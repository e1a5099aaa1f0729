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

# The benchmark world (Benchmarks/World: dnsmasq on 127.0.0.53 and one HTTPS policy host for N
# domains, certificates from a CA made for the run): `start_world BINDIR N DIR` starts it, adds its
# pid to the array `pids` (the caller's EXIT trap kills them) and sets `ca` (the CA file) and
# `list` (the file of domains).
start_world() {
    "$1/mtasts-bench-world" "$2" "$3" >"$3/world.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q "^ready " "$3/world.out" 2>/dev/null && break; sleep 0.2; done
    grep -q "^ready " "$3/world.out" || { cat "$3/world.out"; return 1; }
    ca=$(sed -n 's/.*ca=\([^ ]*\).*/\1/p' "$3/world.out")
    list=$(sed -n 's/.*domains=\([^ ]*\).*/\1/p' "$3/world.out")
}

# `world_daemon_config FILE PORT CACHE-YAML [MORE-YAML]`: a configuration of `mtasts daemon` on
# 127.0.0.1:PORT that resolves through the world's DNS and trusts only the world's CA.
world_daemon_config() {
    printf 'host: 127.0.0.1\nport: %s\n%s\ndns_server: 127.0.0.53:53\nca_file: %s\nsystem_roots: false\n%s' "$2" "$3" "$ca" "${4:+$4
}" >"$1"
}

# A free TCP port on 127.0.0.1; `wait_port PORT [SECONDS]` waits (20 s by default) until something
# listens on it.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq $((${2:-20} * 10))); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
