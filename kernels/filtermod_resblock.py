"""The 64-channel residual block at quarter resolution, with or without FeatMod / FilterMod.

Plain (encoders):   ``out = x + conv2(relu(conv1(x)))``.
Decoder form:       ``x' = A * x + B``  (FeatMod + alpha as one per-(n, c) affine, MICROAST_SPEC.md)
                    ``y3 = relu(w * conv1(x') + b * x')``,  ``out = x' + w * conv2(y3) + b * y3``.

Two launches of one kernel (``SECOND`` selects the epilogue): conv1 + FilterMod + ReLU, then
conv2 + FilterMod + residual + the next FeatMod's statistics partials. The 64-channel intermediate
``y3`` goes through global memory once; a single launch with a 2-pixel halo would avoid that (not done).

Each 3x3 convolution is an implicit GEMM: per tap, a ``[pixels, 64]`` tile gathered at reflected
coordinates (no padded copy) times the ``[64, 64]`` tap weight on ``tl.dot``, fp32 accumulation.
The affine ``A * x + B`` commutes with reflection padding, so it is applied as the tile is loaded,
to the conv input (conv1) and to the skip term (conv2): the normalised map never exists.
Maps are NHWC ``[N, H, W, 64]`` so that each pixel's channels are one contiguous load.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._common import (ConfigsByMapDtype, autotune_configs, check_map_dtype, partial_sum_end, partial_sum_start,
                      reflect, tile_pixels)
from .instance_stats import (PARTIAL_FIELDS, max_tiles, launched_tiles, merge_partials, merge_partials_split,
                             tile_partial_stats)

CHANNELS = 64


@triton.jit
def featmod_affine(n, c, x_mean_ptr, x_std_ptr, s_mean_ptr, s_std_ptr, style_stride, alpha_ptr, alpha_stride,
                   C: tl.constexpr):
    """``alpha * FeatMod(x) + (1 - alpha) * x = A * x + B`` per channel of sample ``n`` (fp32)."""
    x_mean = tl.load(x_mean_ptr + n * C + c)
    x_std = tl.load(x_std_ptr + n * C + c)
    s_mean = tl.load(s_mean_ptr + n * style_stride + c).to(tl.float32)
    s_std = tl.load(s_std_ptr + n * style_stride + c).to(tl.float32)
    alpha = tl.load(alpha_ptr + n * alpha_stride).to(tl.float32)
    ratio = tl.div_rn(s_std, x_std)  # rounded as torch rounds it (``/`` is div.full.f32 on a GPU)
    return alpha * ratio + (1.0 - alpha), alpha * (s_mean - x_mean * ratio)


@triton.jit
def featmod_affine_kernel(x_mean_ptr, x_std_ptr, s_mean_ptr, s_std_ptr, style_stride, alpha_ptr, alpha_stride,
                          affine_ptr, C: tl.constexpr):
    """grid (N,): ``affine`` [N, 2, C] fp32, rows A and B of ``featmod_affine``, computed once per block
    rather than in every (tap, channel chunk) step of the convolution that applies them on load (which
    made conv1 of the decoder blocks several times the instructions of a plain convolution)."""
    n = tl.program_id(0)
    c = tl.arange(0, C)
    a, b = featmod_affine(n, c, x_mean_ptr, x_std_ptr, s_mean_ptr, s_std_ptr, style_stride, alpha_ptr,
                          alpha_stride, C)
    tl.store(affine_ptr + n * 2 * C + c, a)
    tl.store(affine_ptr + n * 2 * C + C + c, b)


# The epilogue holds a few [pixels, 64] fp32 tiles: at most 16 pixel-channels per thread
# (pixels * 64 / threads), hence 8 warps on 8x8 tiles: with 4 (32 per thread) the fullest
# variant spills (docs/kernel_notes.md; tests/test_triton_compile.py).
FP32_CONFIG = triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 16}, num_warps=8)
# fp32's per-tap partial sums (below) hold 16 more registers a thread: with BLOCK_K=32 that spills on
# sm_90, so fp32 maps use the BLOCK_K=16 config.
WIDE_K_CONFIG = triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 32}, num_warps=8)
# Variant "triton+wide-tiles" (``resblock_conv3x3_wide_kernel``), half maps: 8x16 tiles, twice the M
# of each tap's product, at 32 pixel-channels a thread in the epilogue's tiles (72-162 registers on
# sm_90). 16x16 tiles spill in the K loop of some of the kernel's forms (16 warps: 128 registers).
WIDE_TILE_CONFIGS = [triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK_K": 32}, num_warps=8)]


def _autotuned(configs, fp32_only, half_only, interpreter_tile):
    return triton.autotune(
        configs=autotune_configs(configs, triton.Config({"TILE_H": interpreter_tile[0], "TILE_W": interpreter_tile[1],
                                                         "BLOCK_K": 64}, num_warps=4)),
        key=["H", "W"],
        cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
        prune_configs_by={"early_config_prune": ConfigsByMapDtype("in_ptr", fp32_only, half_only)},
    )


@triton.jit
def resblock_conv3x3(
    in_ptr, skip_ptr, w_ptr, bias_ptr, out_ptr, part_ptr, affine_ptr,
    filt_w_ptr, filt_b_ptr, filt_stride,
    H, W,
    SECOND: tl.constexpr, FEATMOD: tl.constexpr, FILTERMOD: tl.constexpr, STATS: tl.constexpr,
    C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: (tiles of one sample, N). A tile never spans two samples, so its statistics partial is
    # one sample's.
    tile = tl.program_id(0)
    n = tl.program_id(1)
    py, px, valid = tile_pixels(tile, H, W, TILE_H, TILE_W)
    c = tl.arange(0, C)
    sample = n.to(tl.int64) * H * W * C

    # K loop: taps, then channel chunks, both runtime loops, so the compiler neither unrolls nor hoists
    # the nine gathers (which cost 255 registers and spills when unrolled), and BLOCK_K keeps the fp32
    # FMA-based dot's per-thread operands small.
    kc = tl.arange(0, BLOCK_K)
    acc = tl.zeros([TILE_H * TILE_W, C], tl.float32)
    for tap in range(9):
        iy = reflect(py + (tap // 3 - 1), H)
        ix = reflect(px + (tap % 3 - 1), W)
        part = partial_sum_start(acc, in_ptr.dtype.element_ty == tl.float32)  # fp32: per tap (64 products)
        for k0 in range(0, C, BLOCK_K):
            v = tl.load(in_ptr + sample + (iy * W + ix)[:, None] * C + (k0 + kc)[None, :], mask=valid[:, None],
                        other=0.0)
            v = v.to(tl.float32)
            if FEATMOD and not SECOND:
                a_k = tl.load(affine_ptr + n * 2 * C + k0 + kc)
                b_k = tl.load(affine_ptr + n * 2 * C + C + k0 + kc)
                v = v * a_k[None, :] + b_k[None, :]
            w_tap = tl.load(w_ptr + tap * C * C + (k0 + kc)[:, None] * C + c[None, :])  # [c_in chunk, c_out]
            # "ieee": exact fp32 products (TF32 would lose the 1e-4 contract); no effect on half operands.
            part = tl.dot(v.to(w_tap.dtype), w_tap, part, input_precision="ieee")
        acc = partial_sum_end(acc, part, in_ptr.dtype.element_ty == tl.float32)

    if FEATMOD:
        a = tl.load(affine_ptr + n * 2 * C + c)
        b = tl.load(affine_ptr + n * 2 * C + C + c)
    y = acc + tl.load(bias_ptr + c).to(tl.float32)[None, :]
    offs = sample + (py * W + px)[:, None] * C + c[None, :]
    if FILTERMOD:
        # FilterMod's ``b * x`` term: the (modulated) conv input at the output pixel, reloaded here
        # rather than kept live through the K loop.
        centre = tl.load(in_ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)
        if FEATMOD and not SECOND:
            centre = centre * a[None, :] + b[None, :]
        fw = tl.load(filt_w_ptr + n * filt_stride + c).to(tl.float32)
        fb = tl.load(filt_b_ptr + n * filt_stride + c).to(tl.float32)
        y = fw[None, :] * y + fb[None, :] * centre
    if SECOND:
        skip = tl.load(skip_ptr + offs, mask=valid[:, None], other=0.0).to(tl.float32)
        if FEATMOD:
            skip = skip * a[None, :] + b[None, :]
        y = y + skip
    else:
        y = tl.maximum(y, 0.0)
    y = y.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + offs, y, mask=valid[:, None])
    if STATS:
        # Statistics of the values as stored (rounded to the map dtype), as a separate pass would see them.
        tiles = tl.num_programs(0)
        tile_partial_stats(y.to(tl.float32), valid, part_ptr + (n * tiles + tile).to(tl.int64) * (3 * C), C)


resblock_conv3x3_kernel = _autotuned([FP32_CONFIG, WIDE_K_CONFIG], [], [WIDE_K_CONFIG], (16, 16))(resblock_conv3x3)
# Under the interpreter an oblong tile: the tests then cover tiles that are not square.
resblock_conv3x3_wide_kernel = _autotuned([FP32_CONFIG, *WIDE_TILE_CONFIGS], [FP32_CONFIG], WIDE_TILE_CONFIGS,
                                          (8, 16))(resblock_conv3x3)


def _launch(kernel, x, skip, weight, bias, out, partials, featmod, filtermod, second, stats):
    n, h, w, c = x.shape
    dummy = x  # never read: the matching constexpr switch is off
    if filtermod is not None:
        fw, fb = filtermod
        flt = (fw, fb, 0 if fw.shape[0] == 1 else c)
    else:
        flt = (dummy, dummy, 0)

    def grid(meta):
        return (triton.cdiv(h, meta["TILE_H"]) * triton.cdiv(w, meta["TILE_W"]), n)

    kernel[grid](
        x, skip if skip is not None else dummy, weight, bias, out, partials if partials is not None else dummy,
        featmod if featmod is not None else dummy, *flt, h, w,
        SECOND=second, FEATMOD=featmod is not None, FILTERMOD=filtermod is not None, STATS=stats, C=c,
    )


@torch.library.custom_op("microast::filtermod_resblock", mutates_args=())
def filtermod_resblock(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
    x_mean: Optional[torch.Tensor], x_std: Optional[torch.Tensor],
    s_mean: Optional[torch.Tensor], s_std: Optional[torch.Tensor], alpha: Optional[torch.Tensor],
    filt_w: Optional[torch.Tensor], filt_b: Optional[torch.Tensor], with_stats: bool, split_merge: bool = False,
    wide_tiles: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One residual block on an NHWC map ``x`` [N, H, W, 64].

    ``w1, w2``: packed ``[9, 64, 64]`` (``weight_packing.pack_conv_taps``), biases ``[64]``. FeatMod (all five or
    none): ``x_mean, x_std`` [N, 64] fp32, ``s_mean, s_std`` [1 or N, 64], ``alpha`` [1 or N] fp32.
    FilterMod (both or none): ``filt_w, filt_b`` [1 or N, 64]. Returns ``(out, mean, std)``: the block's
    output and, with ``with_stats``, its instance statistics [N, 64] fp32 (else empty [0, 64]), merged by
    ``merge_partials_split`` if ``split_merge``, else by ``merge_partials``. ``wide_tiles``: the
    convolutions in the tiles of ``WIDE_TILE_CONFIGS`` (half maps).
    """
    check_map_dtype(x)
    n, h, w, c = x.shape
    assert c == CHANNELS and x.is_contiguous()
    featmod = None
    if x_mean is not None:
        s_mean, alpha = s_mean.contiguous(), alpha.contiguous()
        featmod = torch.empty(n, 2, c, device=x.device, dtype=torch.float32)  # A and B per (sample, channel)
        featmod_affine_kernel[(n,)](x_mean.contiguous(), x_std.contiguous(), s_mean, s_std.contiguous(),
                                    0 if s_mean.shape[0] == 1 else c, alpha, 0 if alpha.numel() == 1 else 1,
                                    featmod, C=c)
    filtermod = (filt_w.contiguous(), filt_b.contiguous()) if filt_w is not None else None
    kernel = resblock_conv3x3_wide_kernel if wide_tiles else resblock_conv3x3_kernel
    y3 = torch.empty_like(x)
    _launch(kernel, x, None, w1, b1, y3, None, featmod, filtermod, second=False, stats=False)
    out = torch.empty_like(x)
    partials = None
    if with_stats:
        partials = torch.empty(n, max_tiles(kernel, h, w), PARTIAL_FIELDS, c, device=x.device, dtype=torch.float32)
    _launch(kernel, y3, x, w2, b2, out, partials, featmod, filtermod, second=True, stats=with_stats)
    if not with_stats:
        empty = x.new_empty(0, c, dtype=torch.float32)
        return out, empty, empty.clone()
    merge = merge_partials_split if split_merge else merge_partials
    mean, std = merge(partials, launched_tiles(kernel, h, w))
    return out, mean, std


@filtermod_resblock.register_fake
def _(x, w1, b1, w2, b2, x_mean, x_std, s_mean, s_std, alpha, filt_w, filt_b, with_stats, split_merge=False,
      wide_tiles=False):
    n, c = x.shape[0], x.shape[3]
    stats_n = n if with_stats else 0
    return (torch.empty_like(x), x.new_empty(stats_n, c, dtype=torch.float32),
            x.new_empty(stats_n, c, dtype=torch.float32))
