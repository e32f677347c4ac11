"""The weight layouts both fused backends share (microast_fast/weight_packing.py)."""

import torch
import torch.nn.functional as F

from microast_fast.weight_packing import compose_up2_grouped3x3, pack_conv_taps


def test_conv3x3_packing_is_one_gemm_operand_per_tap():
    weight = torch.randn(64, 64, 3, 3, generator=torch.Generator().manual_seed(1))
    packed = pack_conv_taps(weight, torch.float32)
    assert packed.shape == (9, 64, 64) and torch.equal(packed[3 * 1 + 2], weight[:, :, 1, 2].t())


def test_up2_grouped3x3_phases_compose_the_upsampling_with_the_convolution():
    """compose_up2_grouped3x3's per-phase 3x3 kernels on the map before upsampling give the grouped 3x3 on
    the bilinear x2 upsampled map at every pixel but the upsampled map's border (the kernels' general
    path), with the source clamped at its edge as bilinear x2 clamps it."""
    g = torch.Generator().manual_seed(2)
    x, weight = torch.randn(2, 64, 7, 9, generator=g, dtype=torch.float64), torch.randn(32, 2, 3, 3, generator=g)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    expected = F.conv2d(F.pad(up, (1, 1, 1, 1), mode="reflect"), weight.double(), groups=32)
    phases = compose_up2_grouped3x3(weight).double().reshape(4, 3, 3, 32, 2)  # [phase, a, b, out, in of group]
    source = F.pad(x, (1, 1, 1, 1), mode="replicate")
    for phase in range(4):
        py, px = divmod(phase, 2)
        kernel = phases[phase].permute(2, 3, 0, 1)  # [out, in of group, 3, 3]
        got = F.conv2d(source, kernel, groups=32)  # at source pixel (i, j): upsampled (2i + py, 2j + px)
        interior = expected[:, :, py::2, px::2][:, :, 1 - py:7 - py, 1 - px:9 - px]
        torch.testing.assert_close(got[:, :, 1 - py:7 - py, 1 - px:9 - px], interior, rtol=0, atol=1e-5)
