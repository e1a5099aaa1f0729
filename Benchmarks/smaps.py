#!/usr/bin/env python3
"""Resident memory of a process by mapping: `Benchmarks/smaps.py PID` prints RSS and private dirty
kB per file (anonymous mappings, the heap and thread stacks grouped), largest first, with the
total. Used by `SMAPS=1 Benchmarks/socketmap.sh` to show where the daemon's RSS goes.
`Benchmarks/smaps.py PID --sections` also prints the resident kB of the process's executable by
ELF section (`.text`, `.rodata`, …; from /proc/PID/pagemap, so as root), and how much of it is
private (written: relocated data, `.data`). `--text` also splits the resident pages of the code by
where they lie: inside the span the linker script (scripts/link-order.ld) lays out first, or
outside it, by the module of the function each page starts in (Swift names by module; C by prefix)."""
import collections, re, struct, subprocess, sys

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

def resident_pages(binary, code_only=False):
    """(address in the file's layout, pagemap entry) of each resident page of the process's mappings
    of `binary` (only the executable ones with `code_only`)."""
    base = None
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in open(f"/proc/{pid}/maps"):
            parts = line.split()
            if len(parts) < 6 or parts[5] != binary:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if base is None:
                base = lo - int(parts[2], 16)
            if code_only and "x" not in parts[1]:
                continue
            for page in range(lo, hi, 4096):
                pagemap.seek(page // 4096 * 8)
                entry = struct.unpack("<Q", pagemap.read(8))[0]
                if entry >> 63 & 1:
                    yield page - base, entry

if "--sections" in sys.argv[2:]:
    binary = __import__("os").readlink(f"/proc/{pid}/exe")
    sections = []
    for line in subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and int(m.group(2), 16) and int(m.group(3), 16):
            sections.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16)))
    resident, private = collections.Counter(), collections.Counter()
    for at, entry in resident_pages(binary):
        name = next((n for n, start, size in sections if start <= at < start + size), "(between sections)")
        resident[name] += 4
        if not entry >> 61 & 1:  # not a page of the file: written, private
            private[name] += 4
    print(f"\n{binary} by section:")
    print(f"{'RSS kB':>8} {'private':>8}  section")
    for n, v in resident.most_common():
        print(f"{v:>8} {private[n]:>8}  {n}")
    print(f"{sum(resident.values()):>8} {sum(private.values()):>8}  total")

if "--text" in sys.argv[2:]:
    import bisect, os
    binary = os.readlink(f"/proc/{pid}/exe")
    symbols = []
    for line in subprocess.run(["nm", "-n", "--defined-only", binary], capture_output=True, text=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            symbols.append((int(p[0], 16), p[2]))
    starts = [a for a, _ in symbols]
    # The hot span: the start of .text, as long as the input sections scripts/link-order.ld puts there.
    script = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "link-order.ld")).read()
    hot = re.search(r"hot size (\d+) bytes", script)
    text = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout
    lo = int(re.search(r"\]\s+\.text\s+PROGBITS\s+([0-9a-f]+)", text).group(1), 16)
    hi = lo + (int(hot.group(1)) if hot else 0)

    def module(n):
        if n.startswith("$s"):
            rest = n[2:]
            if rest.startswith("s"):
                return "Swift standard library"
            m = re.match(r"(\d+)", rest)
            return rest[len(m.group(1)):len(m.group(1)) + int(m.group(1))] if m else "Swift (other)"
        for prefix, name in (("CNIOBoringSSL", "BoringSSL"), ("sqlite3", "SQLite"), ("swift_", "Swift runtime"),
                             ("_ZN5swift", "Swift runtime"), ("yaml_", "libyaml"), ("_ZN", "C++ (other)")):
            if n.startswith(prefix):
                return name
        return "C (other)"
    inside, outside = 0, collections.Counter()
    for at, _ in resident_pages(binary, code_only=True):
        if lo <= at <= hi:
            inside += 4
        else:
            i = bisect.bisect_right(starts, at) - 1
            outside[module(symbols[i][1]) if i >= 0 else "?"] += 4
    print(f"\ncode resident: {inside} kB inside the hot span ({(hi - lo) // 1024} kB long), {sum(outside.values())} kB outside it:")
    for n, v in outside.most_common(20):
        print(f"{v:>8}  {n}")
