"""Weight layouts shared by the fused backends' kernels (torch only: the CUDA backend needs no triton)."""

from __future__ import annotations

import torch


def pack_conv3x3_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[c_out, c_in, 3, 3]`` -> ``[9, c_in, c_out]`` in ``dtype``: one GEMM operand per tap
    (tap = 3 * dy + dx), as the Triton and CUDA residual blocks take it."""
    return weight.permute(2, 3, 1, 0).reshape(9, weight.shape[1], weight.shape[0]).to(dtype).contiguous()


# The encoder head's 9x9 as an im2col GEMM: its 3 * 81 = 243 taps, zero-padded to whole products.
IM2COL_ROWS = 256


def pack_conv9x9_im2col(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The head's 9x9 ``[c_out, 3, 9, 9]`` -> ``[256, c_out]`` in ``dtype``: row ``ci * 81 + ky * 9 + kx``,
    zero rows past 243; the B operand of the Triton head's ``tl.dot`` and of the CUDA head's tensor cores."""
    rows = weight.reshape(weight.shape[0], -1).t()
    return torch.nn.functional.pad(rows, (0, 0, 0, IM2COL_ROWS - rows.shape[0])).to(dtype).contiguous()


# Bilinear x2 (align_corners=False) away from the border: upsampled row 2i + parity at offset d = -1, 0, 1
# (the 3x3's taps) as weights on source rows i - 1, i, i + 1.
_UP2_TAPS = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],   # even rows
                          [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]]],  # odd rows
                         dtype=torch.float64)


def compose_up2_grouped3x3(weight: torch.Tensor) -> torch.Tensor:
    """A grouped 3x3 ``[C_out, 2, 3, 3]`` (2 inputs a group) on a bilinear x2 upsampled map, as one 3x3
    on the map before upsampling per output phase: ``[4 phases (2 * row parity + column parity), 9 taps
    (source row i - 1..i + 1, column j - 1..j + 1), 2 * C_out input channels]`` fp32, composed in
    float64. Exact away from the upsampled map's first and last rows and columns, where the 3x3's
    reflection at the upsampled level is not a fixed kernel (the kernels' general path covers those):
    each bilinear x2 + grouped 3x3 of the decoder tail then reads 9 source pixels instead of 36 and
    interpolates nothing."""
    taps = _UP2_TAPS.to(weight.device)
    composed = torch.einsum("oiyx,pya,qxb->pqaboi", weight.double(), taps, taps)
    return composed.reshape(4, 9, -1).float().contiguous()  # (o, i) -> input channel 2 * o + i
