"""The split (multi-program, fixed-order second pass) forms of the two per-sample reductions: the FeatMod
statistics merge (``instance_stats.merge_partials_split``) and the Modulator's pooling
(``microast::modulator_pool_split``), against float64 PyTorch and against the one-program kernels.

Tolerances as in test_triton_kernels.py (fp32 summation-order noise, 1e-5 for outputs O(0.1..10)), or
in units in the last place of the data where the data sit far from zero; never widened to pass.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter

from microast_fast import MicroASTReference  # noqa: E402
from microast_fast.backends import torch_layers  # noqa: E402
from microast_fast.reference import ResidualLayer  # noqa: E402
from microast_fast.kernels import filtermod_resblock as resblock  # noqa: E402
from microast_fast.kernels import instance_stats as stats  # noqa: E402
from microast_fast.kernels import modulator_pool as modpool  # noqa: E402
from microast_fast.weight_packing import pack_modulator_pair  # noqa: E402

from test_triton_kernels import (DEVICE, TOL, assert_close, nchw, nhwc, packed_block, randn,  # noqa: E402
                                 uneven_partials)


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained().to(DEVICE)


def ulp(v: float) -> float:
    """fp32's unit in the last place at magnitude ``v``."""
    return 2.0 ** (math.floor(math.log2(v)) - 23)


# 41 tiles of 1 to 159 positions; data at an offset of -5 (spread 2) and at 100 (spread 0.01,
# where E[x^2] - E[x]^2 in fp32 would lose most digits). Mean tolerances against float64 as in
# test_epilogue_statistics_keep_their_digits (fp32 ulp at 100 is 7.6e-6).
TILE_BOUNDS = [0, 1, 2, 9, *range(40, 2900, 80), 2999, 3000]
OFFSETS = [(-5.0, 2.0, TOL), (100.0, 0.01, TOL * 100)]


@pytest.mark.parametrize("shift,spread,mean_tol", OFFSETS)
@pytest.mark.parametrize("groups", [1, 3, 7, 100])  # 100: more groups than tiles (clamped to one tile each)
def test_split_merge(shift, spread, mean_tol, groups):
    x = randn(int(shift), 2, 64, 3000, scale=spread, shift=shift).double()
    partials = uneven_partials(x, TILE_BOUNDS)
    tiles = len(TILE_BOUNDS) - 1
    assert stats.split_groups(tiles, groups)[0] == min(groups, tiles)
    mean, std = stats.merge_partials_split(partials, tiles, groups=groups)
    assert_close(mean, x.mean(-1), "mean", tol=mean_tol)
    assert_close(std, (x.var(-1) + 1e-5).sqrt(), "std")

    # Against the one-program merge: the same fp32 partials, the same formulas, only the grouping of
    # the sums differs. Each merge's mean is sums (tree depth ceil(log2 tiles) over both levels) plus
    # products and divisions, each rounding worth at most an ulp of the data's magnitude: at most
    # ceil(log2 tiles) + 3 from the exact merge, twice that apart: 18 ulp here. Measured (interpreter):
    # mean 1.5 ulp (offset -5) and 4 ulp (offset 100), std 0.4 ulp; at most 6 ulp over 12 other seeds
    # and offsets up to 1000. 1 group, and one tile a group, gave the one-program merge's bits.
    one_mean, one_std = stats.merge_partials(partials, tiles)
    bound = 2 * (math.ceil(math.log2(tiles)) + 3) * ulp(x.abs().max().item())
    assert_close(mean, one_mean, "split vs one-program mean", tol=bound)
    assert_close(std, one_std, "split vs one-program std", tol=bound)

    again = stats.merge_partials_split(partials, tiles, groups=groups)
    assert torch.equal(again[0], mean) and torch.equal(again[1], std)  # a fixed order: bitwise


@pytest.mark.parametrize("groups", [1, 3, 100])
def test_split_merge_sequential_steps(groups):
    """block_t=2: both passes take Chan's sequential step (a group of several blocks, then several
    blocks of groups)."""
    x = randn(2, 1, 64, 3000, scale=2.0, shift=-5.0).double()
    partials = uneven_partials(x, TILE_BOUNDS)
    mean, std = stats.merge_partials_split(partials, len(TILE_BOUNDS) - 1, groups=groups, block_t=2)
    assert_close(mean, x.mean(-1), "mean")
    assert_close(std, (x.var(-1) + 1e-5).sqrt(), "std")


