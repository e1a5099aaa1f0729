#!/usr/bin/env bash
# The report receiver (release build): N distinct reports (default 10,000, made from the interop
# reports with fresh report-ids) stored
#   1. through POST /tlsrpt of a running `mtasts serve` (curl --parallel, 8 connections, keep-alive),
#   2. through `mtasts reports ingest --maildir`,
#   3. by parsedmarc 11.1.0 (PyPI) from the same Maildir into its JSON/CSV output (n_procs 1 and 2);
# then summaries and readiness over 1,000,000 stored failure-detail rows, and the RSS of
# `mtasts serve` answering /api/summary over them.
# Usage: Benchmarks/receiver.sh [N]     (SKIP_PEER=1: leave parsedmarc out, for a quick re-run of ours)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
interop=${MTASTS_INTEROP:-../shared/interop}
work=.build-bench/receiver
rm -rf "$work" && mkdir -p "$work"
source Benchmarks/peers.sh
source Benchmarks/lib.sh
need_parsedmarc
scripts/build-release.sh --product mtasts >/dev/null
bin=$(scripts/build-release.sh --show-bin-path)/mtasts
python3 Benchmarks/make_reports.py "$interop" "$work/gen" "$n"
cp -r "$work/gen/Maildir" "$work/Maildir-peer1"
cp -r "$work/gen/Maildir" "$work/Maildir-peer2"
secs() { python3 -c "import time; print(time.monotonic())"; }
rss_of() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

echo "-- 1. POST /tlsrpt ($n reports, curl --parallel-max 8)"
port=$((20000 + RANDOM % 20000))
"$bin" serve --listen "127.0.0.1:$port" --database "$work/post.db" 2>"$work/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
: >"$work/curl.cfg"
for ((i = 0; i < n; i++)); do
    [ "$i" -gt 0 ] && echo next >>"$work/curl.cfg"
    printf 'url = "http://127.0.0.1:%s/tlsrpt"\ndata-binary = "@%s/gen/bodies/%s.json.gz"\nheader = "Content-Type: application/tlsrpt+gzip"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$port" "$PWD/$work" "$i" >>"$work/curl.cfg"
