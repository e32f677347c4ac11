"""Modulator: depthwise 3x3 (g=64) + global average pool, two branches (weight, bias) on one map.

``pool(conv(x))`` for both branches of one style feature map in a single pass: each program owns one
sample and walks all its pixels, so the pooled sum is one deterministic reduction (no atomics, no
second pass). It runs once per style image, on the quarter-res map: a few hundred iterations for
a 512x512 style. ``modulator_pool_split`` (``microast::modulator_pool_split``) computes the same in
two passes: many programs each sum a block of pixels, then one program a sample adds the blocks up in
order (still deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import autotune_configs, check_map_dtype, launched_config, reflect


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


@triton.autotune(
    configs=autotune_configs(
        # 16 pixel-channels a thread in each [BLOCK_P, C] tile: at 32, the form for unaligned pointers
        # (scalar gathers) takes 255 registers and spills in the tap loop on sm_90.
        [triton.Config({"BLOCK_P": 32}, num_warps=4), triton.Config({"BLOCK_P": 64}, num_warps=8),
         triton.Config({"BLOCK_P": 128}, num_warps=16)],
        triton.Config({"BLOCK_P": 256}, num_warps=4),
    ),
    key=["H", "W"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
)
@triton.jit
def modulator_pool_partial_kernel(x_ptr, w_ptr, part_ptr, H, W, C: tl.constexpr, BLOCK_P: tl.constexpr):
    # grid: (pixel blocks, N). Pass 1: part [N, blocks, 2, C] fp32, per branch the conv's sum over
    # the block's BLOCK_P pixels (x and w as in modulator_pool_kernel).
    blk = tl.program_id(0)
    n = tl.program_id(1)
    c = tl.arange(0, C)
    src = x_ptr + n.to(tl.int64) * H * W * C
    p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    valid = p < H * W
    py = p // W
    px = p % W
    sum0 = tl.zeros([BLOCK_P, C], tl.float32)
    sum1 = tl.zeros([BLOCK_P, C], tl.float32)
    for tap in range(9):  # a runtime loop, as in modulator_pool_kernel
        iy = reflect(py + (tap // 3 - 1), H)
        ix = reflect(px + (tap % 3 - 1), W)
        v = tl.load(src + (iy * W + ix)[:, None] * C + c[None, :], mask=valid[:, None], other=0.0)
        v = v.to(tl.float32)
        sum0 += v * tl.load(w_ptr + tap * C + c)[None, :]
        sum1 += v * tl.load(w_ptr + 9 * C + tap * C + c)[None, :]
    out = part_ptr + (n * tl.num_programs(0) + blk).to(tl.int64) * (2 * C)
    tl.store(out + c, tl.sum(sum0, axis=0))
    tl.store(out + C + c, tl.sum(sum1, axis=0))


@triton.jit
def modulator_pool_sum_kernel(part_ptr, b_ptr, out_ptr, blocks, H, W, C: tl.constexpr, BLOCK_B: tl.constexpr):
    # grid: (N,). Pass 2: the blocks' sums in a fixed order, divided by the area, plus the bias.
    n = tl.program_id(0)
    c = tl.arange(0, C)
    base = part_ptr + n.to(tl.int64) * blocks * (2 * C)
    sum0 = tl.zeros([BLOCK_B, C], tl.float32)
    sum1 = tl.zeros([BLOCK_B, C], tl.float32)
    for b0 in range(0, blocks, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B)
        m = (b < blocks)[:, None]
        ptrs = base + b[:, None] * (2 * C) + c[None, :]
        sum0 += tl.load(ptrs, mask=m, other=0.0)
        sum1 += tl.load(ptrs + C, mask=m, other=0.0)
    area = (H * W).to(tl.float32)
    tl.store(out_ptr + n * 2 * C + c, tl.div_rn(tl.sum(sum0, axis=0), area) + tl.load(b_ptr + c))
    tl.store(out_ptr + n * 2 * C + C + c, tl.div_rn(tl.sum(sum1, axis=0), area) + tl.load(b_ptr + C + c))


def launch_modulator_pool_split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                block_b: int = 64) -> torch.Tensor:
    """The two passes of ``modulator_pool_split``; ``block_b`` pixel blocks per step of the second."""
    check_map_dtype(x)
    n, h, w, c = x.shape
    # Sized for the config with the most blocks: the autotuner picks one on the first launch.
    most = max(triton.cdiv(h * w, cfg.kwargs["BLOCK_P"]) for cfg in modulator_pool_partial_kernel.configs)
    partials = torch.empty(n, most, 2, c, device=x.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(h * w, meta["BLOCK_P"]), n)

    modulator_pool_partial_kernel[grid](x, weight, partials, h, w, C=c)
    blocks = triton.cdiv(h * w, launched_config(modulator_pool_partial_kernel)["BLOCK_P"])
    out = torch.empty(n, 2, c, device=x.device, dtype=torch.float32)
    modulator_pool_sum_kernel[(n,)](partials, bias, out, blocks, h, w, C=c, BLOCK_B=block_b)
    return out


@torch.library.custom_op("microast::modulator_pool_split", mutates_args=())
def modulator_pool_split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``microast::modulator_pool`` (same arguments and result) as many programs and a second pass."""
    return launch_modulator_pool_split(x, weight, bias)


@modulator_pool_split.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], 2, x.shape[3], dtype=torch.float32)
