"""Each Triton kernel (through its custom op) against its plain PyTorch counterpart, on small odd shapes.

On a machine without CUDA these run in Triton's CPU interpreter (tests/conftest.py), fp32 (and fp16
where a kernel has a form of its own for half maps): the interpreter has no bf16 arithmetic, and
fp16/bf16 quality is judged on the whole model on a GPU (test_triton_model.py). Tolerances are fp32
summation-order noise of single stages whose outputs are O(0.1..10): 1e-5 absolute (measured: 1e-7 ..
6e-6), never widened to pass.

Shapes are chosen against the interpreter's tile sizes (16x16 at quarter resolution, 32x32 at half and
full resolution) so that maps span several tiles, partial tiles and both reflection borders.
"""

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter

from microast_fast import MicroASTReference  # noqa: E402
from microast_fast.reference import ResidualLayer  # noqa: E402
from microast_fast.backends import torch_layers  # noqa: E402
from microast_fast.backends.triton_backend import decoder_tail_operands, encoder_head_operands  # noqa: E402
from microast_fast.kernels import decoder_tail as tail  # noqa: E402
from microast_fast.kernels import encoder_head as head  # noqa: E402
from microast_fast.kernels import filtermod_resblock as resblock  # noqa: E402
from microast_fast.kernels import instance_stats as stats  # noqa: E402
from microast_fast.kernels import modulator_pool as modpool  # noqa: E402
from microast_fast.weight_packing import pack_modulator_pair, pack_residual_block  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained().to(DEVICE)


def randn(seed, *shape, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale + shift).to(DEVICE)


def nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def nchw(x):
    return x.permute(0, 3, 1, 2)


def assert_close(out, expected, what, tol=TOL):
    assert out.shape == expected.shape, (what, out.shape, expected.shape)
    err = (out.double() - expected.double()).abs()
    worst = err.max().item()
    if worst > tol:
        idx = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        raise AssertionError(f"{what}: max abs error {worst:.3g} > {tol:g} at {idx} "
                             f"(got {out[idx].item():.7g}, expected {expected[idx].item():.7g})")


# --- instance statistics -----------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(2, 2), (19, 23)])
def test_epilogue_statistics_keep_their_digits(h, w):
    """The residual block's epilogue writes per-tile (count, mean, M2), never E[x^2] - E[x]^2. With the
    block's weights zero its output is its input: here a large offset and a small spread, where that
    formula in fp32 would lose most digits."""
    block = ResidualLayer(64).to(DEVICE).requires_grad_(False)
    for parameter in block.parameters():
        parameter.zero_()
    x = randn(h * 100 + w, 2, 64, h, w, scale=0.01, shift=100.0)
    with torch.no_grad():
        out, mean, std = resblock.filtermod_resblock(nhwc(x), *packed_block(block), *(None,) * 7, True)
    assert torch.equal(nchw(out), x)
    exp_mean, exp_std = torch_layers.instance_stats(x.double())
    assert_close(mean, exp_mean.view(2, 64), "mean", tol=1e-5 * 100)  # fp32 ulp at 100 is 7.6e-6
    assert_close(std, exp_std.view(2, 64), "std")