done
t0=$(secs)
curl -s --no-progress-meter -Z --parallel-max 8 -K "$work/curl.cfg" >"$work/codes"
t1=$(secs)
created=$(grep -c '^201$' "$work/codes" || true)
stored=$("$bin" reports list --limit 1000000 --json --database "$work/post.db" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
python3 -c "print(f'POST: {$n} requests, {$created} answered 201, {$stored} stored, {$t1-$t0:.2f} s, {$n/($t1-$t0):.0f} reports/s, serve max RSS {$(rss_of $serve)/1024:.1f} MB')" | tee "$work/post"
kill $serve; wait $serve 2>/dev/null || true

echo "-- 2. mtasts reports ingest --maildir"
/usr/bin/time -v "$bin" reports ingest --maildir "$work/gen/Maildir" --dkim ignore --json --database "$work/mail.db" >"$work/ingest.json" 2>"$work/ingest.time"
python3 - "$work" "$n" <<'PY' | tee "$work/ours"
import json, re, sys
w, n = sys.argv[1], int(sys.argv[2])
t = open(f"{w}/ingest.time").read()
wall = t.split("Elapsed (wall clock) time (h:mm:ss or m:ss): ")[1].split("\n")[0].split(":")
s = float(wall[-1]) + 60 * float(wall[-2]) + (3600 * float(wall[-3]) if len(wall) == 3 else 0)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
j = json.load(open(f"{w}/ingest.json"))
print(f"ingest --maildir: {j['messages']} messages, {j['stored']} stored, {s:.2f} s, {j['messages']/s:.0f} messages/s, max RSS {rss/1024:.1f} MB")
PY

for procs in $([ -n "${SKIP_PEER:-}" ] || echo 1 2); do
    echo "-- 3. parsedmarc 11.1.0 --maildir (n_procs $procs)"
    cat >"$work/pm$procs.ini" <<EOF
[general]
save_smtp_tls = True
output = $PWD/$work/pmout$procs
silent = True
offline = True
n_procs = $procs

[mailbox]
batch_size = 0

[maildir]
maildir_path = $PWD/$work/Maildir-peer$procs
EOF
    /usr/bin/time -v .build-bench/venv/bin/parsedmarc -c "$work/pm$procs.ini" >/dev/null 2>"$work/peer$procs.time" || true
    python3 - "$work" "$n" "$procs" <<'PY' | tee "$work/peer$procs"
import json, re, sys
w, n, p = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = open(f"{w}/peer{p}.time").read()
wall = t.split("Elapsed (wall clock) time (h:mm:ss or m:ss): ")[1].split("\n")[0].split(":")
s = float(wall[-1]) + 60 * float(wall[-2]) + (3600 * float(wall[-3]) if len(wall) == 3 else 0)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
try:
    got = len(json.load(open(f"{w}/pmout{p}/smtp_tls.json")))
except Exception:
    got = 0
print(f"parsedmarc n_procs {p}: {n} messages, {got} reports written, {s:.2f} s, {n/s:.0f} messages/s, max RSS {rss/1024:.1f} MB")
PY
done
[ -n "${SKIP_PEER:-}" ] || python3 - "$work" <<'PY'
import re, sys
w = sys.argv[1]
rate = lambda f: float(re.search(r"(\d+) (?:messages|reports)/s", open(f"{w}/{f}").read()).group(1))
best_peer = max(rate("peer1"), rate("peer2"))
print(f"ratio: ingest --maildir {rate('ours') / best_peer:.1f}x parsedmarc (best of n_procs 1, 2); POST {rate('post') / best_peer:.1f}x")
PY
[ -n "${SKIP_PEER:-}" ] || python3 - "$work" "$RESULTS" "$n" <<'PY'
import json, re, sys
w, n = sys.argv[1], sys.argv[3]
text = lambda f: open(f"{w}/{f}").read()
rate = lambda f: float(re.search(r"(\d+) (?:messages|reports)/s", text(f)).group(1))
rss = lambda f: float(re.search(r"RSS ([\d.]+) MB", text(f)).group(1))
best = "peer1" if rate("peer1") >= rate("peer2") else "peer2"
with open(sys.argv[2], "a") as out:
    for mine, what in (("ours", f"reports stored from a Maildir of {n} report mails (`reports ingest --maildir`)"),
                       ("post", f"reports received by POST /tlsrpt and stored, {n} (curl, 8 connections)")):
        out.write(json.dumps({"bench": "receiver", "what": what, "unit": "reports/s", "ours": rate(mine), "peer": rate(best),
                              "peer_name": f"parsedmarc 11.1.0 from the Maildir, n_procs {best[-1]}", "ours_rss_mb": rss(mine), "peer_rss_mb": rss(best)}) + "\n")
PY

echo "-- 4. 1,000,000 failure-detail rows"
db=$work/million.db
"$bin" reports list --database "$db" >/dev/null
python3 Benchmarks/million_db.py "$db"
timed() {  # label, command…
    local label=$1
    shift
    /usr/bin/time -f "%e %M" -o "$work/t" "$@" >/dev/null || true
    read -r s kb < <(tail -1 "$work/t")
    echo "$label: $s s, max RSS $((kb / 1024)) MB"
}
timed "summary, all domains        " "$bin" reports summary --json --database "$db"
timed "summary, one domain         " "$bin" reports summary --domain d7.example --json --database "$db"
timed "summary, one domain, 7 days " "$bin" reports summary --domain d7.example --since 2026-10-24 --json --database "$db"
timed "readiness, one domain       " "$bin" reports readiness d7.example --until 2026-10-30 --json --database "$db" || true
"$bin" serve --listen "127.0.0.1:$port" --database "$db" 2>"$work/serve2.log" &
serve=$!
for _ in $(seq 50); do grep -q "serving on" "$work/serve2.log" && break; sleep 0.1; done
t0=$(secs)
curl -s -o /dev/null "http://127.0.0.1:$port/api/summary"
t1=$(secs)
curl -s -o /dev/null "http://127.0.0.1:$port/api/summary?domain=d7.example"
curl -s -o /dev/null "http://127.0.0.1:$port/api/readiness/d7.example?until=2026-10-30"
python3 -c "print(f'serve /api/summary over 1M rows: {$t1-$t0:.2f} s; serve max RSS {$(rss_of $serve)/1024:.1f} MB')"
record bench=receiver "what=GET /api/summary over 1,000,000 stored failure rows" unit=s better=lower \
    ours="$(python3 -c "print(round($t1 - $t0, 3))")" ours_rss_mb="$(python3 -c "print(round($(rss_of $serve) / 1024, 1))")" "goal=serve under 128 MB"
kill $serve
