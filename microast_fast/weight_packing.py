"""Every layout the fused kernels take the model's weights in, each written once (torch only).

Both fused backends (Triton and CUDA) and the tests pack through these functions; which operands an op
takes, in which order, is its backend's business (``backends/triton_backend.py``,
``backends/cuda_backend.py``). Sizes that a kernel fixes (a padded GEMM depth, a segment width) are
arguments, passed by the backend from the kernel's own constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pack_conv_taps(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[c_out, c_in, k, k]`` -> ``[k * k taps, c_in, c_out]`` in ``dtype``: one GEMM operand per tap
    (tap = k * dy + dx)."""
    c_out, c_in, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh * kw, c_in, c_out).to(dtype).contiguous()


def pack_conv1x1(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[c_out, c_in, 1, 1]`` -> ``[c_in, c_out]``: the taps layout of a 1x1."""
    return pack_conv_taps(weight, dtype)[0]


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weight ``[c_out, c_in, k, k]`` of a grouped convolution: zero outside the groups."""
    c_out, c_in_group = weight.shape[:2]
    per_group = c_out // groups
    dense = weight.new_zeros(groups, per_group, groups, c_in_group, *weight.shape[2:])
    g = torch.arange(groups, device=weight.device)
    dense[g, :, g] = weight.view(groups, per_group, c_in_group, *weight.shape[2:])
    return dense.view(c_out, groups * c_in_group, *weight.shape[2:])


def pack_grouped_conv(weight: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """A grouped convolution as dense block-sparse GEMM operands ``[k * k taps, c_in, c_out]``: in fp32
    the zero products are exact, so a kernel computes the grouped sum in another order."""
    return pack_conv_taps(block_diagonal(weight, groups), dtype)


def pack_residual_block(block, dtype: torch.dtype, bias_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A ``ResidualLayer``'s two 64->64 3x3s: ``(w1, b1, w2, b2)``, weights in taps layout and ``dtype``
    (the maps'), biases in ``bias_dtype``."""
    convs = (block.conv1.conv_layer, block.conv2.conv_layer)
    return tuple(t for conv in convs for t in (pack_conv_taps(conv.weight, dtype), conv.bias.to(bias_dtype)))


def pack_conv9x9_im2col(weight: torch.Tensor, dtype: torch.dtype, rows: int | None = None) -> torch.Tensor:
    """The encoder head's 9x9 ``[c_out, 3, 9, 9]`` as one im2col GEMM operand ``[3 * 81, c_out]`` in
    ``dtype``: row ``ci * 81 + ky * 9 + kx``, zero rows past 243 up to ``rows`` (a tensor-core K)."""
    flat = weight.reshape(weight.shape[0], -1).t()
    if rows is not None:
        flat = F.pad(flat, (0, 0, 0, rows - flat.shape[0]))
    return flat.to(dtype).contiguous()


def pack_conv9x9_rows(weight: torch.Tensor, dtype: torch.dtype, row_k: int) -> torch.Tensor:
    """The encoder head's 9x9 ``[c_out, 3, 9, 9]`` as one GEMM operand per kernel row ``ky``:
    ``[9 * row_k, c_out]``, rows ``ky * row_k + ci * 9 + kx``, zero past 27 within a kernel row."""
    c_out, c_in, kh, kw = weight.shape
    rows = weight.permute(2, 1, 3, 0).reshape(kh, c_in * kw, c_out)  # [ky, ci * 9 + kx, c_out]
    return F.pad(rows, (0, 0, 0, row_k - c_in * kw)).reshape(-1, c_out).to(dtype).contiguous()


def pack_conv9x9_banded(weight: torch.Tensor, dtype: torch.dtype, segment: int, window: int) -> torch.Tensor:
    """The encoder head's 9x9 ``[c_out, 3, 9, 9]`` for ``segment`` consecutive output pixels of a row at
    once, each kernel row a GEMM against the ``window``-column input window they share:
    ``[9 * 4 * window, segment * c_out]``, row ``(ky * 4 + ci) * window + j`` (channel 3 zero), column
    ``xl * c_out + co``: ``weight[co, ci, ky, j - xl]`` where ``0 <= j - xl <= 8``, else zero."""
    c_out, c_in, kh, kw = weight.shape
    banded = weight.new_zeros(kh, 4, window, segment, c_out)
    for xl in range(segment):
        banded[:, :c_in, xl:xl + kw, xl, :] = weight.permute(2, 1, 3, 0)  # [ky, ci, kx, co]
    return banded.reshape(kh * 4 * window, segment * c_out).to(dtype).contiguous()


def pack_conv9x9_out(weight: torch.Tensor, dtype: torch.dtype, row_k: int | None = None) -> torch.Tensor:
    """The decoder tail's 9x9 ``[3, 16, 9, 9]`` -> ``[81 taps, 16 in, 16 out]`` in ``dtype``, outputs 3..15
    zero (the tensor cores' N is 16). With ``row_k``: one GEMM operand per kernel row,
    ``[9, row_k, 16]``, rows ``kx * 16 + ci`` zero past 144."""
    taps = F.pad(pack_conv_taps(weight, weight.dtype), (0, 16 - weight.shape[0]))
    if row_k is not None:
        taps = F.pad(taps.reshape(9, -1, 16), (0, 0, 0, row_k - 9 * weight.shape[1]))
    return taps.to(dtype).contiguous()


def pack_conv9x9_out_banded(weight: torch.Tensor, dtype: torch.dtype, segment: int) -> torch.Tensor:
    """The decoder tail's 9x9 ``[3, 16, 9, 9]`` for ``segment`` consecutive output pixels of a row at once,
    each kernel row a GEMM against the ``segment + 8`` pixels x 16 channels they read:
    ``[9, (segment + 8) * 16, segment * 4]``, row ``j * 16 + ci`` (window pixel j), column ``xl * 4 + co``
    (output 3 zero): ``weight[co, ci, ky, j - xl]`` where ``0 <= j - xl <= 8``, else zero."""
    c_out, c_in, kh, kw = weight.shape
    banded = weight.new_zeros(kh, segment + kw - 1, c_in, segment, 4)
    for xl in range(segment):
        banded[:, xl:xl + kw, :, xl, :c_out] = weight.permute(2, 3, 1, 0)  # [ky, kx, ci, co]
    return banded.reshape(kh, -1, segment * 4).to(dtype).contiguous()


def pack_modulator_pair(weight_branch: torch.nn.Sequential, bias_branch: torch.nn.Sequential):
    """Two Modulator branches -> depthwise weights ``[2, 9, 64]`` and biases ``[2, 64]``, fp32."""
    convs = [weight_branch[0].conv_layer, bias_branch[0].conv_layer]
    w = torch.stack([cv.weight.reshape(cv.weight.shape[0], 9).t() for cv in convs]).float().contiguous()
    b = torch.stack([cv.bias for cv in convs]).float().contiguous()
    return w, b


# Bilinear x2 (align_corners=False) seen from a 3x3 convolution on the upsampled map: for an output at
# phase ph (row 2i + ph), the weight of source row i + a (a = -1, 0, 1; the last index) in the
# upsampled row that the 3x3's tap d (d = -1, 0, 1; the middle index) reads. From u(2j) = h(j-1)/4 +
# 3h(j)/4 and u(2j+1) = 3h(j)/4 + h(j+1)/4.
_UP2_TAPS = torch.tensor([
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],  # phase 0: u(2i-1), u(2i), u(2i+1)
    [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]],  # phase 1: u(2i), u(2i+1), u(2i+2)
], dtype=torch.float64)


def up2_phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 ``[c_out, c_in, 3, 3]`` on a bilinear x2 upsampled map, as one 3x3 on the map before upsampling
    per output phase: float64 ``[2 row phases, 2 column phases, c_out, c_in, 3, 3]``. Exact away from the
    upsampled map's first and last rows and columns, where the 3x3's reflection at the upsampled level is
    not a fixed kernel."""
    taps = _UP2_TAPS.to(weight.device)
    return torch.einsum("oiyx,pya,qxb->pqoiab", weight.double(), taps, taps)


def compose_up2_grouped3x3(weight: torch.Tensor) -> torch.Tensor:
    """The decoder tail's grouped 3x3 ``[c_out, 2, 3, 3]`` (2 inputs a group) on a bilinear x2 upsampled map
    as the kernels take it: ``[4 phases (2 * row parity + column parity), 9 taps (source row i - 1..i + 1,
    column j - 1..j + 1), 2 * c_out (input channel 2 * o + i)]`` fp32. Each output then reads 9 source
    pixels instead of 36 and interpolates nothing; the kernels' general path covers the border."""
    phases = up2_phase_weights(weight)  # [p, q, o, i, a, b]
    return phases.permute(0, 1, 4, 5, 2, 3).reshape(4, 9, -1).float().contiguous()
