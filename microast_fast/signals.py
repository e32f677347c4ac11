"""What a style image contributes to the decoder, computed once and reusable for many content images."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

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

    @staticmethod
    def mix(signals: Sequence["StyleSignals"], weights: Sequence[float]) -> "StyleSignals":
        """One style from several: each signal is the ``weights``-weighted sum of theirs.

        This is AdaIN's style interpolation, extended to FilterMod. FeatMod is affine in the style's
        statistics (``std * normalized(x) + mean``) and each FilterMod epilogue is linear in ``(w, b)``
        (``w * conv(x) + b * x``), so with weights summing to 1 each modulation point gives exactly the
        weighted sum of what the styles would give it alone; one-hot weights give that style exactly.
        The mix costs nothing per frame: it is one more set of signals. ``signals`` share a batch size
        (1 broadcasts) and a device; ``weights`` are non-negative and sum to 1."""
        signals = list(signals)
        weights = [float(w) for w in weights]
        if not signals or len(weights) != len(signals):
            raise ValueError(f"mix takes one weight per style: {len(signals)} styles, {len(weights)} weights")
        if any(not math.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
            raise ValueError(f"mix weights must be non-negative and sum to 1, got {weights}")
        batch = max(s.batch_size for s in signals)
        if any(s.batch_size not in (1, batch) for s in signals):
            raise ValueError(f"styles to mix have batch sizes {[s.batch_size for s in signals]}: use equal "
                             "batches, or 1 to broadcast")
        if len({s.device for s in signals}) > 1:
            raise ValueError(f"styles to mix are on different devices: {sorted({str(s.device) for s in signals})}")
        mixed = []
        for parts in zip(*signals):  # one field at a time, summed in fp32 whatever the field's dtype
            total = sum(w * t.float() for w, t in zip(weights, parts))
            mixed.append(total.expand(batch, *total.shape[1:]).to(parts[0].dtype).contiguous())
        return StyleSignals(*mixed)


def parse_weights(text: str) -> list[float]:
    """``"0.3,0.7"`` (the command line's ``--mix``) -> ``[0.3, 0.7]``: non-negative weights summing to 1."""
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--mix takes comma-separated weights such as 0.3,0.7, got {text!r}") from None
    if any(not w >= 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise ValueError(f"--mix weights must be non-negative and sum to 1, got {text!r}")
    return weights


def channel_rows(t: torch.Tensor) -> torch.Tensor:
    """A per-channel signal ``[S, C, 1, 1]`` as the kernels take it: contiguous ``[S, C]``."""
    return t.reshape(t.shape[0], -1).contiguous()


def alpha_vector(alpha, device) -> torch.Tensor:
    """``alpha`` (a float, or a tensor of N values) as the kernels take it: contiguous fp32 ``[1 or N]``."""
    if torch.is_tensor(alpha):
        return alpha.to(device=device, dtype=torch.float32).reshape(-1).contiguous()
    return torch.full((1,), float(alpha), device=device, dtype=torch.float32)
