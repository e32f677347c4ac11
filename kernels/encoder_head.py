"""Encoder head: image ``[N, 3, H, W]`` -> quarter-resolution 64-channel NHWC map.

    9x9 conv 3->16 + ReLU, grouped (g=16) stride-2 3x3 16->32 + ReLU, 1x1 32->32 + ReLU   (kernel 1)
    grouped (g=32) stride-2 3x3 32->64 + ReLU, 1x1 64->64 + ReLU                          (kernel 2)

STAGED DESIGN (first step): kernel 1 writes the half-resolution 32-channel map to global memory and
kernel 2 reads it back. The full-resolution 16-channel map never exists: kernel 1 recomputes the 9x9
convolution at each of the 9 full-resolution positions its stride-2 taps read (2.25x the 9x9 work,
as an im2col GEMM on the tensor cores), which is cheaper than staging it. Fusing kernel 2 in would need
the half-res map on a 1-pixel halo of the quarter-res tile (not done yet).

Grouped convolutions run as ``tl.dot`` with a block-sparse per-tap matrix (``pack_grouped_conv``):
in fp32 the zero products are exact, so the result is the grouped sum in another order.
Each level reflects at its own border: the 9x9 at full resolution, the stride-2 taps at the level
they read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..weight_packing import IM2COL_ROWS, pack_conv9x9_im2col
from ._common import autotune_configs, check_map_dtype, reflect, tile_pixels

IM2COL_K = tl.constexpr(IM2COL_ROWS)  # 3 * 9 * 9 = 243 taps of the 9x9 conv, padded to a power of two with zero weights


@triton.autotune(
    configs=autotune_configs(
        [triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 32}, num_warps=4),
         triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK_K": 32}, num_warps=8),
         # 8 warps and 2 stages: with 4 warps Triton 3.6 spills 12 bytes in fp32 on sm_90, with 3
         # stages Triton 3.9 spills 4 bytes in fp32 on sm_80
         triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 64}, num_warps=8, num_stages=2)],
        triton.Config({"TILE_H": 32, "TILE_W": 32, "BLOCK_K": 256}, num_warps=4),
    ),
    key=["H", "W"],
)
@triton.jit
def encoder_head_half_kernel(
    img_ptr, stride_n, stride_c, stride_h, stride_w,
    w9_ptr, b9_ptr, wg_ptr, bg_ptr, w1_ptr, b1_ptr, out_ptr,
    H, W, H2, W2,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: (tiles of the half-res map, N). Output NHWC [N, H2, W2, 32].
    tile = tl.program_id(0)
    n = tl.program_id(1)
    py, px, valid = tile_pixels(tile, H2, W2, TILE_H, TILE_W)
    c16 = tl.arange(0, 16)
    c32 = tl.arange(0, 32)
    img = img_ptr + n.to(tl.int64) * stride_n
    b9 = tl.load(b9_ptr + c16).to(tl.float32)

    # Runtime loops (taps, im2col chunks): unrolled, the compiler hoists every gather and spills.
    acc32 = tl.zeros([TILE_H * TILE_W, 32], tl.float32)
    for tap in range(9):
        # full-res position read by this stride-2 tap, reflected at the full-res border
        fy = reflect(2 * py + (tap // 3 - 1), H)
        fx = reflect(2 * px + (tap % 3 - 1), W)
        acc16 = tl.zeros([TILE_H * TILE_W, 16], tl.float32)
        for k0 in range(0, IM2COL_K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            ci = k // 81
            ky = (k % 81) // 9
            kx = k % 9
            iy = reflect(fy[:, None] + ky[None, :] - 4, H)
            ix = reflect(fx[:, None] + kx[None, :] - 4, W)
            a = tl.load(img + ci[None, :] * stride_c + iy * stride_h + ix * stride_w,
                        mask=valid[:, None] & (k < 243)[None, :], other=0.0)
            wk = tl.load(w9_ptr + k[:, None] * 16 + c16[None, :])
            acc16 = tl.dot(a.to(wk.dtype), wk, acc16, input_precision="ieee")
        f16 = tl.maximum(acc16 + b9[None, :], 0.0)
        wg = tl.load(wg_ptr + tap * 16 * 32 + c16[:, None] * 32 + c32[None, :])
        acc32 = tl.dot(f16.to(wg.dtype), wg, acc32, input_precision="ieee")

    h = tl.maximum(acc32 + tl.load(bg_ptr + c32).to(tl.float32)[None, :], 0.0)
    w1 = tl.load(w1_ptr + c32[:, None] * 32 + c32[None, :])
    h = tl.dot(h.to(w1.dtype), w1, input_precision="ieee") + tl.load(b1_ptr + c32).to(tl.float32)[None, :]
    h = tl.maximum(h, 0.0)
    offs = n.to(tl.int64) * H2 * W2 * 32 + (py * W2 + px)[:, None] * 32 + c32[None, :]
    tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=valid[:, None])


@triton.autotune(
    configs=autotune_configs(
        # 8 warps for 64 pixels: the fp32 1x1 (64x64, FMA dot) spills on sm_80 with 4 warps.
        [triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 16}, num_warps=8),
         triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 32}, num_warps=8)],
        triton.Config({"TILE_H": 16, "TILE_W": 16, "BLOCK_K": 32}, num_warps=4),
    ),
    key=["H2", "W2"],
)
@triton.jit
def encoder_head_quarter_kernel(
    x_ptr, wg_ptr, bg_ptr, w1_ptr, b1_ptr, out_ptr,
    H2, W2, H4, W4,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: (tiles of the quarter-res map, N). In NHWC [N, H2, W2, 32], out NHWC [N, H4, W4, 64].
    tile = tl.program_id(0)
    n = tl.program_id(1)
    py, px, valid = tile_pixels(tile, H4, W4, TILE_H, TILE_W)
    c32 = tl.arange(0, 32)
    c64 = tl.arange(0, 64)
    src = x_ptr + n.to(tl.int64) * H2 * W2 * 32

    kc = tl.arange(0, BLOCK_K)
    acc = tl.zeros([TILE_H * TILE_W, 64], tl.float32)
    for kk in range(9 * (32 // BLOCK_K)):  # (tap, channel chunk), a runtime loop (see the half kernel)
        tap = kk // (32 // BLOCK_K)
        k0 = (kk % (32 // BLOCK_K)) * BLOCK_K
        iy = reflect(2 * py + (tap // 3 - 1), H2)
        ix = reflect(2 * px + (tap % 3 - 1), W2)
        v = tl.load(src + (iy * W2 + ix)[:, None] * 32 + (k0 + kc)[None, :], mask=valid[:, None], other=0.0)
        wg = tl.load(wg_ptr + tap * 32 * 64 + (k0 + kc)[:, None] * 64 + c64[None, :])
        acc = tl.dot(v.to(wg.dtype), wg, acc, input_precision="ieee")
    h = tl.maximum(acc + tl.load(bg_ptr + c64).to(tl.float32)[None, :], 0.0)
    w1 = tl.load(w1_ptr + c64[:, None] * 64 + c64[None, :])
    h = tl.dot(h.to(w1.dtype), w1, input_precision="ieee") + tl.load(b1_ptr + c64).to(tl.float32)[None, :]
    h = tl.maximum(h, 0.0)
    offs = n.to(tl.int64) * H4 * W4 * 64 + (py * W4 + px)[:, None] * 64 + c64[None, :]
    tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=valid[:, None])


def pack_grouped_conv(weight: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Grouped ``[c_out, c_in / groups, k, k]`` -> dense block-sparse ``[k*k, c_in, c_out]`` GEMM operands."""
    c_out, per_group, kh, kw = weight.shape
    c_in = per_group * groups
    out_per_group = c_out // groups
    dense = weight.new_zeros(kh * kw, c_in, c_out)
    taps = weight.reshape(c_out, per_group, kh * kw).permute(2, 1, 0)  # [tap, j, c_out]
    for j in range(per_group):
        ci = (torch.arange(c_out, device=weight.device) // out_per_group) * per_group + j
        dense[:, ci, torch.arange(c_out, device=weight.device)] = taps[:, j, :]
    return dense.to(dtype).contiguous()


def pack_conv1x1(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[c_out, c_in, 1, 1]`` -> ``[c_in, c_out]``."""
    return weight[:, :, 0, 0].t().to(dtype).contiguous()


def pack_encoder_head(enc1: torch.nn.Sequential, dtype: torch.dtype) -> list[torch.Tensor]:
    """The ten operands of ``encoder_head`` from an ``Encoder.enc1`` (layers 0, 2, 4, 6, 8)."""
    conv = [enc1[i].conv_layer for i in (0, 2, 4, 6, 8)]
    return [
        pack_conv9x9_im2col(conv[0].weight, dtype), conv[0].bias,
        pack_grouped_conv(conv[1].weight, 16, dtype), conv[1].bias,
        pack_conv1x1(conv[2].weight, dtype), conv[2].bias,
        pack_grouped_conv(conv[3].weight, 32, dtype), conv[3].bias,
        pack_conv1x1(conv[4].weight, dtype), conv[4].bias,
    ]


@torch.library.custom_op("microast::encoder_head", mutates_args=())
def encoder_head(
    image: torch.Tensor, w9: torch.Tensor, b9: torch.Tensor, wg1: torch.Tensor, bg1: torch.Tensor,
    w1: torch.Tensor, b1: torch.Tensor, wg2: torch.Tensor, bg2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
) -> torch.Tensor:
    """``image`` [N, 3, H, W] (any strides) -> NHWC [N, ceil(H/4), ceil(W/4), 64] in the image's dtype."""
    check_map_dtype(image)
    n, _, h, w = image.shape
    half_h, half_w = triton.cdiv(h, 2), triton.cdiv(w, 2)
    quarter_h, quarter_w = triton.cdiv(half_h, 2), triton.cdiv(half_w, 2)
    half = image.new_empty(n, half_h, half_w, 32)

    def half_grid(meta):
        return (triton.cdiv(half_h, meta["TILE_H"]) * triton.cdiv(half_w, meta["TILE_W"]), n)

    def quarter_grid(meta):
        return (triton.cdiv(quarter_h, meta["TILE_H"]) * triton.cdiv(quarter_w, meta["TILE_W"]), n)

    encoder_head_half_kernel[half_grid](image, *image.stride(), w9, b9, wg1, bg1, w1, b1, half, h, w, half_h, half_w)
    out = image.new_empty(n, quarter_h, quarter_w, 64)
    encoder_head_quarter_kernel[quarter_grid](half, wg2, bg2, w2, b2, out, half_h, half_w, quarter_h, quarter_w)
    return out


@encoder_head.register_fake
def _(image, w9, b9, wg1, bg1, w1, b1, wg2, bg2, w2, b2):
    n, _, h, w = image.shape
    return image.new_empty(n, (h + 3) // 4, (w + 3) // 4, 64)
