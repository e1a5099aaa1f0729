"""Parses every file of a folder with parsedmarc (offline: no DNS), the peer side of
Benchmarks/report-parse.sh. Prints: files, parsed, failed, seconds, reports/s, MB/s."""
import json, os, sys, time, logging
import parsedmarc

logging.disable(logging.CRITICAL)
root = sys.argv[1]
dump = "--no-dump" not in sys.argv
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
size = sum(os.path.getsize(p) for p in paths)
ok = failed = 0
start = time.perf_counter()
with open(os.devnull, "w") as sink:
    for p in paths:
        try:
            result = parsedmarc.parse_report_file(p, offline=True)
            if dump:
                sink.write(json.dumps(result, default=str))
            ok += 1
        except Exception:
            failed += 1
elapsed = time.perf_counter() - start
print(f"files={len(paths)} parsed={ok} failed={failed} seconds={elapsed:.3f} "
      f"reports_per_s={ok / elapsed:.0f} mb_per_s={size / elapsed / 1e6:.2f}")
