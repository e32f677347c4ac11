"""Exact tiled execution: any resolution in bounded working memory, identical to the whole-image model.

Every stage of MicroAST is local (a convolution sees a few pixels around it) except the FeatMod
statistics, which need whole quarter-resolution maps. So the work runs in three passes over the
image, tile by tile, with a barrier for statistics between them:

1. content encoder -> ``c1`` (quarter res, 64 channels), and the statistics of ``c1``;
2. the first decoder block, with FeatMod from those statistics -> ``x2``, and the statistics of ``x2``;
3. the second decoder block and the decoder tail -> the output, written tile by tile in row order.

A tile reads its neighbourhood with a halo at least as wide as the receptive field of the stages it
runs (a backend's ``TileStages``: each layer pads only at the image border and consumes the halo
elsewhere), so its own pixels are exactly those of the whole-image model. Statistics are exact: per-tile
(count, mean, M2) partials merged in float64 (Chan et al.), never ``E[x^2] - E[x]^2``. Outputs
match the whole-image model up to fp32 summation order.

What scales with the image: the input, the output and the quarter-resolution maps a plan keeps
between passes (``N * 64 * ceil(H/4) * ceil(W/4)`` values each): ``maps=2`` keeps ``c1`` and ``x2``;
``maps=1`` keeps ``c1`` and recomputes the first block in pass 3; ``maps=0`` keeps none and
recomputes the encoder in passes 2 and 3 (about 2.3x the work, for images whose maps alone exceed the
budget). Everything else is per tile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from .reference import FEATMOD_EPS
from .signals import StyleSignals

# Halos in quarter-resolution pixels: the receptive-field radius of each stage, rounded up.
# Encoder: 9x9 (4 full-res px), two stride-2 3x3 (1 full + 1 half px, plus one for the odd start of a
# stride-2 window) and four 3x3 at quarter res (4): 23 full-res px, 6 quarter px.
ENCODER_HALO = 6
# Residual block: two 3x3 convolutions.
BLOCK_HALO = 2
# Tail: 9x9 (4 full px) + 3x3 (1) at full res, one half-res neighbour for the bilinear x2, the
# half-res 3x3 (1) and one quarter-res neighbour for the first bilinear x2: 3 quarter px.
TAIL_HALO = 3

# Working memory of a tile per quarter-res pixel (halo included), in elements: the encoder head and
# the decoder tail hold a few 16- to 32-channel full-res maps (16 positions each) and the convolutions'
# scratch. The worst measured peak growth, rounded up (docs/streaming.md#measurements).
_TILE_ELEMENTS_PER_QUARTER_PIXEL = 7000
_TILES = (512, 384, 256, 192, 128, 96, 64, 48, 32)
_MIN_TILE = 16

# Default tile of CPU inference, in quarter-res pixels (384 image pixels): the working set stays in
# cache; smaller tiles recompute more halo, larger ones are no faster and hold more memory.
CPU_TILE = 96


@dataclass(frozen=True)
class Patch:
    """A piece of a feature map at one level of the network (full, half or quarter resolution):
    ``data [N, C, h, w]`` holds rows ``[y, y + h)`` and columns ``[x, x + w)`` of a level whose full
    size is ``height x width``."""

    data: torch.Tensor
    y: int
    x: int
    height: int
    width: int

    @property
    def y1(self) -> int:
        return self.y + self.data.shape[-2]

    @property
    def x1(self) -> int:
        return self.x + self.data.shape[-1]

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> "Patch":
        if not (self.y <= y0 <= y1 <= self.y1 and self.x <= x0 <= x1 <= self.x1):
            raise AssertionError(f"rows {y0}:{y1}, cols {x0}:{x1} are outside the patch "
                                 f"{self.y}:{self.y1}, {self.x}:{self.x1} (a halo too small)")
        data = self.data[..., y0 - self.y:y1 - self.y, x0 - self.x:x1 - self.x]
        return Patch(data, y0, x0, self.height, self.width)

    def crop_like(self, other: "Patch") -> "Patch":
        return self.crop(other.y, other.y1, other.x, other.x1)


class TileStages(Protocol):
    """A backend's content path as functions of patches, which the executor runs tile by tile. Each
    stage must give a patch's own pixels exactly as the whole-image model would, given the halo of
    its receptive field (``ENCODER_HALO``, ``BLOCK_HALO``, ``TAIL_HALO``) around them."""

    device: torch.device
    dtype: torch.dtype
    memory_format: torch.memory_format  # the layout the stages want their NCHW patches in

    def encode(self, p: Patch) -> Patch:
        """Image patch -> quarter-res 64-channel patch (the content encoder's f1)."""

    def decoder_block(self, index: int, x_mean: torch.Tensor, x_std: torch.Tensor, block_signals,
                      alpha) -> Callable[[Patch], Patch]:
        """Decoder block ``index`` (1 or 2) with FeatMod from its whole input's statistics ``[N, 64, 1, 1]``
        and the style's ``block_signals`` (``StyleSignals.per_block``), as a function of a patch."""

    def tail(self, p: Patch) -> Patch:
        """Quarter-res 64-channel patch -> output image patch (4x)."""


# glibc's malloc returns blocks over its mmap threshold (at most 32 MB) and heap tops over its trim
# threshold to the kernel on free, so each tile's 10-40 MB maps would be faulted in and zeroed afresh,
# tile after tile. Raising both keeps those pages in the process. MICROAST_FAST_MALLOPT=0 opts out.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned = False


def keep_freed_memory() -> None:
    """Once per process, on Linux/glibc: keep freed tile buffers for reuse instead of unmapping them."""
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux") or os.environ.get("MICROAST_FAST_MALLOPT") == "0":
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        pass


@dataclass(frozen=True)
class Plan:
    """How to stream: tile side in quarter-res pixels, and how many quarter-res maps to keep (2, 1, 0)."""

    tile: int
    maps: int = 2


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
    """Row-major, so that the output is complete band by band."""
    out = []
    for y0 in range(0, h4, tile):
        for x0 in range(0, w4, tile):
            y1, x1 = min(h4, y0 + tile), min(w4, x0 + tile)
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(h4, y1 + halo), max(0, x0 - halo), min(w4, x1 + halo)))
    return out


