#!/usr/bin/env python3
"""Resident memory of a process by mapping: `Benchmarks/smaps.py PID` prints RSS and private dirty
kB per file (anonymous mappings, the heap and thread stacks grouped), largest first, with the
total. Used by `SMAPS=1 Benchmarks/socketmap.sh` to show where the daemon's RSS goes."""
import collections, re, sys

pid = sys.argv[1]
rss = collections.Counter()
dirty = collections.Counter()
count = collections.Counter()
name = None
with open(f"/proc/{pid}/smaps") as f:
    for line in f:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
            name = path.rsplit("/", 1)[-1] if path else "[anonymous]"
            count[name] += 1
        elif line.startswith("Rss:"):
            rss[name] += int(line.split()[1])
        elif line.startswith("Private_Dirty:"):
            dirty[name] += int(line.split()[1])
with open(f"/proc/{pid}/status") as f:
    status = dict(l.split(":", 1) for l in f if ":" in l)
print(f"pid {pid}: VmRSS {status['VmRSS'].strip()}, threads {status['Threads'].strip()}")
print(f"{'RSS kB':>8} {'dirty kB':>8} {'maps':>5}  mapping")
for n, v in rss.most_common():
    if v == 0:
        continue
    print(f"{v:>8} {dirty[n]:>8} {count[n]:>5}  {n}")
print(f"{sum(rss.values()):>8} {sum(dirty.values()):>8} {sum(count.values()):>5}  total")
