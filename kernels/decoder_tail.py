"""Decoder tail (``dec3``): quarter-res 64-channel NHWC map -> the 3-channel NCHW image at 4x.

    bilinear x2, grouped (g=32) 3x3 64->32 + ReLU, 1x1 32->32 + ReLU        (kernel 1, half res)
    bilinear x2, grouped (g=16) 3x3 32->16 + ReLU, 1x1 16->16 + ReLU,
    9x9 conv 16->3                                                          (kernel 2, full res)

STAGED DESIGN (first step): kernel 1 writes the half-resolution 32-channel map to global memory and
kernel 2 reads it. The upsampled maps never exist: each 3x3 tap samples its bilinear value from the
level below at the reflected coordinate (each level reflects at its own border, so a tile's halo at
level L is the level-L feature at the reflected level-L coordinate).

The full-resolution 16-channel map never exists as a whole either. Kernel 2 is persistent: each program
computes the 16-channel map on its output tile plus the 4-pixel halo of the 9x9 and stages it in a
private scratch slot (``scratch`` [programs, halo pixels, 16], reused from tile to tile, so it stays in
L1/L2), then runs the 9x9 as 9 ``[pixels, 9 * 16] x [9 * 16, 3]`` GEMMs (one per kernel row) reading shifted
windows of it.
(Triton has no addressable shared memory; a per-program global slot between two barriers is the
portable equivalent.) The halo costs (T+8)^2 / T^2 of the 16-channel work per T x T tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import autotune_configs, bilinear_up2_source, check_map_dtype, persistent_programs, reflect, tile_pixels
from .encoder_head import pack_conv1x1, pack_grouped_conv

HALO = tl.constexpr(4)  # the 9x9 output convolution's reach


@triton.jit
def upsampled_tap(src, qy, qx, h, w, c, C: tl.constexpr, mask):
    """Bilinear x2 (align_corners=False) values of channels ``c`` of the NHWC map ``src`` [h, w, C] at
    upsampled pixels (qy, qx) -> [pixels, len(c)] fp32."""
    y0, y1, ly = bilinear_up2_source(qy, h)
    x0, x1, lx = bilinear_up2_source(qx, w)
    m = mask[:, None]
    v00 = tl.load(src + (y0 * w + x0)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v01 = tl.load(src + (y0 * w + x1)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v10 = tl.load(src + (y1 * w + x0)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    v11 = tl.load(src + (y1 * w + x1)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    lx = lx[:, None]
    ly = ly[:, None]
    # PyTorch's order: rows blended first along x, then the two rows along y.
    return (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)


@triton.jit
def upsample_grouped_conv_1x1(src, qy, qx, mask, h, w, H_UP, W_UP, wg_ptr, bg_ptr, w1_ptr, b1_ptr,
                              C_IN: tl.constexpr, C_OUT: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
    """relu(1x1(relu(grouped3x3(up2(src))))) at upsampled pixels (qy, qx) of an H_UP x W_UP level -> [BLOCK, C_OUT] fp32.

    The upsampled map never exists: each (tap, channel chunk) step samples it from ``src`` at the
    reflected coordinate. A runtime loop: unrolled, the compiler hoists all 36 gathers and spills."""
    kc = tl.arange(0, BLOCK_K)
    c_out = tl.arange(0, C_OUT)
    acc = tl.zeros([BLOCK, C_OUT], tl.float32)
    for kk in range(9 * (C_IN // BLOCK_K)):
        tap = kk // (C_IN // BLOCK_K)
        k0 = (kk % (C_IN // BLOCK_K)) * BLOCK_K
        ty = reflect(qy + (tap // 3 - 1), H_UP)
        tx = reflect(qx + (tap % 3 - 1), W_UP)
        u = upsampled_tap(src, ty, tx, h, w, k0 + kc, C_IN, mask)
        wg = tl.load(wg_ptr + tap * C_IN * C_OUT + (k0 + kc)[:, None] * C_OUT + c_out[None, :])
        acc = tl.dot(u.to(wg.dtype), wg, acc, input_precision="ieee")
    f = tl.maximum(acc + tl.load(bg_ptr + c_out).to(tl.float32)[None, :], 0.0)
    w1 = tl.load(w1_ptr + c_out[:, None] * C_OUT + c_out[None, :])
    f = tl.dot(f.to(w1.dtype), w1, input_precision="ieee") + tl.load(b1_ptr + c_out).to(tl.float32)[None, :]
    return tl.maximum(f, 0.0)


@triton.autotune(
    configs=autotune_configs(
        [triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_K": 16}, num_warps=4),
         triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK_K": 16}, num_warps=8)],
        triton.Config({"TILE_H": 32, "TILE_W": 32, "BLOCK_K": 64}, num_warps=4),
    ),
    key=["H", "W"],
)
@triton.jit
def decoder_tail_half_kernel(
    x_ptr, wg_ptr, bg_ptr, w1_ptr, b1_ptr, out_ptr, H, W,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: (tiles of the half-res map, N). In NHWC [N, H, W, 64], out NHWC [N, 2H, 2W, 32].
    tile = tl.program_id(0)
    n = tl.program_id(1)
    H2 = 2 * H
    W2 = 2 * W
    py, px, valid = tile_pixels(tile, H2, W2, TILE_H, TILE_W)
    f = upsample_grouped_conv_1x1(x_ptr + n.to(tl.int64) * H * W * 64, py, px, valid, H, W, H2, W2,
                                  wg_ptr, bg_ptr, w1_ptr, b1_ptr, 64, 32, TILE_H * TILE_W, BLOCK_K)
    c = tl.arange(0, 32)
    offs = n.to(tl.int64) * H2 * W2 * 32 + (py * W2 + px)[:, None] * 32 + c[None, :]
    tl.store(out_ptr + offs, f.to(out_ptr.dtype.element_ty), mask=valid[:, None])


@triton.autotune(
    configs=autotune_configs(
        [triton.Config({"TILE_H": 16, "TILE_W": 16, "CHUNK": 64, "BLOCK_K": 16, "BLOCK_K9": 16}, num_warps=4),
         triton.Config({"TILE_H": 16, "TILE_W": 16, "CHUNK": 128, "BLOCK_K": 16, "BLOCK_K9": 32}, num_warps=8),
         triton.Config({"TILE_H": 16, "TILE_W": 32, "CHUNK": 128, "BLOCK_K": 16, "BLOCK_K9": 32}, num_warps=8)],
        triton.Config({"TILE_H": 32, "TILE_W": 32, "CHUNK": 2048, "BLOCK_K": 32, "BLOCK_K9": 256}, num_warps=4),
    ),
    key=["H2", "W2"],
)
@triton.jit
def decoder_tail_full_kernel(
    x_ptr, wg_ptr, bg_ptr, w1_ptr, b1_ptr, w9_ptr, b9_ptr, out_ptr, scratch_ptr,
    N, H2, W2,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, CHUNK: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K9: tl.constexpr,
):
    # Persistent grid: (programs,). In NHWC [N, H2, W2, 32], out NCHW [N, 3, 2*H2, 2*W2].
    HALO_H: tl.constexpr = TILE_H + 2 * HALO
    HALO_W: tl.constexpr = TILE_W + 2 * HALO
    HALO_PIXELS: tl.constexpr = HALO_H * HALO_W
    H = 2 * H2
    W = 2 * W2
    tiles_w = tl.cdiv(W, TILE_W)
    tiles_per_image = tl.cdiv(H, TILE_H) * tiles_w
    slot = scratch_ptr + tl.program_id(0).to(tl.int64) * HALO_PIXELS * 16
    c16 = tl.arange(0, 16)
    p = tl.arange(0, TILE_H * TILE_W)
    b9 = tl.load(b9_ptr + c16).to(tl.float32)

    for work in range(tl.program_id(0), N * tiles_per_image, tl.num_programs(0)):
        n = work // tiles_per_image
        tile = work % tiles_per_image
        oy = (tile // tiles_w) * TILE_H
        ox = (tile % tiles_w) * TILE_W
        src = x_ptr + n.to(tl.int64) * H2 * W2 * 32
        # The previous tile's 9x9 must have read the slot before it is overwritten.
        tl.debug_barrier()
        for c0 in range(0, HALO_PIXELS, CHUNK):
            i = c0 + tl.arange(0, CHUNK)
            inside = i < HALO_PIXELS
            # the 9x9's reflection padding at the full-res border
            fy = reflect(oy + i // HALO_W - HALO, H)
            fx = reflect(ox + i % HALO_W - HALO, W)
            f = upsample_grouped_conv_1x1(src, fy, fx, inside, H2, W2, H, W,
                                          wg_ptr, bg_ptr, w1_ptr, b1_ptr, 32, 16, CHUNK, BLOCK_K)
            tl.store(slot + i[:, None] * 16 + c16[None, :], f.to(scratch_ptr.dtype.element_ty),
                     mask=inside[:, None])
        tl.debug_barrier()  # the whole halo tile is written before any thread reads a shifted window

        ty = p // TILE_W
        tx = p % TILE_W
        # With the slot in [pixel][channel] order, the 9 taps x 16 channels of a kernel row are 144
        # consecutive values from the window's first pixel: K = 144 per row, in BLOCK_K9 chunks
        # (weights zero-padded to 256 rows, loads masked past 144).
        acc = tl.zeros([TILE_H * TILE_W, 16], tl.float32)
        for kk in range(9 * tl.cdiv(144, BLOCK_K9)):
            ky = kk // tl.cdiv(144, BLOCK_K9)
            j = (kk % tl.cdiv(144, BLOCK_K9)) * BLOCK_K9 + tl.arange(0, BLOCK_K9)
            row = ((ty + ky) * HALO_W + tx) * 16
            v = tl.load(slot + row[:, None] + j[None, :], mask=(j < 144)[None, :], other=0.0)
            w_row = tl.load(w9_ptr + ky * 256 * 16 + j[:, None] * 16 + c16[None, :])  # [kx*16+ci, c_out]
            acc = tl.dot(v, w_row, acc, input_precision="ieee")
        y = acc + b9[None, :]
        oyy = oy + ty
        oxx = ox + tx
        valid = (oyy < H) & (oxx < W)
        offs = n.to(tl.int64) * 3 * H * W + c16[None, :].to(tl.int64) * H * W + (oyy * W + oxx)[:, None]
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=valid[:, None] & (c16 < 3)[None, :])


def pack_conv9x9_out(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
    """``[3, 16, 9, 9]`` -> ``[9, 256, 16]``: per kernel row ``ky``, rows ``kx * 16 + ci`` (zero past 144),
    output columns 3..15 zero (tl.dot needs N >= 16); and the bias padded to 16 (fp32)."""
    c_out, c_in = weight.shape[:2]
    rows = weight.permute(2, 3, 1, 0).reshape(9, 9 * c_in, c_out)  # [ky, kx * c_in + ci, c_out]
    padded = rows.new_zeros(9, 256, 16)
    padded[:, : 9 * c_in, :c_out] = rows
    b = bias.new_zeros(16, dtype=torch.float32)
    b[:c_out] = bias.float()
    return padded.to(dtype).contiguous(), b


def pack_decoder_tail(dec3: torch.nn.Sequential, dtype: torch.dtype) -> list[torch.Tensor]:
    """The ten operands of ``decoder_tail`` from a ``Decoder.dec3`` (conv layers 1, 3, 6, 8, 10)."""
    conv = [dec3[i].conv_layer for i in (1, 3, 6, 8, 10)]
    return [
        pack_grouped_conv(conv[0].weight, 32, dtype), conv[0].bias,
        pack_conv1x1(conv[1].weight, dtype), conv[1].bias,
        pack_grouped_conv(conv[2].weight, 16, dtype), conv[2].bias,
        pack_conv1x1(conv[3].weight, dtype), conv[3].bias,
        *pack_conv9x9_out(conv[4].weight, conv[4].bias, dtype),
    ]


def launch_decoder_tail(x: torch.Tensor, wg1, bg1, w1, b1, wg2, bg2, w2, b2, w9, b9,
                        programs: int | None = None) -> torch.Tensor:
    """``decoder_tail`` with an optional persistent program count (tests use a small one so that one
    program walks several tiles)."""
    check_map_dtype(x)
    n, h, w, _ = x.shape
    half = x.new_empty(n, 2 * h, 2 * w, 32)

    def half_grid(meta):
        return (triton.cdiv(2 * h, meta["TILE_H"]) * triton.cdiv(2 * w, meta["TILE_W"]), n)

    decoder_tail_half_kernel[half_grid](x, wg1, bg1, w1, b1, half, h, w)

    out = x.new_empty(n, 3, 4 * h, 4 * w)
    # The program count (and so the scratch) is fixed before the autotuner picks a tile: size the
    # slots for the largest halo tile of any config, the count for the smallest tile.
    configs = [c.kwargs for c in decoder_tail_full_kernel.configs]
    halo = HALO.value
    slot_pixels = max((c["TILE_H"] + 2 * halo) * (c["TILE_W"] + 2 * halo) for c in configs)
    if programs is None:
        smallest = min(c["TILE_H"] * c["TILE_W"] for c in configs)
        programs = persistent_programs(x.device, n * triton.cdiv(16 * h * w, smallest))
    scratch = x.new_empty(programs, slot_pixels, 16)
    decoder_tail_full_kernel[(programs,)](half, wg2, bg2, w2, b2, w9, b9, out, scratch, n, 2 * h, 2 * w)
    return out


@torch.library.custom_op("microast::decoder_tail", mutates_args=())
def decoder_tail(
    x: torch.Tensor, wg1: torch.Tensor, bg1: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
    wg2: torch.Tensor, bg2: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w9: torch.Tensor, b9: torch.Tensor,
) -> torch.Tensor:
    """NHWC ``x`` [N, h, w, 64] -> NCHW image [N, 3, 4h, 4w] in ``x``'s dtype."""
    return launch_decoder_tail(x, wg1, bg1, w1, b1, wg2, bg2, w2, b2, w9, b9)


@decoder_tail.register_fake
def _(x, wg1, bg1, w1, b1, wg2, bg2, w2, b2, w9, b9):
    n, h, w, _ = x.shape
    return x.new_empty(n, 3, 4 * h, 4 * w)
