"""Every bad input gets an error a user can act on, never a wrong image."""

import math

import pytest
import torch

from microast_fast import BackendUnavailableError, MicroAST


@pytest.fixture(scope="module")
def model():
    return MicroAST.from_pretrained(backend="torch")


GOOD = torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize(
    "content, style, error, message",
    [
        (torch.rand(3, 16, 16), GOOD, ValueError, r"4-D.*unsqueeze\(0\)"),
        (GOOD, torch.rand(2, 3, 16), ValueError, "style must be 4-D"),
        (torch.rand(2, 4, 16, 16), GOOD, ValueError, "3 \\(RGB\\) channels"),
        (torch.rand(2, 16, 16, 3), GOOD, ValueError, "permute"),
        (torch.rand(2, 3, 4, 16), GOOD, ValueError, "at least 5x5"),
        (GOOD, torch.rand(2, 3, 16, 4), ValueError, "style is 16x4"),
        (torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), GOOD, TypeError, r"float\(\) / 255"),
        (torch.ones(2, 3, 16, 16, dtype=torch.bool), GOOD, TypeError, "floating-point"),
        (GOOD, torch.rand(3, 3, 16, 16), ValueError, "content batch is 2 but style batch is 3"),
        (torch.rand(0, 3, 16, 16), GOOD, ValueError, "empty batch"),
        (GOOD.double(), GOOD, TypeError, "model.to"),
        ([[0.0]], GOOD, TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(model, content, style, error, message):
    with pytest.raises(error, match=message):
        model(content, style)


@pytest.mark.parametrize(
    "alpha, error, message",
    [
        (1.5, ValueError, r"\[0, 1\]"),
        (-0.1, ValueError, r"\[0, 1\]"),
        (math.nan, ValueError, r"\[0, 1\]"),
        (torch.tensor([0.5, math.nan]), ValueError, "no NaN"),
        (torch.tensor([0.5, 1.2]), ValueError, r"\[0, 1\]"),
        (torch.tensor([0.5, 0.5, 0.5]), ValueError, "1 or 2 values"),
        (True, TypeError, "alpha must be a float"),
        ("0.5", TypeError, "alpha must be a float"),
    ],
)
def test_bad_alpha(model, alpha, error, message):
    with pytest.raises(error, match=message):
        model(GOOD, GOOD, alpha)


def test_device_mismatch_is_reported(model):
    meta = torch.empty(2, 3, 16, 16, device="meta")
    with pytest.raises(ValueError, match="content is on meta but the model is on cpu"):
        model(meta, GOOD)
    with pytest.raises(ValueError, match="style is on meta"):
        model(GOOD, meta)


def test_signals_on_another_device(model):
    signals = model.encode_style(GOOD[:1])
    meta_signals = signals.to("meta")
    with pytest.raises(ValueError, match="content is on cpu but style is on meta"):
        model(GOOD, meta_signals)


def test_style_signals_batch_must_fit(model):
    signals = model.encode_style(torch.rand(3, 3, 16, 16))
    with pytest.raises(ValueError, match="style batch is 3"):
        model(GOOD, signals)


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="unknown backend 'fast'.*auto, torch, triton, cuda"):
        MicroAST(backend="fast")
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' is not available on cpu: the CUDA kernels run on CUDA devices"):
        MicroAST.from_pretrained(backend="cuda")


def test_auto_picks_torch_on_cpu():
    assert MicroAST.from_pretrained().active_backend == "torch"