class StatsAccumulator:
    """Per-(n, c) mean and ``sqrt(unbiased var + eps)`` of a map seen tile by tile."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
        count = x.shape[-2] * x.shape[-1]
        mean, m2 = mean.double(), var.double() * count
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * (count / total)
        self.m2 += m2 + delta.square() * (self.count * count / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.float(), (self.m2 / (self.count - 1) + FEATMOD_EPS).sqrt().float()


@dataclass
class Stage:
    run: Callable[[Patch], Patch]
    halo: int  # quarter-res pixels of context it needs around its output
    scale: int  # its output pixels per quarter-res pixel


def run_tiles(stages: list[Stage], read, in_scale: int, in_size: tuple[int, int], grid: tuple[int, int],
              tile: int, progress=None):
    """For each tile of the quarter-res ``grid``, in row-major order: read its halo'd input (``in_scale``
    pixels per quarter-res pixel, a level of ``in_size``), run ``stages``, and yield ``(tile, patch)``
    with the patch cropped to the tile's own pixels."""
    halo = sum(s.halo for s in stages)
    out_scale = stages[-1].scale
    for t in tiles(*grid, tile, halo):
        y0, y1 = t.hy0 * in_scale, min(in_size[0], t.hy1 * in_scale)
        x0, x1 = t.hx0 * in_scale, min(in_size[1], t.hx1 * in_scale)
        p = Patch(read(y0, y1, x0, x1), y0, x0, *in_size)
        for stage in stages:
            p = stage.run(p)
        yield t, p.crop(t.y0 * out_scale, t.y1 * out_scale, t.x0 * out_scale, t.x1 * out_scale)
        if progress is not None:
            progress(1)


def tile_count(h: int, w: int, tile: int) -> int:
    """Tiles a stream processes for an ``h x w`` image (three passes)."""
    return 3 * math.ceil(math.ceil(h / 4) / tile) * math.ceil(math.ceil(w / 4) / tile)


