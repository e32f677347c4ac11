"""Plots and the results table of benchmarks/README.md from the rows ``microast-fast bench --record`` appends.

    python benchmarks/plot.py [--csv FILE ...] [--out DIR] [--readme FILE | --no-readme] [--batch N]

Per device in the data: ``time_<device>.png`` (median time against resolution, p20-p80 as error bars)
and ``memory_<device>.png`` (peak memory against resolution), log-log, one line per backend, one
panel per dtype; then the markdown table between benchmarks/README.md's ``<!-- results:start -->`` and
``<!-- results:end -->`` markers (printed instead where the markers are missing). Of repeated
measurements of one (device, backend, size, dtype, batch, metric) the latest row counts.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from microast_fast.bench.cases import BENCH_BACKENDS, parse_size  # noqa: E402
from microast_fast.bench.machine import RESULTS_CSV  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"
DTYPE_ORDER = ("float32", "float16", "bfloat16")


def load(paths: list[Path], batch: int) -> dict:
    """``{(device, dtype): {backend: {size: {metric: value, "git_rev", "date"}}}}``, latest row per metric."""
    latest = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if int(row["batch"]) != batch:
                    continue
                key = (row["device"], row["dtype"], row["backend"], row["size"], row["metric"])
                # ISO dates compare as strings; on a tie the later row (file order) wins.
                if key not in latest or row["date"] >= latest[key]["date"]:
                    latest[key] = row
    data = defaultdict(lambda: defaultdict(dict))
    for (device, dtype, backend, size, metric), row in latest.items():
        entry = data[(device, dtype)][backend].setdefault(size, {})
        entry[metric] = float(row["value"])
        entry["git_rev"], entry["date"] = row["git_rev"], row["date"][:10]
    return data


def pixels(size: str) -> int:
    _, height, width = parse_size(size)
    return height * width


def backend_order(backends) -> list[str]:
    return sorted(backends, key=lambda b: BENCH_BACKENDS.index(b) if b in BENCH_BACKENDS else len(BENCH_BACKENDS))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plot_device(device: str, panels: dict, kind: str, out: Path) -> Path | None:
    """One figure of ``kind`` ("time" or "memory") for ``device``: a panel per dtype, a line per backend."""
    metric, ylabel = ("time_ms_median", "median time per forward (ms)") if kind == "time" else (
        "peak_mem_mib", "peak memory (MiB)")
    dtypes = [d for d in DTYPE_ORDER if d in panels] + sorted(d for d in panels if d not in DTYPE_ORDER)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    drew = False
    for ax, dtype in zip(axes[0], dtypes):
        sizes_seen = {}
        for backend in backend_order(panels[dtype]):
            points = sorted((pixels(s), s, m) for s, m in panels[dtype][backend].items() if metric in m)
            if not points:
                continue
            x = [p / 1e6 for p, _, _ in points]
            y = [m[metric] for _, _, m in points]
            yerr = None
            if kind == "time" and all("time_ms_p20" in m and "time_ms_p80" in m for _, _, m in points):
                yerr = [[v - m["time_ms_p20"] for v, (_, _, m) in zip(y, points)],
                        [m["time_ms_p80"] - v for v, (_, _, m) in zip(y, points)]]
            ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, label=backend)
            sizes_seen.update({p / 1e6: s for p, s, _ in points})
            drew = True
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(sizes_seen), [f"{s}\n{mp:.2g} MP" for mp, s in sizes_seen.items()])
        ax.xaxis.set_minor_locator(NullLocator())  # the measured sizes are the only x ticks
        ax.set_xlabel("content resolution")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dtype}")
        ax.grid(True, which="major", alpha=0.3)
        if ax.has_data():
            ax.legend()
    if not drew:
        plt.close(fig)
        return None
    fig.suptitle(f"MicroAST forward, {kind}: {device}")
    fig.tight_layout()
    path = out / f"{kind}_{slug(device)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ms(value: float) -> str:
    """Milliseconds with 4 significant digits and no exponent: 605.3, 4711, 31,640."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def results_table(data: dict) -> str:
    """Markdown: per device a table of every measured (size, dtype, backend), speed-up against the reference."""
    lines = []
    for device in sorted({d for d, _ in data}):
        lines += [f"**{device}**", "",
                  "| size | dtype | backend | median ms (p20-p80) | speed-up | peak MiB | max abs err | rev, date |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for dtype in [d for d in DTYPE_ORDER if (device, d) in data] + sorted(
                d for dev, d in data if dev == device and d not in DTYPE_ORDER):
            panel = data[(device, dtype)]
            for size in sorted({s for sizes in panel.values() for s in sizes}, key=pixels):
                reference = panel.get("reference", {}).get(size, {})
                for backend in backend_order(b for b in panel if size in panel[b]):
                    m = panel[backend][size]
                    median = m.get("time_ms_median")
                    time = "-" if median is None else ms(median)
                    if median is not None and "time_ms_p20" in m and "time_ms_p80" in m:
                        time += f" ({ms(m['time_ms_p20'])}-{ms(m['time_ms_p80'])})"
                    speedup = (f"{reference['time_ms_median'] / median:.2f}x"
                               if median is not None and "time_ms_median" in reference else "-")
                    err = "-" if backend == "reference" else _num(m.get("max_abs_err"), ".1e")
                    lines.append(f"| {size} | {dtype} | {backend} | {time} | {speedup} | "
                                 f"{_num(m.get('peak_mem_mib'), '.0f')} | {err} | {m['git_rev']}, {m['date']} |")
        lines.append("")
    lines.append("Measured with `microast-fast bench --record`, one fresh process per measurement (see "
                 "`microast-fast bench --help`); error is the max abs difference from the reference at the same dtype.")
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> bool:
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[:start + len(START)] + "\n" + table + "\n" + text[end:])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", action="append", type=Path, help=f"results file(s) (default: {RESULTS_CSV})")
    parser.add_argument("--out", type=Path, default=RESULTS_CSV.parent, help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README.md", help="file to update (default: %(default)s)")
    parser.add_argument("--no-readme", action="store_true", help="print the table, leave the README alone")
    parser.add_argument("--batch", type=int, default=1, help="rows of this content batch only (default: 1)")
    args = parser.parse_args(argv)

    paths = args.csv or [RESULTS_CSV]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"plot.py: no results file {', '.join(map(str, missing))}; record some with "
              "`microast-fast bench --record`", file=sys.stderr)
        return 1
    data = load(paths, args.batch)
    if not data:
        print(f"plot.py: no rows with batch {args.batch} in {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    by_device = defaultdict(dict)
    for (device, dtype), panel in data.items():
        by_device[device][dtype] = panel
    for device, panels in sorted(by_device.items()):
        for kind in ("time", "memory"):
            path = plot_device(device, panels, kind, args.out)
            if path:
                print(f"wrote {path}")

    table = results_table(data)
    if not args.no_readme and update_readme(args.readme, table):
        print(f"updated the results table in {args.readme}")
    else:
        print(table)
        if not args.no_readme:
            print(f"plot.py: {args.readme} has no {START} ... {END} markers; the table is printed above",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