def uneven_partials(x: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """Exact (count, mean, M2) of ``x``'s positions [lo, hi) per tile, as fp32 ``[N, tiles, 3, C]``."""
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = x[..., lo:hi]
        mean = chunk.mean(-1)
        m2 = ((chunk - mean[..., None]) ** 2).sum(-1)
        parts.append(torch.stack([torch.full_like(mean, hi - lo), mean, m2], dim=1))
    return torch.stack(parts, dim=1).float().contiguous()


def test_instance_stats_merge_uneven_partials():
    """Chan merge across merge blocks (block_t=2 forces the sequential step) of uneven tiles."""
    x = randn(1, 3, 64, 300, scale=2.0, shift=-5.0).double()
    bounds = [0, 1, 7, 64, 65, 200, 300]  # tiles of 1 .. 135 positions
    partials = uneven_partials(x, bounds)
    mean, std = stats.merge_partials(partials, len(bounds) - 1, block_t=2)
    assert_close(mean, x.mean(-1), "mean")
    assert_close(std, (x.var(-1) + 1e-5).sqrt(), "std")


# --- residual block ----------------------------------------------------------------------------
def packed_block(block):
    return pack_residual_block(block, torch.float32, torch.float32)


# wide_tiles: the kernel of variant "triton+wide-tiles", an 8x16 tile under the interpreter.
@pytest.mark.parametrize("wide_tiles", [False, True])
@pytest.mark.parametrize("h,w", [(2, 2), (19, 23)])
def test_plain_resblock_and_epilogue_stats(ref, h, w, wide_tiles):
    block = ref.content_encoder.enc2[0]
    x = randn(h + w, 2, 64, h, w, scale=0.2).relu()
    out, mean, std = resblock.filtermod_resblock(nhwc(x), *packed_block(block), *(None,) * 7, True,
                                                 wide_tiles=wide_tiles)
    expected = block(x)
    assert_close(nchw(out), expected, "plain block")
    exp_mean, exp_std = torch_layers.instance_stats(expected)
    assert_close(mean, exp_mean.view(2, 64), "epilogue mean")
    assert_close(std, exp_std.view(2, 64), "epilogue std")


@pytest.mark.parametrize("wide_tiles", [False, True])
@pytest.mark.parametrize("h,w,style_batch,alpha", [(3, 2, 1, 1.0), (17, 18, 2, (0.25, 0.9))])
def test_filtermod_resblock(ref, h, w, style_batch, alpha, wide_tiles):
    """FeatMod + alpha on load, FilterMod epilogues, residual, statistics; style signals broadcast."""
    block = ref.decoder.dec2
    x = randn(1, 2, 64, h, w)
    x_mean, x_std = torch_layers.instance_stats(x)
    s_mean = randn(2, style_batch, 64, 1, 1, scale=0.5)
    s_std = randn(3, style_batch, 64, 1, 1).abs() + 0.2
    f_w = randn(4, style_batch, 64, 1, 1, scale=0.5)
    f_b = randn(5, style_batch, 64, 1, 1, scale=0.5)
    alpha_t = torch.tensor(alpha, dtype=torch.float32, device=DEVICE).reshape(-1, 1, 1, 1)
    a, b = torch_layers.featmod_affine(x_mean, x_std, s_mean, s_std, alpha_t)
    expected = torch_layers.filtermod_resblock(block, x, a, b, f_w, f_b)

    def flat(t):
        return t.reshape(t.shape[0], 64)

    out, mean, std = resblock.filtermod_resblock(
        nhwc(x), *packed_block(block), flat(x_mean), flat(x_std), flat(s_mean), flat(s_std),
        alpha_t.reshape(-1), flat(f_w), flat(f_b), True, wide_tiles=wide_tiles)
    assert_close(nchw(out), expected, "filtermod block")
    exp_mean, exp_std = torch_layers.instance_stats(expected)
    assert_close(mean, exp_mean.view(2, 64), "epilogue mean")
    assert_close(std, exp_std.view(2, 64), "epilogue std")


# --- encoder head ------------------------------------------------------------------------------
def tile_rows_inside(h: int) -> list[bool]:
    """Per row of half-res tiles of the head's last launch: do its 9x9s read only rows inside the image
    (its fast path, ``rows_inside`` in encoder_head_half_kernel)?"""
    tile_h = head.encoder_head_half_kernel.best_config.kwargs["TILE_H"]
    return [2 * y0 >= 5 and 2 * (y0 + tile_h) + 4 <= h for y0 in range(0, (h + 1) // 2, tile_h)]


def tile_cols_inside(w: int) -> list[bool]:
    """Per column of half-res tiles of the head's last launch: do the banded 9x9's windows keep inside
    the image's side borders (``cols_inside`` in encoder_head_half_kernel)?"""
    tile_w = head.encoder_head_half_kernel.best_config.kwargs["TILE_W"]
    segments = tile_w // 4 + 1
    return [2 * x0 >= 8 and 2 * x0 + 8 * segments <= w for x0 in range(0, (w + 1) // 2, tile_w)]


def poisoned_scratch(programs: int, slot: int) -> torch.Tensor:
    """A ``[programs, slot]`` scratch full of inf inside inf guard bands (64 slots each side): a kernel
    that reads anything it did not write this tile (another slot, outside the buffer, a stale row)
    turns it into inf * 0 or inf - inf (numpy raises under ``np.errstate(invalid="raise")``) or an inf
    in the output."""
    guard = 64 * slot
    poisoned = torch.full((programs * slot + 2 * guard,), float("inf"), device=DEVICE)
    return poisoned[guard:guard + programs * slot].view(programs, slot)


# 140 rows: the interpreter's 32-row half-res tiles put the middle row of tiles inside (the 9x9 rows'
# fast path) and the first and last at the borders. programs=1: one persistent program walks the six
# tiles of the batch, border and inside, on one scratch slot. banded: the 9x9's form for half maps,
# here on fp32 maps, where it must match the reference as closely as the im2col form; at 140x140 the
# middle tile's windows are inside the image in both directions (its fast path).
@pytest.mark.parametrize("h,w,programs,banded", [
    (5, 5, None, False), (13, 70, None, False), (140, 13, None, False), (140, 13, 1, False),
    (5, 5, None, True), (13, 70, None, True), (140, 13, 1, True), (140, 140, 1, True),
])
def test_encoder_head(ref, h, w, programs, banded):
    enc1 = ref.style_encoder.enc1
    image = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w)).to(DEVICE)
    if programs is None:
        programs = 2 * triton.cdiv((h + 1) // 2, 32) * triton.cdiv((w + 1) // 2, 32)  # a tile a program
    slot = max(head.slot_elements(c.kwargs) for c in head.encoder_head_half_kernel.configs)
    with np.errstate(invalid="raise"):
        out = head.launch_encoder_head(image, *encoder_head_operands(enc1, torch.float32), programs=programs,
                                       scratch=poisoned_scratch(programs, slot), banded=banded)
    assert_close(nchw(out), enc1[:10](image), f"encoder head {h}x{w}, {'banded' if banded else 'im2col'}")
    if h == 140 and DEVICE == "cpu":
        assert tile_rows_inside(h) == [False, True, False]
    if (h, w) == (140, 140) and DEVICE == "cpu":
        assert tile_cols_inside(w) == [False, True, False]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoder_head_half_maps(ref, dtype):
    """Half maps: the banded 9x9 on tensor cores, every stage's output stored in the map dtype. Against
    the fp32 layers on the same (rounded) image: within 8 units of the dtype's rounding at the output's
    scale. The chain rounds to the map dtype at six points (the 9x9's output, the grouped 3x3's before
    each 1x1, each kernel's output) besides the weights; fp16 in the interpreter, 2026-11-26: 4.0 units
    (the im2col form gives the same outputs)."""
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the interpreter has no bf16 arithmetic")
    enc1 = ref.content_encoder.enc1
    image = torch.rand(2, 3, 37, 150, generator=torch.Generator().manual_seed(5)).to(DEVICE).to(dtype)
    out = head.encoder_head(image, *encoder_head_operands(enc1, dtype))
    expected = enc1[:10](image.float())
    assert out.dtype == dtype
    rounding = torch.finfo(dtype).eps / 2
    assert_close(nchw(out).float(), expected, f"encoder head {dtype}", tol=8 * rounding * expected.abs().max().item())


def test_encoder_head_takes_strided_images(ref):
    enc1 = ref.content_encoder.enc1
    image = torch.rand(1, 9, 11, 3, generator=torch.Generator().manual_seed(3)).to(DEVICE).permute(0, 3, 1, 2)
    out = head.encoder_head(image, *encoder_head_operands(enc1, torch.float32))
    assert_close(nchw(out), enc1[:10](image.contiguous()), "channels-last image")


# --- decoder tail ------------------------------------------------------------------------------
def tail_interior(o: int, tile: int, size: int, after: int | None = None) -> bool:
    """decoder_tail_kernel's test for the phase path, along one axis (``after``: another margin)."""
    after = tail.INTERIOR_AFTER.value if after is None else after
    return o >= tail.INTERIOR_BEFORE.value and o + tile + after <= size


def tail_phase_path_violations(after: int) -> tuple[int, int]:
    """(interior tiles, broken rules) over every tile side and sizes up to 236 rows, with margin ``after``.
    The phase path has no clamps or reflections: A's taps must read inside the quarter-res map and B's
    inside A's window, and neither level may be at its first or last row, where the composed 3x3 does
    not hold. Rows and columns share the algebra."""
    half_window = lambda o: max(o - tail.HALO.value - 2, 0) // 2  # noqa: E731 (the kernel's half_window)
    tiles = {c.kwargs["TILE_H"] for c in tail.decoder_tail_kernel.configs} | {16, 32}
    checked = broken = 0
    for tile in sorted(tiles):
        half_rows = tile // 2 + tail.HALF_MARGIN.value
        for h4 in range(2, 60):
            for o in range(0, 4 * h4, tile):
                if not tail_interior(o, tile, 4 * h4, after):
                    continue
                checked += 1
                h0 = half_window(o)
                for hy in range(h0, h0 + half_rows):  # A: the window's rows and their taps
                    broken += not (0 < hy < 2 * h4 - 1 and all(0 <= hy // 2 + d < h4 for d in (-1, 0, 1)))
                for fy in range(o - tail.HALO.value, o + tile + tail.HALO.value):  # B: tile and 9x9 halo
                    broken += not (0 < fy < 4 * h4 - 1 and all(h0 <= fy // 2 + d < h0 + half_rows for d in (-1, 0, 1)))
    return checked, broken


def test_tail_interior_tiles_stay_inside():
    checked, broken = tail_phase_path_violations(tail.INTERIOR_AFTER.value)
    assert checked > 100 and broken == 0
    # and the margin is the least: a tile one quarter-res row closer to the end breaks a rule
    assert tail_phase_path_violations(tail.INTERIOR_AFTER.value - 4)[1] > 0


@pytest.mark.parametrize("h,w,programs", [(2, 2, None), (9, 5, None), (9, 5, 1), (19, 19, None), (19, 19, 1)])
def test_decoder_tail(ref, h, w, programs):
    """(9, 5) gives a 36x20 output: two 32x32 tiles per sample; programs=1 walks all four tiles of
    the batch in one persistent program, reusing its scratch slots. (19, 19): 76x76, 3x3 tiles: the
    middle one is as close to the borders as the phase-by-phase path allows (8 pixels before, 12
    after), so it takes that path, the others the general one (and with programs=1 one program
    alternates between the two on the same slots).

    The scratch is poisoned (``poisoned_scratch``)."""
    dec3 = ref.decoder.dec3
    x = randn(h * w, 2, 64, h, w, scale=0.5).relu()
    operands = decoder_tail_operands(dec3, torch.float32)
    if programs is None:
        programs = 2 * triton.cdiv(16 * h * w, 32 * 32)  # one tile a program (the interpreter's 32x32)
    slot = max(tail.slot_elements(c.kwargs) for c in tail.decoder_tail_kernel.configs)
    with np.errstate(invalid="raise"):
        out = tail.launch_decoder_tail(nhwc(x), *operands, programs=programs,
                                       scratch=poisoned_scratch(programs, slot))
    assert_close(out, dec3(x), f"decoder tail {h}x{w}")
    if h == 19 and DEVICE == "cpu":
        assert [tail_interior(o, 32, 76) for o in (0, 32, 64)] == [False, True, False]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decoder_tail_half_maps(ref, dtype):
    """Half maps take their own forms: the phase path's grouped 3x3s on tensor cores with the composed
    weights rounded to the map dtype, A's and B's maps stored in it. Against the fp32 ``dec3`` of the same
    (rounded) input, at 76x76 (the middle tile on the phase path): within 4 units of the map dtype's
    rounding at the output's scale (fp16 in the interpreter, 2026-11-26: 1.4 units, the same with A
    and B as FMAs; a wrong nonzero pattern in B's matrix gave 555)."""
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the interpreter has no bf16 arithmetic")
    dec3 = ref.decoder.dec3
    x = randn(361, 2, 64, 19, 19, scale=0.5).relu().to(dtype)
    out = tail.decoder_tail(nhwc(x), *decoder_tail_operands(dec3, dtype))
    expected = dec3(x.float())
    assert out.dtype == dtype
    rounding = torch.finfo(dtype).eps / 2  # a unit of the dtype's rounding: 2^-11 (fp16), 2^-8 (bf16)
    assert_close(out, expected, f"decoder tail {dtype}", tol=4 * rounding * expected.abs().max().item())


# --- modulator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(2, 3), (17, 9)])
def test_modulator_pool(ref, h, w):
    mod = ref.modulator
    s = randn(7, 2, 64, h, w).relu()
    out = modpool.modulator_pool(nhwc(s), *pack_modulator_pair(mod.weight2, mod.bias2))
    assert_close(out[:, 0], mod.weight2(s).view(2, 64), "weight branch")
    assert_close(out[:, 1], mod.bias2(s).view(2, 64), "bias branch")


# --- custom ops ----------------------------------------------------------------------------------
def test_custom_ops_pass_opcheck(ref):
    """Schema, fake (meta) implementations and dispatch of every op, as torch.compile relies on them."""
    block = ref.decoder.dec1
    x = nhwc(randn(0, 1, 64, 2, 3))
    one = torch.ones(1, 64, device=DEVICE)
    cases = [
        (resblock.filtermod_resblock, (x, *packed_block(block), *(None,) * 7, True)),
        (resblock.filtermod_resblock, (x, *packed_block(block), one, one, one, one,
                                       torch.full((1,), 0.5, device=DEVICE), one, one, False)),
        (head.encoder_head, (torch.rand(1, 3, 5, 6, device=DEVICE), *encoder_head_operands(ref.content_encoder.enc1,
                                                                                            torch.float32))),
        (tail.decoder_tail, (x, *decoder_tail_operands(ref.decoder.dec3, torch.float32))),
        (modpool.modulator_pool, (x, *pack_modulator_pair(ref.modulator.weight1, ref.modulator.bias1))),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_configs_follow_the_map_dtype():
    """The exact fp32 forms keep per-tap (per-row) partial sums in a second accumulator tile and run
    their products on FMA units: the GPU configs that then spill are tried for half maps only, and the
    tail and the head have fp32 configs of their own (the head: for the im2col form of its 9x9, half
    maps for the banded form; tests/test_triton_compile.py compiles each for its dtypes)."""
    other = triton.Config({}, num_warps=4)
    cases = ((resblock.resblock_conv3x3_kernel, "in_ptr", [], [resblock.WIDE_K_CONFIG]),
             (resblock.resblock_conv3x3_wide_kernel, "in_ptr", [resblock.FP32_CONFIG], resblock.WIDE_TILE_CONFIGS),
             (tail.decoder_tail_kernel, "out_ptr", tail.FP32_CONFIGS, tail.HALF_CONFIGS),
             (head.encoder_head_half_kernel, "out_ptr", [head.FP32_CONFIG], head.HALF_MAP_CONFIGS))
    for kernel, pointer, fp32_only, half_only in cases:
        prune = kernel.early_config_prune
        configs = [other, *fp32_only, *half_only]
        assert prune(configs, {pointer: torch.empty(1)}) == [other, *fp32_only]
        for dtype in (torch.float16, torch.bfloat16):
            assert prune(configs, {pointer: torch.empty(1, dtype=dtype)}) == [other, *half_only]
