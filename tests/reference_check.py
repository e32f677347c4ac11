"""The fp32 comparison rule of MICROAST_SPEC.md ("Tolerances: the fp32 noise floor"), in one place.

Two correct fp32 implementations differ by summation order alone. On small shapes they usually agree
to 1e-5; where they do not, the honest judge is a float64 run of the reference: the fast path must be
no further from it than twice the fp32 reference's own distance, and within 1e-4 absolute.
Half-precision paths are judged by the 8-bit images they save (``psnr_8bit``).
"""

import math

import torch

from microast_fast import MicroASTReference

TIGHT = 1e-5
CEILING = 1e-4


def reference64(reference: MicroASTReference) -> MicroASTReference:
    device = next(reference.parameters()).device
    ref64 = MicroASTReference().to(device, torch.float64)
    ref64.load_state_dict({k: v.double() for k, v in reference.state_dict().items()})
    return ref64.eval()


def assert_fp32_matches(out: torch.Tensor, ref_out: torch.Tensor, ref64_out: torch.Tensor, what: str = "") -> None:
    assert out.shape == ref_out.shape, (out.shape, ref_out.shape)
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    err = (out.double() - ref_out.double()).abs().max().item()
    if err <= TIGHT:
        return
    ours = (out.double() - ref64_out).abs().max().item()
    own = (ref_out.double() - ref64_out).abs().max().item()
    assert err <= CEILING and ours <= 2 * own, (
        f"{what}: max|fast - ref| = {err:.3g}; distance to float64: fast {ours:.3g}, fp32 reference {own:.3g}"
    )


def psnr_8bit(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR of the images as the published script saves them: x * 255 + 0.5, clamped, truncated."""
    def to8(t):
        return (t.float() * 255 + 0.5).clamp(0, 255).floor()
    mse = (to8(x) - to8(y)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)
