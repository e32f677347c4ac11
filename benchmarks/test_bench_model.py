"""Time of one MicroAST forward per backend, grouped per resolution, the reference as the baseline.

Each case times ``model(content, style, 1.0)`` in fp32 under ``torch.inference_mode()`` (style path
included), with ``benchmark.pedantic`` so the round counts are fixed, not tuned to a time budget. The
speed-up against the reference of the same group lands in the case's ``extra_info``. Nothing here
asserts a speed: a fast backend must only give the reference's output.
"""

from __future__ import annotations

import os

import pytest
import torch

from microast_fast import backend_report
from microast_fast.bench.cases import FLOPS_PER_PIXEL
from microast_fast.bench.machine import device_name
from microast_fast.bench.measure import max_abs_error

# MICROAST_SPEC.md: two correct fp32 implementations differ by up to 1e-4 (max abs) at image sizes.
# Measured here (torch backend vs reference, 64x64 style): 7.1e-6 at 64x64, 9.7e-6 at 128x96; compiled
# (inductor, CPU) vs reference at 512x512 with a 512x512 style: 3.1e-5 (`microast-fast bench`).
FP32_MAX_ABS = 1e-4


def skip_reason(backend: str, device: torch.device, full: bool) -> str | None:
    if backend in ("reference", "reference-channels-last", "streaming"):  # streaming: the torch backend in tiles
        return None
    if backend == "compiled":
        # Inductor compiles each new shape for about a minute on a 2-core CPU (max-autotune on a GPU: more).
        return None if full else "torch.compile takes minutes per shape; runs with MICROAST_BENCH_FULL=1"
    if backend.startswith("triton") and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return "Triton's CPU interpreter: its time says nothing (tests/ check its output)"
    return backend_report(device)[backend]


def test_forward(benchmark, size, backend, bench_config, device, model_for, inputs_for, reference_output_for,
                 reference_medians):
    label, height, width = size
    reason = skip_reason(backend, device, bench_config["full"])
    if reason is not None:
        pytest.skip(reason)
    model = model_for(backend)
    content, style = inputs_for(height, width)
    if backend == "reference-channels-last":
        content, style = (t.contiguous(memory_format=torch.channels_last) for t in (content, style))

    cudagraphs = backend == "compiled" and device.type == "cuda"  # max-autotune replays CUDA graphs

    def forward():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = model(content, style, 1.0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the kernels have finished when the clock stops
        return out

    shape = label if label == f"{height}x{width}" else f"{label} ({height}x{width})"
    style_side = bench_config["style"]
    benchmark.group = f"forward {shape}, style {style_side}x{style_side}, fp32, {device_name(device)}"
    with torch.inference_mode():
        out = benchmark.pedantic(forward, rounds=bench_config["rounds"], warmup_rounds=bench_config["warmup_rounds"],
                                 iterations=1)

    if benchmark.stats:  # None under --benchmark-disable: the function then ran once, untimed
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = FLOPS_PER_PIXEL * height * width / median / 1e9
        if backend == "reference":
            reference_medians[benchmark.group] = median
        if benchmark.group in reference_medians:
            benchmark.extra_info["speedup_vs_reference"] = reference_medians[benchmark.group] / median
    if backend != "reference":
        err = max_abs_error(out, reference_output_for(height, width))
        benchmark.extra_info["max_abs_err"] = err
        assert err <= FP32_MAX_ABS, f"{backend} at {label}: max abs error {err:.3g} > {FP32_MAX_ABS:g} vs the reference"
