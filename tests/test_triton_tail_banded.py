"""``microast::decoder_tail_banded`` against the reference's ``dec3`` and the persistent ``decoder_tail``.

Small odd shapes, batch 2, band heights that give one band, several, and a last partial band. In the
interpreter the level kernels take 16x16 tiles and the 9x9 16x32, so (11, 23) in bands of 12 puts tiles
of each kernel on its fast path (``fast_path_tiles``) and others on the border path. fp32 bound: 1e-5,
the existing tail tests' (single-stage summation noise; measured in the interpreter, 2026-12-07:
6.0e-7 .. 6.6e-7 from ``dec3``, 0 from the persistent tail).
"""

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter

from microast_fast import MicroASTReference  # noqa: E402
from microast_fast.backends.triton_backend import decoder_tail_banded_operands, decoder_tail_operands  # noqa: E402
from microast_fast.kernels import decoder_tail as tail  # noqa: E402
from microast_fast.kernels import decoder_tail_banded as banded  # noqa: E402

from test_triton_kernels import DEVICE, assert_close, nhwc, randn  # noqa: E402


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained().to(DEVICE)


def poisoned(*shape):
    """A buffer of ``shape`` full of inf inside inf guard bands as large: a read of anything the kernels
    did not write (outside the window, outside the buffer) gives inf * 0 or inf - inf (numpy raises
    under ``np.errstate(invalid="raise")``) or an inf in the output."""
    size = int(np.prod(shape))
    return torch.full((3 * size,), float("inf"), device=DEVICE)[size:2 * size].view(shape)


def poisoned_buffers(n, h4, w4, band_rows):
    windows = banded.band_windows(4 * h4, band_rows)
    rows_a = max(h1 - h0 for _, _, (h0, h1) in windows)
    rows_b = max(f1 - f0 for _, (f0, f1), _ in windows)
    return poisoned(n, rows_a, 2 * w4, 32), poisoned(n, rows_b, 4 * w4, 16)


def fast_path_tiles(h4, w4, band_rows):
    """Tiles on the fast paths over every band, by the kernels' tests with the interpreter configs: A's
    and B's tiles on the phase path (``tail_level_kernel``, 16x16 tiles), and the 9x9's column tiles
    whose windows keep off the side borders (``tail_conv9x9_kernel``, 32 columns)."""
    counts = [0, 0]
    for _, (f0, f1), (h0, h1) in banded.band_windows(4 * h4, band_rows):
        for level, (lo, hi, n_dst, width, src_lo, src_hi) in enumerate([(h0, h1, 2 * h4, 2 * w4, 0, h4),
                                                                        (f0, f1, 4 * h4, 4 * w4, h0, h1)]):
            for y0 in range(lo, hi, 16):
                y_last = min(y0 + 16, hi) - 1
                rows = y0 >= 2 and y_last <= n_dst - 3 and y0 // 2 - 1 >= src_lo and y_last // 2 + 1 < src_hi
                counts[level] += rows * sum(2 <= x0 and x0 + 16 <= width - 2 for x0 in range(0, width, 16))
    return (*counts, sum(x0 >= 4 and x0 + 36 <= 4 * w4 for x0 in range(0, 4 * w4, 32)))


def test_band_windows_hold_every_row_read():
    """Every row a band's stages read, by the layers' rules (reflection at each level's border, PyTorch's
    bilinear source rows), lies in the window of the level below, for every band height of small images."""
    def reflect(i, n):
        return -i if i < 0 else 2 * (n - 1) - i if i > n - 1 else i

    def bilinear_rows(t, n_src):  # upsampled row t reads these source rows (align_corners=False)
        i0 = int(max(t / 2 - 0.25, 0.0))
        return {i0, min(i0 + 1, n_src - 1)}

    for h4 in (2, 3, 5, 9):
        H = 4 * h4
        for band_rows in range(1, H + 1):
            for (r0, r1), (f0, f1), (h0, h1) in banded.band_windows(H, band_rows):
                assert {reflect(y + d, H) for y in range(r0, r1) for d in range(-4, 5)} <= set(range(f0, f1))
                read = {s for y in range(f0, f1) for d in (-1, 0, 1) for s in bilinear_rows(reflect(y + d, H), H // 2)}
                assert read <= set(range(h0, h1)), (h4, band_rows, r0)
                assert 0 <= h0 and h1 <= H // 2


@pytest.mark.parametrize("h,w,band_rows", [
    (2, 2, None),    # the smallest map (5x5 images): one band
    (9, 13, None),   # one band
    (9, 13, 8),      # five bands, the last of 4 rows
    (11, 23, 12),    # four bands, the last of 8 rows; each kernel takes both paths
])
def test_decoder_tail_banded(ref, h, w, band_rows):
    dec3 = ref.decoder.dec3
    x = randn(h * w, 2, 64, h, w, scale=0.5).relu()
    rows = band_rows or 4 * h
    with np.errstate(invalid="raise"):
        operands = decoder_tail_banded_operands(dec3, torch.float32)
        out = banded.launch_decoder_tail_banded(nhwc(x), *operands, band_rows=rows,
                                                buffers=poisoned_buffers(2, h, w, rows))
    assert_close(out, dec3(x), f"banded tail {h}x{w}, bands of {rows}")
    if (h, w) == (11, 23) and DEVICE == "cpu":
        assert all(fast_path_tiles(h, w, rows))


def test_banded_equals_persistent_tail(ref):
    dec3 = ref.decoder.dec3
    x = nhwc(randn(7, 2, 64, 9, 5, scale=0.5).relu())
    out = banded.launch_decoder_tail_banded(x, *decoder_tail_banded_operands(dec3, torch.float32), band_rows=8)
    assert_close(out, tail.decoder_tail(x, *decoder_tail_operands(dec3, torch.float32)), "banded vs persistent tail")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decoder_tail_banded_half_maps(ref, dtype):
    """As ``test_decoder_tail_half_maps`` (tests/test_triton_kernels.py), and the same bar: against the
    fp32 ``dec3`` of the same (rounded) input, within 4 units of the map dtype's rounding at the output's
    scale. 76x76 in bands of 32: tiles of each kernel on its fast path. fp16 in the interpreter,
    2026-12-07: 1.4 units, as the persistent tail."""
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the interpreter has no bf16 arithmetic")
    dec3 = ref.decoder.dec3
    x = randn(361, 2, 64, 19, 19, scale=0.5).relu().to(dtype)
    out = banded.launch_decoder_tail_banded(nhwc(x), *decoder_tail_banded_operands(dec3, dtype), band_rows=32)
    expected = dec3(x.float())
    assert out.dtype == dtype
    if DEVICE == "cpu":
        assert all(fast_path_tiles(19, 19, 32))
    rounding = torch.finfo(dtype).eps / 2
    assert_close(out, expected, f"banded tail {dtype}", tol=4 * rounding * expected.abs().max().item())


def test_decoder_tail_banded_passes_opcheck(ref):
    x = nhwc(randn(0, 1, 64, 2, 3))
    operands = decoder_tail_banded_operands(ref.decoder.dec3, torch.float32)
    torch.library.opcheck(banded.decoder_tail_banded, (x, *operands),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
