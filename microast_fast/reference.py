"""The plain PyTorch MicroAST: the oracle every fast path is tested against.

Written to be read, layer by layer, as ``MICROAST_SPEC.md`` states the model. Module and parameter
names are those of the published checkpoints, so each published file loads into its submodule
unchanged. Nothing here is fused or clever; speed lives in ``microast_fast.backends``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import StrictStateDictMixin

# Added to the variance before the square root, as in the published code.
FEATMOD_EPS = 1e-5


class ConvLayer(nn.Module):
    """Reflection padding of ``kernel_size // 2`` on every side, then a convolution with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.padding = kernel_size // 2
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.padding,) * 4, mode="reflect")
        return self.conv_layer(x)


class ResidualLayer(nn.Module):
    """``x + conv2(relu(conv1(x)))``; with FilterMod signals ``(w, b)`` both convolutions are modulated."""

    def __init__(self, channels: int = 64, kernel_size: int = 3):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size)
        self.conv2 = ConvLayer(channels, channels, kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
        if w is None:
            return x + self.conv2(torch.relu(self.conv1(x)))
        y1 = self.conv1(x)
        y2 = w * y1 + b * x
        y3 = torch.relu(y2)
        y4 = self.conv2(y3)
        y5 = w * y4 + b * y3
        return x + y5


class Encoder(nn.Module):
    """Image ``[N, 3, H, W]`` -> ``(f0, f1)``, both ``[N, 64, ceil(H/4), ceil(W/4)]``."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(
            ConvLayer(3, 16, 9),
            nn.ReLU(),
            ConvLayer(16, 32, 3, stride=2, groups=16),
            nn.ReLU(),
            ConvLayer(32, 32, 1),
            nn.ReLU(),
            ConvLayer(32, 64, 3, stride=2, groups=32),
            nn.ReLU(),
            ConvLayer(64, 64, 1),
            nn.ReLU(),
            ResidualLayer(64),
        )
        self.enc2 = nn.Sequential(ResidualLayer(64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f0 = self.enc1(x)
        f1 = self.enc2(f0)
        return f0, f1


class Modulator(nn.Module):
    """Style features ``(s0, s1)`` -> FilterMod signals ``(w_a, b_a)`` from s0 and ``(w_b, b_b)`` from s1."""

    def __init__(self):
        super().__init__()
        for name in ("weight1", "bias1", "weight2", "bias2"):
            branch = nn.Sequential(ConvLayer(64, 64, 3, groups=64), nn.AdaptiveAvgPool2d((1, 1)))
            self.add_module(name, branch)

    def forward(self, style_feats: tuple[torch.Tensor, torch.Tensor]):
        s0, s1 = style_feats
        w_a, b_a = self.weight1(s0), self.bias1(s0)
        w_b, b_b = self.weight2(s1), self.bias2(s1)
        return (w_a, b_a), (w_b, b_b)


def calc_mean_std(x: torch.Tensor, eps: float = FEATMOD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and ``sqrt(unbiased variance + eps)`` over the spatial positions."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    var = flat.var(dim=2) + eps
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def featmod(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Adaptive instance normalisation: ``x``'s statistics replaced by those of ``s``."""
    x_mean, x_std = calc_mean_std(x)
    s_mean, s_std = calc_mean_std(s)
    return (x - x_mean) / x_std * s_std + s_mean


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec1 = ResidualLayer(64)
        self.dec2 = ResidualLayer(64)
        self.dec3 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ConvLayer(64, 32, 3, groups=32),
            nn.ReLU(),
            ConvLayer(32, 32, 1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ConvLayer(32, 16, 3, groups=16),
            nn.ReLU(),
            ConvLayer(16, 16, 1),
            nn.ReLU(),
            ConvLayer(16, 3, 9),
        )

    def forward(self, content_feats, style_feats, filter_a, filter_b, alpha: float) -> torch.Tensor:
        (_, c1), (s0, s1) = content_feats, style_feats
        (w_a, b_a), (w_b, b_b) = filter_a, filter_b
        # The pairing is the published one: dec1 meets s1 and (w_b, b_b); dec2 meets s0 and (w_a, b_a).
        x1 = alpha * featmod(c1, s1) + (1 - alpha) * c1
        x2 = self.dec1(x1, w_b, b_b)
        x3 = alpha * featmod(x2, s0) + (1 - alpha) * x2
        x4 = self.dec2(x3, w_a, b_a)
        return self.dec3(x4)


class MicroASTReference(StrictStateDictMixin, nn.Module):
    """The whole published model: ``forward(content [N,3,H,W], style [N,3,h,w], alpha) -> [N,3,4*ceil(H/4),4*ceil(W/4)]``.

    As in the published code, content and style batches must be equal and alpha is one float in [0, 1].
    """

    def __init__(self):
        super().__init__()
        self.content_encoder = Encoder()
        self.style_encoder = Encoder()
        self.modulator = Modulator()
        self.decoder = Decoder()

    @classmethod
    def from_pretrained(cls) -> "MicroASTReference":
        """The published weights bundled with the package, in eval mode with frozen parameters."""
        from .checkpoint import load_bundled

        model = cls()
        load_bundled(model)
        return model.eval().requires_grad_(False)

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        style_feats = self.style_encoder(style)
        filter_a, filter_b = self.modulator(style_feats)
        content_feats = self.content_encoder(content)
        return self.decoder(content_feats, style_feats, filter_a, filter_b, alpha)
