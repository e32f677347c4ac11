"""Weight layouts shared by the fused backends' kernels (torch only: the CUDA backend needs no triton)."""

from __future__ import annotations

import torch


def pack_conv3x3_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[c_out, c_in, 3, 3]`` -> ``[9, c_in, c_out]`` in ``dtype``: one GEMM operand per tap
    (tap = 3 * dy + dx), as the Triton and CUDA residual blocks take it."""
    return weight.permute(2, 3, 1, 0).reshape(9, weight.shape[1], weight.shape[0]).to(dtype).contiguous()
