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
                           "--verified", "triton", "--capability", "9.0", "--out", str(table)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(table.read_text())
    assert written["about"] == "kept"
    assert all(r["capability"] == "9.0" for r in written["choices"] if r["device"] == H100)
    picked = {(r["device"], r["dtype"], r["size"] if "size" in r else r["pixels"]): r["backend"]
              for r in written["choices"]}
    assert picked == {("other GPU", "float16", 4): "cuda", (H100, "float16", "4k"): "triton",
                      (H100, "float32", "4k"): "torch", (H100, "float16", "1080p"): "torch"}


TABLE = [  # an H100 with times, as benchmarks/auto_table.py writes them
    {"device": H100, "capability": "9.0", "dtype": "float16", "pixels": 2160 * 4096, "backend": "triton",
     "time_ms": {"torch": 36.6, "triton": 14.8, "cuda": 18.0}},
    {"device": H100, "capability": "9.0", "dtype": "float32", "pixels": 2160 * 4096, "backend": "cuda",
     "time_ms": {"torch": 73.3, "cuda": 50.8}},
]


def everything_runs(name):
    return None


@pytest.mark.parametrize("gpu, dtype, backend, checked, why", [
    (dispatch.Gpu(H100, (9, 0)), torch.float16, "triton", False, f"fastest measured on {H100}"),
    (dispatch.Gpu("NVIDIA H100 PCIe", (9, 0)), torch.float16, "triton", True, "nearest architecture, " + H100),
    (dispatch.Gpu("NVIDIA H200", (9, 0)), torch.float32, "cuda", True, "nearest architecture"),
    (dispatch.Gpu("NVIDIA A100-SXM4-80GB", (8, 0)), torch.float16, "triton", True, "(sm_90)"),
    (dispatch.Gpu("NVIDIA GeForce RTX 4090", (8, 9)), torch.float16, "triton", True, "nearest architecture"),
    (dispatch.Gpu("NVIDIA L4", (8, 9)), torch.float16, "triton", True, "nearest architecture"),
    (dispatch.Gpu("a GPU nobody has heard of", (12, 0)), torch.float16, "triton", True, "nearest architecture"),
    (dispatch.Gpu("Tesla T4", (7, 5)), torch.float16, "torch", False, "sm_75; the kernels need compute capability 8.0"),
    (dispatch.Gpu("NVIDIA A100-SXM4-80GB", (8, 0)), torch.bfloat16, "torch", False, "no GPU run has measured bfloat16"),
])
def test_auto_on_gpu_models(gpu, dtype, backend, checked, why):
    """The kernel backends are candidates on every GPU of compute capability 8.0 and up: a measured GPU
    model by its own rows, any other by the nearest measured architecture's, and then only after the
    self-check; older GPUs get torch, saying why."""
    choice = dispatch.auto_choice(TABLE, gpu, dtype, None, everything_runs)
    assert (choice.backend, choice.needs_self_check) == (backend, checked)
    assert why in choice.why


def test_nearest_architecture_prefers_the_same_major_version():
    table = TABLE + [{"device": "NVIDIA A100-SXM4-80GB", "capability": "8.0", "dtype": "float16",
                      "pixels": 2160 * 4096, "backend": "cuda", "time_ms": {"torch": 80.0, "cuda": 30.0}}]
    choice = dispatch.auto_choice(table, dispatch.Gpu("NVIDIA GeForce RTX 4090", (8, 9)), torch.float16, None,
                                  everything_runs)
    assert choice.backend == "cuda" and "A100" in choice.why and choice.needs_self_check
    choice = dispatch.auto_choice(table, dispatch.Gpu("NVIDIA H200", (9, 0)), torch.float16, None, everything_runs)
    assert choice.backend == "triton" and H100 in choice.why


def test_a_backend_that_cannot_run_gives_way_to_the_next_fastest():
    def no_triton(name):
        return "triton is not installed" if name == "triton" else None
    choice = dispatch.auto_choice(TABLE, dispatch.Gpu(H100, (9, 0)), torch.float16, None, no_triton)
    assert choice.backend == "cuda" and "'triton' would be faster but triton is not installed" in choice.why

    def nothing_but_torch(name):
        return f"{name} missing"
    choice = dispatch.auto_choice(TABLE, dispatch.Gpu(H100, (9, 0)), torch.float16, None, nothing_but_torch)
    assert choice.backend == "torch" and not choice.needs_self_check


def test_rows_without_a_capability_rank_nothing_elsewhere():
    rows = [{k: v for k, v in row.items() if k != "capability"} for row in TABLE]
    choice = dispatch.auto_choice(rows, dispatch.Gpu("NVIDIA A100-SXM4-80GB", (8, 0)), torch.float16, None,
                                  everything_runs)
    assert choice.backend == "torch"


def test_a_backend_asked_for_by_name_is_never_replaced():
    with pytest.raises(dispatch.BackendUnavailableError, match="'cuda' is not available"):
        dispatch.choose("cuda", torch.device("cpu"))
    assert dispatch.choose("torch", torch.device("cpu")) == dispatch.Choice("torch", "asked for by name")


def test_shipped_rows_carry_their_architecture():
    assert all(row.get("capability") for row in dispatch.auto_table())


def test_availability_is_asked_once_per_device(monkeypatch):
    """"auto" resolves on every forward: what it asks each backend (imports, files of the CUDA
    extension) is asked once per process and device."""
    from microast_fast.backends import _REGISTRY

    class Counting(dispatch.get_backend("torch").__class__):
        name = "cuda"
        calls = 0

        def unavailable_reason(self, device):
            Counting.calls += 1
            return "not here"

    monkeypatch.setitem(_REGISTRY, "cuda", Counting())
    for _ in range(3):
        assert dispatch.unavailable_reason("cuda", torch.device("cpu")) == "not here"
        dispatch.backend_report(torch.device("cpu"))
    assert Counting.calls == 1
