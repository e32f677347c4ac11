"""Colour preservation: keep the content's colours in a stylised image, as pure tensor functions.

Two ways, as in the style-transfer literature (Gatys et al. 2016, "Preserving color in neural artistic
style transfer"; Huang & Belongie 2017, AdaIN's ``preserve_color``):

- ``coral(style, content)``, *before* the style is encoded: recolour the style image so that its RGB mean
  and covariance are the content's; the model then transfers texture with the content's palette.
- ``preserve_luminance(output, content)``, *after* the model: keep the output's luminance (Y) and the
  content's chroma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validation import check_image

PRESERVE_COLOR_MODES = (None, "coral", "luminance")

# Covariance regulariser, in units of [0, 1] intensity squared: a standard deviation of ~0.003, about one
# 8-bit level. It keeps C^{-1/2} finite for flat or grey styles (singular covariances) and is far below
# the colour variance of any real picture (~1e-2).
CORAL_EPS = 1e-5

# Pixels per chunk when the float64 statistics and transform stream over an image: the float64 copies
# stay at a few MB whatever the image size (a 4K image whole in float64 is 212 MB).
_CHUNK = 1 << 16

# BT.601 luma weights (JPEG's YCbCr, and the Y of YIQ): Y = 0.299 R + 0.587 G + 0.114 B.
BT601_LUMA = (0.299, 0.587, 0.114)


def check_preserve_color(mode) -> None:
    """Raise ValueError unless ``mode`` is one of ``PRESERVE_COLOR_MODES``."""
    if mode not in PRESERVE_COLOR_MODES:
        raise ValueError(f"preserve_color must be one of {PRESERVE_COLOR_MODES}, got {mode!r}")


# --- CORAL -----------------------------------------------------------------------------------------
def coral(style: torch.Tensor, content: torch.Tensor, *, eps: float = CORAL_EPS, clamp: bool = True) -> torch.Tensor:
    """The style image recoloured to the content's colour statistics (CORAL, AdaIN's "preserve color").

    ``style' = C_c^{1/2} C_s^{-1/2} (style - mu_s) + mu_c`` per image, with ``mu`` the RGB mean and ``C`` the
    3x3 RGB covariance (population, over all pixels) plus ``eps * I``; the symmetric square roots come from
    an eigendecomposition. Then ``style'`` has the content's mean and, up to ``eps``, its covariance.

    Batches: style ``[S, 3, h, w]`` with content ``[N, 3, H, W]`` where ``S == N`` (pairs), ``S == 1`` (one
    style recoloured for each content: N outputs) or ``N == 1`` (every style to one content: S outputs).
    Statistics and transform run in float64; the result has the style's dtype and device (the content may
    be elsewhere: only its 3x3 statistics travel).

    ``clamp`` (default True) clips the result to [0, 1]. AdaIN's published ``coral`` (Lua and PyTorch) does
    not clip, but MicroAST's style encoder was trained on images in [0, 1], and the affine map sends
    saturated style colours outside it; clipping keeps a valid image (moving the statistics slightly, only
    where the map leaves the colour cube). ``clamp=False`` gives the exact affine transfer.
    """
    check_image("style", style)
    check_image("content", content)
    s, n = style.shape[0], content.shape[0]
    if not (s == n or s == 1 or n == 1):
        raise ValueError(
            f"style batch is {s} but content batch is {n}; give one style per content image, one style (batch 1) "
            "for all contents, or one content (batch 1) for all styles"
        )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    mu_s, cov_s = _moments(style)
    mu_c, cov_c = _moments(content)
    eye = torch.eye(3, dtype=torch.float64)
    # The 3x3 algebra on the CPU: tiny, and no solver launch (and sync) per batch on a GPU.
    matrix = _sym_pow(cov_c.cpu() + eps * eye, 0.5) @ _sym_pow(cov_s.cpu() + eps * eye, -0.5)  # [max(S,N), 3, 3]
    matrix = matrix.to(style.device)
    offset = (mu_c.to(style.device) - (matrix @ mu_s.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)  # [B, 3, 1]
    flat = style.reshape(s, 3, -1)
    out = torch.empty((max(s, n), 3, flat.shape[-1]), dtype=style.dtype, device=style.device)
    for start in range(0, flat.shape[-1], _CHUNK):
        part = torch.baddbmm(offset, matrix, flat[..., start:start + _CHUNK].double().expand(out.shape[0], -1, -1))
        if clamp:
            part = part.clamp_(0.0, 1.0)
        out[..., start:start + _CHUNK] = part
    return out.reshape(out.shape[0], 3, *style.shape[2:])


def _moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image RGB mean ``[B, 3]`` and population covariance ``[B, 3, 3]``, float64, on the images' device.
    Two passes (mean, then centred products) in chunks: exact to float64 without a float64 copy of the image."""
    flat = images.reshape(images.shape[0], 3, -1)
    count = flat.shape[-1]
    mean = torch.zeros(flat.shape[:2], dtype=torch.float64, device=images.device)
    for start in range(0, count, _CHUNK):
        mean += flat[..., start:start + _CHUNK].double().sum(-1)
    mean /= count
    cov = torch.zeros((flat.shape[0], 3, 3), dtype=torch.float64, device=images.device)
    for start in range(0, count, _CHUNK):
        centred = flat[..., start:start + _CHUNK].double() - mean.unsqueeze(-1)
        cov += centred @ centred.transpose(1, 2)
    return mean, cov / count


