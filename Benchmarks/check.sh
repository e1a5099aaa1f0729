#!/usr/bin/env bash
# `mtasts check` over N domains of a local zone (dnsmasq + one policy host + one MX on loopback,
# certificates from a CA made for the run), with --concurrency 1 and 64, and checkdmarc 6.0.4
# (PyPI) on the same zone and trust store (its MTA-STS, MX and --check-mx-tls checks).
# Usage: Benchmarks/check.sh [N]   (default 1000; checkdmarc runs on the first 200 unless PEER_N is set)
# MTASTS_BIN=path runs another build of mtasts (a before/after comparison); PEER_N=0 skips checkdmarc.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
peer_n=${PEER_N:-200}
work=.build-bench/check
rm -rf "$work" && mkdir -p "$work"
scripts/setup.sh
source Benchmarks/lib.sh
if [ ! -x .build-bench/venv/bin/checkdmarc ]; then
    [ -x .build-bench/venv/bin/python ] || python3 -m venv .build-bench/venv
    .build-bench/venv/bin/pip install -q checkdmarc==6.0.4
fi
scripts/build-release.sh --product mtasts >/dev/null
scripts/build-release.sh --product mtasts-bench-world >/dev/null
bindir=$(scripts/build-release.sh --show-bin-path)
mtasts=${MTASTS_BIN:-$bindir/mtasts}

"$bindir/mtasts-bench-world" "$n" "$(pwd)/$work" >"$work/world.out" 2>&1 &
world=$!
trap 'kill $world 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "^ready " "$work/world.out" 2>/dev/null && break; sleep 0.2; done
grep -q "^ready " "$work/world.out" || { cat "$work/world.out"; exit 1; }
dns=$(sed -n 's/.*dns=\([^ ]*\).*/\1/p' "$work/world.out")
ca=$(sed -n 's/.*ca=\([^ ]*\).*/\1/p' "$work/world.out")
list=$(sed -n 's/.*domains=\([^ ]*\).*/\1/p' "$work/world.out")
echo "world: $n domains, dns $dns"

measure() {  # label, count, command…
    local label=$1 count=$2
    shift 2
    /usr/bin/time -v "$@" >"$work/out.json" 2>"$work/time.txt" || true
    local secs rss
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); print (length(t) == 3 ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2])}' "$work/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    python3 -c "print(f'$label domains=$count seconds={$secs:.2f} domains_per_s={$count/$secs:.1f} max_rss_kb=$rss')" | tee -a "$work/results"
}

measure "mtasts --concurrency 64:" "$n" "$mtasts" check --json --dns-server "$dns" --ca-file "$ca" --concurrency 64 --file "$list"
python3 - "$work/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = [d["domain"] for d in r if d["verdict"] not in ("ok", "warnings")]
print(f"  checked {len(r)} domains, {len(bad)} with errors {bad[:3]}")
PY
measure "mtasts --concurrency 1: " "$n" "$mtasts" check --json --dns-server "$dns" --ca-file "$ca" --concurrency 1 --file "$list"
[ "$peer_n" -gt 0 ] || exit 0
head -n "$peer_n" "$list" >"$work/peer-domains.txt"
measure "mtasts --concurrency 1: " "$peer_n" "$mtasts" check --json --dns-server "$dns" --ca-file "$ca" --concurrency 1 --file "$work/peer-domains.txt"
# checkdmarc fetches the policy through the system resolver: give it a private mount namespace
# whose /etc/resolv.conf names the benchmark's dnsmasq, and the benchmark CA as its trust store.
echo "nameserver ${dns%:53}" >"$work/resolv.conf"
REQUESTS_CA_BUNDLE=$ca SSL_CERT_FILE=$ca measure "checkdmarc 6.0.4:        " "$peer_n" \
    unshare -m sh -c "mount --bind '$work/resolv.conf' /etc/resolv.conf && exec .build-bench/venv/bin/checkdmarc --nameserver '${dns%:53}' --check-mx-tls -f json '$work/peer-domains.txt'"
python3 - "$work/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r = r if isinstance(r, list) else [r]
ok = sum(1 for d in r if d.get("mta_sts", {}).get("valid"))
tls = sum(1 for d in r for h in d.get("mx", {}).get("hosts", []) if h.get("starttls"))
print(f"  checkdmarc: {len(r)} domains, MTA-STS valid for {ok}, MX with STARTTLS seen for {tls}")
if r and not r[0].get("mta_sts", {}).get("valid"):
    print("  checkdmarc's first MTA-STS result:", r[0].get("mta_sts"))
PY
python3 - "$work/results" <<'PY'
import re, sys
rows = open(sys.argv[1]).read().splitlines()
rate = lambda i: float(re.search(r"domains_per_s=([\d.]+)", rows[i]).group(1))
print(f"ratio: mtasts --concurrency 64 checks {rate(0) / rate(3):.1f}x as many domains per second as checkdmarc; "
      f"at --concurrency 1, {rate(2) / rate(3):.1f}x")
PY
python3 - "$work/results" "$RESULTS" "$n" "$peer_n" <<'PY'
import json, re, sys
rows = open(sys.argv[1]).read().splitlines()
get = lambda i, k: float(re.search(k + r"=([\d.]+)", rows[i]).group(1))
with open(sys.argv[2], "a") as out:
    for i, what in ((0, f"domains checked end to end, --concurrency 64, {sys.argv[3]} domains"),
                    (2, f"domains checked end to end, --concurrency 1, {sys.argv[4]} domains")):
        out.write(json.dumps({"bench": "check", "what": what, "unit": "domains/s", "ours": get(i, "domains_per_s"),
                              "peer": get(3, "domains_per_s"), "peer_name": f"checkdmarc 6.0.4 ({sys.argv[4]} domains)",
                              "ours_rss_mb": round(get(i, "max_rss_kb") / 1024, 1), "peer_rss_mb": round(get(3, "max_rss_kb") / 1024, 1)}) + "\n")
PY
