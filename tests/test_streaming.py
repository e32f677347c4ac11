"""Tiled streaming: exact against the whole-image reference, and within its memory budget."""

import subprocess
import sys
import textwrap

import pytest
import torch

from microast_fast import MicroAST, MicroASTReference
from microast_fast import streaming
from microast_fast.backends import get_backend
from microast_fast.backends.torch_backend import TorchTileStages
from microast_fast.streaming import Plan, parse_bytes, plan_for_budget

from reference_check import assert_fp32_matches, reference64


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained()


@pytest.mark.parametrize("h,w,tile", [(37, 53, 2), (130, 97, 3), (203, 17, 2), (64, 64, 5), (45, 150, 8), (21, 22, 1)])
def test_tiny_tiles_match_whole_image(ref, h, w, tile):
    """Tiles of a few quarter-res pixels put many tile borders in every stage: no seams allowed."""
    g = torch.Generator().manual_seed(h * w)
    content, style = torch.rand(2, 3, h, w, generator=g), torch.rand(2, 3, 36, 41, generator=g)
    model = MicroAST.from_pretrained(backend="torch", tile_size=tile)
    with torch.no_grad():
        out = model(content, style, 0.8)
        assert_fp32_matches(out, ref(content, style, 0.8), reference64(ref)(content.double(), style.double(), 0.8),
                            f"{h}x{w} tile {tile}")


@pytest.mark.parametrize("maps", [1, 0])
def test_plans_that_recompute_match_whole_image(ref, maps):
    """Keeping one map or none (recomputing the encoder / first block per tile) changes nothing."""
    g = torch.Generator().manual_seed(maps)
    content, style = torch.rand(2, 3, 59, 70, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    model = MicroAST.from_pretrained(backend="torch")
    alpha = torch.tensor([0.3, 1.0]).view(2, 1, 1, 1)
    with torch.no_grad():
        stages = get_backend("torch").tile_stages(model)
        out = streaming.stylize(stages, content, model.encode_style(style), alpha, Plan(3, maps))
        expected = torch.cat([ref(content[i:i + 1], style, a) for i, a in enumerate((0.3, 1.0))])
        ref64 = reference64(ref)
        exact = torch.cat([ref64(content[i:i + 1].double(), style.double(), a) for i, a in enumerate((0.3, 1.0))])
    assert_fp32_matches(out, expected, exact, f"maps={maps}")


def test_budget_picks_the_fastest_plan_that_fits_and_refuses_what_cannot():
    four_k = (1, 2160, 4096, 4)
    assert plan_for_budget(*four_k, parse_bytes("1GB")) == Plan(96, 2)
    assert plan_for_budget(*four_k, parse_bytes("4GB")).tile > plan_for_budget(*four_k, parse_bytes("1GB")).tile
    # 16384x8640: input and output tensors 3.4 GB, one quarter-res map 2.3 GB.
    assert plan_for_budget(1, 8640, 16384, 4, parse_bytes("4GB")).maps == 0
    assert plan_for_budget(1, 8640, 16384, 4, parse_bytes("4GB"), io_bytes=16384 * 8640 * 3).maps == 1
    model = MicroAST.from_pretrained(backend="torch", max_memory="100MB")
    with pytest.raises(ValueError, match="more than max_memory=95 MiB"):
        model(torch.rand(1, 3, 2160, 4096), torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("text, value", [("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("800 MB", 8 * 10**8), (4096, 4096)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["", "-1GB", "2TB", "lots", 0, True])
def test_bad_budgets(bad):
    with pytest.raises(ValueError, match="memory budget"):
        MicroAST(max_memory=bad)


@pytest.mark.parametrize("bad", [-3, 2.5, True])
def test_bad_tile_size(bad):
    with pytest.raises(ValueError, match="tile_size"):
        MicroAST(tile_size=bad)


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
def test_peak_memory_within_budget():
    """Peak resident memory of a fresh process grows by no more than the budget while streaming
    (measured at 1024x2048: 179 MiB for 300MB, 349 MiB for 500MB)."""
    script = textwrap.dedent("""
        import resource, torch
        from microast_fast import MicroAST
        model = MicroAST.from_pretrained(backend="torch", max_memory="300MB")
        content = torch.rand(1, 3, 1024, 2048)
        with torch.inference_mode():
            signals = model.encode_style(torch.rand(1, 3, 64, 64))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - content.numel() * 4
            model(content, signals)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    """)
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown <= 300e6, f"{grown / 1e6:.0f} MB"


def test_cpu_inference_streams_by_default_and_tile_size_0_turns_it_off(monkeypatch):
    import microast_fast.streaming as streaming

    calls = []
    real = streaming.stylize
    monkeypatch.setattr(streaming, "stylize", lambda *a: calls.append(a[4].tile) or real(*a))
    monkeypatch.setattr(streaming, "CPU_TILE", 4)  # so that a small image spans several tiles
    content, style = torch.rand(1, 3, 40, 36), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        streamed = MicroAST.from_pretrained(backend="torch")(content, style)
        whole = MicroAST.from_pretrained(backend="torch", tile_size=0)(content, style)
    assert calls == [4]
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-4)
    MicroAST.from_pretrained(backend="torch").requires_grad_(True)(content, style)  # autograd: whole image
    assert calls == [4]


def test_explicit_streaming_under_autograd_is_refused():
    model = MicroAST.from_pretrained(backend="torch", tile_size=4).requires_grad_(True)
    with pytest.raises(ValueError, match="inference only"):
        model(torch.rand(1, 3, 40, 36), torch.rand(1, 3, 16, 16))


def test_generic_layer_forms_match_whole_image(ref):
    """The tile layers as they run off the CPU (published grouped convolutions, bilinear upsampling,
    plain 9x9), checked here on the CPU: streaming on a GPU rests on them."""
    g = torch.Generator().manual_seed(4)
    content, style = torch.rand(2, 3, 53, 46, generator=g), torch.rand(2, 3, 30, 33, generator=g)
    model = MicroAST.from_pretrained(backend="torch")
    stages = TorchTileStages(model, cpu_forms=False)
    assert not any(getattr(layer, "row_split", None) for layer in stages.tail_full)
    with torch.no_grad():
        out = streaming.stylize(stages, content, model.encode_style(style), 0.7, Plan(3))
        assert_fp32_matches(out, ref(content, style, 0.7), reference64(ref)(content.double(), style.double(), 0.7),
                            "generic tile layers")
