"""What one child process measures: time, peak memory and error of one backend on one input."""

from __future__ import annotations

import resource
import sys
import time
import traceback

import torch

from .cases import STYLE_SIDE, split_mode

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


def make_inputs(height: int, width: int, batch: int = 1, style_side: int = STYLE_SIDE, seed: int = 0,
                device="cpu", dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Content ``[batch, 3, H, W]`` and style ``[1, 3, s, s]``, uniform in [0, 1); made in fp32 on the
    CPU from their own seeds, so every device, dtype and size sees the same style."""
    content = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    style = torch.rand(1, 3, style_side, style_side, generator=torch.Generator().manual_seed(seed + 1))
    return content.to(device, dtype), style.to(device, dtype)


def build_model(backend: str, device, dtype, compile_mode: str = "auto", max_memory: str = "1GB"):
    from ..model import MicroAST
    from ..reference import MicroASTReference

    backend, mode = split_mode(backend)
    if backend == "streaming":
        return MicroAST.from_pretrained(backend="torch", device=device, dtype=dtype, max_memory=max_memory)
    if backend not in ("reference", "compiled", "reference-channels-last"):
        return MicroAST.from_pretrained(backend=backend, device=device, dtype=dtype, cuda_graphs=mode == "graphs")
    model = MicroASTReference.from_pretrained().to(device, dtype)
    if backend == "reference-channels-last":
        return model.to(memory_format=torch.channels_last)
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
    backend, mode = split_mode(spec["backend"])
    if backend == "reference-channels-last":
        content, style = (t.contiguous(memory_format=torch.channels_last) for t in (content, style))
    if mode is not None:  # repeated frames: the style encoded once, untimed, as a video pipeline does
        with torch.inference_mode():
            style = model.encode_style(style)

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
