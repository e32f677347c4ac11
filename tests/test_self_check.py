"""The self-check a kernel backend passes before "auto" runs it on a GPU model no shipped run verified
(microast_fast/self_check.py), on the CPU: the verdict's rule, its pass and fail paths through
``MicroAST``, and its cache key. A real GPU runs it in tests/test_triton_model.py."""

import json
import warnings

import pytest
import torch

from microast_fast import MicroAST, dispatch, self_check
from microast_fast.backends import _REGISTRY
from microast_fast.backends.torch_backend import TorchBackend

NEAREST = "measured on the nearest architecture, NVIDIA H100 80GB HBM3 (sm_90)"


class OffByALittle(TorchBackend):
    """A wrong kernel backend: the right image plus 0.05 (PSNR about 26 dB)."""
    name = "triton"

    def stylize(self, model, content, signals, alpha):
        return super().stylize(model, content, signals, alpha) + 0.05


class Correct(TorchBackend):
    name = "triton"


@pytest.fixture
def unverified_gpu(monkeypatch, tmp_path):
    """"auto" as on a GPU no shipped run measured: 'triton' from the nearest architecture, pending the
    self-check; verdicts in a fresh cache, none in memory."""
    monkeypatch.setenv("MICROAST_FAST_CACHE", str(tmp_path))
    monkeypatch.setattr(self_check, "_verdicts", {})
    choose = dispatch.choose

    def auto_as_on_an_unverified_gpu(requested, device, dtype=torch.float32, pixels=None):
        if requested == "auto":
            return dispatch.Choice("triton", f"fastest {NEAREST}", needs_self_check=True)
        return choose(requested, device, dtype, pixels)

    monkeypatch.setattr(dispatch, "choose", auto_as_on_an_unverified_gpu)
    return tmp_path / self_check.CACHE_FILE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_wrong_backend_is_refused_and_reported(unverified_gpu, monkeypatch, dtype):
    monkeypatch.setitem(_REGISTRY, "triton", OffByALittle())
    with pytest.warns(RuntimeWarning, match="'triton' failed its self-check on cpu"):
        model = MicroAST.from_pretrained(dtype=dtype)
    choice = model.backend_choice
    assert choice.backend == "torch"
    assert "'triton'" in choice.why and NEAREST in choice.why
    assert ("max abs 5.00e-02" if dtype == torch.float32 else "PSNR") in choice.why
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not at every forward
        content = torch.rand(1, 3, 20, 24).to(dtype)
        with torch.inference_mode():
            out = model(content, content)
            expected = MicroAST.from_pretrained(backend="torch", dtype=dtype)(content, content)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # the torch backend ran
    record = json.loads(unverified_gpu.read_text())
    [(key, verdict)] = record.items()
    assert key.startswith("cpu | triton | ") and not verdict["passed"] and verdict["failure"] in choice.why


def test_a_correct_backend_passes_and_the_verdict_is_kept_on_disk(unverified_gpu, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "triton", Correct())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MicroAST.from_pretrained()
    choice = model.backend_choice
    assert choice.backend == "triton" and choice.why == f"fastest {NEAREST}; passed its self-check here"
    # A second process: nothing in memory, the verdict from disk, no check run.
    monkeypatch.setattr(self_check, "_verdicts", {})
    monkeypatch.setattr(self_check, "run", lambda *models: pytest.fail("the cached verdict was not used"))
    assert MicroAST.from_pretrained().active_backend == "triton"


def test_a_backend_that_raises_fails_the_check(unverified_gpu, monkeypatch):
    class Broken(TorchBackend):
        name = "triton"

        def stylize(self, model, content, signals, alpha):
            raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setitem(_REGISTRY, "triton", Broken())
    with pytest.warns(RuntimeWarning, match="no kernel image"):
        assert MicroAST.from_pretrained().active_backend == "torch"


def test_the_cache_key_changes_with_what_the_verdict_depends_on(monkeypatch):
    key = self_check.cache_key("NVIDIA L4 (sm_89)", "triton", torch.float16)
    assert key.startswith("NVIDIA L4 (sm_89) | triton | float16 | torch ") and " triton " in key
    assert self_check.cache_key("NVIDIA L4 (sm_89)", "triton", torch.bfloat16) != key
    assert self_check.cache_key("NVIDIA L4 (sm_89)", "cuda", torch.float16) != key
    assert self_check.cache_key("NVIDIA A10 (sm_86)", "triton", torch.float16) != key
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert self_check.cache_key("NVIDIA L4 (sm_89)", "triton", torch.float16) != key
    monkeypatch.undo()
    monkeypatch.setattr(self_check, "sources_digest", lambda: "edited")  # an edited kernel
    assert self_check.cache_key("NVIDIA L4 (sm_89)", "triton", torch.float16) != key


def test_a_verdict_under_another_key_is_not_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROAST_FAST_CACHE", str(tmp_path))
    monkeypatch.setattr(self_check, "_verdicts", {})
    runs = []
    assert self_check.verdict(torch.device("cpu"), "triton", torch.float16, lambda: runs.append(1)) is None
    monkeypatch.setattr(self_check, "_verdicts", {})
    assert self_check.verdict(torch.device("cpu"), "triton", torch.float16, lambda: runs.append(2)) is None
    assert runs == [1]  # the second came from the file
    monkeypatch.setattr(self_check, "_verdicts", {})
    monkeypatch.setattr(self_check, "sources_digest", lambda: "edited")
    assert self_check.verdict(torch.device("cpu"), "triton", torch.float16, lambda: runs.append(3)) is None
    assert runs == [1, 3]


@pytest.mark.parametrize("dtype, shift, passes", [
    (torch.float32, 5e-5, True), (torch.float32, 2e-4, False),
    (torch.float16, 0.0, True), (torch.float16, 0.02, False), (torch.bfloat16, 0.005, True),
])
def test_the_rule_follows_the_dtype(dtype, shift, passes):
    expected = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    failure = self_check.compare((expected + shift).to(dtype), expected, dtype)
    assert (failure is None) == passes, failure


def test_non_finite_and_misshapen_outputs_fail():
    expected = torch.zeros(1, 3, 8, 8)
    assert self_check.compare(torch.full_like(expected, float("nan")), expected, torch.float32) == "non-finite output"
    assert "shape" in self_check.compare(expected[..., :4], expected, torch.float32)


@pytest.mark.interpreter
def test_the_triton_kernels_pass_in_the_interpreter():
    pytest.importorskip("triton")
    candidate = MicroAST.from_pretrained(backend="triton", tile_size=0)
    reference = MicroAST.from_pretrained(backend="torch", tile_size=0)
    assert self_check.run(candidate, reference) is None