def test_split_groups():
    """4K content (quarter-res 540x960 or 540x1024, 8x8 tiles): groups of at most 64 tiles (one merge step
    a program with BLOCK_T=64), at least 128 of them; explicit counts are kept, up to one tile a group."""
    assert stats.split_groups(68 * 120) == (128, 64)
    assert stats.split_groups(68 * 128) == (136, 64)
    assert stats.split_groups(41) == (41, 1)
    assert stats.split_groups(41, 3) == (3, 14)
    assert stats.split_groups(41, 7) == (7, 6)
    assert stats.split_groups(5, 100) == (5, 1)
    assert stats.split_groups(41, 1, block_t=2) == (1, 41)


@pytest.mark.parametrize("h,w", [(2, 2), (19, 23)])
def test_resblock_split_merge_statistics(ref, h, w):
    """``split_merge=True``: the epilogue's partials merged in two passes, against the torch statistics
    of the block's output and against the one-program merge (interpreter tiles 16x16: 1 and 4 tiles)."""
    block = ref.content_encoder.enc2[0]
    x = nhwc(randn(h + w, 2, 64, h, w, scale=0.2).relu())
    out, mean, std = resblock.filtermod_resblock(x, *packed_block(block), *(None,) * 7, True, True)
    exp_mean, exp_std = torch_layers.instance_stats(nchw(out).double())
    assert_close(mean, exp_mean.view(2, 64), "split mean")
    assert_close(std, exp_std.view(2, 64), "split std")
    _, one_mean, one_std = resblock.filtermod_resblock(x, *packed_block(block), *(None,) * 7, True)
    assert_close(mean, one_mean, "split vs one-program mean")
    assert_close(std, one_std, "split vs one-program std")


def test_resblock_split_merge_keeps_its_digits():
    """As test_epilogue_statistics_keep_their_digits: a zero block passes its input through; at an
    offset of 100 and a spread of 0.01 the split merge keeps the digits too."""
    block = ResidualLayer(64).to(DEVICE).requires_grad_(False)
    for parameter in block.parameters():
        parameter.zero_()
    x = randn(7, 2, 64, 19, 23, scale=0.01, shift=100.0)
    out, mean, std = resblock.filtermod_resblock(nhwc(x), *packed_block(block), *(None,) * 7, True, True)
    assert torch.equal(nchw(out), x)
    exp_mean, exp_std = torch_layers.instance_stats(x.double())
    assert_close(mean, exp_mean.view(2, 64), "mean", tol=1e-5 * 100)  # fp32 ulp at 100 is 7.6e-6
    assert_close(std, exp_std.view(2, 64), "std")


# --- modulator ----------------------------------------------------------------------------------
def modulator_float64(branch, s):
    """A Modulator branch (reflect-padded depthwise 3x3, then the mean over pixels) in float64."""
    conv = copy.deepcopy(branch[0].conv_layer).double()
    return F.conv2d(F.pad(s.double(), (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias,
                    groups=64).mean((2, 3))


# (13, 29): two interpreter blocks of 256 pixels; (40, 37): six, the last partial. block_b=2: the
# second pass takes several steps. Measured (interpreter): 4.2e-7 from the one-program op, 1.6e-7
# from float64 (outputs up to 1.8).
@pytest.mark.parametrize("h,w,block_b,dtype", [
    (2, 3, 64, torch.float32), (13, 29, 64, torch.float32), (40, 37, 64, torch.float32),
    (40, 37, 2, torch.float32), (13, 29, 64, torch.float16),
])
def test_modulator_pool_split(ref, h, w, block_b, dtype):
    mod = ref.modulator
    s = randn(h * w, 2, 64, h, w).relu().to(dtype)
    operands = pack_modulator_pair(mod.weight2, mod.bias2)
    out = modpool.launch_modulator_pool_split(nhwc(s), *operands, block_b=block_b)
    assert out.dtype == torch.float32
    assert_close(out, modpool.modulator_pool(nhwc(s), *operands), "split vs one-program")
    assert_close(out[:, 0], modulator_float64(mod.weight2, s), "weight branch")
    assert_close(out[:, 1], modulator_float64(mod.bias2, s), "bias branch")
    again = modpool.modulator_pool_split(nhwc(s), *operands)
    if block_b == 64:
        assert torch.equal(again, out)  # a fixed order: bitwise


def test_split_ops_pass_opcheck(ref):
    x = nhwc(randn(0, 1, 64, 2, 3))
    cases = [
        (resblock.filtermod_resblock, (x, *packed_block(ref.decoder.dec1), *(None,) * 7, True, True)),
        (modpool.modulator_pool_split, (x, *pack_modulator_pair(ref.modulator.weight1, ref.modulator.bias1))),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
