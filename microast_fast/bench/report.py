"""Reporting: the table rows, the meta header, the results CSV and the JSON file."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .cases import FLOPS_PER_PIXEL, STYLE_SIDE

CSV_FIELDS = ("backend", "size", "dtype", "device", "batch", "metric", "value",
              "torch", "triton", "cuda", "git_rev", "date")


def summarize(result: dict, row: dict, reference: dict | None, peak: float | None) -> dict:
    """Quantiles, speed-up, memory ratio and GFLOP/s of one ok measurement, into ``row``."""
    times = np.asarray(result["times_ms"])
    p20, median, p80 = np.percentile(times, [20, 50, 80])
    row["time_ms"] = {"median": median, "min": times.min(), "p20": p20, "p80": p80, "max": times.max()}
    row["time_ms"] = {k: float(v) for k, v in row["time_ms"].items()}
    for key in ("times_ms", "peak_mem_mib", "baseline_mem_mib", "first_call_s", "max_abs_err"):
        row[key] = result[key]
    row["gflops"] = FLOPS_PER_PIXEL * row["batch"] * row["height"] * row["width"] / (median * 1e-3) / 1e9
    row["peak_fraction"] = row["gflops"] / peak if peak else None
    if row["backend"] == "reference":
        row["speedup"], row["mem_ratio"] = 1.0, 1.0
    elif reference is not None:
        row["speedup"] = reference["time_ms"]["median"] / median
        row["mem_ratio"] = row["peak_mem_mib"] / reference["peak_mem_mib"]
    return row


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


# "+fwd MiB" is the peak above the level just before the timed calls: what the forward itself adds
# to the process (interpreter, libraries, weights and inputs are in "peak MiB" but not in it).
BACKEND_WIDTH = 26  # "triton+banded-tail:graphs"; longer names push their row's columns right

TABLE_HEADER = (f"{'size':<10}{'dtype':<10}{'backend':<{BACKEND_WIDTH}}{'median ms':>11}  {'[min, p20, p80, max]':<30}"
                f"{'speed-up':>9}{'peak MiB':>10}{'+fwd MiB':>10}{'mem/ref':>9}{'max|err|':>10}{'GFLOP/s':>9}"
                f"{'%peak':>7}")


def format_row(row: dict) -> str:
    head = f"{row['size']:<10}{row['dtype']:<10}{row['backend']:<{BACKEND_WIDTH - 1}} "
    if row["status"] != "ok":
        return head + f"skipped: {row['reason']}"
    t = row["time_ms"]
    spread = "[" + ", ".join(_fmt(t[k], ".4g") for k in ("min", "p20", "p80", "max")) + "]"
    err = _fmt(row["max_abs_err"], ".1e")
    fraction = _fmt(row["peak_fraction"] * 100 if row["peak_fraction"] is not None else None, ".1f")
    speedup = _fmt(row.get("speedup"), ".2f") + ("x" if row.get("speedup") is not None else "")
    return (head + f"{t['median']:>11.4g}  {spread:<30}{speedup:>9}"
            f"{row['peak_mem_mib']:>10.0f}{row['peak_mem_mib'] - row['baseline_mem_mib']:>10.0f}"
            f"{_fmt(row.get('mem_ratio'), '.2f'):>9}{err:>10}"
            f"{row['gflops']:>9.1f}{fraction:>7}")


TIME_METRICS = ("time_ms_median", "time_ms_min", "time_ms_p20", "time_ms_p80", "time_ms_max")


def csv_rows(row: dict, meta: dict, metrics: tuple[str, ...]) -> list[dict]:
    """One results-file row per metric of one measurement."""
    values = {f"time_ms_{k}": v for k, v in row.get("time_ms", {}).items()}
    values.update({k: row.get(k) for k in ("peak_mem_mib", "max_abs_err", "gflops")})
    common = {"backend": row["backend"], "size": row["size"], "dtype": row["dtype"], "device": meta["device_name"],
              "batch": row["batch"], "torch": meta["torch"], "triton": meta["triton"], "cuda": meta["cuda"],
              "git_rev": meta["git_rev"], "date": meta["date"]}
    return [{**common, "metric": m, "value": values[m]} for m in metrics if values.get(m) is not None]


def append_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, payload: dict) -> None:
    """Rewritten after every measurement, through a rename, so an interrupted run keeps what it measured."""
    tmp = Path(f"{path}.partial")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def print_meta(meta: dict, device: torch.device) -> None:
    print(f"MicroAST forward on {device} ({meta['device_name']}), batch {meta['batch']}, style {STYLE_SIDE}x"
          f"{STYLE_SIDE}; warm-up {meta['warmup']}, {meta['repeat']} timed; torch {meta['torch']}, triton "
          f"{meta['triton']}, CUDA {meta['cuda']}, rev {meta['git_rev']}")
    print(f"GFLOP/s: {FLOPS_PER_PIXEL:,} FLOP per content pixel, style path not counted; %peak of "
          + ", ".join(f"{d} {_fmt(p, '.0f', 'unknown')} GFLOP/s" for d, p in meta["peak_gflops"].items()))
    print("max|err|: max abs difference from the reference's output at the same dtype")
    if device.type == "cpu" and (meta["runnable_others"] or 0) >= 1:
        # PyTorch's CPU threads spin at each op's barrier; one competing process stalls them all.
        print(f"warning: {meta['runnable_others']} other runnable processes on {os.cpu_count()} cores compete for "
              "the CPU, so these times are inflated (on 2 cores, many-fold)", file=sys.stderr)
