"""What backend="auto" runs: the measured table (data/auto_backend.json) and how it is built."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from microast_fast import dispatch

ROOT = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"
ROWS = [  # (device, dtype, pixels, backend)
    {"device": H100, "dtype": "float16", "pixels": 1080 * 1920, "backend": "cuda"},
    {"device": H100, "dtype": "float16", "pixels": 2160 * 4096, "backend": "triton"},
    {"device": H100, "dtype": "float32", "pixels": 2160 * 4096, "backend": "torch"},
]


@pytest.mark.parametrize("dtype, pixels, expected", [
    (torch.float16, 1000 * 1900, "cuda"),      # nearest measured size: 1080p
    (torch.float16, 8 * 2160 * 4096, "triton"),  # beyond the largest: the largest
    (torch.float16, 2 * 64 * 64, "cuda"),      # below the smallest: the smallest
    (torch.float16, None, "triton"),           # no size: the largest measured
    (torch.float32, 1080 * 1920, "torch"),
    (torch.bfloat16, 1080 * 1920, None),       # dtype not measured
])
def test_measured_choice(dtype, pixels, expected):
    assert dispatch.measured_choice(ROWS, H100, dtype, pixels) == expected


def test_unmeasured_gpu_model_has_no_choice():
    assert dispatch.measured_choice(ROWS, "NVIDIA A100-SXM4-80GB", torch.float16, 1080 * 1920) is None


def test_auto_is_torch_on_a_cpu():
    assert dispatch.resolve_backend("auto", torch.device("cpu"), torch.float16, 10**7) == "torch"


def test_shipped_table_names_only_known_backends():
    for row in dispatch.auto_table():
        assert row["backend"] in dispatch.BACKENDS and row["pixels"] > 0 and row["dtype"] in (
            "float32", "float16", "bfloat16"), row


def write_csv(path, rows):
    fields = ["backend", "size", "dtype", "device", "batch", "metric", "value", "torch", "triton", "cuda", "git_rev",
              "date"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for backend, size, dtype, metric, value in rows:
            writer.writerow({"backend": backend, "size": size, "dtype": dtype, "device": H100, "batch": 1,
                             "metric": metric, "value": value, "torch": "2.11", "triton": "3.6", "cuda": "13.0",
                             "git_rev": "abc1234", "date": "2026-11-26"})


def test_auto_table_takes_the_fastest_verified_backend(tmp_path):
    results = tmp_path / "results.csv"
    write_csv(results, [
        ("reference", "4k", "float16", "time_ms_median", 40.0),
        ("torch", "4k", "float16", "time_ms_median", 20.0),
        ("triton", "4k", "float16", "time_ms_median", 3.0),
        ("cuda", "4k", "float16", "time_ms_median", 2.0),       # fastest, but its tests did not pass
        ("torch", "4k", "float32", "time_ms_median", 30.0),
        ("triton", "4k", "float32", "time_ms_median", 10.0),
        ("triton", "4k", "float32", "max_abs_err", 3e-3),      # wrong: no candidate
        ("torch", "1080p", "float16", "time_ms_median", 5.0),
        ("triton", "1080p", "float16", "time_ms_median", 1.0),
        ("triton", "1080p", "float16", "time_ms_median", 6.0),  # a later measurement of the same case counts
    ])
    table = tmp_path / "auto.json"
    table.write_text(json.dumps({"about": "kept", "choices": [
        {"device": "other GPU", "dtype": "float16", "pixels": 4, "backend": "cuda"},
        {"device": H100, "dtype": "float16", "pixels": 2160 * 4096, "backend": "cuda"},  # replaced
    ]}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "auto_table.py"), "--csv", str(results),
                           "--verified", "triton", "--out", str(table)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(table.read_text())
    assert written["about"] == "kept"
    picked = {(r["device"], r["dtype"], r["size"] if "size" in r else r["pixels"]): r["backend"]
              for r in written["choices"]}
    assert picked == {("other GPU", "float16", 4): "cuda", (H100, "float16", "4k"): "triton",
                      (H100, "float32", "4k"): "torch", (H100, "float16", "1080p"): "torch"}


@pytest.mark.parametrize("missing, expected", [(None, "cuda"), ("not built here", "torch")])
def test_auto_on_a_gpu_takes_the_measured_backend_if_it_can_run(monkeypatch, missing, expected):
    monkeypatch.setattr(dispatch, "auto_table", lambda: tuple(ROWS))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: H100)
    monkeypatch.setattr(dispatch, "unavailable_reason", lambda name, device: missing)
    assert dispatch._auto_on_gpu(torch.device("cuda"), torch.float16, 1080 * 1920) == expected
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "an unmeasured GPU")
    assert dispatch._auto_on_gpu(torch.device("cuda"), torch.float16, 1080 * 1920) == "torch"
