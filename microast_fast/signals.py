"""What a style image contributes to the decoder, computed once and reusable for many content images."""

from __future__ import annotations

from typing import NamedTuple

import torch


class StyleSignals(NamedTuple):
    """Per-sample, per-channel signals for the decoder's two FilterMod blocks, each ``[S, 64, 1, 1]``.

    ``dec1_*`` serve the first block (statistics of the style's f1, FilterMod pair from f1),
    ``dec2_*`` the second (statistics of f0, pair from f0): the published pairing.
    Statistics are fp32 whatever the model's dtype; ``S`` is the style batch (1 broadcasts over content).
    """

    dec1_mean: torch.Tensor
    dec1_std: torch.Tensor
    dec1_w: torch.Tensor
    dec1_b: torch.Tensor
    dec2_mean: torch.Tensor
    dec2_std: torch.Tensor
    dec2_w: torch.Tensor
    dec2_b: torch.Tensor

    def per_block(self):
        """``(mean, std, w, b)`` of dec1, then of dec2: the order the decoder meets them."""
        return self[0:4], self[4:8]

    @property
    def batch_size(self) -> int:
        return self.dec1_mean.shape[0]

    @property
    def device(self) -> torch.device:
        return self.dec1_mean.device

    def to(self, device) -> "StyleSignals":
        return StyleSignals(*(t.to(device) for t in self))


def channel_rows(t: torch.Tensor) -> torch.Tensor:
    """A per-channel signal ``[S, C, 1, 1]`` as the kernels take it: contiguous ``[S, C]``."""
    return t.reshape(t.shape[0], -1).contiguous()


def alpha_vector(alpha, device) -> torch.Tensor:
    """``alpha`` (a float, or a tensor of N values) as the kernels take it: contiguous fp32 ``[1 or N]``."""
    if torch.is_tensor(alpha):
        return alpha.to(device=device, dtype=torch.float32).reshape(-1).contiguous()
    return torch.full((1,), float(alpha), device=device, dtype=torch.float32)
