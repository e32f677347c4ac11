"""The drop-in MicroAST ("torch" backend) against the reference."""

import pytest
import torch

from microast_fast import MicroAST, MicroASTReference, StyleSignals

from reference_check import assert_fp32_matches, reference64


@pytest.fixture(scope="module")
def ref():
    return MicroASTReference.from_pretrained()


@pytest.fixture(scope="module")
def ref64(ref):
    return reference64(ref)


@pytest.fixture(scope="module")
def fast():
    return MicroAST.from_pretrained(backend="torch")


def images(seed, n, h, w):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def check(fast, ref, ref64, content, style, alpha, what):
    with torch.no_grad():
        out = fast(content, style, alpha)
        ref_out = ref(content, style, alpha)
        exact = ref64(content.double(), style.double(), alpha)
    assert_fp32_matches(out, ref_out, exact, what)


@pytest.mark.parametrize("h,w", [(5, 5), (37, 53), (130, 97), (5, 203), (211, 6), (64, 64)])
def test_odd_sizes(fast, ref, ref64, h, w):
    check(fast, ref, ref64, images(h * 1000 + w, 1, h, w), images(7, 1, 40, 33), 1.0, f"{h}x{w}")


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
def test_alpha(fast, ref, ref64, alpha):
    check(fast, ref, ref64, images(1, 1, 45, 31), images(2, 1, 29, 50), alpha, f"alpha {alpha}")


def test_batch_with_distinct_styles(fast, ref, ref64):
    content, style = images(3, 2, 41, 36), images(4, 2, 32, 40)
    check(fast, ref, ref64, content, style, 0.8, "batch 2")
    # Each sample is styled by its own style: swapping the styles changes both outputs.
    with torch.no_grad():
        out = fast(content, style)
        swapped = fast(content, style.flip(0))
    assert (out[0] - swapped[0]).abs().max() > 1e-2


def test_style_broadcast(fast, ref, ref64):
    """One style [1, 3, h, w] serves the whole content batch (the published code cannot do this)."""
    content, style = images(5, 3, 33, 27), images(6, 1, 30, 30)
    with torch.no_grad():
        out = fast(content, style, 0.9)
        for i in range(3):
            sample = content[i:i + 1]
            assert_fp32_matches(out[i:i + 1], ref(sample, style, 0.9), ref64(sample.double(), style.double(), 0.9),
                                f"sample {i}")


def test_per_sample_alpha(fast, ref, ref64):
    content, style = images(8, 3, 29, 35), images(9, 3, 31, 28)
    alphas = [0.0, 0.35, 1.0]
    with torch.no_grad():
        out = fast(content, style, torch.tensor(alphas))
        for i, a in enumerate(alphas):
            sample = content[i:i + 1], style[i:i + 1]
            assert_fp32_matches(out[i:i + 1], ref(*sample, a), ref64(sample[0].double(), sample[1].double(), a),
                                f"sample {i}, alpha {a}")


def test_alpha_zero_keeps_the_filtermod_style(fast):
    """alpha blends FeatMod only, as in the published code: at alpha 0 the FilterMod signals still carry
    the style, so two styles give two outputs."""
    content = images(10, 1, 24, 24)
    with torch.no_grad():
        a = fast(content, images(11, 1, 24, 24), 0.0)
        b = fast(content, images(12, 1, 24, 24), 0.0)
    assert not torch.equal(a, b)


def test_encode_style_reuse(fast):
    style = images(13, 1, 40, 40)
    with torch.no_grad():
        signals = fast.encode_style(style)
        assert isinstance(signals, StyleSignals) and signals.batch_size == 1
        for seed in (14, 15):
            content = images(seed, 2, 36, 44)
            torch.testing.assert_close(fast(content, signals, 0.6), fast(content, style, 0.6), rtol=0, atol=0)


def test_float64_is_exact_algebra(ref):
    """In float64 the fused algebra must agree with the reference to rounding: any algebra slip shows."""
    fast64 = MicroAST.from_reference(reference64(ref), backend="torch")
    ref64 = reference64(ref)
    content, style = images(16, 2, 27, 38).double(), images(17, 2, 35, 26).double()
    with torch.no_grad():
        torch.testing.assert_close(fast64(content, style, 0.7), ref64(content, style, 0.7), rtol=0, atol=1e-11)


def test_gradients_match_reference(ref):
    """Under autograd the module stays differentiable; in float64 its gradients equal the reference's."""
    ref64 = reference64(ref).requires_grad_(True)
    fast64 = MicroAST.from_reference(ref64, backend="torch")
    content = images(18, 2, 22, 19).double().requires_grad_(True)
    style = images(19, 2, 20, 21).double().requires_grad_(True)
    alpha = torch.tensor([0.4, 1.0], dtype=torch.float64)
    grads = []
    for model in (fast64, ref64):
        if model is ref64:  # the reference takes one float alpha: run it per sample
            out = torch.cat([model(content[i:i + 1], style[i:i + 1], float(alpha[i])) for i in range(2)])
        else:
            out = model(content, style, alpha)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        inputs = [content, style, model.decoder.dec1.conv1.conv_layer.weight, model.modulator.bias2[0].conv_layer.weight,
                  model.style_encoder.enc1[0].conv_layer.bias]
        grads.append(torch.autograd.grad((out * weight).sum(), inputs))
    for g_fast, g_ref in zip(*grads):
        assert g_fast.abs().max() > 0
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)


def test_output_dtype_and_device_follow_input(fast):
    with torch.no_grad():
        out = fast(images(20, 1, 13, 17), images(21, 1, 13, 17))
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (1, 3, 16, 20)


def test_bfloat16_close_to_fp32():
    """bf16 runs on CPU too; its image is judged as a user sees it (8-bit, clamped)."""
    fast32 = MicroAST.from_pretrained(backend="torch")
    fast16 = MicroAST.from_pretrained(backend="torch", dtype=torch.bfloat16)
    content, style = images(22, 1, 64, 64), images(23, 1, 64, 64)
    with torch.no_grad():
        a = fast32(content, style).clamp(0, 1)
        b = fast16(content.bfloat16(), style.bfloat16()).float().clamp(0, 1)
    psnr = 10 * torch.log10(1 / ((a - b) ** 2).mean())
    assert psnr > 30, psnr


def test_residual_convolutions_in_halves():
    """``conv_in_halves`` computes the convolution (here 2.9e-7 relative from float64; a wrong half
    would be off by the whole), and half maps take the single one. Why it exists (oneDNN's one-chain
    channels-last kernel on AVX-512 CPUs) shows in ``test_odd_sizes`` on such a CPU."""
    import torch.nn.functional as F

    from microast_fast.backends.torch_layers import conv_in_halves
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 64, 30, 41, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(64, 64, 3, 3, generator=g) * 0.05, torch.randn(64, generator=g)
    exact = F.conv2d(x.double(), w.double(), b.double())
    out = conv_in_halves(x, w, b)
    assert out.shape == exact.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.double() - exact).abs().max().item() <= 1e-6 * exact.abs().max().item()
    half = x.bfloat16()
    assert torch.equal(conv_in_halves(half, w.bfloat16(), b.bfloat16()), F.conv2d(half, w.bfloat16(), b.bfloat16()))
