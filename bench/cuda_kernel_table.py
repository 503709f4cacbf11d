#!/usr/bin/env python3
"""Per-kernel table of one decode step from `ncu --csv --metrics gpu__time_duration.sum` output:
launches, the sum of kernel times, the kernels in launch order, and the times summed by kernel name."""
import csv
import sys
from collections import OrderedDict


def short(name):
    name = name.split("(")[0]
    for prefix in ("void ", "dsv4::cuda::", "k::", "(anonymous namespace)::", "tc::"):
        name = name.replace(prefix, "")
    return name[:60]


rows = []
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))  # ns
    rows.append((short(r["Kernel Name"]), r.get("Grid Size", ""), r.get("Block Size", ""), v / 1e3))
total = sum(r[3] for r in rows)
print(f"kernels per step: {len(rows)}, sum of kernel times {total:.1f} us")
by = OrderedDict()
for n, g, b, us in rows:
    c, t = by.get(n, (0, 0.0))
    by[n] = (c + 1, t + us)
print(f"{'kernel':60s} {'count':>5s} {'us':>8s} {'%':>5s}")
for n, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"{n:60s} {c:5d} {t:8.1f} {100 * t / total:5.1f}")
print("\nin launch order (us, grid, block):")
for i, (n, g, b, us) in enumerate(rows):
    print(f"{i:4d} {us:8.2f} {n:60s} {g:>16s} {b:>12s}")
