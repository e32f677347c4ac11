"""The reference against the outputs of the published implementation (tests/data/official_outputs.pt)."""

from pathlib import Path

import pytest
import torch

from microast_fast import MicroASTReference

from reference_check import reference64

GOLDEN = torch.load(Path(__file__).parent / "data" / "official_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained()


def run(ref, case):
    with torch.no_grad():
        return ref(GOLDEN[f"{case}_content"], GOLDEN[f"{case}_style"], float(GOLDEN[f"{case}_alpha"]))


def test_parameter_count(ref):
    assert sum(p.numel() for p in ref.parameters()) == 471_987


def test_intermediates_match_published(ref):
    """Same operations in the same order: 1e-5 (measured: at most 1.7e-6)."""
    with torch.no_grad():
        s0, s1 = ref.style_encoder(GOLDEN["a_style"])
        _, c1 = ref.content_encoder(GOLDEN["a_content"])
        (w_a, b_a), (w_b, b_b) = ref.modulator((s0, s1))
    pairs = {
        "content_feat1": c1, "style_feat0": s0, "style_feat1": s1,
        "filter_w0": w_a, "filter_b0": b_a, "filter_w1": w_b, "filter_b1": b_b,
    }
    for name, value in pairs.items():
        torch.testing.assert_close(value, GOLDEN[f"a_{name}"], rtol=0, atol=1e-5, msg=name)


def test_output_matches_published_case_a(ref):
    out = run(ref, "a")
    assert out.shape == (1, 3, 40, 56)  # 4*ceil(37/4) x 4*ceil(53/4)
    torch.testing.assert_close(out, GOLDEN["a_output"], rtol=0, atol=1e-5)  # measured 4.5e-6


@pytest.mark.parametrize("case", ["b", "c"])
def test_output_matches_published_noise_floor(ref, case):
    """Cases b and c reach output values of 14, where the fp32 convolutions of this machine and of the
    machine that wrote the golden file differ by summation order. Measured here: |ref - golden| 3.3e-5 (b)
    and 3.1e-5 (c), while the golden file itself is 2.6e-5 / 2.4e-5 from a float64 run and the reference
    2.8e-5 / 2.7e-5 (identical with oneDNN off, 1 or 2 threads). So the golden's 1e-5 cannot hold at this
    scale; the rule of the spec applies: no further from float64 than twice the golden's own error, and
    within 1e-4 of the golden."""
    out = run(ref, case)
    with torch.no_grad():
        exact = reference64(ref)(GOLDEN[f"{case}_content"].double(), GOLDEN[f"{case}_style"].double(),
                                 float(GOLDEN[f"{case}_alpha"]))
    golden = GOLDEN[f"{case}_output"]
    assert out.shape == golden.shape
    assert (out - golden).abs().max() <= 1e-4
    assert (out.double() - exact).abs().max() <= 2 * (golden.double() - exact).abs().max()


def test_output_size_rule(ref):
    with torch.no_grad():
        out = ref(torch.rand(1, 3, 5, 9), torch.rand(1, 3, 6, 7))
    assert out.shape == (1, 3, 8, 12)
