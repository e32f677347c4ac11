"""Decoder tail (``dec3``) in row bands: quarter-res 64-channel NHWC map -> the 3-channel NCHW image at 4x.

The same computation as ``decoder_tail`` (its docstring has the layers), as three plain kernels per band
of full-res output rows instead of one persistent kernel with scratch slots and barriers:

  A. ``tail_level_kernel`` (64 -> 32): the half-res rows the band needs, every column, from the
     quarter-res input, into band buffer A ``[N, rows, W / 2, 32]``;
  B. ``tail_level_kernel`` (32 -> 16): the full-res rows the band's 9x9 reads (the band and 4 rows each
     side, within the image) from buffer A, into band buffer B ``[N, rows, W, 16]``;
  C. ``tail_conv9x9_kernel``: the band's output rows, the 9x9 16 -> 3 on buffer B, into the output.

The buffers are reused band after band and sized (``default_band_rows``) so that A and B of one band
stay in an H100's L2: the 16- and 32-channel maps are written and read back there, never whole in DRAM.
The price is recomputation at band edges: B's 8 halo rows a band, A's 6 or so.

Each level works in the level's global coordinates: reflection at its own border, bilinear clamping
at the border of the level below, then rows offset into the buffer's window. Tiles away from every
border take the phase path (``phase_grouped_conv_1x1``: bilinear x2 + grouped 3x3 as one 3x3 on the
level below), the others the general form (``upsample_grouped_conv_1x1``). The 9x9 takes the banded
form of the encoder head's: per kernel row, 8 consecutive output pixels against the 16 x 16 values
they read (``pack_conv9x9_out_banded``), 2.25x fewer products and 4.5x fewer loads than per pixel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (ConfigsByMapDtype, autotune_configs, check_map_dtype, partial_sum_end, partial_sum_start,
                      reflect)
from .decoder_tail import phase_grouped_conv_1x1, upsample_grouped_conv_1x1

# The banded 9x9: a segment of SEGMENT output pixels of a row reads SEGMENT + 8 pixels of 16 channels a
# kernel row (WINDOW_K values, consecutive in buffer B) and gives SEGMENT pixels of 4 outputs (the fourth
# zero): weights ``[9, WINDOW_K, SEGMENT_N]`` (``weight_packing.pack_conv9x9_out_banded``).
SEGMENT = tl.constexpr(8)
WINDOW_K = tl.constexpr(256)
SEGMENT_N = tl.constexpr(32)

# Band buffers A and B of one band, in bytes: about half an H100's L2 (50 MB), the rest for the input
# rows being read and the output being written.
BAND_BYTES = 24 << 20


def _level_config(tile_h: int, tile_w: int, block: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"TILE_H": tile_h, "TILE_W": tile_w, "BLOCK": block, "BORDER_BLOCK": block, "BLOCK_K": 16},
                         num_warps=warps, num_stages=stages)


# Small chunks a thread so that several programs are resident an SM (registers: sm_90 64-128, the
# 8-warp config taking twice the pixels a chunk at about the same count). A band gives A a few hundred
# tiles, hence the smaller tile. Pipelined, A's fp32 loop spills on sm_80 (unaligned pointers); with
# Triton 3.6, so does B's loop on sm_80 with the 8x32 tile on half maps and the 16x64 on fp32 maps.
# BORDER_BLOCK, the general path's chunk, is BLOCK on a GPU; the interpreter takes whole tiles.
LEVEL_CONFIGS = [_level_config(16, 32, 128, 4, 1)]
LEVEL_FP32_CONFIGS = [_level_config(8, 32, 64, 4, 1)]
LEVEL_HALF_CONFIGS = [_level_config(16, 64, 256, 8, 1), _level_config(16, 32, 128, 4, 2)]


@triton.autotune(
    configs=autotune_configs(
        LEVEL_CONFIGS + LEVEL_FP32_CONFIGS + LEVEL_HALF_CONFIGS,
        triton.Config({"TILE_H": 16, "TILE_W": 16, "BLOCK": 64, "BORDER_BLOCK": 256, "BLOCK_K": 64}, num_warps=4),
    ),
    key=["C_IN", "W_SRC"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
    prune_configs_by={"early_config_prune": ConfigsByMapDtype("dst_ptr", LEVEL_FP32_CONFIGS, LEVEL_HALF_CONFIGS)},
)
@triton.jit
def tail_level_kernel(
    src_ptr, wg_ptr, wp_ptr, bg_ptr, w1_ptr, b1_ptr, dst_ptr,
    H_SRC, W_SRC, src_row0, src_rows, src_capacity, dst_row0, dst_rows, dst_capacity,
    C_IN: tl.constexpr, C_OUT: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK: tl.constexpr, BORDER_BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """relu(1x1(relu(grouped3x3(up2(src))))) on rows [dst_row0, dst_row0 + dst_rows) of the level above an
    ``H_SRC x W_SRC`` level. ``src``: NHWC ``[N, src_capacity, W_SRC, C_IN]`` holding that level's rows
    [src_row0, src_row0 + src_rows); ``dst``: ``[N, dst_capacity, 2 * W_SRC, C_OUT]`` from row dst_row0.
    Grid: (column tiles, row tiles, N)."""
    tl.static_assert(TILE_H % 2 == 0 and TILE_W % 2 == 0, "each phase owns a quarter of a tile")
    tl.static_assert((TILE_H * TILE_W // 4) % BLOCK == 0, "a phase's pixels come in whole chunks")
    tl.static_assert((TILE_H * TILE_W) % BORDER_BLOCK == 0, "a tile's pixels come in whole chunks")
    KC: tl.constexpr = BLOCK_K if BLOCK_K < C_IN else C_IN  # the general path's channel chunk
    H_DST = 2 * H_SRC
    W_DST = 2 * W_SRC
    x0 = tl.program_id(0) * TILE_W
    y0 = dst_row0 + tl.program_id(1) * TILE_H
    n = tl.program_id(2).to(tl.int64)
    y_last = tl.minimum(y0 + TILE_H, dst_row0 + dst_rows) - 1
    src = src_ptr + n * src_capacity * W_SRC * C_IN
    dst = dst_ptr + n * dst_capacity * W_DST * C_OUT
    c = tl.arange(0, C_OUT)
    # The phase path (bilinear x2 + grouped 3x3 as one 3x3 on the level below) holds on rows and columns
    # 2 .. size - 3 of this level, where the 3x3's taps neither reflect nor read an upsampled row that
    # clamps. Its taps read source rows y // 2 - 1 .. y // 2 + 1: the general path reads the same there,
    # so the window holds them; checked anyway, at the cost of a compare.
    interior = ((y0 >= 2) & (y_last <= H_DST - 3) & (x0 >= 2) & (x0 + TILE_W <= W_DST - 2)
                & (y0 // 2 - 1 >= src_row0) & (y_last // 2 + 1 < src_row0 + src_rows))
    if interior:
        for phase in range(4):
            ry = (phase // 2 + y0) % 2  # the tile's first row of the phase's parity (x0 is even)
            for c0 in range(0, TILE_H * TILE_W // 4, BLOCK):
                i = c0 + tl.arange(0, BLOCK)
                y = y0 + ry + 2 * (i // (TILE_W // 2))
                x = x0 + phase % 2 + 2 * (i % (TILE_W // 2))
                keep = y <= y_last
                y = tl.minimum(y, y_last)  # a tile past the window's last row repeats that row
                f = phase_grouped_conv_1x1(src, W_SRC, (y // 2 - src_row0) * W_SRC + x // 2, phase,
                                           wp_ptr, bg_ptr, w1_ptr, b1_ptr, C_IN, C_OUT, BLOCK,
                                           dst_ptr.dtype.element_ty != tl.float32)
                tl.store(dst + ((y - dst_row0) * W_DST + x)[:, None] * C_OUT + c[None, :],
                         f.to(dst_ptr.dtype.element_ty), mask=keep[:, None])
    else:
        for c0 in range(0, TILE_H * TILE_W, BORDER_BLOCK):
            i = c0 + tl.arange(0, BORDER_BLOCK)
            y = y0 + i // TILE_W
            x = x0 + i % TILE_W
            inside = (y <= y_last) & (x < W_DST)
            f = upsample_grouped_conv_1x1(src, src_row0, 0, W_SRC, y, x, inside, H_SRC, W_SRC, H_DST, W_DST,
                                          wg_ptr, bg_ptr, w1_ptr, b1_ptr, C_IN, C_OUT, BORDER_BLOCK, KC)
            tl.store(dst + ((y - dst_row0) * W_DST + x)[:, None] * C_OUT + c[None, :],
                     f.to(dst_ptr.dtype.element_ty), mask=inside[:, None])


@triton.jit
def conv9x9_rows(src, y, xs, src_row0, H, W, w9_ptr, M: tl.constexpr, BLOCK_K: tl.constexpr,
                 INSIDE: tl.constexpr, EXACT: tl.constexpr):
    """The banded 9x9 (no bias) at ``M`` segments of SEGMENT pixels, on full-res rows ``y`` from column
    ``xs`` -> [M, SEGMENT_N] fp32, column ``xl * 4 + c_out`` for pixel ``xs + xl``. ``src``: buffer B
    from row ``src_row0``; rows reflect at the image border. ``INSIDE``: no window reaches past the side
    borders, so a window is WINDOW_K consecutive values (vector loads); otherwise each column reflects."""
    n = tl.arange(0, SEGMENT_N)
    acc = tl.zeros([M, SEGMENT_N], tl.float32)
    for ky in range(9):
        row = reflect(y + (ky - 4), H) - src_row0
        part = partial_sum_start(acc, EXACT)  # fp32: a partial sum per kernel row
        for k0 in range(0, WINDOW_K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            if INSIDE:
                v = tl.load(src + ((row * W + xs - 4) * 16)[:, None] + k[None, :])
            else:
                col = reflect(xs[:, None] + (k // 16 - 4)[None, :], W)
                v = tl.load(src + (row * W * 16)[:, None] + col * 16 + (k % 16)[None, :])
            w = tl.load(w9_ptr + (k + ky * WINDOW_K)[:, None] * SEGMENT_N + n[None, :])
            part = tl.dot(v, w, part, input_precision="ieee")
        acc = partial_sum_end(acc, part, EXACT)
    return acc


def _conv9x9_config(tile_h: int, segments: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"TILE_H": tile_h, "SEGMENTS": segments, "BLOCK_K": block_k},
                         num_warps=warps, num_stages=stages)


# [TILE_H * SEGMENTS, 32] fp32 accumulators over 4 warps (8 for the largest tile). fp32 maps hold a
# second one (the per-row partials) and run the products on FMA units: half the segments a program.
CONV9X9_HALF_CONFIGS = [_conv9x9_config(8, 16, 32, 4, 2), _conv9x9_config(16, 8, 32, 4, 2),
                        _conv9x9_config(16, 16, 32, 8, 2)]
CONV9X9_FP32_CONFIGS = [_conv9x9_config(8, 8, 32, 4, 2), _conv9x9_config(4, 16, 32, 4, 2)]


@triton.autotune(
    configs=autotune_configs(CONV9X9_HALF_CONFIGS + CONV9X9_FP32_CONFIGS,
                             triton.Config({"TILE_H": 16, "SEGMENTS": 4, "BLOCK_K": 256}, num_warps=4)),
    key=["W"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
    prune_configs_by={"early_config_prune": ConfigsByMapDtype("out_ptr", CONV9X9_FP32_CONFIGS, CONV9X9_HALF_CONFIGS)},
)
@triton.jit
def tail_conv9x9_kernel(
    src_ptr, w9_ptr, b9_ptr, out_ptr,
    H, W, src_row0, src_capacity, row0, rows,
    TILE_H: tl.constexpr, SEGMENTS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The 9x9 16 -> 3 on output rows [row0, row0 + rows) of an ``H x W`` image. ``src``: buffer B,
    ``[N, src_capacity, W, 16]`` from row ``src_row0``, holding every row those outputs read;
    ``out``: NCHW ``[N, 3, H, W]``. Grid: (column tiles, row tiles, N)."""
    TILE_W: tl.constexpr = SEGMENTS * SEGMENT
    x0 = tl.program_id(0) * TILE_W
    n = tl.program_id(2).to(tl.int64)
    m = tl.arange(0, TILE_H * SEGMENTS)
    y = row0 + tl.program_id(1) * TILE_H + m // SEGMENTS
    xs = x0 + (m % SEGMENTS) * SEGMENT
    # Rows past the band repeat its last row: their reads stay in the buffer, their outputs are not stored.
    y_read = tl.minimum(y, row0 + rows - 1)
    src = src_ptr + n * src_capacity * W * 16
    exact = out_ptr.dtype.element_ty == tl.float32
    if (x0 >= 4) & (x0 + TILE_W + 4 <= W):
        acc = conv9x9_rows(src, y_read, xs, src_row0, H, W, w9_ptr, TILE_H * SEGMENTS, BLOCK_K, True, exact)
    else:
        acc = conv9x9_rows(src, y_read, xs, src_row0, H, W, w9_ptr, TILE_H * SEGMENTS, BLOCK_K, False, exact)
    nn = tl.arange(0, SEGMENT_N)
    co = nn % 4
    out = acc + tl.load(b9_ptr + co)[None, :]  # b9 is zero past the 3 outputs
    x = xs[:, None] + (nn // 4)[None, :]
    keep = (y < row0 + rows)[:, None] & (x < W) & (co < 3)[None, :]
    offs = n * 3 * H * W + (co * H * W)[None, :] + y[:, None] * W + x
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=keep)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------
def source_rows(lo: int, hi: int, n_dst: int) -> tuple[int, int]:
    """Rows [lo', hi') of the level below that rows [lo, hi) of an ``n_dst``-row level read through its
    reflected 3x3 and bilinear x2: the taps span rows lo - 1 .. hi, reflected into max(lo - 1, 0) ..
    min(hi, n_dst - 1); upsampled row t reads source rows floor(max(t / 2 - 1/4, 0)) and the next
    (clamped), that is max(t - 1, 0) // 2 .. (t + 1) // 2 for t >= 1."""
    return max(lo - 2, 0) // 2, min((min(hi, n_dst - 1) + 1) // 2, n_dst // 2 - 1) + 1


