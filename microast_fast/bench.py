"""``microast-fast bench``: wall time, peak memory and error of each backend against the reference.

Every measurement (one backend, one size, one dtype) runs in a fresh child process,
``python -m microast_fast.bench --worker SPEC``, which prints its figures as one JSON line on stdout.
The reason is memory: on a CPU the only honest peak figure is the process's resident set, and a
process's high-water mark never goes down, so in a shared process one backend's allocations would
show up in the next one's figure. On a GPU the child also starts with an empty caching allocator.

What is measured (the same for every backend):
- inputs: uniform random content ``[batch, 3, H, W]`` and one 512x512 style (seeded, generated in fp32
  on the CPU, then cast), the style broadcast over the content batch; ``alpha`` 1; under
  ``torch.inference_mode()``; the style path runs inside every forward, as a user calls the model;
- time: ``--warmup`` untimed calls (``compiled`` always gets at least one, so compilation is never
  timed), then ``--repeat`` timed calls: ``time.perf_counter`` on a CPU, CUDA events then a
  synchronize on a GPU;
- peak memory during the timed calls: ``torch.cuda.max_memory_allocated`` after a reset on a GPU;
  on the CPU the resident-set high-water mark (VmHWM) of the child, reset after warm-up through
  ``/proc/self/clear_refs`` so that ``torch.compile``'s own memory is not counted; where that reset is
  impossible (not Linux), ``ru_maxrss`` of the whole child. The figure is the whole process's
  (Python, torch, weights and inputs included), which the JSON's ``baseline_mem_mib`` shows apart;
- error: max abs difference from the reference's output at the same dtype, computed in fp32 after
  the peak is read (the reference child saves its output to a .pt file the others load);
- GFLOP/s: 55,544 FLOPs per content pixel (``MICROAST_SPEC.md``); the style path (about 7.3 GFLOP
  for a 512x512 style) is not counted, so small sizes understate the rate.

``--memory-profile`` prints each backend's peak at 4096x2160 (or ``--size``) and the reference's peak
per stage, from forward hooks on its submodules, also in a fresh process.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from .dispatch import BACKENDS, backend_report

FLOPS_PER_PIXEL = 55_544  # per content pixel, multiply-add = 2 (MICROAST_SPEC.md)
STYLE_SIDE = 512

# Named sizes as (height, width).
SIZE_PRESETS = {"512": (512, 512), "1080p": (1080, 1920), "4k": (2160, 4096), "8k": (4320, 8192)}

# "reference" is the plain module, "compiled" is torch.compile of it (what a user tries first);
# the others are MicroAST backends, run when dispatch says they can; "streaming" is the torch backend
# streamed in tiles within --max-memory.
BENCH_BACKENDS = ("reference", "compiled") + BACKENDS + ("streaming",)

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}

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

# The checkout's results file when the package runs from a checkout (editable install), else the
# working directory's.
_CHECKOUT = Path(__file__).resolve().parent.parent
RESULTS_CSV = (_CHECKOUT if (_CHECKOUT / "benchmarks").is_dir() else Path.cwd()) / "benchmarks" / "results" / "results.csv"
CSV_FIELDS = ("backend", "size", "dtype", "device", "batch", "metric", "value",
              "torch", "triton", "cuda", "git_rev", "date")
RESULT_MARKER = "MICROAST_BENCH_RESULT "

# The reference's stages for --memory-profile: (name, submodule whose forward ends the stage). The
# reference runs style encoder, modulator, content encoder, then the decoder; each decoder block's
# stage also holds the FeatMod blend computed just before the block.
STAGES = (
    ("style path", "modulator"),
    ("content encoder", "content_encoder"),
    ("decoder block 1", "decoder.dec1"),
    ("decoder block 2", "decoder.dec2"),
    ("tail", "decoder.dec3"),
)


# --- sizes and names --------------------------------------------------------------------------
def parse_size(text: str) -> tuple[str, int, int]:
    """``"4k"`` -> ``("4k", 2160, 4096)``; ``"128x96"`` (height x width) -> ``("128x96", 128, 96)``;
    ``"256"`` -> ``("256", 256, 256)``."""
    label = text.strip().lower()
    if label in SIZE_PRESETS:
        return (label, *SIZE_PRESETS[label])
    try:
        height, width = (int(v) for v in (label.split("x") if "x" in label else (label, label)))
    except ValueError:
        raise ValueError(f"size {text!r} is neither one of {', '.join(SIZE_PRESETS)} nor N (NxN) nor HxW "
                         "such as 1080x1920") from None
    if height < 5 or width < 5:
        raise ValueError(f"size {text!r}: MicroAST needs at least 5x5 pixels")
    return label, height, width


def _size_list(text: str) -> list[tuple[str, int, int]]:
    try:
        return [parse_size(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _choice_list(allowed, aliases=None):
    def parse(text: str) -> list[str]:
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        names = [aliases.get(n, n) for n in names] if aliases else names
        bad = [n for n in names if n not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return names
    return parse


def _flatten(lists, default):
    out = [item for group in (lists or [default]) for item in group]
    return list(dict.fromkeys(out))  # keep order, drop repeats


# --- the environment a result belongs to -------------------------------------------------------
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
    root = Path(__file__).resolve().parent.parent
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


# --- memory -----------------------------------------------------------------------------------
def _runnable_others() -> int | None:
    """Processes runnable right now besides this one (/proc/loadavg's 4th field). The 1-minute load
    average would also count this benchmark's own previous measurements."""
    try:
        with open("/proc/loadavg") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, IndexError, ValueError):
        return None


