"""Modulator: depthwise 3x3 (g=64) + global average pool, two branches (weight, bias) on one map.

``pool(conv(x))`` for both branches of one style feature map in a single pass: each program owns one
sample and walks all its pixels, so the pooled sum is one deterministic reduction (no atomics, no
second pass). It runs once per style image, on the quarter-res map: a few hundred iterations for
a 512x512 style.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import autotune_configs, check_map_dtype, reflect


@triton.autotune(
    configs=autotune_configs(
        [triton.Config({"BLOCK_P": 64}, num_warps=4), triton.Config({"BLOCK_P": 128}, num_warps=8)],
        triton.Config({"BLOCK_P": 256}, num_warps=4),
    ),
    key=["H", "W"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
)
@triton.jit
def modulator_pool_kernel(x_ptr, w_ptr, b_ptr, out_ptr, H, W, C: tl.constexpr, BLOCK_P: tl.constexpr):
    # grid: (N,). x NHWC [N, H, W, C]; w [2, 9, C] (branch, tap, channel); b [2, C]; out [N, 2, C] fp32.
    n = tl.program_id(0)
    c = tl.arange(0, C)
    src = x_ptr + n.to(tl.int64) * H * W * C
    sum0 = tl.zeros([BLOCK_P, C], tl.float32)
    sum1 = tl.zeros([BLOCK_P, C], tl.float32)
    for p0 in range(0, H * W, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        valid = p < H * W
        py = p // W
        px = p % W
        for tap in range(9):  # a runtime loop: unrolled, the nine gathers are hoisted and spill
            iy = reflect(py + (tap // 3 - 1), H)
            ix = reflect(px + (tap % 3 - 1), W)
            v = tl.load(src + (iy * W + ix)[:, None] * C + c[None, :], mask=valid[:, None], other=0.0)
            v = v.to(tl.float32)
            sum0 += v * tl.load(w_ptr + tap * C + c).to(tl.float32)[None, :]
            sum1 += v * tl.load(w_ptr + 9 * C + tap * C + c).to(tl.float32)[None, :]
    area = (H * W).to(tl.float32)
    out0 = tl.div_rn(tl.sum(sum0, axis=0), area) + tl.load(b_ptr + c).to(tl.float32)
    out1 = tl.div_rn(tl.sum(sum1, axis=0), area) + tl.load(b_ptr + C + c).to(tl.float32)
    tl.store(out_ptr + n * 2 * C + c, out0)
    tl.store(out_ptr + n * 2 * C + C + c, out1)


@torch.library.custom_op("microast::modulator_pool", mutates_args=())
def modulator_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """NHWC ``x`` [N, H, W, 64] -> ``[N, 2, 64]`` fp32: per branch, the mean over pixels of the depthwise conv."""
    check_map_dtype(x)
    n, h, w, c = x.shape
    out = torch.empty(n, 2, c, device=x.device, dtype=torch.float32)
    modulator_pool_kernel[(n,)](x, weight, bias, out, h, w, C=c)
    return out


@modulator_pool.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], 2, x.shape[3], dtype=torch.float32)
