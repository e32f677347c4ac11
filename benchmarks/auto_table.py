"""The table behind ``backend="auto"`` on GPUs, from measured benchmark rows.

    python benchmarks/auto_table.py --csv OUTDIR/results.csv --verified triton,cuda --capability 9.0 [--out FILE]

``--verified``: what ``benchmarks/verified.py`` prints from the run's test results.

For each (device, dtype, size) of batch 1 in the CSVs (rows as ``microast-fast bench --record`` writes
them), the backend with the lowest median time among ``torch`` and the ``--verified`` ones: those
whose GPU tests passed in the run that measured them (``benchmarks/gpu_run.sh`` passes that list). A
float32 row whose output is more than 1e-4 (max abs) from the reference's is no candidate. The rows
replace those of the same (device, dtype, size) in ``--out`` (default: the table shipped in the
package, ``microast_fast/data/auto_backend.json``); others are kept. ``--capability``, the measured
GPU's compute capability, goes into each new row: "auto" ranks GPU models without rows of their own
by the rows of the nearest measured architecture.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from microast_fast.bench.cases import parse_size
from microast_fast.dispatch import AUTO_TABLE, BACKENDS, FALLBACK

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "microast_fast" / "data" / AUTO_TABLE
FP32_MAX_ABS = 1e-4  # MICROAST_SPEC.md: two correct fp32 implementations at image sizes
KERNEL_BACKENDS = tuple(b for b in BACKENDS if b != FALLBACK)  # the Triton variants included


def choices(rows, verified: set[str], capability: str | None = None) -> list[dict]:
    """One choice per (device, dtype, size) of batch 1; the latest row of each measurement counts."""
    latest = {}
    for row in rows:
        if int(row["batch"]) == 1:
            latest[(row["device"], row["dtype"], row["size"], row["backend"], row["metric"])] = row
    times = defaultdict(dict)
    for (device, dtype, size, backend, metric), row in latest.items():
        if metric != "time_ms_median" or backend not in ("torch", *verified):
            continue
        err = latest.get((device, dtype, size, backend, "max_abs_err"))
        if dtype == "float32" and err is not None and not float(err["value"]) <= FP32_MAX_ABS:
            continue
        times[(device, dtype, size)][backend] = (float(row["value"]), row["git_rev"])
    out = []
    for (device, dtype, size), by_backend in sorted(times.items()):
        backend, (ms, rev) = min(by_backend.items(), key=lambda item: item[1][0])
        _, height, width = parse_size(size)
        out.append({"device": device, **({"capability": capability} if capability else {}), "dtype": dtype,
                    "size": size, "pixels": height * width, "backend": backend,
                    "time_ms": {b: round(t, 3) for b, (t, _) in sorted(by_backend.items())}, "git_rev": rev})
    return out


def merge(table: dict, new: list[dict]) -> dict:
    def key(r):
        return r["device"], r["dtype"], r["pixels"]
    replaced = {key(r) for r in new}
    kept = [r for r in table["choices"] if key(r) not in replaced]
    return {**table, "choices": sorted(kept + new, key=lambda r: (r["device"], r["dtype"], r["pixels"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", action="append", required=True, type=Path, help="results CSV (repeatable)")
    parser.add_argument("--verified", default="", help="comma list of kernel backends whose GPU tests passed")
    parser.add_argument("--capability", help="compute capability of the measured GPU, e.g. 9.0")
    parser.add_argument("--out", type=Path, default=TABLE, help="the table to update (default: %(default)s)")
    args = parser.parse_args(argv)
    verified = {b for b in args.verified.split(",") if b}
    unknown = verified - set(KERNEL_BACKENDS)
    if unknown:
        parser.error(f"--verified takes {', '.join(KERNEL_BACKENDS)}, not {', '.join(sorted(unknown))}")
    rows = []
    for path in args.csv:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    if args.capability is not None and not re.fullmatch(r"\d+\.\d+", args.capability):
        parser.error(f"--capability is MAJOR.MINOR, e.g. 9.0, not {args.capability!r}")
    new = choices(rows, verified, args.capability)
    table = json.loads(args.out.read_text()) if args.out.exists() else {"choices": []}
    args.out.write_text(json.dumps(merge(table, new), indent=2) + "\n")
    for r in new:
        print(f"{r['device']}  {r['dtype']:8s} {r['size']:>9s}: {r['backend']:6s} "
              + ", ".join(f"{b} {t:.2f} ms" for b, t in r["time_ms"].items()))
    print(f"{len(new)} choices written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
