#!/usr/bin/env python3
"""Summarises bench/direct-ab.sh output: per size and kind the median over rounds of the
per-round median round trip (min-max over rounds), and the ratios taken within each round
(legacy / new = bandwidth ratio to the legacy library, raw / new = ratio to the unix socket),
as median (min-max) over rounds.   usage: bench/direct-ab-report.py results.txt..."""
import statistics as st
import sys

for f in sys.argv[1:]:
    per = {}
    for line in open(f):
        p = line.split()
        if len(p) == 4:
            per.setdefault((int(p[0]), p[1], int(p[2])), []).append(float(p[3]))
    rounds = sorted({k[0] for k in per})
    print(f)
    for size in sorted({k[2] for k in per}):
        med = {k: {r: st.median(per[(r, k, size)]) for r in rounds if (r, k, size) in per}
               for k in ("raw", "LL", "old", "new")}
        cells = []
        for k, v in med.items():
            if v:
                x = list(v.values())
                cells.append("%s %.0f (%.0f-%.0f)" % (k, st.median(x), min(x), max(x)))
        print("  %d B round trip us: %s" % (size, ", ".join(cells)))

        def ratio(a, b):
            x = [med[a][r] / med[b][r] for r in rounds if r in med[a] and r in med[b]]
            return "%.2f (%.2f-%.2f)" % (st.median(x), min(x), max(x)) if x else "-"

        print("    new: x legacy %s, x raw %s;  old: x legacy %s, x raw %s"
              % (ratio("LL", "new"), ratio("raw", "new"), ratio("LL", "old"), ratio("raw", "old")))