def band_windows(height: int, band_rows: int) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """Per band of an image ``height`` full-res rows: its output rows, the full-res rows of buffer B (the
    9x9 reads 4 rows each side, reflected into the image) and the half-res rows of buffer A, each
    [first, end)."""
    windows = []
    for r0 in range(0, height, band_rows):
        r1 = min(r0 + band_rows, height)
        b = (max(r0 - 4, 0), min(r1 + 4, height))
        windows.append(((r0, r1), b, source_rows(*b, height)))
    return windows


def default_band_rows(n: int, width: int, element_size: int) -> int:
    """Full-res rows a band, a multiple of 32, such that buffers A and B take about ``BAND_BYTES``:
    a full-res row is ``width * 16`` values of B and half a row of A, ``width / 2 * 32``."""
    per_row = n * width * 24 * element_size
    return max(32, BAND_BYTES // per_row // 32 * 32)


def _level_grid(rows: int, cols: int, n: int):
    return lambda meta: (triton.cdiv(cols, meta["TILE_W"]), triton.cdiv(rows, meta["TILE_H"]), n)


def _conv9x9_grid(rows: int, cols: int, n: int):
    return lambda meta: (triton.cdiv(cols, meta["SEGMENTS"] * SEGMENT.value), triton.cdiv(rows, meta["TILE_H"]), n)


def launch_decoder_tail_banded(x: torch.Tensor, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9,
                               band_rows: int | None = None,
                               buffers: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``decoder_tail_banded`` with an optional band height (tests split small images into several bands)
    and band buffers A and B (tests pass poisoned ones, to catch reads of anything not written)."""
    check_map_dtype(x)
    n, h4, w4, _ = x.shape
    H, W = 4 * h4, 4 * w4
    out = x.new_empty(n, 3, H, W)
    windows = band_windows(H, band_rows or default_band_rows(n, W, x.element_size()))
    if buffers is None:
        rows_a = max(h1 - h0 for _, _, (h0, h1) in windows)
        rows_b = max(f1 - f0 for _, (f0, f1), _ in windows)
        buffers = (x.new_empty(n, rows_a, 2 * w4, 32), x.new_empty(n, rows_b, W, 16))
    buf_a, buf_b = buffers
    for (r0, r1), (f0, f1), (h0, h1) in windows:  # output, B's (full-res) and A's (half-res) rows
        tail_level_kernel[_level_grid(h1 - h0, 2 * w4, n)](
            x, wg1, wp1, bg1, w1, b1, buf_a, h4, w4, 0, h4, h4, h0, h1 - h0, buf_a.shape[1], C_IN=64, C_OUT=32)
        tail_level_kernel[_level_grid(f1 - f0, W, n)](
            buf_a, wg2, wp2, bg2, w2, b2, buf_b, 2 * h4, 2 * w4, h0, h1 - h0, buf_a.shape[1], f0, f1 - f0,
            buf_b.shape[1], C_IN=32, C_OUT=16)
        tail_conv9x9_kernel[_conv9x9_grid(r1 - r0, W, n)](
            buf_b, w9, b9, out, H, W, f0, buf_b.shape[1], r0, r1 - r0)
    return out


@torch.library.custom_op("microast::decoder_tail_banded", mutates_args=())
def decoder_tail_banded(
    x: torch.Tensor, wg1: torch.Tensor, wp1: torch.Tensor, bg1: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
    wg2: torch.Tensor, wp2: torch.Tensor, bg2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w9: torch.Tensor,
    b9: torch.Tensor,
) -> torch.Tensor:
    """NHWC ``x`` [N, h, w, 64] -> NCHW image [N, 3, 4h, 4w] in ``x``'s dtype. The operands of
    ``microast::decoder_tail`` except ``w9``: the banded 9x9 (``pack_conv9x9_out_banded``)."""
    return launch_decoder_tail_banded(x, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9)


@decoder_tail_banded.register_fake
def _(x, wg1, wp1, bg1, w1, b1, wg2, wp2, bg2, w2, b2, w9, b9):
    n, h, w, _ = x.shape
    return x.new_empty(n, 3, 4 * h, 4 * w)
