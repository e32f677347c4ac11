"""Facts about the machine and the run a result belongs to: device, versions, git revision, FLOP peaks, load."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

from .cases import FLOPS_PER_PIXEL, STYLE_SIDE

# fp32 FLOP per cycle and core for a CPU's vector ISA: two FMA pipes of its width (AVX2: 8 lanes,
# AVX-512: 16). A nominal peak: CPUs that split 512-bit FMAs in two (Zen 4) reach half of it; pass
# --peak-gflops for those.
CPU_FLOP_PER_CYCLE = {"AVX2": 32, "AVX512": 64}

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: (name contains, fp32 without tensor
# cores, tf32, fp16/bf16). First match wins, so the specific variants come first.
GPU_PEAK_TFLOPS = (
    ("H100 NVL", 60.0, 417.5, 835.5),
    ("H200 NVL", 60.0, 417.5, 835.5),
    ("H100 PCIe", 51.2, 378.0, 756.0),
    ("H100", 66.9, 494.7, 989.4),
    ("H200", 66.9, 494.7, 989.4),
    ("A100", 19.5, 156.0, 312.0),
)

# The checkout the package runs from (microast_fast/bench/ is two levels below it). Its results file
# when it is a checkout (editable install), else the working directory's.
_CHECKOUT = Path(__file__).resolve().parents[2]
RESULTS_CSV = (_CHECKOUT if (_CHECKOUT / "benchmarks").is_dir() else Path.cwd()) / "benchmarks" / "results" / "results.csv"


def default_device() -> str:
    # The same as cli.default_device: bench must not import cli, which imports bench to register it.
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # The vector ISA too: oneDNN picks different kernels (speed and summation order) for AVX2 and AVX-512.
    return f"{model} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def git_revision() -> str:
    """Short hash of the checkout the package runs from, ``-dirty`` when tracked files differ (the recorded
    results aside: a series of ``--record`` runs appends to them); else "unknown"."""
    root = _CHECKOUT
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)benchmarks/results"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def versions() -> dict[str, str]:
    try:
        triton = importlib.metadata.version("triton")  # without importing it (TRITON_INTERPRET is read at import)
    except importlib.metadata.PackageNotFoundError:
        triton = "none"
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return {"torch": torch.__version__, "triton": triton, "cuda": torch.version.cuda or "none",
            "cudnn": str(cudnn) if cudnn else "none", "python": platform.python_version()}


def cpu_peak_gflops() -> float | None:
    """threads x FLOP per cycle of the vector ISA x the clock /proc/cpuinfo reports; None if unknown."""
    per_cycle = CPU_FLOP_PER_CYCLE.get(torch.backends.cpu.get_cpu_capability())
    try:
        with open("/proc/cpuinfo") as f:
            mhz = next(float(line.split(":", 1)[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    return torch.get_num_threads() * per_cycle * mhz / 1000 if per_cycle else None


def peak_gflops(device: torch.device, name: str, dtype: str, override: float | None, tf32: bool) -> float | None:
    """The device's peak for ``dtype`` in GFLOP/s, or None where this table does not know the device."""
    if override is not None:
        return override
    if device.type == "cpu":
        return cpu_peak_gflops()
    for pattern, fp32, tf32_peak, half in GPU_PEAK_TFLOPS:
        if pattern in name:
            return 1000 * (half if dtype != "float32" else tf32_peak if tf32 else fp32)
    return None


def _runnable_others() -> int | None:
    """Processes runnable right now besides this one (/proc/loadavg's 4th field). The 1-minute load
    average would also count this benchmark's own previous measurements."""
    try:
        with open("/proc/loadavg") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return None


def bench_meta(args, device: torch.device, dtypes: list[str], warmup: int, repeat: int) -> dict:
    name = device_name(device)
    return {
        "device": str(device), "device_name": name, **versions(), "git_rev": git_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "batch": args.batch, "warmup": warmup, "repeat": repeat, "alpha": args.alpha, "seed": args.seed,
        "style": f"1x3x{STYLE_SIDE}x{STYLE_SIDE} uniform random, broadcast over the batch",
        "flops_per_pixel": FLOPS_PER_PIXEL, "flops_note": "content path only; the style path is not counted",
        "peak_gflops": {d: peak_gflops(device, name, d, args.peak_gflops, args.allow_tf32) for d in dtypes},
        "tf32": args.allow_tf32, "timing": "CUDA events + synchronize" if device.type == "cuda" else "perf_counter",
        "compile_mode": args.compile_mode, "memory_profile": args.memory_profile, "max_memory": args.max_memory,
        "load_avg_1min": os.getloadavg()[0],
        "runnable_others": _runnable_others(),
    }
