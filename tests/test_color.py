"""Colour preservation (``microast_fast.color``) against independent NumPy float64 formulations."""

import numpy as np
import pytest
import torch

from microast_fast.color import CORAL_EPS, PRESERVE_COLOR_MODES, check_preserve_color, coral, preserve_luminance

# ITU-R BT.601 full-range RGB -> YCbCr (JPEG/JFIF), written out here rather than taken from the module.
YCBCR = np.array([[0.299, 0.587, 0.114],
                  [-0.168736, -0.331264, 0.5],
                  [0.5, -0.418688, -0.081312]])
YCBCR_OFFSET = np.array([0.0, 0.5, 0.5])


def image(seed, n, h, w, low=0.0, high=1.0, mix=None):
    """Random RGB images with correlated channels (``mix``), values in [low, high]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    if mix is not None:
        x = torch.einsum("ij,njhw->nihw", torch.tensor(mix, dtype=torch.float64), x)
        x = (x - x.amin()) / (x.amax() - x.amin())
    return (low + (high - low) * x).float()


# --- NumPy references ------------------------------------------------------------------------------
def np_stats(img):
    """RGB mean [3] and population covariance [3, 3] of one [3, H, W] image."""
    flat = np.asarray(img, dtype=np.float64).reshape(3, -1)
    return flat.mean(axis=1), np.cov(flat, bias=True)


def np_sqrtm(c, power):
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w ** power) @ v.T


def np_coral(style, content, eps):
    """Unclamped CORAL of one [3, h, w] style to one [3, H, W] content."""
    mu_s, c_s = np_stats(style)
    mu_c, c_c = np_stats(content)
    a = np_sqrtm(c_c + eps * np.eye(3), 0.5) @ np_sqrtm(c_s + eps * np.eye(3), -0.5)
    flat = np.asarray(style, dtype=np.float64).reshape(3, -1)
    return (a @ (flat - mu_s[:, None]) + mu_c[:, None]).reshape(np.shape(style))


def to_ycbcr(rgb):
    """[3, H, W] RGB -> YCbCr."""
    return np.einsum("ij,jhw->ihw", YCBCR, rgb) + YCBCR_OFFSET[:, None, None]


def np_luminance(output, content):
    """One [3, H', W'] output with the chroma of one [3, H, W] content, its edge replicated to H' x W'."""
    output, content = np.asarray(output, dtype=np.float64), np.asarray(content, dtype=np.float64)
    (h, w), (oh, ow) = content.shape[1:], output.shape[1:]
    content = np.pad(content, ((0, 0), (0, oh - h), (0, ow - w)), mode="edge")
    ycc = np.concatenate([to_ycbcr(output)[:1], to_ycbcr(content)[1:]])
    return np.einsum("ij,jhw->ihw", np.linalg.inv(YCBCR), ycc - YCBCR_OFFSET[:, None, None])


# --- modes -----------------------------------------------------------------------------------------
def test_modes():
    assert PRESERVE_COLOR_MODES == (None, "coral", "luminance")
    for mode in PRESERVE_COLOR_MODES:
        check_preserve_color(mode)
    for bad in ("yiq", "Coral", "", True):
        with pytest.raises(ValueError, match=r"one of \(None, 'coral', 'luminance'\)") as info:
            check_preserve_color(bad)
        assert repr(bad) in str(info.value)


# --- CORAL -----------------------------------------------------------------------------------------
MIX = [[1.0, 0.3, 0.0], [0.2, 1.0, 0.4], [0.0, 0.5, 1.0]]


def test_coral_matches_numpy_and_content_statistics():
    style = image(0, 1, 24, 20, mix=MIX).double()
    content = image(1, 1, 30, 17, 0.2, 0.7, mix=[[1.0, 0.0, 0.6], [0.0, 1.0, 0.0], [0.6, 0.0, 1.0]]).double()
    got = coral(style, content, clamp=False)
    assert got.shape == style.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got[0].numpy(), np_coral(style[0], content[0], CORAL_EPS), rtol=0, atol=1e-12)
    # With eps = 0 the statistics are matched exactly.
    exact = coral(style, content, eps=0.0, clamp=False)
    mu, cov = np_stats(exact[0])
    mu_c, cov_c = np_stats(content[0])
    np.testing.assert_allclose(mu, mu_c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, cov_c, rtol=0, atol=1e-12)
    # The default eps moves the covariance by about eps at most.
    mu, cov = np_stats(got[0])
    np.testing.assert_allclose(mu, mu_c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, cov_c, rtol=0, atol=2 * CORAL_EPS)
    assert not np.allclose(cov, np_stats(style[0])[1], atol=1e-3)  # it did change something


def test_coral_clamps_to_the_unit_cube_only_where_needed():
    # A style of saturated colours towards a bright, varied content: the affine map leaves [0, 1].
    style = image(2, 1, 16, 16, mix=MIX)
    content = image(3, 1, 16, 16, 0.5, 1.0)
    want = np_coral(style[0], content[0], CORAL_EPS)
    assert want.min() < 0 or want.max() > 1
    got = coral(style, content)
    np.testing.assert_allclose(got[0].numpy(), np.clip(want, 0, 1), rtol=0, atol=1e-6)
    # Inside the cube clamping changes nothing: statistics are the content's (to float32 rounding).
    style, content = image(4, 1, 20, 20, 0.3, 0.7), image(5, 1, 20, 20, 0.3, 0.7, mix=MIX)
    want = np_coral(style[0], content[0], CORAL_EPS)
    assert 0 < want.min() and want.max() < 1
    got = coral(style, content)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-6)
    mu, cov = np_stats(got[0])
    mu_c, cov_c = np_stats(content[0])
    np.testing.assert_allclose(mu, mu_c, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cov, cov_c, rtol=0, atol=2 * CORAL_EPS)


@pytest.mark.parametrize("s,n", [(1, 2), (2, 1), (2, 2)])
def test_coral_batches(s, n):
    style = image(6, s, 12, 14, mix=MIX).double()
    content = image(7, n, 10, 9, 0.1, 0.8).double()
    got = coral(style, content, clamp=False)
    assert got.shape == (max(s, n), 3, 12, 14)
    for i in range(max(s, n)):
        want = np_coral(style[i % s], content[i % n], CORAL_EPS)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=0, atol=1e-12)
    assert not torch.allclose(got[0], got[1])  # per sample, not the first pair repeated


def test_coral_refuses_mismatched_batches():
    with pytest.raises(ValueError, match="style batch is 2 but content batch is 3"):
        coral(image(0, 2, 8, 8), image(1, 3, 8, 8))


def test_coral_streams_large_images_in_chunks():
    # More pixels than one chunk (65536) in both images.
    style, content = image(8, 1, 300, 250, mix=MIX).double(), image(9, 1, 270, 260, 0.2, 0.9).double()
    got = coral(style, content, clamp=False)
    np.testing.assert_allclose(got[0].numpy(), np_coral(style[0], content[0], CORAL_EPS), rtol=0, atol=1e-11)


def test_coral_of_flat_and_grey_styles_is_finite():
    content = image(10, 1, 12, 12, mix=MIX)
    flat = torch.full((1, 3, 8, 8), 0.25)
    got = coral(flat, content)
    np.testing.assert_allclose(got[0].numpy(), np.broadcast_to(np_stats(content[0])[0][:, None, None], (3, 8, 8)),
                               rtol=0, atol=1e-6)
    grey = image(11, 1, 8, 8)[:, :1].expand(-1, 3, -1, -1)  # singular covariance (rank 1)
    got = coral(grey, content, clamp=False)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(np_stats(got[0])[0], np_stats(content[0])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_coral_keeps_low_precision_dtype(dtype, atol):
    style, content = image(12, 1, 16, 16, 0.3, 0.7).to(dtype), image(13, 1, 16, 16, 0.3, 0.7, mix=MIX).to(dtype)
    got = coral(style, content)
    assert got.dtype == dtype and got.device == style.device
    want = np.clip(np_coral(style[0].double(), content[0].double(), CORAL_EPS), 0, 1)
    np.testing.assert_allclose(got[0].double().numpy(), want, rtol=0, atol=atol)


# --- luminance -------------------------------------------------------------------------------------
def test_luminance_keeps_output_luma_and_content_chroma():
    output = image(20, 1, 16, 12, -0.05, 1.05).double()  # a model output may leave [0, 1] a little
    content = image(21, 1, 16, 12, mix=MIX).double()
    got = preserve_luminance(output, content)
    assert got.shape == output.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got[0].numpy(), np_luminance(output[0], content[0]), rtol=0, atol=1e-12)
    ycc = to_ycbcr(got[0].numpy())
    np.testing.assert_allclose(ycc[0], to_ycbcr(output[0].numpy())[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ycc[1:], to_ycbcr(content[0].numpy())[1:], rtol=0, atol=1e-12)


def test_luminance_pads_content_by_replicating_its_edge():
    # The model's output of a 13x10 content is 16x12, the picture at its top left.
    output, content = image(22, 1, 16, 12), image(23, 1, 13, 10, mix=MIX)
    got = preserve_luminance(output, content)
    assert got.shape == (1, 3, 16, 12) and got.dtype == torch.float32
    np.testing.assert_allclose(got[0].numpy(), np_luminance(output[0], content[0]), rtol=0, atol=1e-6)
    # The padded corner has the chroma of the content's bottom-right pixel.
    corner = to_ycbcr(got[0].double().numpy())[1:, 13:, 10:]
    edge = to_ycbcr(content[0, :, -1:, -1:].double().numpy())[1:]
    np.testing.assert_allclose(corner, np.broadcast_to(edge, corner.shape), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_content", [1, 2])
def test_luminance_batches(n_content):
    output, content = image(24, 2, 12, 12), image(25, n_content, 12, 12, mix=MIX)
    got = preserve_luminance(output, content)
    assert got.shape == (2, 3, 12, 12)
    for i in range(2):
        want = np_luminance(output[i], content[i % n_content])
        np.testing.assert_allclose(got[i].numpy(), want, rtol=0, atol=1e-6)
    assert not torch.allclose(got[0], got[1])


def test_luminance_refuses_bad_pairs():
    with pytest.raises(ValueError, match="output batch is 2 but content batch is 3"):
        preserve_luminance(image(0, 2, 8, 8), image(1, 3, 8, 8))
    with pytest.raises(ValueError, match="content is 9x8 but output is 8x8"):
        preserve_luminance(image(0, 1, 8, 8), image(1, 1, 9, 8))


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 4e-3), (torch.bfloat16, 2e-2)])
def test_luminance_keeps_low_precision_dtype(dtype, atol):
    output, content = image(26, 2, 12, 12).to(dtype), image(27, 1, 11, 9, mix=MIX).to(dtype)
    got = preserve_luminance(output, content)
    assert got.dtype == dtype and got.shape == output.shape
    for i in range(2):
        want = np_luminance(output[i].double(), content[0].double())
        np.testing.assert_allclose(got[i].double().numpy(), want, rtol=0, atol=atol)


# --- through the model and the command line ----------------------------------------------------------
def _model(mode=None):
    from microast_fast import MicroAST

    return MicroAST.from_pretrained(backend="torch", preserve_color=mode, tile_size=0)


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 22, 29, generator=g), torch.rand(2, 3, 24, 20, generator=g)


def test_model_luminance_keeps_the_content_chroma_per_sample_and_mixed():
    from microast_fast import StyleSignals

    content, style = _inputs()
    plain, kept = _model(), _model("luminance")
    with torch.inference_mode():
        torch.testing.assert_close(kept(content, style), preserve_luminance(plain(content, style), content),
                                   rtol=0, atol=0)
        mixed = StyleSignals.mix([plain.encode_style(style[:1]), plain.encode_style(style[1:])], [0.4, 0.6])
        torch.testing.assert_close(kept(content, mixed), preserve_luminance(plain(content, mixed), content),
                                   rtol=0, atol=0)


def test_model_coral_encodes_the_recoloured_style():
    content, style = _inputs()
    plain, recoloured = _model(), _model("coral")
    with torch.inference_mode():
        expected = plain(content, coral(style, content))
        torch.testing.assert_close(recoloured(content, style), expected, rtol=0, atol=0)
        signals = recoloured.encode_style(style, content=content)
        torch.testing.assert_close(recoloured(content, signals), expected, rtol=0, atol=0)
        with pytest.raises(ValueError, match="pass encode_style\\(style, content=...\\)"):
            recoloured.encode_style(style)


def test_streamed_luminance_matches_the_whole_image():
    from microast_fast import streaming

    content, style = _inputs()
    model = _model("luminance")
    h, w = content.shape[-2:]
    with torch.inference_mode():
        signals = model.encode_style(style)
        whole = model(content, signals)
        bands = model.stream(lambda y0, y1, x0, x1: content[:, :, y0:y1, x0:x1], h, w, signals, batch=2,
                             plan=streaming.Plan(2))
        streamed = torch.cat([band for _, band in bands], dim=2)[:, :, :whole.shape[2]]
    assert (streamed - whole).abs().max().item() <= 1e-5  # fp32 summation order of the tiles


def test_bad_mode_on_the_model():
    from microast_fast import MicroAST

    with pytest.raises(ValueError, match="preserve_color must be one of"):
        MicroAST(preserve_color="yiq")
