"""Pieces of ``microast-fast bench`` that only a GPU run would otherwise exercise."""

import os
import subprocess
import sys

import pytest
import torch

from microast_fast.bench import measure


def test_cuda_device_without_an_index_means_the_current_one(monkeypatch):
    # torch.cuda.set_device refuses torch.device("cuda") (no index), which is what `--device cuda`
    # gives every measurement: it must not be called with one.
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    measure._use_cuda_device(torch.device("cuda"))
    measure._use_cuda_device(torch.device("cuda:1"))
    assert calls == [1]


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
def test_bench_needs_no_image_libraries(tmp_path):
    # The GPU machines have torch and numpy but perhaps not Pillow, pypng, tifffile, tqdm or matplotlib:
    # `microast-fast bench` (and its worker processes) must not import them.
    # The blocked modules are found (importlib.util.find_spec, which torch itself calls, answers as if
    # they were installed) but fail when imported.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.machinery, sys\n"
        "class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PIL', 'png', 'tifffile', 'tqdm', 'matplotlib'):\n"
        "            return importlib.machinery.ModuleSpec(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ImportError(f'{spec.name} is blocked by the test')\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "sys.meta_path.insert(0, Block())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "microast_fast.cli", "bench", "--size", "24x20", "--device", "cpu",
                             "--backends", "reference,torch", "--warmup", "0", "--repeat", "1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "blocked" not in result.stdout + result.stderr
    assert "skipped" not in result.stdout, result.stdout


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
def test_kernel_profile_writes_a_table_per_backend(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "kernel_profile.py"), "--device", "cpu",
                             "--size", "24x20", "--dtype", "fp32", "--backends", "torch", "--warmup", "0",
                             "--rows", "3", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "profile_torch_24x20_float32.txt").read_text()
    assert "aten::" in table and "Self CPU time total" in table


def test_kernel_profile_lists_the_autotuned_configs():
    """On a GPU the Triton table ends with each autotuned kernel's chosen config per key (the
    interpreter tunes nothing: one config each)."""
    pytest.importorskip("triton")
    import importlib.util

    from microast_fast.kernels import decoder_tail

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "kernel_profile.py")
    spec = importlib.util.spec_from_file_location("kernel_profile", path)
    kernel_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_profile)
    tuner = decoder_tail.decoder_tail_kernel
    saved = dict(tuner.cache)
    try:
        tuner.cache.clear()
        assert kernel_profile.autotune_choices().endswith("(none tuned)")
        tuner.cache[(540, 1024, "torch.float16")] = tuner.configs[0]
        listed = kernel_profile.autotune_choices()
    finally:
        tuner.cache.clear()
        tuner.cache.update(saved)
    assert f"decoder_tail_kernel (540, 1024, 'torch.float16'): {tuner.configs[0]}" in listed


def test_ncu_profile_says_what_is_missing(tmp_path):
    """benchmarks/ncu_profile.sh (Nsight Compute, GPU machines) names the missing tool; its profiled
    range refuses a CPU device rather than profiling nothing."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NCU=str(tmp_path / "no-ncu"))
    result = subprocess.run(["bash", os.path.join(root, "benchmarks", "ncu_profile.sh"), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Nsight Compute" in result.stderr and "not found" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "kernel_profile.py"), "--device", "cpu",
                             "--size", "24x20", "--backends", "torch", "--profiler-range"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "use --device cuda" in result.stdout