def _sym_pow(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """``matrix ** power`` of symmetric positive-definite matrices ``[B, 3, 3]`` by eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    # Eigenvalues of C + eps*I are >= eps; the floor only catches rounding (and eps = 0 with a flat image).
    values = values.clamp_min(torch.finfo(values.dtype).tiny)
    return (vectors * values.pow(power).unsqueeze(-2)) @ vectors.transpose(-1, -2)


# --- luminance-only transfer -----------------------------------------------------------------------
def preserve_luminance(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylised ``output``'s luminance with the ``content``'s chroma (only luminance is stylised).

    Colour space: YCbCr, ITU-R BT.601 full range, as JPEG uses. The result depends only on the luma weights
    (0.299, 0.587, 0.114): going back to RGB, a change of Y alone adds the same amount to R, G and B, so
    ``result = content + (Y(output) - Y(content))`` per pixel. YIQ has the same Y and so gives the same image.
    No clipping: like the model's own output it may leave [0, 1] slightly; saving clips.

    ``output`` ``[N, 3, H', W']`` and ``content`` ``[N or 1, 3, H, W]`` on one device. The model's output is
    ``4*ceil(H/4) x 4*ceil(W/4)`` with the picture at the top left, so a smaller content is padded at the
    bottom and right by replicating its edge (not resized, which would shift its chroma against the output).
    Computed in the output's dtype if float32/float64, else in float32; returned in the output's dtype.
    """
    check_image("output", output)
    check_image("content", content)
    if content.device != output.device:
        raise ValueError(f"content is on {content.device} but output is on {output.device}; move both to one device")
    if content.shape[0] not in (1, output.shape[0]):
        raise ValueError(
            f"output batch is {output.shape[0]} but content batch is {content.shape[0]}; give one content per "
            "output or a single content (batch 1) for all"
        )
    (h, w), (oh, ow) = content.shape[-2:], output.shape[-2:]
    if h > oh or w > ow:
        raise ValueError(
            f"content is {h}x{w} but output is {oh}x{ow}; the content must not be larger than the output "
            "(crop the content, or pass the uncropped model output)"
        )
    dtype = output.dtype if output.dtype in (torch.float32, torch.float64) else torch.float32
    out, con = output.to(dtype), content.to(dtype)
    if (h, w) != (oh, ow):
        con = F.pad(con, (0, ow - w, 0, oh - h), mode="replicate")
    weights = torch.tensor(BT601_LUMA, dtype=dtype, device=output.device).view(1, 3, 1, 1)
    delta_y = ((out - con) * weights).sum(1, keepdim=True)
    return (con + delta_y).to(output.dtype)
