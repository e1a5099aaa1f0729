"""Writes the table of BENCHMARKS.md (markdown) from the results one run of Benchmarks/all.sh
recorded (JSON lines, Benchmarks/lib.sh `record`) and the machine it ran on.
Usage: table.py RESULTS.jsonl MACHINE.json"""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
m = json.load(open(sys.argv[2]))
commands = {
    "socketmap": "Benchmarks/socketmap.sh 1000 10", "collector": "Benchmarks/collector.sh 5",
    "report-parse": "Benchmarks/report-parse.sh", "check": "Benchmarks/check.sh 1000",
    "receiver": "Benchmarks/receiver.sh 2000", "dashboard": "Benchmarks/dashboard.sh 20", "imap": "Benchmarks/imap.sh 1000",
    "instructions": "Benchmarks/instructions.sh 1000 5",
}


def num(v, unit=""):
    if v is None or v == "":
        return ""
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def ratio(a, b, better):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not a or not b:
        return ""
    r = a / b if better == "higher" else b / a
    return f"{r:.1f}×"


def share(a, b, better):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not a or not b:
        return ""
    r = a / b if better == "higher" else b / a
    return f"{100 * r:.0f} %"


print(f"Written by `Benchmarks/all.sh` ({', '.join(m['names'])}) on {m['started']}: commit {m['commit']}, "
      f"{m['cpus']} vCPU ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, {m['swift']}; "
      f"load average {m['load_start']} at the start, {m['load_end']} at the end. "
      "Every figure is from this one run; the peer and the bound ran in the same script, on the same "
      "machine, right after ours. \"vs peer\" is how many times the peer's rate (or time) ours is; "
      "\"of bound\" is ours as a share of what a server doing no work reaches under the same load.")
print()
print("| benchmark | what | unit | mtasts | peer | bound | vs peer | of bound | CPU µs/op: mtasts · peer · bound | p99: mtasts · peer | RSS MB: mtasts · peer | goal |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    if "ours" not in r:
        continue
    better = r.get("better", "higher")
    peer = r.get("peer")
    peer_cell = f"{num(peer)} ({r['peer_name']})" if peer not in (None, "") and r.get("peer_name") else num(peer)
    cpu = " · ".join(num(r.get(k)) or "–" for k in ("ours_cpu_us", "peer_cpu_us", "bound_cpu_us"))
    p99 = " · ".join((num(r.get(k), " µs") or "–") for k in ("ours_p99_us", "peer_p99_us"))
    rss = " · ".join(num(r.get(k)) or "–" for k in ("ours_rss_mb", "peer_rss_mb"))
    bench = f"`{commands.get(r['bench'], r['bench'])}`"
    print(f"| {bench} | {r.get('what', '')} | {r.get('unit', '')} | {num(r['ours'])} | {peer_cell} | {num(r.get('bound'))} | "
          f"{ratio(r['ours'], peer, better)} | {share(r['ours'], r.get('bound'), better)} | {cpu} | {p99} | {rss} | {r.get('goal', '')} |")
notes = [r for r in rows if r.get("note") and "ours" in r]
if notes:
    print()
    for r in notes:
        print(f"- {r['bench']}, {r.get('what', '')}: {r['note']}")
print()
