"""Encoder head: image ``[N, 3, H, W]`` -> quarter-resolution 64-channel NHWC map.

    9x9 conv 3->16 + ReLU, grouped (g=16) stride-2 3x3 16->32 + ReLU, 1x1 32->32 + ReLU   (kernel 1)
    grouped (g=32) stride-2 3x3 32->64 + ReLU, 1x1 64->64 + ReLU                          (kernel 2)

Kernel 1 is persistent: each program walks half-res tiles. For a ``TILE_H x TILE_W`` tile it computes
relu(9x9) once at each full-res pixel of the "span" its stride-2 taps read (rows and columns
``2 T + 1``, in whole steps: 1.1-1.5x the tile's full-res pixels, against 2.25x when each tap
recomputed its own 9x9s) into the program's private scratch slot (reused from tile to tile, so it
stays in L1/L2; see decoder_tail.py), then runs the grouped 3x3 and the 1x1 from the slot, each tap
reflecting at the full-res border. The 16-channel full-res map never exists as a map. Kernel 2 reads
kernel 1's half-resolution 32-channel map back from global memory: fusing it in would need the
half-res map on a 1-pixel halo of the quarter-res tile (not done).

The 9x9 has two forms. Its cost is its gather, not its products:
  im2col (fp32 maps): per kernel row a ``[pixels, 27 -> 32] x [32, 16]`` product, each pixel's 27 inputs
    gathered (column reflections computed once per step for all nine rows; tiles away from the top and
    bottom borders step rows by a pointer offset). Exact fp32 products on FMA units, which bound it.
  banded (half maps): per kernel row a ``[segments, 64] x [64, 128]`` product on the tensor cores, a
    segment being 8 consecutive pixels of a row, whose 16-column input window (3 channels, padded to
    4) is loaded once against a banded weight matrix (``pack_conv9x9_banded``): a quarter of the
    gather for twice the products. Windows start on multiples of 8 columns, so in contiguous images
    whose width is a multiple of 16 (strides the JIT marks so) they are whole 16-byte rows (cp.async).
The banded form takes a fraction of the im2col form's instructions a pixel (docs/kernel_notes.md).

Grouped convolutions run as ``tl.dot`` with a block-sparse per-tap matrix (``pack_grouped_conv``):
in fp32 the zero products are exact, so the result is the grouped sum in another order.
Each level reflects at its own border: the 9x9 at full resolution, the stride-2 taps at the level
they read.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (ConfigsByMapDtype, autotune_configs, check_map_dtype, partial_sum_end, partial_sum_start,
                      persistent_programs, persistent_tile, reflect, relu_1x1_relu, tile_pixels)


# The 9x9's im2col columns of one kernel row: (input channel, kx) = 3 * 9 = 27, padded to a power of two.
ROW_K = tl.constexpr(32)


@triton.jit
def conv9x9_at(img, fy, col, stride_h, H, w9_ptr, BLOCK: tl.constexpr, ROWS_INSIDE: tl.constexpr):
    """The 9x9 3->16 (no bias) at full-res rows ``fy`` of ``BLOCK`` pixels whose kernel rows' im2col
    columns start at offsets ``col`` [BLOCK, ROW_K] (reflected at the side borders) -> [BLOCK, 16] fp32.

    One ``[BLOCK, 32] x [32, 16]`` product per kernel row. ``ROWS_INSIDE``: no row reads past the top or
    bottom border, so row ky is row 0 moved by ky rows: an add and a load an element. Otherwise each
    row's reflection is computed per pixel. Runtime loops: unrolled, the compiler hoists the gathers
    and spills."""
    k = tl.arange(0, ROW_K)
    c16 = tl.arange(0, 16)
    if ROWS_INSIDE:
        top = img + (fy - 4)[:, None] * stride_h + col
    acc = tl.zeros([BLOCK, 16], tl.float32)
    for ky0 in range(0, 9, 3):
        part = partial_sum_start(acc, img.dtype.element_ty == tl.float32)  # fp32: per three kernel rows
        for ky in range(ky0, ky0 + 3):
            if ROWS_INSIDE:
                a = tl.load(top + ky * stride_h)
            else:
                iy = reflect(fy + (ky - 4), H)
                a = tl.load(img + iy[:, None] * stride_h + col)
            wk = tl.load(w9_ptr + (k + ky * ROW_K)[:, None] * 16 + c16[None, :])
            part = tl.dot(a.to(wk.dtype), wk, part, input_precision="ieee")
        acc = partial_sum_end(acc, part, img.dtype.element_ty == tl.float32)
    return acc


# The banded form of the 9x9 (half maps): a segment of SEGMENT consecutive full-res pixels of a row reads
# a window of WINDOW = SEGMENT + 8 consecutive input columns per kernel row.
SEGMENT = tl.constexpr(8)
WINDOW = tl.constexpr(16)


@triton.jit
def conv9x9_banded_at(img, fy, window, stride_c, stride_h, stride_w, H, W, w9b_ptr, SEGMENTS: tl.constexpr,
                      INSIDE: tl.constexpr):
    """The 9x9 3->16 (no bias) at ``SEGMENTS`` segments of 8 full-res pixels on rows ``fy``, each from
    column ``window + 4`` -> [SEGMENTS, 8 * 16] fp32, column ``xl * 16 + c_out`` for pixel ``xl``.

    One ``[SEGMENTS, 64] x [64, 128]`` product per kernel row with the banded weights
    (``pack_conv9x9_banded``): A's column k is input channel ``k // WINDOW`` at input column
    ``window + k % WINDOW`` (channel 3 reads channel 2 again, against zero weights). Each segment loads
    48 image values a row where the im2col form loads 8 x 27: twice the tensor-core products (the
    band's zeros), a quarter of the gather. ``INSIDE``: no window reaches past the image border, so a
    row's addresses are a segment base plus a column offset, formed at the load (a [SEGMENTS, 64]
    tensor of addresses held across the rows took 64 registers a thread at 4 warps, and spilled);
    otherwise rows and columns are reflected."""
    k = tl.arange(0, 4 * WINDOW)
    n = tl.arange(0, SEGMENT * 16)
    k_in = tl.minimum(k // WINDOW, 2)
    if INSIDE:
        k_off = k_in * stride_c + (k % WINDOW) * stride_w
        base = (fy - 4) * stride_h + window * stride_w
    else:
        col = k_in[None, :] * stride_c + reflect(window[:, None] + (k % WINDOW)[None, :], W) * stride_w
    acc = tl.zeros([SEGMENTS, SEGMENT * 16], tl.float32)
    for ky in range(9):
        if INSIDE:
            a = tl.load((img + (base + ky * stride_h))[:, None] + k_off[None, :])
        else:
            iy = reflect(fy + (ky - 4), H)
            a = tl.load(img + iy[:, None] * stride_h + col)
        wk = tl.load(w9b_ptr + (k + ky * 4 * WINDOW)[:, None] * (SEGMENT * 16) + n[None, :])
        # ieee: on fp32 maps (tests) the default would be TF32, which rounds the image to 10 bits.
        acc = tl.dot(a.to(wk.dtype), wk, acc, input_precision="ieee")
    return acc


# Per 9x9 step: BLOCK9 pixels of the span (fp32 maps, im2col form) or SEGMENTS segments of 8 pixels
# (half maps, banded form). fp32, 8x16 tiles: a 17 x 33 span, 561 pixels in 9 steps of 64. Half maps,
# 8x32 tiles: 17 rows of 9 segments in 3 steps of 64, 1.5x the tile's full-res pixels. Two programs an
# SM are resident at four warps whatever their register count (``launch_encoder_head``), at eight with
# up to 128 registers; with more, one at a time does the same work in turn. Two stages, eight warps for
# half maps, no larger steps or tiles: the alternatives spill inside loops in some form (the full
# record: docs/kernel_notes.md).
FP32_CONFIG = triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK9": 64, "SEGMENTS": 64}, num_warps=4, num_stages=2)
HALF_MAP_CONFIGS = [
    triton.Config({"TILE_H": 8, "TILE_W": 32, "BLOCK9": 64, "SEGMENTS": 64}, num_warps=8, num_stages=2),
]


@triton.autotune(
    configs=autotune_configs(
        [FP32_CONFIG, *HALF_MAP_CONFIGS],
        triton.Config({"TILE_H": 32, "TILE_W": 32, "BLOCK9": 1024, "SEGMENTS": 256}, num_warps=4),
    ),
    key=["H", "W"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
    prune_configs_by={"early_config_prune": ConfigsByMapDtype("out_ptr", [FP32_CONFIG], HALF_MAP_CONFIGS)},
)
@triton.jit
def encoder_head_half_kernel(
    img_ptr, stride_n, stride_c, stride_h, stride_w,
    w9_ptr, w9b_ptr, b9_ptr, wg_ptr, bg_ptr, w1_ptr, b1_ptr, out_ptr, scratch_ptr,
    N, H, W, H2, W2,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK9: tl.constexpr, SEGMENTS: tl.constexpr,
    BANDED: tl.constexpr,
):
    # Persistent grid: (programs,). Output NHWC [N, H2, W2, 32]. BANDED: the 9x9's banded form (half
    # maps; also for fp32 maps in the tests), else im2col (fp32 maps: exact, and FMA-bound).
    #
    # The span: full-res rows 2 * hy0 - 1 .. 2 * (hy0 + TILE_H) - 1 and columns from 2 * hx0 - ORIGIN_X,
    # SPAN_W of them. im2col: the 2 * TILE_W + 1 columns the taps read. Banded: from 3 columns earlier,
    # in whole segments, so that every segment's input window starts on a multiple of 8 columns
    # (whole 16-byte rows, loaded by cp.async, in contiguous images whose width is a multiple of 16).
    tl.static_assert(TILE_W % 4 == 0, "the banded span needs TILE_W a multiple of 4")
    SPAN_H: tl.constexpr = 2 * TILE_H + 1
    ORIGIN_X: tl.constexpr = 4 if BANDED else 1
    SEGMENTS_PER_ROW: tl.constexpr = TILE_W // 4 + 1  # 8 * (TILE_W / 4 + 1) = 2 * TILE_W + 8 columns
    SPAN_W: tl.constexpr = SEGMENT * SEGMENTS_PER_ROW if BANDED else 2 * TILE_W + 1
    SPAN_PIXELS: tl.constexpr = SPAN_H * SPAN_W
    tiles_w = tl.cdiv(W2, TILE_W)
    tiles_per_image = tl.cdiv(H2, TILE_H) * tiles_w
    slot = scratch_ptr + tl.program_id(0).to(tl.int64) * SPAN_PIXELS * 16
    c16 = tl.arange(0, 16)
    c32 = tl.arange(0, 32)
    # im2col column k of a kernel row's product is (input channel k // 9, kx = k % 9). The padding
    # columns 27..31 read channel 2 at kx = 0..4 again, against zero weights: no masks, and every load
    # stays inside the image (reflect clamps the pixels of partial tiles too). Exact for finite images;
    # a NaN or inf pixel reaches only outputs that its real taps reach anyway (where inf * 0 makes NaN
    # of +-inf). The banded form pads the same way (``conv9x9_banded_at``).
    k = tl.arange(0, ROW_K)
    k_in = tl.minimum(k // 9, 2)
    k_x = k % 9 - 4
    nb = tl.arange(0, SEGMENT * 16)
    p = tl.arange(0, TILE_H * TILE_W)

    for work in range(tl.program_id(0), N * tiles_per_image, tl.num_programs(0)):
        n, hy0, hx0 = persistent_tile(work, tiles_per_image, tiles_w, TILE_H, TILE_W)
        img = img_ptr + n.to(tl.int64) * stride_n
        # The span's 9x9s read full-res rows 2 * hy0 - 5 .. 2 * (hy0 + TILE_H) + 3: inside the image
        # for every tile but those of the first and last rows of tiles.
        rows_inside = (2 * hy0 >= 5) & (2 * (hy0 + TILE_H) + 4 <= H)
        # The banded form's windows read columns 2 * hx0 - 8 .. 2 * hx0 + 8 * SEGMENTS_PER_ROW - 1.
        cols_inside = (2 * hx0 >= 8) & (2 * hx0 + 8 * SEGMENTS_PER_ROW <= W)
        # The previous tile's taps must have read the slot before it is overwritten.
        tl.debug_barrier()
        # 1. relu(9x9 + bias) at the span's full-res pixels as they are (the taps below reflect): past
        # the image border they hold whatever the reflected input makes of them, and no tap reads them.
        if not BANDED:
            for c0 in range(0, SPAN_PIXELS, BLOCK9):
                i = c0 + tl.arange(0, BLOCK9)
                inside = i < SPAN_PIXELS
                i = tl.minimum(i, SPAN_PIXELS - 1)  # the padding lanes repeat the last pixel
                fy = 2 * hy0 - 1 + i // SPAN_W
                fx = 2 * hx0 - ORIGIN_X + i % SPAN_W
                # the kernel rows' im2col column offsets, reflected once for all nine rows
                col = k_in[None, :] * stride_c + reflect(fx[:, None] + k_x[None, :], W) * stride_w
                if rows_inside:
                    acc = conv9x9_at(img, fy, col, stride_h, H, w9_ptr, BLOCK9, True)
                else:
                    acc = conv9x9_at(img, fy, col, stride_h, H, w9_ptr, BLOCK9, False)
                f = tl.maximum(acc + tl.load(b9_ptr + c16).to(tl.float32)[None, :], 0.0)
                tl.store(slot + i[:, None] * 16 + c16[None, :], f.to(scratch_ptr.dtype.element_ty),
                         mask=inside[:, None])
        else:
            for m0 in range(0, SPAN_H * SEGMENTS_PER_ROW, SEGMENTS):
                m = m0 + tl.arange(0, SEGMENTS)
                inside = m < SPAN_H * SEGMENTS_PER_ROW
                m = tl.minimum(m, SPAN_H * SEGMENTS_PER_ROW - 1)
                sy = m // SEGMENTS_PER_ROW  # the segment's span row and first span column
                sx = (m % SEGMENTS_PER_ROW) * SEGMENT
                fy = 2 * hy0 - 1 + sy
                window = 2 * hx0 - ORIGIN_X - 4 + sx  # its input window's first column: a multiple of 8
                if rows_inside & cols_inside:
                    acc = conv9x9_banded_at(img, fy, window, stride_c, stride_h, stride_w, H, W, w9b_ptr, SEGMENTS,
                                            True)
                else:
                    acc = conv9x9_banded_at(img, fy, window, stride_c, stride_h, stride_w, H, W, w9b_ptr, SEGMENTS,
                                            False)
                # the bias of each column of a segment's output, loaded here: held across the persistent
                # loop, it takes registers that the 9x9 needs
                f = tl.maximum(acc + tl.load(b9_ptr + nb % 16).to(tl.float32)[None, :], 0.0)
                # a segment's 8 pixels are consecutive in the slot: 128 consecutive values
                tl.store(slot + (sy * SPAN_W + sx)[:, None] * 16 + nb[None, :], f.to(scratch_ptr.dtype.element_ty),
                         mask=inside[:, None])
        tl.debug_barrier()  # the whole span is written before any tap reads it

        # 2. grouped stride-2 3x3 16->32 + ReLU, 1x1 32->32 + ReLU at the tile's half-res pixels. Each
        # tap reads the span at the full-res position it reflects to (clamped into the span: only the
        # masked-out pixels of an overhanging tile reach past it).
        py = hy0 + p // TILE_W
        px = hx0 + p % TILE_W
        acc32 = tl.zeros([TILE_H * TILE_W, 32], tl.float32)
        for tap in range(9):
            ty = tl.minimum(tl.maximum(reflect(2 * py + (tap // 3 - 1), H) - (2 * hy0 - 1), 0), SPAN_H - 1)
            tx = tl.minimum(tl.maximum(reflect(2 * px + (tap % 3 - 1), W) - (2 * hx0 - ORIGIN_X), 0), SPAN_W - 1)
            f16 = tl.load(slot + (ty * SPAN_W + tx)[:, None] * 16 + c16[None, :])
            wg = tl.load(wg_ptr + tap * 16 * 32 + c16[:, None] * 32 + c32[None, :])
            acc32 = tl.dot(f16.to(wg.dtype), wg, acc32, input_precision="ieee")
        h = relu_1x1_relu(acc32, bg_ptr, w1_ptr, b1_ptr, 32)
        offs = n.to(tl.int64) * H2 * W2 * 32 + (py * W2 + px)[:, None] * 32 + c32[None, :]
        tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=((py < H2) & (px < W2))[:, None])


@triton.autotune(
    configs=autotune_configs(
        # 8 warps for 64 pixels: the fp32 1x1 (64x64, FMA dot) spills on sm_80 with 4 warps.
        [triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 16}, num_warps=8),
         triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 32}, num_warps=8)],
        triton.Config({"TILE_H": 16, "TILE_W": 16, "BLOCK_K": 32}, num_warps=4),
    ),
    key=["H2", "W2"],
    cache_results=True,  # the timings on disk (Triton's cache): a later process does not re-tune
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
    h = relu_1x1_relu(acc, bg_ptr, w1_ptr, b1_ptr, 64)
    offs = n.to(tl.int64) * H4 * W4 * 64 + (py * W4 + px)[:, None] * 64 + c64[None, :]
    tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=valid[:, None])


def slot_elements(config: dict) -> int:
    """Scratch elements one program of ``encoder_head_half_kernel`` uses with ``config`` (either form of
    the 9x9): the 16-channel full-res span of a tile."""
    span_w = max(2 * config["TILE_W"] + 1, SEGMENT.value * (config["TILE_W"] // 4 + 1))
    return (2 * config["TILE_H"] + 1) * span_w * 16


def launch_encoder_head(image: torch.Tensor, w9, w9b, b9, wg1, bg1, w1, b1, wg2, bg2, w2, b2,
                        programs: int | None = None, scratch: torch.Tensor | None = None,
                        banded: bool | None = None) -> torch.Tensor:
    """``encoder_head`` with an optional persistent program count and scratch for the half kernel (tests
    use one program walking several tiles, and a poisoned scratch), and the 9x9's form (default: banded
    for half maps; tests run it on fp32 maps too, to check it exactly)."""
    check_map_dtype(image)
    n, _, h, w = image.shape
    half_h, half_w = triton.cdiv(h, 2), triton.cdiv(w, 2)
    quarter_h, quarter_w = triton.cdiv(half_h, 2), triton.cdiv(half_w, 2)
    # The program count and the scratch are fixed before the autotuner picks a tile: slots for the
    # largest config the map dtype may take, the count for the smallest tile.
    configs = [c.kwargs for c in
               encoder_head_half_kernel.early_config_prune.for_maps(encoder_head_half_kernel.configs, image.dtype)]
    if programs is None:
        smallest = min(c["TILE_H"] * c["TILE_W"] for c in configs)
        # Two programs an SM (see the configs): a persistent program that is not resident waits for
        # one that is to finish all its tiles, so more than fit would end with SMs half idle.
        programs = persistent_programs(image.device, n * triton.cdiv(half_h * half_w, smallest), per_sm=2)
    if scratch is None:
        scratch = image.new_empty(programs, max(slot_elements(c) for c in configs), dtype=wg1.dtype)
    half = image.new_empty(n, half_h, half_w, 32)
    encoder_head_half_kernel[(programs,)](image, *image.stride(), w9, w9b, b9, wg1, bg1, w1, b1, half, scratch,
                                          n, h, w, half_h, half_w,
                                          BANDED=image.dtype != torch.float32 if banded is None else banded)

    def quarter_grid(meta):
        return (triton.cdiv(quarter_h, meta["TILE_H"]) * triton.cdiv(quarter_w, meta["TILE_W"]), n)

    out = image.new_empty(n, quarter_h, quarter_w, 64)
    encoder_head_quarter_kernel[quarter_grid](half, wg2, bg2, w2, b2, out, half_h, half_w, quarter_h, quarter_w)
    return out


@torch.library.custom_op("microast::encoder_head", mutates_args=())
def encoder_head(
    image: torch.Tensor, w9: torch.Tensor, w9b: torch.Tensor, b9: torch.Tensor, wg1: torch.Tensor, bg1: torch.Tensor,
    w1: torch.Tensor, b1: torch.Tensor, wg2: torch.Tensor, bg2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
) -> torch.Tensor:
    """``image`` [N, 3, H, W] (any strides) -> NHWC [N, ceil(H/4), ceil(W/4), 64] in the image's dtype."""
    return launch_encoder_head(image, w9, w9b, b9, wg1, bg1, w1, b1, wg2, bg2, w2, b2)


@encoder_head.register_fake
def _(image, w9, w9b, b9, wg1, bg1, w1, b1, wg2, bg2, w2, b2):
    n, _, h, w = image.shape
    return image.new_empty(n, (h + 3) // 4, (w + 3) // 4, 64)
