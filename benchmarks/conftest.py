"""Set-up of the pytest-benchmark suite (``python -m pytest benchmarks``).

Quick mode, the default (CI): two small shapes with a 64x64 style and a few rounds, so the suite takes
seconds on a 2-core CPU, and each fast backend's output is checked against the reference.
``MICROAST_BENCH_FULL=1``: 1080p and 4K with a 512x512 style, more rounds, ``compiled`` included.
``MICROAST_BENCH_SIZES=512,1080x1920`` picks the sizes (``microast-fast bench --size`` syntax).

Only time is measured here: every case shares one pytest process, so its memory says nothing about
one backend. ``microast-fast bench`` measures memory, one fresh process per backend.
"""

from __future__ import annotations

import os

import pytest
import torch

from microast_fast.bench.cases import BENCH_BACKENDS, STYLE_SIDE, parse_size
from microast_fast.bench.measure import build_model, make_inputs

FULL = os.environ.get("MICROAST_BENCH_FULL") == "1"
_SIZE_NAMES = os.environ.get("MICROAST_BENCH_SIZES") or ("1080p,4k" if FULL else "64x64,128x96")
SIZES = [parse_size(name) for name in _SIZE_NAMES.split(",")]
STYLE = STYLE_SIDE if FULL else 64
# Quick mode checks outputs and that each backend runs; its few rounds time nothing of consequence.
ROUNDS, WARMUP_ROUNDS = (10, 2) if FULL else (3, 0)
# fp32 means fp32, as in `microast-fast bench`: cuDNN would run the reference's convolutions in TF32 on
# Ampere and later, off by about 1e-3 against the 1e-4 check of every backend's output.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_generate_tests(metafunc):
    # Size first, so each size's cases run together, the reference (first backend) leading.
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", SIZES, ids=[label for label, _, _ in SIZES])
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BENCH_BACKENDS)


@pytest.fixture(scope="session")
def bench_config() -> dict:
    return {"full": FULL, "style": STYLE, "rounds": ROUNDS, "warmup_rounds": WARMUP_ROUNDS}


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def model_for(device):
    """``model_for(backend)``: the fp32 model of that backend, built once per session."""
    models = {}

    def get(backend: str):
        if backend not in models:
            models[backend] = build_model(backend, device, torch.float32)
        return models[backend]

    return get


@pytest.fixture(scope="session")
def inputs_for(device):
    """``inputs_for(height, width)``: seeded content and style, the same for every backend."""
    cache = {}

    def get(height: int, width: int):
        if (height, width) not in cache:
            cache[(height, width)] = make_inputs(height, width, style_side=STYLE, device=device)
        return cache[(height, width)]

    return get


@pytest.fixture(scope="session")
def reference_output_for(model_for, inputs_for):
    """``reference_output_for(height, width)``: the reference's output, computed once, untimed."""
    cache = {}

    def get(height: int, width: int) -> torch.Tensor:
        if (height, width) not in cache:
            with torch.inference_mode():
                cache[(height, width)] = model_for("reference")(*inputs_for(height, width), 1.0)
        return cache[(height, width)]

    return get


@pytest.fixture(scope="session")
def reference_medians() -> dict:
    """Median seconds of the reference per benchmark group, for each case's speed-up."""
    return {}
