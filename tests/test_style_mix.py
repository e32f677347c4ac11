"""Style interpolation: ``StyleSignals.mix`` on every backend, and ``--mix`` on the command line."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from microast_fast import MicroAST, StyleSignals
from microast_fast.backends import torch_layers
from microast_fast.images import asset_path, load_image

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpreter)]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    content = torch.rand(2, 3, 23, 30, generator=g)
    styles = [load_image(asset_path("hubble_deep_field.jpg"), 32), load_image(asset_path("gravel.png"), 32)]
    return content, styles


def model_on(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    return MicroAST.from_pretrained(backend=backend, tile_size=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_weights_give_that_style(images, backend):
    content, styles = images
    model = model_on(backend)
    with torch.inference_mode():
        signals = [model.encode_style(s) for s in styles]
        for k in range(2):
            weights = [1.0 if i == k else 0.0 for i in range(2)]
            mixed = model(content, StyleSignals.mix(signals, weights))
            alone = model(content, signals[k])
            assert (mixed - alone).abs().max().item() <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mix_runs_alike_on_every_backend(images, backend):
    """The mixed signals are ordinary signals: the fused backends take them as the torch backend does
    (within the spec's 1e-4 for two fp32 implementations)."""
    content, styles = images
    model, torch_model = model_on(backend), model_on("torch")
    with torch.inference_mode():
        mixed = StyleSignals.mix([torch_model.encode_style(s) for s in styles], [0.3, 0.7])
        out, expected = model(content, mixed, 0.8), torch_model(content, mixed, 0.8)
        singles = [torch_model(content, torch_model.encode_style(s), 0.8) for s in styles]
    assert (out - expected).abs().max().item() <= 1e-4
    assert all((expected - single).abs().max().item() > 1e-2 for single in singles)  # a new style


def test_each_modulation_point_is_the_weighted_sum():
    """FeatMod and the FilterMod epilogue under mixed signals give the weighted sum of their outputs under
    each style: AdaIN's interpolation, extended to FilterMod."""
    g = torch.Generator().manual_seed(1)
    x, conv_x = torch.randn(1, 64, 5, 6, generator=g), torch.randn(1, 64, 5, 6, generator=g)
    x_mean, x_std = torch_layers.instance_stats(x)
    signals = [StyleSignals(*(torch.rand(1, 64, 1, 1, generator=g) + 0.5 for _ in range(8))) for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    mixed = StyleSignals.mix(signals, weights)

    def featmod(s):
        a, b = torch_layers.featmod_affine(x_mean, x_std, s.dec1_mean, s.dec1_std, 1.0)
        return a * x + b

    def filtermod_epilogue(s):
        return s.dec1_w * conv_x + s.dec1_b * x

    for point in (featmod, filtermod_epilogue):
        expected = sum(w * point(s) for w, s in zip(weights, signals))
        torch.testing.assert_close(point(mixed), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights, message", [
    ([0.5, 0.6], "sum to 1"), ([1.5, -0.5], "non-negative"), ([1.0], "one weight per style"),
    ([float("nan"), 1.0], "non-negative"),
])
def test_bad_weights_are_refused(weights, message):
    signals = [StyleSignals(*(torch.ones(1, 64, 1, 1) for _ in range(8)))] * 2
    with pytest.raises(ValueError, match=message):
        StyleSignals.mix(signals, weights)


def test_batches_broadcast_and_keep_their_dtypes():
    one = StyleSignals(*(torch.full((1, 64, 1, 1), 1.0, dtype=torch.float16) for _ in range(8)))
    two = StyleSignals(*(torch.full((2, 64, 1, 1), 3.0, dtype=torch.float16) for _ in range(8)))
    mixed = StyleSignals.mix([one, two], [0.25, 0.75])
    assert mixed.batch_size == 2 and all(t.dtype == torch.float16 for t in mixed)
    assert all(bool((t == 2.5).all()) for t in mixed)
    three = StyleSignals(*(torch.ones(3, 64, 1, 1) for _ in range(8)))
    with pytest.raises(ValueError, match="batch sizes"):
        StyleSignals.mix([two, three], [0.5, 0.5])


def cli(*args):
    return subprocess.run([sys.executable, "-m", "microast_fast.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
def test_cli_mix_writes_one_output_mixing_the_styles(tmp_path):
    content = tmp_path / "cat.png"
    Image.open(asset_path("chelsea.png")).crop((100, 50, 157, 101)).save(content)
    a, b = asset_path("hubble_deep_field.jpg"), asset_path("gravel.png")
    common = ["--style", a, "--style", b, "--style-size", "32", "--backend", "torch"]
    result = cli("stylize", content, *common, "--mix", "0.3,0.7", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cat_stylized_hubble_deep_field+gravel.png"]
    # One-hot: the single style's output, to the byte.
    assert cli("stylize", content, *common, "--mix", "0,1", "-o", tmp_path / "mix.png").returncode == 0
    assert cli("stylize", content, "--style", b, "--style-size", "32", "--backend", "torch",
               "-o", tmp_path / "alone.png").returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mix.png")), np.asarray(Image.open(tmp_path / "alone.png")))


@pytest.mark.parametrize("mix, message", [("0.5,0.5,0", "3 weights for 2 styles"), ("0.2,0.2", "sum to 1"),
                                          ("a,b", "comma-separated weights")])
def test_cli_mix_usage_errors(tmp_path, mix, message):
    content = asset_path("chelsea.png")
    result = cli("stylize", content, "--style", asset_path("gravel.png"), "--style", asset_path("coffee.png"),
                 "--mix", mix, "-o", tmp_path / "out.png")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out.png").exists()
