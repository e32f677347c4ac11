"""Decoder tail (``dec3``): quarter-res 64-channel NHWC map -> the 3-channel NCHW image at 4x.

    bilinear x2, grouped (g=32) 3x3 64->32 + ReLU, 1x1 32->32 + ReLU        (stage A, half res)
    bilinear x2, grouped (g=16) 3x3 32->16 + ReLU, 1x1 16->16 + ReLU        (stage B, full res)
    9x9 conv 16->3                                                          (stage C)

One persistent kernel; the 32- and 16-channel maps never exist as maps. Each program walks output
tiles; for a ``T_H x T_W`` tile it
  A. computes the 32-channel half-res map on the half-res window the tile reads (``half_window``:
     ``T/2 + 6`` rows and columns), from the quarter-res input;
  B. computes the 16-channel full-res map on the tile plus the 4-pixel halo of the 9x9 from A's window;
  C. runs the 9x9 as 9 ``[pixels, 9 * 16] x [9 * 16, 3]`` GEMMs (one per kernel row) on shifted windows
     of B's map.
A and B stage their maps in the program's private scratch slot (``scratch``: reused from tile to tile,
so it stays in L1/L2; Triton has no addressable shared memory, and a per-program slot between two
barriers is its portable equivalent). The upsampled maps never exist either. In a tile whose maps keep
off every level's border (almost all of a large image), A and B run one output phase (row and column
parity) at a time, where bilinear x2 + grouped 3x3 is one 3x3 on the level below with the phase's
composed weights (``compose_up2_grouped3x3``): a gather of 9 source pixels per output, no interpolation
(``phase_grouped_conv_1x1``: a ``tl.dot`` per tap for half maps, two fp32 products per output and tap
for fp32 maps). Tiles at the border
take the general form: each 3x3 tap samples its bilinear value from the level below at the reflected
coordinate (each level reflects at its own border, so a tile's halo at level L is the level-L feature
at the reflected level-L coordinate).

The price of keeping the maps off DRAM is recomputation at the tile borders: B covers
``(T + 8)^2 / T^2`` of the tile's pixels, A ``(T/2 + 6)^2 / (T/2)^2`` of its half-res pixels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (ConfigsByMapDtype, autotune_configs, bilinear_up2_source, check_map_dtype,
                      partial_sum_end, partial_sum_start, persistent_programs, persistent_tile, reflect,
                      relu_1x1_relu)

HALO = tl.constexpr(4)  # the 9x9 output convolution's reach
# Half-res rows (and columns) a full-res tile of side T reads, beyond T / 2: see ``half_window``.
HALF_MARGIN = tl.constexpr(6)
# A tile starting at full-res row (column) o, of side T, is interior (the phase path) when
# o >= INTERIOR_BEFORE and o + T + INTERIOR_AFTER <= H (W): see ``decoder_tail_kernel``.
INTERIOR_BEFORE = tl.constexpr(8)
INTERIOR_AFTER = tl.constexpr(12)
# Rows of each kernel row's 9x9 weights (``weight_packing.pack_conv9x9_out``): 9 * 16 = 144, zero-padded
# to the largest BLOCK_K9 chunking.
W9_ROW_K = tl.constexpr(256)


@triton.jit
def half_window(o):
    """First half-res row (column) that the full-res tile starting at row ``o`` (a multiple of an even
    tile side) reads. B reads full-res rows ``o - HALO - 1 .. o + T + HALO`` through the 9x9's halo
    and its own 3x3 tap (reflected, an overhanging tile's far rows clamped first: still inside
    ``[max(o - 5, 0), o + T + 4]``), and bilinear x2 reads
    half-res rows ``floor(r / 2 - 1/4)`` and one more: from ``(o - 6) / 2`` (or 0) to
    ``(o + T + 4) / 2``, that is ``T / 2 + HALF_MARGIN`` rows."""
    return tl.maximum(o - HALO - 2, 0) // 2


@triton.jit
def upsampled_tap(src, origin_y, origin_x, row_pixels, qy, qx, h, w, c, C: tl.constexpr, mask):
    """Bilinear x2 (align_corners=False) values of channels ``c`` of an ``h x w`` NHWC map at upsampled
    pixels (qy, qx) -> [pixels, len(c)] fp32. ``src`` holds the map's window from (origin_y, origin_x),
    ``row_pixels`` pixels per row (the whole map: 0, 0, w)."""
    y0, y1, ly = bilinear_up2_source(qy, h)
    x0, x1, lx = bilinear_up2_source(qx, w)
    r0 = (y0 - origin_y) * row_pixels
    r1 = (y1 - origin_y) * row_pixels
    x0 = x0 - origin_x
    x1 = x1 - origin_x
    m = mask[:, None]
    v00 = tl.load(src + (r0 + x0)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v01 = tl.load(src + (r0 + x1)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v10 = tl.load(src + (r1 + x0)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v11 = tl.load(src + (r1 + x1)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    lx = lx[:, None]
    ly = ly[:, None]
    # PyTorch's order: rows blended first along x, then the two rows along y.
    return (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)


@triton.jit
def upsample_grouped_conv_1x1(src, origin_y, origin_x, row_pixels, qy, qx, mask, h, w, H_UP, W_UP,
                              wg_ptr, bg_ptr, w1_ptr, b1_ptr,
                              C_IN: tl.constexpr, C_OUT: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
    """relu(1x1(relu(grouped3x3(up2(src))))) at upsampled pixels (qy, qx) of an H_UP x W_UP level -> [BLOCK, C_OUT] fp32.
    ``src``: the ``h x w`` level below, or its window (``upsampled_tap``).

    The general form, for tiles at the border: each (tap, channel chunk) step samples the upsampled
    map from ``src`` at the reflected coordinate. A runtime loop: unrolled, the compiler hoists all 36
    gathers and spills."""
    kc = tl.arange(0, BLOCK_K)
    c_out = tl.arange(0, C_OUT)
    acc = tl.zeros([BLOCK, C_OUT], tl.float32)
    for kk in range(9 * (C_IN // BLOCK_K)):
        tap = kk // (C_IN // BLOCK_K)
        k0 = (kk % (C_IN // BLOCK_K)) * BLOCK_K
        ty = reflect(qy + (tap // 3 - 1), H_UP)
        tx = reflect(qx + (tap % 3 - 1), W_UP)
        u = upsampled_tap(src, origin_y, origin_x, row_pixels, ty, tx, h, w, k0 + kc, C_IN, mask)
        wg = tl.load(wg_ptr + tap * C_IN * C_OUT + (k0 + kc)[:, None] * C_OUT + c_out[None, :])
        acc = tl.dot(u.to(wg.dtype), wg, acc, input_precision="ieee")
    return relu_1x1_relu(acc, bg_ptr, w1_ptr, b1_ptr, C_OUT)


@triton.jit
def phase_grouped_conv_1x1(src, row_pixels, pixel, phase, wp_ptr, bg_ptr, w1_ptr, b1_ptr, C_IN: tl.constexpr,
                           C_OUT: tl.constexpr, BLOCK: tl.constexpr, ON_TENSOR_CORES: tl.constexpr):
    """As ``upsample_grouped_conv_1x1`` at the upsampled pixels of one ``phase`` (2 * row parity + column
    parity) over source pixels ``pixel`` (offsets into ``src``, ``row_pixels`` pixels a row), away from
    every level's border: bilinear x2 + grouped 3x3 as one 3x3 on the level below, with the phase's
    composed fp32 weights ``wp`` [4 phases, 9 taps, C_IN] (``compose_up2_grouped3x3``): a gather of 9
    source pixels per output, no interpolation. The interior tiles that call it keep every tap inside
    the level below (``decoder_tail_kernel``), so tap (dy, dx) is the source pixel ``dy * row_pixels + dx``
    away: the offsets are computed once, each tap moves them by a constant.

    Each tap's grouped convolution (inputs 2 co and 2 co + 1 feed output co) runs one of two ways:
    - for half maps (``ON_TENSOR_CORES``), one ``tl.dot`` of the tap's [BLOCK, C_IN] pixels, loaded
      whole (vectorized), with the block-sparse dense [C_IN, C_OUT] matrix built in registers from
      ``wp`` and rounded to the map dtype. Its cost is mostly fixed per tap and chunk, so it is the
      cheaper form, the more so for large chunks (instruction counts: docs/kernel_notes.md);
    - for fp32 maps, as what it is: two fp32 FMAs per output, exact, where a dot would make C_IN / 2
      times the products on FMA units."""
    co = tl.arange(0, C_OUT)
    acc = tl.zeros([BLOCK, C_OUT], tl.float32)
    if ON_TENSOR_CORES:
        k = tl.arange(0, C_IN)
        center = pixel[:, None] * C_IN + k[None, :]
        feeds = (k[:, None] // 2) == co[None, :]  # the dense matrix's nonzero pattern
        for tap in range(9):
            step = ((tap // 3 - 1) * row_pixels + (tap % 3 - 1)) * C_IN
            v = tl.load(src + (center + step))
            wp = tl.load(wp_ptr + (phase * 9 + tap) * C_IN + k)
            w = tl.where(feeds, wp[:, None], 0.0).to(v.dtype)
            acc = tl.dot(v, w, acc, input_precision="ieee")
    else:
        first = pixel[:, None] * C_IN + 2 * co[None, :]  # each group's first input at the pixel itself
        for tap in range(9):
            step = ((tap // 3 - 1) * row_pixels + (tap % 3 - 1)) * C_IN
            w = wp_ptr + (phase * 9 + tap) * C_IN + 2 * co
            acc += tl.load(w)[None, :] * tl.load(src + (first + step)).to(tl.float32)
            acc += tl.load(w + 1)[None, :] * tl.load(src + (first + (step + 1))).to(tl.float32)
    return relu_1x1_relu(acc, bg_ptr, w1_ptr, b1_ptr, C_OUT)


def _config(tile_h: int, tile_w: int, chunk_a: int, chunk_b: int, warps: int, stages: int,
            maxnreg: int | None = None) -> triton.Config:
    return triton.Config({"TILE_H": tile_h, "TILE_W": tile_w, "CHUNK_A": chunk_a, "CHUNK_B": chunk_b, "BLOCK_K": 16,
                          "BLOCK_K9": 16}, num_warps=warps, num_stages=stages, maxnreg=maxnreg)


# The register budget is set by C's [pixels, 16] fp32 accumulator (two in fp32: the per-row partials)
# and the general path's [CHUNK, 16] dot operands. These configs spill in no loop on sm_80 and sm_90
# (tests/test_triton_compile.py) only so: half maps pipeline C's loads (3 stages) but not with 16
# warps, whose 128 registers also want 64-pixel A chunks; 16x16 tiles want 128-pixel B chunks; fp32
# maps take neither 16 warps nor pipelining.
# 32x32 tiles recompute the least at their borders (A 1.9x its half-res pixels, B 1.6x the full-res
# ones, against 3.1x and 2.25x for 16x16), for half maps only: fp32's two [1024, 16] accumulators do
# not fit 8 warps' registers. Unpipelined: with 3 stages A's loop spills.
# fp32 16x16 is capped at 184 registers: left alone, ptxas holds sm_80 to 128 and spills.
# (The measurements behind each choice: docs/kernel_notes.md.)
HALF_CONFIGS = [_config(16, 16, 64, 128, 8, 3), _config(16, 32, 64, 64, 8, 3), _config(16, 32, 64, 128, 16, 1),
                _config(32, 32, 64, 128, 8, 1)]
FP32_CONFIGS = [_config(16, 16, 64, 128, 8, 1, maxnreg=184), _config(16, 32, 64, 64, 8, 1)]


@triton.autotune(
    configs=autotune_configs(
        HALF_CONFIGS + FP32_CONFIGS,
        triton.Config({"TILE_H": 32, "TILE_W": 32, "CHUNK_A": 512, "CHUNK_B": 2048, "BLOCK_K": 32, "BLOCK_K9": 256},
                      num_warps=4),
    ),
    key=["H4", "W4"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
    prune_configs_by={"early_config_prune": ConfigsByMapDtype("out_ptr", FP32_CONFIGS, HALF_CONFIGS)},
)
@triton.jit
def decoder_tail_kernel(
    x_ptr, wg1_ptr, wp1_ptr, bg1_ptr, w1_ptr, b1_ptr, wg2_ptr, wp2_ptr, bg2_ptr, w2_ptr, b2_ptr, w9_ptr, b9_ptr,
    out_ptr, scratch_ptr,
    N, H4, W4,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, CHUNK_A: tl.constexpr, CHUNK_B: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_K9: tl.constexpr,
):
    # Persistent grid: (programs,). In NHWC [N, H4, W4, 64], out NCHW [N, 3, 4 * H4, 4 * W4].
    HALF_H: tl.constexpr = TILE_H // 2 + HALF_MARGIN
    HALF_W: tl.constexpr = TILE_W // 2 + HALF_MARGIN
    HALF_PIXELS: tl.constexpr = HALF_H * HALF_W
    HALO_H: tl.constexpr = TILE_H + 2 * HALO
    HALO_W: tl.constexpr = TILE_W + 2 * HALO
    HALO_PIXELS: tl.constexpr = HALO_H * HALO_W
    H2 = 2 * H4
    W2 = 2 * W4
    H = 2 * H2
    W = 2 * W2
    tiles_w = tl.cdiv(W, TILE_W)
    tiles_per_image = tl.cdiv(H, TILE_H) * tiles_w
    slot_a = scratch_ptr + tl.program_id(0).to(tl.int64) * (HALF_PIXELS * 32 + HALO_PIXELS * 16)
    slot_b = slot_a + HALF_PIXELS * 32
    c32 = tl.arange(0, 32)
    c16 = tl.arange(0, 16)
    p = tl.arange(0, TILE_H * TILE_W)

    for work in range(tl.program_id(0), N * tiles_per_image, tl.num_programs(0)):
        n, oy, ox = persistent_tile(work, tiles_per_image, tiles_w, TILE_H, TILE_W)
        hy0 = half_window(oy)
        hx0 = half_window(ox)
        # The previous tile's B and C must have read the slots before they are overwritten.
        tl.debug_barrier()
        x_n = x_ptr + n.to(tl.int64) * H4 * W4 * 64
        # A tile whose half-res window and full-res halo keep one pixel off each level's border, and
        # whose window's 3x3 taps stay inside the quarter-res map (almost every tile of a large image),
        # computes each bilinear x2 + grouped 3x3 phase by phase, as one 3x3 on the level below; tiles
        # at the border take the general form. The window's last row is half-res row (oy + TILE_H) / 2 + 2,
        # whose taps reach quarter-res row (oy + TILE_H) / 4 + 2: hence 12 after the tile
        # (tests/test_triton_kernels.py checks both margins by enumeration).
        interior = ((oy >= INTERIOR_BEFORE) & (ox >= INTERIOR_BEFORE)
                    & (oy + TILE_H + INTERIOR_AFTER <= H) & (ox + TILE_W + INTERIOR_AFTER <= W))
        # Each phase then owns exactly a quarter of A's window and of B's halo tile.
        tl.static_assert(TILE_H % 4 == 0 and TILE_W % 4 == 0, "tile sides must be multiples of 4")
        if interior:
            for phase in range(4):  # A, one parity of half-res rows and columns at a time
                ry = (phase // 2 + hy0) % 2  # the window's first row of that parity
                rx = (phase % 2 + hx0) % 2
                for c0 in range(0, HALF_PIXELS // 4, CHUNK_A):
                    i = c0 + tl.arange(0, CHUNK_A)
                    inside = i < HALF_PIXELS // 4
                    i = tl.minimum(i, HALF_PIXELS // 4 - 1)  # the padding lanes repeat the last pixel
                    wy = ry + 2 * (i // (HALF_W // 2))
                    wx = rx + 2 * (i % (HALF_W // 2))
                    f = phase_grouped_conv_1x1(x_n, W4, ((hy0 + wy) // 2) * W4 + (hx0 + wx) // 2, phase,
                                               wp1_ptr, bg1_ptr, w1_ptr, b1_ptr, 64, 32, CHUNK_A,
                                               scratch_ptr.dtype.element_ty != tl.float32)
                    tl.store(slot_a + (wy * HALF_W + wx)[:, None] * 32 + c32[None, :],
                             f.to(scratch_ptr.dtype.element_ty), mask=inside[:, None])
        else:
            for c0 in range(0, HALF_PIXELS, CHUNK_A):  # A: the half-res window
                i = c0 + tl.arange(0, CHUNK_A)
                hy = hy0 + i // HALF_W
                hx = hx0 + i % HALF_W
                inside = (i < HALF_PIXELS) & (hy < H2) & (hx < W2)
                f = upsample_grouped_conv_1x1(x_n, 0, 0, W4, hy, hx, inside, H4, W4, H2, W2,
                                              wg1_ptr, bg1_ptr, w1_ptr, b1_ptr, 64, 32, CHUNK_A, BLOCK_K)
                tl.store(slot_a + i[:, None] * 32 + c32[None, :], f.to(scratch_ptr.dtype.element_ty),
                         mask=inside[:, None])
        tl.debug_barrier()  # the whole window is written before B reads it
        if interior:
            for phase in range(4):  # B; the halo starts on an even row and column (oy - HALO)
                for c0 in range(0, HALO_PIXELS // 4, CHUNK_B):
                    i = c0 + tl.arange(0, CHUNK_B)
                    inside = i < HALO_PIXELS // 4
                    i = tl.minimum(i, HALO_PIXELS // 4 - 1)
                    r = phase // 2 + 2 * (i // (HALO_W // 2))
                    q = phase % 2 + 2 * (i % (HALO_W // 2))
                    sy = (oy - HALO + r) // 2 - hy0  # the source pixel in A's window
                    sx = (ox - HALO + q) // 2 - hx0
                    f = phase_grouped_conv_1x1(slot_a, HALF_W, sy * HALF_W + sx, phase,
                                               wp2_ptr, bg2_ptr, w2_ptr, b2_ptr, 32, 16, CHUNK_B,
                                               scratch_ptr.dtype.element_ty != tl.float32)
                    tl.store(slot_b + (r * HALO_W + q)[:, None] * 16 + c16[None, :],
                             f.to(scratch_ptr.dtype.element_ty), mask=inside[:, None])
        else:
            for c0 in range(0, HALO_PIXELS, CHUNK_B):  # B: the tile and the 9x9's halo at full res
                i = c0 + tl.arange(0, CHUNK_B)
                inside = i < HALO_PIXELS
                # The 9x9's reflection padding at the full-res border. Rows (columns) of an overhanging
                # tile beyond the reflected halo are clamped first: reflected, they would land outside
                # A's window (their outputs are not stored, but their reads must stay in the slot).
                fy = reflect(tl.minimum(oy + i // HALO_W - HALO, H + HALO - 1), H)
                fx = reflect(tl.minimum(ox + i % HALO_W - HALO, W + HALO - 1), W)
                f = upsample_grouped_conv_1x1(slot_a, hy0, hx0, HALF_W, fy, fx, inside, H2, W2, H, W,
                                              wg2_ptr, bg2_ptr, w2_ptr, b2_ptr, 32, 16, CHUNK_B, BLOCK_K)
                tl.store(slot_b + i[:, None] * 16 + c16[None, :], f.to(scratch_ptr.dtype.element_ty),
                         mask=inside[:, None])
        tl.debug_barrier()  # the whole halo tile is written before any thread reads a shifted window

        # C. With the slot in [pixel][channel] order, the 9 taps x 16 channels of a kernel row are 144
        # consecutive values from the window's first pixel: K = 144 per row, in BLOCK_K9 chunks
        # (weights zero-padded to W9_ROW_K rows, loads masked past 144).
        ty = p // TILE_W
        tx = p % TILE_W
        # b9 is loaded per tile: held across the persistent loop, sm_80's fp32 build spills
        b9 = tl.load(b9_ptr + c16).to(tl.float32)
        acc = tl.zeros([TILE_H * TILE_W, 16], tl.float32)
        for ky in range(9):
            row = ((ty + ky) * HALO_W + tx) * 16
            part = partial_sum_start(acc, out_ptr.dtype.element_ty == tl.float32)  # fp32: per kernel row
            for j0 in range(0, 144, BLOCK_K9):
                j = j0 + tl.arange(0, BLOCK_K9)
                v = tl.load(slot_b + row[:, None] + j[None, :], mask=(j < 144)[None, :], other=0.0)
                w_row = tl.load(w9_ptr + ky * W9_ROW_K * 16 + j[:, None] * 16 + c16[None, :])  # [kx*16+ci, c_out]
                part = tl.dot(v, w_row, part, input_precision="ieee")
            acc = partial_sum_end(acc, part, out_ptr.dtype.element_ty == tl.float32)
        y = acc + b9[None, :]
        oyy = oy + ty
        oxx = ox + tx
        valid = (oyy < H) & (oxx < W)
        offs = n.to(tl.int64) * 3 * H * W + c16[None, :].to(tl.int64) * H * W + (oyy * W + oxx)[:, None]
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=valid[:, None] & (c16 < 3)[None, :])


def slot_elements(config: dict) -> int:
    """Scratch elements one program of ``decoder_tail_kernel`` uses with ``config``: A's 32-channel window
    and B's 16-channel halo tile."""
    half = (config["TILE_H"] // 2 + HALF_MARGIN.value) * (config["TILE_W"] // 2 + HALF_MARGIN.value)
    halo = (config["TILE_H"] + 2 * HALO.value) * (config["TILE_W"] + 2 * HALO.value)
    return half * 32 + halo * 16


def launch_decoder_tail(x: torch.Tensor, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9,
                        programs: int | None = None, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """``decoder_tail`` with an optional persistent program count (tests use a small one so that one
    program walks several tiles) and scratch (tests pass a poisoned one, to catch reads of anything a
    program did not write)."""
    check_map_dtype(x)
    n, h, w, _ = x.shape
    out = x.new_empty(n, 3, 4 * h, 4 * w)
    # The program count (and so the scratch) is fixed before the autotuner picks a tile: size the
    # slots for the largest config the map dtype may take, the count for the smallest tile.
    configs = [c.kwargs for c in decoder_tail_kernel.early_config_prune.for_maps(decoder_tail_kernel.configs, x.dtype)]
    if programs is None:
        smallest = min(c["TILE_H"] * c["TILE_W"] for c in configs)
        # Two programs an SM: no config has more resident (at 8 warps they take 106-255 registers a
        # thread, at 16 warps 128; tests/test_triton_compile.py), and each keeps a scratch slot.
        programs = persistent_programs(x.device, n * triton.cdiv(16 * h * w, smallest), per_sm=2)
    if scratch is None:
        scratch = x.new_empty(programs, max(slot_elements(c) for c in configs))
    decoder_tail_kernel[(programs,)](x, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9, out, scratch, n, h, w)
    return out


@torch.library.custom_op("microast::decoder_tail", mutates_args=())
def decoder_tail(
    x: torch.Tensor, wg1: torch.Tensor, wp1: torch.Tensor, bg1: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
    wg2: torch.Tensor, wp2: torch.Tensor, bg2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w9: torch.Tensor,
    b9: torch.Tensor,
) -> torch.Tensor:
    """NHWC ``x`` [N, h, w, 64] -> NCHW image [N, 3, 4h, 4w] in ``x``'s dtype."""
    return launch_decoder_tail(x, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9)


@decoder_tail.register_fake
def _(x, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9):
    n, h, w, _ = x.shape
    return x.new_empty(n, 3, 4 * h, 4 * w)
