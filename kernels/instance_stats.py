"""Instance-norm statistics for FeatMod: per-(n, c) mean and ``sqrt(unbiased var + eps)``.

Two steps, both in fp32 whatever the map dtype:
1. per-tile partials ``(count, mean, M2)``: each tile's mean and the squared deviations from *that*
   mean (two passes over registers), never ``E[x^2] - E[x]^2``, which loses digits in fp32 over
   millions of positions. The residual-block kernel writes these from its epilogue
   (``tile_partial_stats``) for the map it has just produced.
2. an exact merge (Chan et al.) of all tiles of a sample: blocks of tiles are combined with the
   parallel formula ``M2 = sum M2_i + sum n_i (mean_i - mean)^2``, blocks in sequence with Chan's
   pairwise update, so no step subtracts two large sums. ``merge_partials`` does it in one program a
   sample; ``merge_partials_split`` first merges groups of tiles in parallel, then the groups, in
   the same formulas and a fixed order.

Every division and the square root are the correctly rounded ``tl.div_rn`` / ``tl.sqrt_rn``: on a GPU
Triton compiles ``/`` to ``div.full.f32`` (2 ulp) and ``tl.sqrt`` to ``sqrt.approx.ftz.f32``, which
put the fp32 backend 2-3x further from float64 than the fp32 reference on the first H100 run (the
interpreter computes both exactly, so only a GPU shows it). They run once per channel: free.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import launched_config

FEATMOD_EPS = 1e-5

# Partials are [N, tiles, 3, C] fp32: count (repeated per channel, so one layout serves all), mean, M2.
PARTIAL_FIELDS = 3


@triton.jit
def tile_partial_stats(v, valid, part_ptr, C: tl.constexpr):
    """Store ``(count, mean, M2)`` per channel of the valid rows of ``v`` [P, C] (fp32) at ``part_ptr``."""
    c = tl.arange(0, C)
    count = tl.sum(valid.to(tl.float32), axis=0)
    mean = tl.div_rn(tl.sum(tl.where(valid[:, None], v, 0.0), axis=0), count)
    dev = tl.where(valid[:, None], v - mean[None, :], 0.0)
    m2 = tl.sum(dev * dev, axis=0)
    tl.store(part_ptr + c, tl.zeros([C], tl.float32) + count)
    tl.store(part_ptr + C + c, mean)
    tl.store(part_ptr + 2 * C + c, m2)


@triton.jit
def merge_tiles(base, lo, hi, C: tl.constexpr, BLOCK_T: tl.constexpr):
    """``(count, mean, M2)`` per channel of the partials of tiles ``[lo, hi)`` at ``base`` ([tiles, 3, C]):
    blocks of BLOCK_T tiles by the parallel formula, blocks in sequence by Chan's update."""
    c = tl.arange(0, C)
    run_n = tl.zeros([C], tl.float32)
    run_mean = tl.zeros([C], tl.float32)
    run_m2 = tl.zeros([C], tl.float32)
    for t0 in range(lo, hi, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        m = (t < hi)[:, None]
        ptrs = base + t[:, None] * (3 * C) + c[None, :]
        cnt = tl.load(ptrs, mask=m, other=0.0)
        mu = tl.load(ptrs + C, mask=m, other=0.0)
        m2 = tl.load(ptrs + 2 * C, mask=m, other=0.0)
        blk_n = tl.sum(cnt, axis=0)
        blk_mean = tl.div_rn(tl.sum(cnt * mu, axis=0), blk_n)
        dev = mu - blk_mean[None, :]
        blk_m2 = tl.sum(m2, axis=0) + tl.sum(cnt * dev * dev, axis=0)
        tot = run_n + blk_n
        delta = blk_mean - run_mean
        share = tl.div_rn(blk_n, tot)
        run_mean = run_mean + delta * share
        run_m2 = run_m2 + blk_m2 + delta * delta * (run_n * share)
        run_n = tot
    return run_n, run_mean, run_m2


@triton.jit
def instance_stats_merge_kernel(part_ptr, mean_ptr, std_ptr, tiles, eps, C: tl.constexpr, BLOCK_T: tl.constexpr):
    # grid: (N,). Unused slots beyond ``tiles`` are never read.
    n = tl.program_id(0)
    c = tl.arange(0, C)
    base = part_ptr + n.to(tl.int64) * tiles * (3 * C)
    run_n, run_mean, run_m2 = merge_tiles(base, 0, tiles, C, BLOCK_T)
    var = tl.div_rn(run_m2, run_n - 1.0)  # unbiased, as torch.var and the published calc_mean_std
    tl.store(mean_ptr + n * C + c, run_mean)
    tl.store(std_ptr + n * C + c, tl.sqrt_rn(var + eps))


@triton.jit
def instance_stats_group_kernel(part_ptr, group_ptr, tiles, per_group, C: tl.constexpr, BLOCK_T: tl.constexpr):
    # grid: (groups, N). Pass 1 of the split merge: program g merges tiles [g * per_group, ...) and
    # stores one (count, mean, M2) partial to group_ptr [N, groups, 3, C], which
    # instance_stats_merge_kernel then merges as if they were tiles.
    g = tl.program_id(0)
    n = tl.program_id(1)
    c = tl.arange(0, C)
    lo = g * per_group
    base = part_ptr + n.to(tl.int64) * tiles * (3 * C)
    run_n, run_mean, run_m2 = merge_tiles(base, lo, tl.minimum(lo + per_group, tiles), C, BLOCK_T)
    out = group_ptr + (n * tl.num_programs(0) + g).to(tl.int64) * (3 * C)
    tl.store(out + c, run_n)
    tl.store(out + C + c, run_mean)
    tl.store(out + 2 * C + c, run_m2)


def max_tiles(kernel, h: int, w: int) -> int:
    """Partial slots to allocate: the most tiles any of ``kernel``'s configs can launch for an h x w map."""
    return max(triton.cdiv(h, cfg.kwargs["TILE_H"]) * triton.cdiv(w, cfg.kwargs["TILE_W"]) for cfg in kernel.configs)


def launched_tiles(kernel, h: int, w: int) -> int:
    cfg = launched_config(kernel)
    return triton.cdiv(h, cfg["TILE_H"]) * triton.cdiv(w, cfg["TILE_W"])


def merge_partials(partials: torch.Tensor, tiles: int, block_t: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``partials`` [N, >= tiles, 3, C] -> (mean [N, C], std [N, C]) fp32; ``block_t`` tiles per merge step."""
    n, _, _, c = partials.shape
    mean = partials.new_empty(n, c)
    std = partials.new_empty(n, c)
    instance_stats_merge_kernel[(n,)](partials, mean, std, tiles, FEATMOD_EPS, C=c, BLOCK_T=block_t)
    return mean, std


# Least group count of the split merge: about one program per SM of a large GPU (132 on an H100) for
# one sample. A constant rather than the device's SM count, so that the reduction order, and hence
# every bit of the result, depends on the map size alone.
SPLIT_GROUPS = 128


def split_groups(tiles: int, groups: int | None = None, block_t: int = 64) -> tuple[int, int]:
    """(groups, tiles per group) of the split merge, none of them empty. By default at least
    ``SPLIT_GROUPS`` groups of at most ``block_t`` tiles, so that each program takes one merge step."""
    if groups is None:
        groups = max(SPLIT_GROUPS, triton.cdiv(tiles, block_t))
    per_group = triton.cdiv(tiles, max(1, min(groups, tiles)))
    return triton.cdiv(tiles, per_group), per_group


def merge_partials_split(partials: torch.Tensor, tiles: int, groups: int | None = None,
                         block_t: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``merge_partials`` in two passes: grid (groups, N) merges contiguous groups of tiles
    (``split_groups``), then grid (N,) merges the groups in order. A fixed order, so bitwise the same
    from run to run."""
    n, _, _, c = partials.shape
    assert tiles >= 1
    groups, per_group = split_groups(tiles, groups, block_t)
    group_partials = partials.new_empty(n, groups, PARTIAL_FIELDS, c)
    instance_stats_group_kernel[(groups, n)](partials, group_partials, tiles, per_group, C=c, BLOCK_T=block_t)
    return merge_partials(group_partials, groups, block_t)
