"""Exact tiled execution: any resolution in bounded working memory, identical to the whole-image model.

Every stage of MicroAST is local (a convolution sees a few pixels around it) except the FeatMod
statistics, which need whole quarter-resolution maps. So the schedule is:

1. content encoder, tile by tile, into the quarter-resolution map ``c1`` (64 channels);
2. per decoder block: exact fp32 statistics over the whole quarter-res input (its FeatMod), then the
   block tile by tile into a new quarter-res map;
3. decoder tail (upsample, convolutions, 9x9), tile by tile, written into the output.

A tile reads its neighbourhood with a halo at least as wide as the stage's receptive field and keeps
only its own centre, so values near a tile border never see the tile's (wrong) reflection padding.
Where a tile touches the image border, the border is the image's and reflection is exactly the
model's. Outputs therefore match the whole-image model up to fp32 summation order.

What scales with the image: the input, the output and two quarter-resolution 64-channel maps
(``N * 64 * ceil(H/4) * ceil(W/4)`` values each). Everything else is per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import torch_backend
from .signals import StyleSignals

# Halos in quarter-resolution pixels, each at least the stage's receptive-field radius.
# Encoder: the 9x9 conv and two stride-2 3x3 convs reach 7 full-res pixels (2 quarter px), the four
# 3x3 residual convs 4 quarter px: 6 in all.
ENCODER_HALO = 6
# Residual block: two 3x3 convolutions.
BLOCK_HALO = 2
# Tail: 9x9 (4 full px) + grouped 3x3 (1) reach 5 full px; the bilinear x2 to full res adds a half-res
# neighbour, the half-res grouped 3x3 one more, the bilinear x2 from quarter res one more: 3 quarter px.
TAIL_HALO = 3
# (Each halo is the minimum: one pixel less breaks exactness at tile borders, by 1e-2 or more.)

# Working memory of a tile per quarter-res pixel (halo included), in elements: the encoder head and
# the decoder tail hold several 16-channel full-res maps (16 positions x 16 channels each) plus the
# convolutions' scratch. Peak RSS growth on CPU (fp32) per tile pixel measured 1,800 (4096x2160, tile 256),
# 2,900 (tile 128) and 6,600 (2048x1024, tile 96: the allocator keeps freed blocks): the worst, rounded up.
_TILE_ELEMENTS_PER_QUARTER_PIXEL = 7000
_MIN_TILE = 16

# Default tile of CPU inference on the torch backend, in quarter-res pixels (384 image pixels): the
# working set stays in cache. Measured at 4096x2160 fp32 on 2 cores: tile 24 23.6 s, 48 13.7 s,
# 96 12.5 s, 192 12.9 s; whole-image 21.4 s.
CPU_TILE = 96


@dataclass(frozen=True)
class Tile:
    """A tile in quarter-res coordinates: its own rows/cols ``[y0, y1) x [x0, x1)`` and the halo'd
    region ``[hy0, hy1) x [hx0, hx1)`` that is read to compute it."""

    y0: int
    y1: int
    x0: int
    x1: int
    hy0: int
    hy1: int
    hx0: int
    hx1: int


def tiles(h4: int, w4: int, tile: int, halo: int) -> list[Tile]:
    out = []
    for y0 in range(0, h4, tile):
        for x0 in range(0, w4, tile):
            y1, x1 = min(h4, y0 + tile), min(w4, x0 + tile)
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(h4, y1 + halo), max(0, x0 - halo), min(w4, x1 + halo)))
    return out


def run_tiled(fn, x: torch.Tensor, out: torch.Tensor, in_scale: int, out_scale: int, tile: int, halo: int) -> None:
    """``out = fn(x)`` for a local ``fn``, computed tile by tile.

    ``x`` and ``out`` are ``in_scale`` and ``out_scale`` times the quarter-res grid of ``out`` (the input
    may be shorter than ``in_scale`` times the grid when the image size is not a multiple of 4)."""
    h4, w4 = out.shape[-2] // out_scale, out.shape[-1] // out_scale
    for t in tiles(h4, w4, tile, halo):
        piece = x[..., t.hy0 * in_scale:t.hy1 * in_scale, t.hx0 * in_scale:t.hx1 * in_scale]
        result = fn(piece)
        oy, ox = (t.y0 - t.hy0) * out_scale, (t.x0 - t.hx0) * out_scale
        out[..., t.y0 * out_scale:t.y1 * out_scale, t.x0 * out_scale:t.x1 * out_scale] = \
            result[..., oy:oy + (t.y1 - t.y0) * out_scale, ox:ox + (t.x1 - t.x0) * out_scale]


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_bytes(value) -> int:
    """``2_000_000_000``, ``"2GB"``, ``"1.5 GiB"``, ``"512MB"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, ""
    else:
        text = str(value).strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        number, unit = digits, text[len(digits):]
        try:
            number = float(number)
        except ValueError:
            number = None
    if number is None or unit not in _UNITS or number <= 0:
        raise ValueError(f"memory budget {value!r} is not a positive size such as 2GB, 1.5GiB or 800MB")
    return int(number * _UNITS[unit])