def _proc_status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # the file says kB
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory since the last ``reset()``: the CUDA caching allocator's, or this process's resident set."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated, reset after warm-up"
            self.can_reset = True
        else:
            self.can_reset = self._reset_rss()
            self.method = ("peak RSS (VmHWM) of a fresh process per measurement, reset after warm-up" if self.can_reset
                           else "ru_maxrss of a fresh process per measurement (set-up and warm-up included)")

    @staticmethod
    def _reset_rss() -> bool:
        # Writing 5 to clear_refs resets the kernel's high-water mark of the resident set (Linux >= 4.0).
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return _proc_status_mib("VmHWM") is not None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.can_reset:
            self._reset_rss()

    def current_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return _proc_status_mib("VmRSS") or 0.0

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.can_reset:
            return _proc_status_mib("VmHWM")
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux


# --- the child: one measurement ----------------------------------------------------------------
def make_inputs(height: int, width: int, batch: int = 1, style_side: int = STYLE_SIDE, seed: int = 0,
                device="cpu", dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Content ``[batch, 3, H, W]`` and style ``[1, 3, s, s]``, uniform in [0, 1); made in fp32 on the
    CPU from their own seeds, so every device, dtype and size sees the same style."""
    content = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    style = torch.rand(1, 3, style_side, style_side, generator=torch.Generator().manual_seed(seed + 1))
    return content.to(device, dtype), style.to(device, dtype)


def build_model(backend: str, device, dtype, compile_mode: str = "auto", max_memory: str = "1GB"):
    from .model import MicroAST
    from .reference import MicroASTReference

    if backend == "streaming":
        return MicroAST.from_pretrained(backend="torch", device=device, dtype=dtype, max_memory=max_memory)
    if backend not in ("reference", "compiled"):
        return MicroAST.from_pretrained(backend=backend, device=device, dtype=dtype)
    model = MicroASTReference.from_pretrained().to(device, dtype)
    if backend == "compiled":
        if compile_mode == "auto":
            compile_mode = "max-autotune" if torch.device(device).type == "cuda" else None
        # One shape per process, so a static graph: no recompilation for dynamic shapes.
        model = torch.compile(model, mode=compile_mode, dynamic=False)
    return model


def _use_cuda_device(device: torch.device) -> None:
    """Make ``device`` current; "cuda" with no index means the current device (set_device refuses it)."""
    if device.index is not None:
        torch.cuda.set_device(device.index)


def max_abs_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """In fp32, one (sample, channel) plane at a time, so no full-size fp32 copy is made; NaN propagates."""
    if out.shape != reference.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(reference.shape)}")
    planes = zip(out.reshape(-1, *out.shape[-2:]), reference.reshape(-1, *reference.shape[-2:]))
    return torch.stack([(o.float() - r.float()).abs().max() for o, r in planes]).max().item()


def _timed_call(call, device: torch.device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = call()
        end.record()
        torch.cuda.synchronize(device)
        return out, start.elapsed_time(end)
    start = time.perf_counter()
    out = call()
    return out, (time.perf_counter() - start) * 1e3


def measure(spec: dict) -> dict:
    """Time and peak memory of one backend on one input; writes or compares against the reference's output."""
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    if device.type == "cuda":
        _use_cuda_device(device)
        # fp32 means fp32: cuDNN would otherwise run the reference's convolutions in TF32.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = spec["tf32"]
    model = build_model(spec["backend"], device, dtype, spec["compile_mode"], spec["max_memory"])
    content, style = make_inputs(spec["height"], spec["width"], spec["batch"], spec["style_side"], spec["seed"],
                                 device, dtype)
    alpha = spec["alpha"]
    cudagraphs = spec["backend"] == "compiled" and device.type == "cuda"

    def call():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: CUDA-graph outputs get reused
        return model(content, style, alpha)

    warmup = max(spec["warmup"], 1) if spec["backend"] == "compiled" else spec["warmup"]
    meter = PeakMemory(device)
    out, first_call_s = None, None
    with torch.inference_mode():
        for i in range(warmup):
            out = None  # free the last output before the next call: never two outputs at once
            start = time.perf_counter()
            out = call()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i == 0:
                first_call_s = time.perf_counter() - start  # compilation included, for "compiled"
        out = None
        meter.reset()
        baseline = meter.current_mib()
        times = []
        for _ in range(spec["repeat"]):
            out = None
            out, ms = _timed_call(call, device)
            times.append(ms)
        peak = meter.peak_mib()

        result = {"status": "ok", "times_ms": times, "peak_mem_mib": peak, "baseline_mem_mib": baseline,
                  "memory_method": meter.method, "first_call_s": first_call_s, "max_abs_err": None}
        del content, style, model
        if spec.get("save_output"):
            torch.save(out.cpu(), spec["save_output"])
        if spec.get("reference_output"):
            reference = torch.load(spec["reference_output"], map_location=device)
            result["max_abs_err"] = max_abs_error(out, reference)
    return result


def profile_stages(spec: dict) -> dict:
    """The reference's peak memory per stage, from forward hooks on its submodules (one warm-up forward first)."""
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    if device.type == "cuda":
        _use_cuda_device(device)
    model = build_model("reference", device, dtype)
    content, style = make_inputs(spec["height"], spec["width"], spec["batch"], spec["style_side"], spec["seed"],
                                 device, dtype)
    meter = PeakMemory(device)
    if not meter.can_reset:
        return {"status": "skipped", "reason": "per-stage memory needs a resettable peak (Linux /proc/self/clear_refs)"}
    stages = []
    stage_start = {"mib": 0.0}

    def end_of_stage(name):
        def hook(module, inputs, output):
            stages.append({"stage": name, "start_mib": stage_start["mib"], "peak_mib": meter.peak_mib(),
                           "end_mib": meter.current_mib()})
            meter.reset()  # the next stage starts here
            stage_start["mib"] = meter.current_mib()
        return hook

    with torch.inference_mode():
        model(content, style, spec["alpha"])  # lazy one-time set-up (cuDNN handles, thread pools) is not a stage
        handles = [model.get_submodule(path).register_forward_hook(end_of_stage(name)) for name, path in STAGES]
        meter.reset()
        stage_start["mib"] = meter.current_mib()
        model(content, style, spec["alpha"])
        for handle in handles:
            handle.remove()
    return {"status": "ok", "stages": stages, "memory_method": meter.method}


def worker(spec: dict) -> dict:
    try:
        return profile_stages(spec) if spec.get("mode") == "stages" else measure(spec)
    except Exception as err:  # reported as the reason this backend has no figures, never a crash of the bench
        traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return {"status": "skipped", "reason": f"failed: {type(err).__name__}: {message}"[:500]}


# --- the parent: run children, print, save ----------------------------------------------------
def run_worker(spec: dict, timeout: float | None, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "microast_fast.bench", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "reason": f"timed out after {timeout:.0f} s (--worker-timeout)"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
            if result["status"] != "ok":
                sys.stderr.write(proc.stderr[-3000:])
            return result
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if -proc.returncode == signal.SIGKILL else ""
        return {"status": "skipped", "reason": f"worker killed by {sig}{hint}"}
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "skipped", "reason": f"worker exited with {proc.returncode}: {last}"[:500]}


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
TABLE_HEADER = (f"{'size':<10}{'dtype':<10}{'backend':<11}{'median ms':>11}  {'[min, p20, p80, max]':<30}"
                f"{'speed-up':>9}{'peak MiB':>10}{'+fwd MiB':>10}{'mem/ref':>9}{'max|err|':>10}{'GFLOP/s':>9}"
                f"{'%peak':>7}")


def format_row(row: dict) -> str:
    head = f"{row['size']:<10}{row['dtype']:<10}{row['backend']:<11}"
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


def _reference_files(directory: Path, device_label: str, spec: dict) -> tuple[Path, Path]:
    """Where the reference's output (.pt) and figures (.json) for ``spec``'s input are kept."""
    key = "_".join(str(spec[k]) for k in ("dtype", "batch", "height", "width", "style_side", "seed", "alpha"))
    stem = directory / f"reference_{''.join(c if c.isalnum() else '-' for c in device_label)}_{key}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


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


def bench_input(args, spec: dict, backends: list[str], meta: dict, ref_dir: Path, payload: dict) -> None:
    """Every backend on one (size, dtype): one child each, the reference first; rows printed and saved as they come."""
    profile = args.memory_profile
    ref_pt, ref_json = _reference_files(ref_dir, meta["device_name"], spec)
    # A reference measured by an earlier run into --reference-dir serves when this run does not time it.
    reference = json.loads(ref_json.read_text()) if "reference" not in backends and ref_json.exists() else None
    available = {"reference": None, "compiled": None, "streaming": None, **backend_report(torch.device(spec["device"]))}
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


def run_bench(args) -> int:
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


# --- command line -----------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    from .cli import default_device

    p = subparsers.add_parser(
        "bench", help="time and memory of each backend against the reference (one fresh process per measurement)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", dest="sizes", action="append", type=_size_list, metavar="SIZE",
                   help="512, 1080p (1920 wide), 4k (4096x2160), 8k (8192x4320), N (NxN) or HxW (height x width); "
                        "repeatable or comma list (default: 512; 4k with --memory-profile)")
    p.add_argument("--backends", action="append", type=_choice_list(BENCH_BACKENDS), metavar="LIST",
                   help=f"comma list of {','.join(BENCH_BACKENDS)} (default: all; unavailable ones are skipped "
                        "with the reason)")
    p.add_argument("--dtype", dest="dtypes", action="append", type=_choice_list(("float32", "float16", "bfloat16"),
                   DTYPE_NAMES), metavar="LIST", help="float32, float16, bfloat16 (or fp32, fp16, bf16); comma list "
                   "(default: float32)")
    p.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="content batch; one style broadcast over it (default: 1)")
    p.add_argument("--repeat", type=int, default=None, help="timed calls (default: 10; 1 with --memory-profile)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls before them (default: 3; 1 with --memory-profile); compiled gets at least 1")
    p.add_argument("--alpha", type=float, default=1.0, help="stylisation strength (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random content and style (default: 0)")
    p.add_argument("--json", metavar="FILE", help="write meta data and every measurement as JSON")
    p.add_argument("--record", action="store_true", help="append one row per measurement and metric to --results-csv")
    p.add_argument("--results-csv", default=str(RESULTS_CSV), metavar="FILE",
                   help="the results data file (default: benchmarks/results/results.csv of this checkout)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="device peak for %%peak; default on a CPU threads x fp32 FLOP/cycle of its vector ISA "
                        "(AVX2 32, AVX-512 64) x the clock in /proc/cpuinfo, on a GPU the data-sheet figure of an "
                        "H100/H200/A100, else unknown")
    p.add_argument("--max-memory", default="1GB",
                   help="working-memory budget of the 'streaming' backend (default: %(default)s)")
    p.add_argument("--compile-mode", default="auto",
                   help="torch.compile mode of 'compiled' (default: max-autotune on a GPU, the default mode on a CPU)")
    p.add_argument("--allow-tf32", action="store_true", help="let cuDNN and matmuls use TF32 in float32 (default: off)")
    p.add_argument("--worker-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a measurement after this long and report it skipped (default: no limit)")
    p.add_argument("--reference-dir", metavar="DIR",
                   help="keep the reference's output and figures here, so a later run without the reference "
                        "still reports error and speed-up against it (default: a temporary folder)")
    p.add_argument("--memory-profile", action="store_true",
                   help="peak memory of each backend (default size 4k) and of the reference per stage: style path, "
                        "content encoder, decoder block 1, decoder block 2, tail")
    p.set_defaults(run=run_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microast_fast.bench",
                                     description="One measurement in a fresh process (used by `microast-fast bench`).")
    parser.add_argument("--worker", required=True, metavar="SPEC_JSON")
    result = worker(json.loads(parser.parse_args(argv).worker))
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
