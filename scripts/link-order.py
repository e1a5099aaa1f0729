#!/usr/bin/env python3
"""scripts/link-order.ld from a link map and what ran (used by scripts/link-order.sh).

  link-order.py callgrind BINARY MAP OUT PROFILE...   every input section of .text holding an
      instruction callgrind saw executed (profiles with --dump-instr=yes --compress-pos=no
      --compress-strings=no --dump-line=no): a new script
  link-order.py faults BINARY MAP OUT PERF_SCRIPT...  the input sections outside the script's hot
      span where the running daemon took a page fault (`perf script -F addr --show-mmap-events` of
      `perf record -c 1 -e page-faults -d`, one file per run): added to the script. On the real CPU the daemon runs
      code valgrind's CPU never takes (BoringSSL's AVX-512 and ADX variants), and each fault
      outside the span maps 64 kB of code around it.
"""
import bisect, collections, re, subprocess, sys

HEADER = re.compile(r"\((\d+) sections, hot size (\d+) bytes\)")


def text_sections(link_map):
    """The input sections of .text in the map: (address, size, file, section), by address."""
    out, in_text = [], False
    line_re = re.compile(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (.*)$")
    for line in open(link_map, errors="replace"):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        rest = m.group(3)
        if not rest.startswith(" "):
            in_text = rest.strip() == ".text"
        elif in_text and not rest.startswith(" " * 16):  # deeper lines are the symbols inside
            f = re.match(r"(.*):\((.*)\)$", rest.strip())
            if f and int(m.group(2), 16) > 0 and "<internal>" not in f.group(1):
                out.append((int(m.group(1), 16), int(m.group(2), 16), f.group(1), f.group(2)))
    return sorted(out)


def holding(sections, starts, address):
    i = bisect.bisect_right(starts, address) - 1
    return i if i >= 0 and sections[i][0] <= address < sections[i][0] + sections[i][1] else None


def pattern(path):
    """An input-file pattern that holds wherever the checkout and the toolchain are: the object's
    directory and name (`*ArgumentParser.build/Flag.swift.o`), or the archive and member
    (`*libswiftCore.a:Swift.o`); '?' for a space."""
    m = re.match(r"(?:.*/)?([^/()]+\.a)\(([^()]+)\)$", path)
    name = m.group(1) + ":" + m.group(2) if m else "/".join(path.split("/")[-2:])
    return "*" + name.replace(" ", "?")


def write(out, by_file, count, size):
    with open(out, "w") as f:
        f.write("/* Written by scripts/link-order.sh: the input sections `mtasts daemon` runs, first in .text\n"
                f"   ({count} sections, hot size {size} bytes). A section not found is left where it would be. */\n")
        f.write("OVERWRITE_SECTIONS {\n  .text : {\n")
        for p in sorted(by_file):
            f.write(f"    {p}({' '.join(sorted(by_file[p]))})\n")
        f.write("  }\n}\n")


def from_callgrind(binary, link_map, out, profiles):
    sections = text_sections(link_map)
    starts = [s[0] for s in sections]
    executed, lowest = set(), {}
    for path in profiles:
        ours, fn = False, None
        for line in open(path, errors="replace"):
            if line.startswith("ob="):
                ours = line[3:].strip() == binary
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif ours and line.startswith("0x"):
                a = int(line.split()[0], 16)
                executed.add(a)
                if fn not in lowest or a < lowest[fn]:
                    lowest[fn] = a
    # The profile's addresses against the binary's: the offset most functions named once agree on.
    symbols = collections.defaultdict(list)
    for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            symbols[p[2]].append(int(p[0], 16))
    offsets = collections.Counter(a - symbols[f][0] for f, a in lowest.items() if len(symbols.get(f, [])) == 1)
    if not offsets:
        sys.exit("link-order: no function of the profile is in the binary")
    offset, agree = offsets.most_common(1)[0]
    if agree < 0.9 * sum(offsets.values()):
        sys.exit(f"link-order: the profile does not match the binary ({agree} of {sum(offsets.values())} functions agree)")
    ran = {i for a in executed if (i := holding(sections, starts, a - offset)) is not None}
    by_file = collections.defaultdict(set)
    for i in ran:
        by_file[pattern(sections[i][2])].add(sections[i][3])
    size = sum(sections[i][1] for i in ran)
    write(out, by_file, len(ran), size)
    unnamed = sum(1 for i in ran if "..L" in sections[i][3])
    print(f"{len(ran)} input sections ({size // 1024} kB, {unnamed} without a symbol) from {len(by_file)} files in {out}")


def faults_of(binary, perf_script):
    """The page faults of one run, as addresses in the binary's layout."""
    base, faults = None, []
    for line in open(perf_script, errors="replace"):
        if "PERF_RECORD_MMAP" in line:
            m = re.search(r"\[(0x[0-9a-f]+)\(0x[0-9a-f]+\) @ 0 .*\]: r--p (\S+)$", line.strip())
            if m and m.group(2) == binary and base is None:
                base = int(m.group(1), 16)
        elif line.strip().startswith(("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f")):
            try:
                faults.append(int(line.split()[0], 16))
            except ValueError:
                pass
    if base is None:
        sys.exit(f"link-order: {binary} is not in the page-fault trace {perf_script}")
    return [a - base for a in faults]


def from_faults(binary, link_map, out, perf_scripts):
    sections = text_sections(link_map)
    starts = [s[0] for s in sections]
    text = open(out).read()
    count, size = (int(x) for x in HEADER.search(text).groups())
    by_file = collections.defaultdict(set)
    for p, names in re.findall(r"^    (\S+)\((.*)\)$", text, re.M):
        by_file[p].update(names.split())
    faults = [a for path in perf_scripts for a in faults_of(binary, path)]
    hot_end = sections[0][0] + size
    added = set()
    for a in faults:
        i = holding(sections, starts, a)
        if i is None or sections[i][0] < hot_end:
            continue
        p, name = pattern(sections[i][2]), sections[i][3]
        if name not in by_file[p]:
            by_file[p].add(name)
            added.add(i)
    extra = sum(sections[i][1] for i in added)
    write(out, by_file, count + len(added), size + extra)
    print(f"{len(added)} input sections ({extra} bytes) added from {len(faults)} page faults")


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    {"callgrind": lambda: from_callgrind(args[0], args[1], args[2], args[3:]),
     "faults": lambda: from_faults(args[0], args[1], args[2], args[3:])}[kind]()
