"""Where one forward's time goes, kernel by kernel (torch.profiler), for each backend asked for.

    python benchmarks/kernel_profile.py --device cuda --size 4k --dtype fp16 --backends triton,cuda [--out DIR]
    bash benchmarks/ncu_profile.sh OUTDIR [BACKENDS] [DTYPE] [SIZE]      (hardware counters, Nsight Compute)

Per backend: warm-up forwards (Triton's autotuning and compiles happen there), then one profiled
forward; the table of its kernels (or CPU ops) sorted by their total device time is printed and, with
``--out``, written to ``DIR/profile_<backend>_<size>_<dtype>.txt``. This is a breakdown to direct the
next optimisation, not a timing: ``microast-fast bench`` measures time and memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from microast_fast.bench.cases import BENCH_BACKENDS, DTYPE_NAMES, STYLE_SIDE, parse_size
from microast_fast.bench.measure import build_model, make_inputs


def profile_table(backend: str, device: torch.device, dtype: torch.dtype, height: int, width: int, warmup: int,
                  rows: int) -> str:
    model = build_model(backend, device, dtype)
    content, style = make_inputs(height, width, style_side=STYLE_SIDE, device=device, dtype=dtype)
    on_gpu = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            model(content, style, 1.0)
        if on_gpu:
            torch.cuda.synchronize(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities) as prof:
            model(content, style, 1.0)
            if on_gpu:
                torch.cuda.synchronize(device)
    sort = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=70)


def autotune_choices() -> str:
    """The config each autotuned Triton kernel settled on, per autotune key (its problem sizes): what
    the profiled forward ran, and which entries of the config lists earn their place."""
    import importlib

    import triton

    lines = []
    for module in ("encoder_head", "filtermod_resblock", "modulator_pool", "decoder_tail", "decoder_tail_banded"):
        kernels = importlib.import_module(f"microast_fast.kernels.{module}")
        for name, kernel in sorted(vars(kernels).items()):
            if isinstance(kernel, triton.runtime.Autotuner):
                for key, config in kernel.cache.items():
                    lines.append(f"{name} {key}: {config}")
    return "autotuned configs:\n" + ("\n".join(lines) if lines else "(none tuned)")


def profiler_range(backend: str, device: torch.device, dtype: torch.dtype, height: int, width: int,
                   warmup: int) -> str:
    """Warm-up forwards, then one forward between cudaProfilerStart and cudaProfilerStop: what
    ``ncu --profile-from-start off`` profiles (benchmarks/ncu_profile.sh), so that neither the first
    calls' compiles nor Triton's autotuning runs are in the report."""
    if device.type != "cuda":
        raise ValueError("--profiler-range brackets CUDA work for Nsight Compute: use --device cuda")
    model = build_model(backend, device, dtype)
    content, style = make_inputs(height, width, style_side=STYLE_SIDE, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(warmup):
            model(content, style, 1.0)
        torch.cuda.synchronize(device)
        torch.cuda.profiler.start()
        model(content, style, 1.0)
        torch.cuda.synchronize(device)
        torch.cuda.profiler.stop()
    return "one forward profiled (the report is Nsight Compute's)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="4k", help="as `microast-fast bench --size` (default: 4k)")
    parser.add_argument("--dtype", default="fp16", help="fp32, fp16 or bf16 (default: fp16)")
    parser.add_argument("--backends", default="triton,cuda", help="comma list (default: triton,cuda)")
    parser.add_argument("--warmup", type=int, default=2, help="forwards before the profiled one (default: 2)")
    parser.add_argument("--rows", type=int, default=25, help="table rows (default: 25)")
    parser.add_argument("--out", type=Path, help="also write each table into this folder")
    parser.add_argument("--profiler-range", action="store_true",
                        help="no table: bracket one forward per backend with cudaProfilerStart/Stop for "
                             "`ncu --profile-from-start off` (benchmarks/ncu_profile.sh)")
    args = parser.parse_args(argv)
    label, height, width = parse_size(args.size)
    dtype_name = DTYPE_NAMES.get(args.dtype, args.dtype)
    dtype = getattr(torch, dtype_name)
    device = torch.device(args.device)
    failed = 0
    for backend in args.backends.split(","):
        if backend not in BENCH_BACKENDS:
            parser.error(f"unknown backend {backend!r}; choose from {', '.join(BENCH_BACKENDS)}")
        title = f"== {backend}, {label} ({height}x{width}), {dtype_name}, {device}"
        try:
            if args.profiler_range:
                table = profiler_range(backend, device, dtype, height, width, args.warmup)
            else:
                table = profile_table(backend, device, dtype, height, width, args.warmup, args.rows)
                if backend.startswith("triton"):
                    table += "\n" + autotune_choices()
        except Exception as exc:  # one backend failing must not cost the others' tables
            failed = 1
            table = f"failed: {type(exc).__name__}: {exc}"
        print(f"{title}\n{table}", flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"profile_{backend}_{label}_{dtype_name}.txt").write_text(f"{title}\n{table}\n")
    return failed


if __name__ == "__main__":
    sys.exit(main())