def stream(stages: TileStages, read, size: tuple[int, int], batch: int, signals: StyleSignals, alpha, plan: Plan,
           progress=None) -> Iterator[tuple[int, torch.Tensor]]:
    """Stylise an ``N x 3 x size`` image given as ``read(y0, y1, x0, x1) -> [N, 3, y1-y0, x1-x0]`` through
    a backend's ``stages`` (maps take their device and dtype).

    Yields the output (``N x 3 x 4*ceil(h/4) x 4*ceil(w/4)``) band by band, top to bottom, as
    ``(first row, band [N, 3, rows, 4*ceil(w/4)])``. ``progress(k)`` counts processed tiles
    (``tile_count`` in all).
    """
    h, w = size
    grid = (math.ceil(h / 4), math.ceil(w / 4))
    if stages.device.type == "cpu":
        keep_freed_memory()
    memory_format = stages.memory_format
    # A fresh copy with canonical strides: oneDNN picks its algorithm (and so its rounding) by the strides,
    # even those of size-1 dims, and a tile must come out the same whatever array it was cut from.
    image = (lambda *region: read(*region).clone(memory_format=memory_format), 4, size)
    encoder = Stage(stages.encode, ENCODER_HALO, 1)

    def run_keeping(pass_stages, source, keep_map: bool):
        """A pass that ends at quarter res: the statistics of its output, and the output if kept."""
        out = torch.empty(batch, 64, *grid, dtype=stages.dtype, device=stages.device,
                          memory_format=memory_format) if keep_map else None
        stats = StatsAccumulator()
        for t, p in run_tiles(pass_stages, *source, grid, plan.tile, progress):
            stats.add(p.data)
            if out is not None:
                out[..., t.y0:t.y1, t.x0:t.x1] = p.data
        return out, stats

    def block(index: int, stats: StatsAccumulator, block_signals) -> Stage:
        x_mean, x_std = stats.result()
        return Stage(stages.decoder_block(index, x_mean, x_std, block_signals, alpha), BLOCK_HALO, 1)

    def from_map(m: torch.Tensor):
        return (lambda y0, y1, x0, x1: m[..., y0:y1, x0:x1]), 1, grid

    signals1, signals2 = signals.per_block()
    # Pass 1: the encoder; c1 kept unless the plan recomputes it.
    c1, stats1 = run_keeping([encoder], image, plan.maps >= 1)
    before1, source = ([], from_map(c1)) if c1 is not None else ([encoder], image)
    block1 = block(1, stats1, signals1)
    # Pass 2: the first block; x2 kept when the plan allows.
    x2, stats2 = run_keeping(before1 + [block1], source, plan.maps >= 2)
    del c1
    before2, source = ([], from_map(x2)) if x2 is not None else (before1 + [block1], source)
    block2 = block(2, stats2, signals2)
    # Pass 3: the second block and the tail, out band by band.
    band = None
    for t, p in run_tiles(before2 + [block2, Stage(stages.tail, TAIL_HALO, 4)], *source, grid, plan.tile, progress):
        if band is None:
            band = p.data.new_empty(batch, 3, p.data.shape[-2], 4 * grid[1])
        band[..., p.x:p.x1] = p.data
        if t.x1 == grid[1]:
            yield p.y, band
            band = None


def stylize(stages: TileStages, content: torch.Tensor, signals: StyleSignals, alpha, plan: Plan) -> torch.Tensor:
    """A backend's ``stylize`` on a tensor, streamed through its ``stages`` as ``plan`` says."""
    n, _, h, w = content.shape
    out = content.new_empty(n, 3, 4 * math.ceil(h / 4), 4 * math.ceil(w / 4))

    def read(y0, y1, x0, x1):
        return content[..., y0:y1, x0:x1]

    for y0, band in stream(stages, read, (h, w), n, signals, alpha, plan):
        out[..., y0:y0 + band.shape[-2], :] = band
    return out


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


def image_bytes(n: int, h: int, w: int, element_size: int) -> int:
    """The input and output tensors of ``forward``."""
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    return (n * 3 * h * w + n * 3 * (4 * h4) * (4 * w4)) * element_size


def plan_bytes(plan: Plan, n: int, h: int, w: int, element_size: int) -> int:
    """Working memory of a plan besides input and output: kept maps and one tile's working set."""
    halo = {2: ENCODER_HALO, 1: 2 * BLOCK_HALO + TAIL_HALO, 0: ENCODER_HALO + 2 * BLOCK_HALO + TAIL_HALO}[plan.maps]
    side = plan.tile + 2 * halo
    maps = plan.maps * n * 64 * math.ceil(h / 4) * math.ceil(w / 4)
    return (maps + n * side * side * _TILE_ELEMENTS_PER_QUARTER_PIXEL) * element_size


def plan_for_budget(n: int, h: int, w: int, element_size: int, max_memory: int, io_bytes: int | None = None,
                    max_tile: int | None = None) -> Plan:
    """The fastest plan whose memory, with ``io_bytes`` for input and output (default: the tensors of
    ``forward``), fits ``max_memory`` bytes: keep as many maps as fit with a tile of at least 32, then
    recompute with tiles down to 16. Raises ValueError, with the figures, when nothing fits."""
    io_bytes = image_bytes(n, h, w, element_size) if io_bytes is None else io_bytes
    tiles_ = [t for t in _TILES if max_tile is None or t <= max_tile]
    candidates = [Plan(t, maps) for maps in (2, 1, 0) for t in tiles_] + [Plan(_MIN_TILE, 0)]
    for plan in candidates:
        if io_bytes + plan_bytes(plan, n, h, w, element_size) <= max_memory:
            return plan
    least = io_bytes + plan_bytes(candidates[-1], n, h, w, element_size)
    raise ValueError(
        f"a {n}x3x{h}x{w} image needs at least {least / 2**20:.0f} MiB ({io_bytes / 2**20:.0f} MiB for its "
        f"input and output alone), more than max_memory={max_memory / 2**20:.0f} MiB allows; "
        "raise the budget or process a smaller image or batch"
    )
