"""One screen of a GPU run: each backend's median time at 1080p and 4K, batch-8 throughput, peak
memory, and the GPU-speed budgets, each met, missed or not measured.

    python benchmarks/gpu_summary.py OUTDIR/results.csv [--out OUTDIR/summary.txt]

Reads the rows ``microast-fast bench --record`` writes. Budgets (fp16, batch 1, H100): 4K <= 4.0 ms,
1080p <= 1.5 ms; fp32 4K <= 36 ms; >= 2x ``compiled`` and >= 4x ``reference-channels-last`` in fp16;
peak memory at 4K fp16 <= 400 MiB; fixed cost per repeated frame <= 0.3 ms, the intercept of a line
through the 1080p and 4K times of a ``:repeated`` / ``:graphs`` row pair.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

SIZES = ("1080p", "4k")
DTYPES = ("float16", "bfloat16", "float32")
PIXELS = {"1080p": 1080 * 1920, "4k": 2160 * 4096}
SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


def load(paths) -> tuple[dict, dict, str]:
    """(median ms by (size, dtype, batch, backend), peak MiB by (size, dtype, backend), device)."""
    times, memory, devices = {}, {}, set()
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                devices.add(row["device"])
                key = (row["size"], row["dtype"], int(row["batch"]), row["backend"])
                if row["metric"] == "time_ms_median":
                    times[key] = float(row["value"])
                elif row["metric"] == "peak_mem_mib" and int(row["batch"]) == 1:
                    memory[(row["size"], row["dtype"], row["backend"])] = float(row["value"])
    return times, memory, ", ".join(sorted(devices)) or "no rows"


def kernel_backends(times) -> list[str]:
    names = {b for (_, _, _, b) in times if b not in ("reference", "compiled", "reference-channels-last")}
    return sorted(names, key=lambda b: (":" in b, b))


def fastest(times, size, dtype, candidates) -> tuple[str, float] | None:
    found = [(times[(size, dtype, 1, b)], b) for b in candidates if (size, dtype, 1, b) in times and ":" not in b]
    if not found:
        return None
    ms, backend = min(found)
    return backend, ms


def verdict(value: float | None, limit: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    ok = value >= limit if higher_is_better else value <= limit
    return "met" if ok else "MISSED"


def summary(times, memory, device) -> str:
    lines = [f"GPU run summary: {device}", ""]
    backends = kernel_backends(times)
    shown = ["reference", "reference-channels-last", "compiled"] + backends
    lines.append(f"{'median ms, batch 1':<42}" + "".join(f"{s + ' ' + SHORT[d]:>12}" for s in SIZES for d in DTYPES))
    for b in shown:
        cells = [times.get((s, d, 1, b)) for s in SIZES for d in DTYPES]
        if any(c is not None for c in cells):
            lines.append(f"{b:<42}" + "".join(f"{c:>12.3f}" if c is not None else f"{'-':>12}" for c in cells))
    batch8 = [(b, ms) for (size, dtype, batch, b), ms in times.items()
              if (size, dtype, batch) == ("1080p", "float16", 8)]
    if batch8:
        lines.append("")
        lines.append("1080p fp16 batch 8: " + ", ".join(f"{b} {8000 / t:.0f} images/s" for b, t in sorted(batch8)))
    lines.append("")
    best = {(s, d): fastest(times, s, d, backends) for s in SIZES for d in DTYPES}

    def best_ms(size, dtype):
        return best[(size, dtype)][1] if best[(size, dtype)] else None

    def ratio(size, other):
        mine, theirs = best_ms(size, "float16"), times.get((size, "float16", 1, other))
        return theirs / mine if mine and theirs else None

    checks = [("4K fp16 <= 4.0 ms", best_ms("4k", "float16"), 4.0, False, "ms"),
              ("1080p fp16 <= 1.5 ms", best_ms("1080p", "float16"), 1.5, False, "ms"),
              ("4K bf16 <= 4.0 ms", best_ms("4k", "bfloat16"), 4.0, False, "ms"),
              ("4K fp32 <= 36 ms", best_ms("4k", "float32"), 36.0, False, "ms"),
              ("4K fp16 >= 2x compiled", ratio("4k", "compiled"), 2.0, True, "x"),
              ("4K fp16 >= 4x reference channels-last", ratio("4k", "reference-channels-last"), 4.0, True, "x")]
    fastest_4k = best[("4k", "float16")]
    peak = memory.get(("4k", "float16", fastest_4k[0])) if fastest_4k else None
    checks.append(("4K fp16 peak memory <= 400 MiB", peak, 400.0, False, "MiB"))
    for b in backends:
        if ":" in b and all((s, "float16", 1, b) in times for s in SIZES):
            t1, t4 = times[("1080p", "float16", 1, b)], times[("4k", "float16", 1, b)]
            slope = (t4 - t1) / (PIXELS["4k"] - PIXELS["1080p"])
            checks.append((f"fixed cost per frame <= 0.3 ms ({b})", t1 - slope * PIXELS["1080p"], 0.3, False, "ms"))
    lines.append("budgets (the fastest microast-fast backend unless named):")
    for name, value, limit, higher, unit in checks:
        shown_value = f"{value:.3f} {unit}" if value is not None else "-"
        lines.append(f"  {name:<52}{shown_value:>14}  {verdict(value, limit, higher)}")
    for (s, d), found in best.items():
        if found:
            lines.append(f"  fastest {s} {d}: {found[0]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = summary(*load(args.csv))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