def fixed_bytes(n: int, h: int, w: int, element_size: int) -> int:
    """Memory that scales with the image whatever the tile: input, output, two quarter-res maps."""
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    image = n * 3 * h * w + n * 3 * (4 * h4) * (4 * w4)
    return (image + 2 * n * 64 * h4 * w4) * element_size


def tile_for_budget(n: int, h: int, w: int, element_size: int, max_memory: int) -> int:
    """The largest tile side (quarter-res pixels) whose working memory fits ``max_memory`` bytes with the
    image-sized buffers; raises ValueError when even the smallest tile does not fit."""
    fixed = fixed_bytes(n, h, w, element_size)
    for tile in (512, 384, 256, 192, 128, 96, 64, 48, 32, _MIN_TILE):
        side = tile + 2 * ENCODER_HALO
        if fixed + n * side * side * _TILE_ELEMENTS_PER_QUARTER_PIXEL * element_size <= max_memory:
            return tile
    raise ValueError(
        f"a {n}x3x{h}x{w} image needs about {fixed / 2**20:.0f} MiB for its input, output and two "
        f"quarter-resolution maps alone, more than max_memory={max_memory / 2**20:.0f} MiB allows; "
        "raise the budget or process a smaller batch"
    )


def stylize(model, content: torch.Tensor, signals: StyleSignals, alpha, tile: int) -> torch.Tensor:
    """The torch backend's ``stylize``, streamed in tiles of ``tile`` quarter-res pixels a side."""
    n, _, h, w = content.shape
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    # Quarter-res maps in the convolutions' layout, so tiles cut from them keep it (see conv_layout).
    memory_format = torch_backend.conv_memory_format(content.device)
    new_map = lambda: torch.empty(n, 64, h4, w4, dtype=content.dtype, device=content.device,  # noqa: E731
                                  memory_format=memory_format)

    x = new_map()
    encode = lambda piece: model.content_encoder(torch_backend.conv_layout(piece))[1]  # noqa: E731
    run_tiled(encode, content, x, 4, 1, tile, ENCODER_HALO)

    decoder = model.decoder
    for block, (s_mean, s_std, w_sig, b_sig) in zip((decoder.dec1, decoder.dec2), signals.per_block()):
        a, shift = torch_backend.featmod_affine(*torch_backend.instance_stats(x), s_mean, s_std, alpha)
        y = new_map()
        run_tiled(lambda piece: torch_backend.filtermod_resblock(block, piece, a, shift, w_sig, b_sig),
                  x, y, 1, 1, tile, BLOCK_HALO)
        x = y

    out = content.new_empty(n, 3, 4 * h4, 4 * w4)
    run_tiled(decoder.dec3, x, out, 1, 4, tile, TAIL_HALO)
    return out
