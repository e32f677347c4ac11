"""The parent process of ``microast-fast bench``: every dtype, size and backend, one child each."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from ..dispatch import backend_report
from .cases import BENCH_BACKENDS, STYLE_SIDE, parse_size, split_mode
from .machine import bench_meta
from .report import TABLE_HEADER, TIME_METRICS, append_csv, csv_rows, format_row, print_meta, summarize, write_json
from .workers import run_worker


def _flatten(lists, default):
    out = [item for group in (lists or [default]) for item in group]
    return list(dict.fromkeys(out))  # keep order, drop repeats


def _reference_files(directory: Path, device_label: str, spec: dict) -> tuple[Path, Path]:
    """Where the reference's output (.pt) and figures (.json) for ``spec``'s input are kept."""
    key = "_".join(str(spec[k]) for k in ("dtype", "batch", "height", "width", "style_side", "seed", "alpha"))
    stem = directory / f"reference_{''.join(c if c.isalnum() else '-' for c in device_label)}_{key}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def bench_availability(device: torch.device, backends: list[str]) -> dict[str, str | None]:
    """Each bench backend -> None if it runs on ``device``, else why not."""
    report = backend_report(device)
    available = {}
    for name in backends:
        backend, mode = split_mode(name)
        reason = report.get(backend)  # None for the reference, compiled and streaming: they run everywhere
        if reason is None and mode == "graphs" and device.type != "cuda":
            reason = "CUDA graphs need a CUDA device"
        available[name] = reason
    return available


def bench_input(args, spec: dict, backends: list[str], meta: dict, ref_dir: Path, payload: dict) -> None:
    """Every backend on one (size, dtype): one child each, the reference first; rows printed and saved as they come."""
    profile = args.memory_profile
    ref_pt, ref_json = _reference_files(ref_dir, meta["device_name"], spec)
    # A reference measured by an earlier run into --reference-dir serves when this run does not time it.
    reference = json.loads(ref_json.read_text()) if "reference" not in backends and ref_json.exists() else None
    available = bench_availability(torch.device(spec["device"]), backends)
    metrics = ("peak_mem_mib",) if profile else TIME_METRICS + ("peak_mem_mib", "max_abs_err", "gflops")
    for backend in backends:
        row = {"backend": backend, "size": spec["label"], "height": spec["height"], "width": spec["width"],
               "dtype": spec["dtype"], "batch": spec["batch"], "device": spec["device"], "status": "skipped",
               "reason": available[backend]}
        if row["reason"] is None:
            print(f"  measuring {backend} {spec['label']} {spec['dtype']} ...", file=sys.stderr, flush=True)
            job = {**spec, "backend": backend}
            if backend == "reference" and not profile and (len(backends) > 1 or args.reference_dir):
                job["save_output"] = str(ref_pt)
            elif reference is not None and ref_pt.exists() and not profile:
                job["reference_output"] = str(ref_pt)
            result = run_worker(job, args.worker_timeout)
            row["status"], row["reason"] = result["status"], result.get("reason")
            if result["status"] == "ok":
                row["memory_method"] = result["memory_method"]
                summarize(result, row, reference, meta["peak_gflops"][spec["dtype"]])
                if backend == "reference":
                    reference = row
                    if not profile:  # a profile's single call is no timing to compare against
                        ref_json.write_text(json.dumps(row))
        print(format_row(row), flush=True)
        payload["results"].append(row)
        if args.json:
            write_json(Path(args.json), payload)
        if args.record and row["status"] == "ok":
            append_csv(Path(args.results_csv), csv_rows(row, meta, metrics))


def sweep(args) -> int:
    """The run behind ``run_bench``: the meta header, then a table row per measurement as it comes."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: torch.cuda.is_available() is False here")
    profile = args.memory_profile
    sizes = _flatten(args.sizes, [parse_size("4k" if profile else "512")])
    dtypes = _flatten(args.dtypes, ["float32"])
    backends = _flatten(args.backends, list(BENCH_BACKENDS))
    backends.sort(key=lambda b: b != "reference")  # the reference first: the others compare against it
    warmup = args.warmup if args.warmup is not None else (1 if profile else 3)
    repeat = args.repeat if args.repeat is not None else (1 if profile else 10)
    if repeat < 1 or warmup < 0 or args.batch < 1:
        raise ValueError("--repeat and --batch must be >= 1, --warmup >= 0")

    meta = bench_meta(args, device, dtypes, warmup, repeat)
    payload = {"meta": meta, "results": [], "stages": []}
    print_meta(meta, device)
    with tempfile.TemporaryDirectory(prefix="microast-bench-") as tmp:
        ref_dir = Path(args.reference_dir or tmp)
        ref_dir.mkdir(parents=True, exist_ok=True)
        for dtype in dtypes:
            for label, height, width in sizes:
                spec = {"device": str(device), "dtype": dtype, "label": label, "height": height, "width": width,
                        "batch": args.batch, "style_side": STYLE_SIDE, "seed": args.seed, "alpha": args.alpha,
                        "warmup": warmup, "repeat": repeat, "compile_mode": args.compile_mode, "tf32": args.allow_tf32,
                        "max_memory": args.max_memory}
                if profile or not payload["results"]:
                    print(TABLE_HEADER)
                bench_input(args, spec, backends, meta, ref_dir, payload)
                if profile:
                    payload["stages"].append(print_stages(spec, args.worker_timeout))
                    if args.json:
                        write_json(Path(args.json), payload)
    methods = {row["memory_method"] for row in payload["results"] if row["status"] == "ok"}
    if methods:
        print(f"peak memory: {', '.join(sorted(methods))}")
    if args.json:
        print(f"wrote {args.json}")
    if args.record:
        print(f"appended rows to {args.results_csv}")
    return 0


def print_stages(spec: dict, timeout: float | None) -> dict:
    print(f"\nreference per stage, {spec['label']} {spec['dtype']} (forward hooks on the reference's submodules, "
          "fresh process; each decoder block includes the FeatMod blend before it):", flush=True)
    # glibc keeps freed blocks below its mmap threshold (which grows up to 32 MiB) for reuse, so the
    # resident set would hide what a later stage allocates in memory an earlier one freed. Served by
    # mmap, every block of 64 KiB or more goes back to the system when freed: RSS follows live tensors.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if spec["device"] == "cpu" else None
    result = run_worker({**spec, "mode": "stages", "backend": "reference"}, timeout, env)
    result.update(size=spec["label"], dtype=spec["dtype"])
    if result["status"] != "ok":
        print(f"  skipped: {result['reason']}")
        return result
    print(f"  {'stage':<18}{'peak MiB':>10}{'above start':>13}{'live after':>12}")
    for stage in result["stages"]:
        print(f"  {stage['stage']:<18}{stage['peak_mib']:>10.0f}{stage['peak_mib'] - stage['start_mib']:>13.0f}"
              f"{stage['end_mib']:>12.0f}")
    print(f"  memory: {result['memory_method'].replace('reset after warm-up', 'reset at each stage boundary')}")
    return result
