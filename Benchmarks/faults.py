#!/usr/bin/env python3
"""Where a process takes the page faults that make its executable's pages resident, and who takes
them: `Benchmarks/faults.py TRACE BINARY [SECTIONS] [FRAMES]` reads
`perf script -F addr,ip,sym --show-mmap-events` of
`perf record --call-graph dwarf,32768 -c 1 -e page-faults -d -- BINARY …` and prints the faults in
BINARY by ELF section, then, for each of SECTIONS (comma-separated, default .eh_frame_hdr,.rodata),
the call chains that faulted there (FRAMES frames, default 8), most frequent first. Each such fault
maps up to 64 kB of the file around it (the kernel's fault-around), so a few faults in a large
table cost hundreds of kB (BENCHMARKS.md, "Where the daemon's memory is", fourth look)."""
import bisect, collections, re, subprocess, sys

trace, binary = sys.argv[1], sys.argv[2]
wanted = (sys.argv[3] if len(sys.argv) > 3 else ".eh_frame_hdr,.rodata").split(",")
depth = int(sys.argv[4]) if len(sys.argv) > 4 else 8

sections = []
for line in subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
    if m and int(m.group(2), 16):
        sections.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
sections.sort()
starts = [s[0] for s in sections]


def section(offset):
    i = bisect.bisect_right(starts, offset) - 1
    return sections[i][2] if i >= 0 and offset < sections[i][0] + sections[i][1] else None


# The kernel's own frames of a fault, left out of the chains.
KERNEL = ("asm_exc", "exc_page", "do_user_addr", "handle_mm", "__handle_mm", "do_fault", "do_read_fault",
          "filemap", "__do_fault", "handle_pte", "do_pte", "lock_vma")
base, samples, current = None, [], None
for line in open(trace, errors="replace"):
    if line.startswith("PERF_RECORD_MMAP"):
        m = re.search(r"\[(0x[0-9a-f]+)\(0x[0-9a-f]+\) @ 0 .*\]: r--p (\S+)$", line.strip())
        if m and m.group(2) == binary and base is None:
            base = int(m.group(1), 16)
    elif line.startswith("    "):
        try:
            current = (int(line.split()[0], 16), [])
        except ValueError:
            current = None
            continue
        samples.append(current)
    elif line.startswith("\t") and current is not None:
        parts = line.split(None, 1)
        current[1].append(parts[1].strip() if len(parts) > 1 else "?")
if base is None:
    sys.exit(f"faults: {binary} is not mapped in {trace}")

by_section = collections.Counter()
chains = collections.defaultdict(collections.Counter)
for address, chain in samples:
    name = section(address - base)
    if name is None:
        continue
    by_section[name] += 1
    if name in wanted:
        frames = [f for f in chain if not f.startswith(KERNEL)]
        chains[name][" < ".join(f[:60] for f in frames[:depth])] += 1
print("faults in the binary by section:")
for name, count in by_section.most_common():
    print(f"{count:8}  {name}")
for name in wanted:
    print(f"== {name}: {sum(chains[name].values())} faults")
    for chain, count in chains[name].most_common(15):
        print(f"{count:6}  {chain}")
