"""Each Triton variant (``triton_backend.VARIANTS``: newer kernel designs for some stages, not yet
picked by a GPU run) as a whole model against the reference, by the rules of test_triton_model.py:
fp32 by the spec's noise-floor rule (reference_check.py), half precision by the 8-bit image's PSNR.

Without CUDA these run in Triton's CPU interpreter on one small odd-sized batch of 2 with two styles
and two alphas; on a GPU (benchmarks/gpu_run.sh) at 1080p and 4K in fp32, fp16 and bf16. A variant
whose tests pass on a GPU may become an "auto" choice (benchmarks/verified.py reads these test ids).
"""

import pytest
import torch

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpreter

from microast_fast import MicroAST, MicroASTReference  # noqa: E402
from microast_fast.backends.triton_backend import VARIANTS  # noqa: E402

from reference_check import assert_fp32_matches, psnr_8bit, reference64  # noqa: E402
from test_triton_model import images, per_sample_reference, photo  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
NEW = [name for name in VARIANTS if name != "triton"]


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained().to(DEVICE)


@pytest.fixture(scope="module")
def ref64(ref):
    return reference64(ref).to(DEVICE)


@pytest.mark.parametrize("variant", NEW)
def test_variant_matches_the_reference(ref, ref64, variant):
    """Odd size (not a multiple of 4: the output is larger), batch 2, a style per sample, an alpha each."""
    model = MicroAST.from_pretrained(backend=variant, device=DEVICE)
    content, style, alpha = images(1, 2, 37, 50), images(2, 2, 29, 34), [1.0, 0.4]
    with torch.inference_mode():
        out = model(content, style, torch.tensor(alpha, device=DEVICE))
        expected = per_sample_reference(ref, content, style, alpha)
        exact = per_sample_reference(ref64, content.double(), style.double(), alpha)
    assert_fp32_matches(out, expected, exact, variant)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("variant", NEW)
@pytest.mark.parametrize("h,w", [(1080, 1920), (2160, 3840)])
def test_variant_large_fp32(ref, ref64, variant, h, w):
    model = MicroAST.from_pretrained(backend=variant, device=DEVICE)
    content, style = photo(h, w, 1), photo(512, 512, 2)
    with torch.inference_mode():
        out = model(content, style, 1.0)
        expected = ref(content, style, 1.0)
        exact = ref64(content.double(), style.double(), 1.0) if (out - expected).abs().max().item() > 1e-5 else None
    assert_fp32_matches(out, expected, exact, f"{variant} {h}x{w}")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("variant", NEW)
@pytest.mark.parametrize("dtype,min_psnr", [(torch.float16, 45.0), (torch.bfloat16, 38.0)])
def test_variant_half_precision_quality(ref, variant, dtype, min_psnr):
    model = MicroAST.from_pretrained(backend=variant, device=DEVICE, dtype=dtype)
    content, style = photo(1080, 1920, 3), photo(512, 512, 4)
    with torch.inference_mode():
        out = model(content.to(dtype), style.to(dtype), 1.0)
        expected = ref(content, style, 1.0)
    assert out.dtype == dtype
    assert psnr_8bit(out, expected) >= min_psnr
