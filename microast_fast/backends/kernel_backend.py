"""What the fused-kernel backends (Triton, CUDA) share: the forward pass and the tiled executor's
stages, both built from the same four primitives each backend implements on NHWC maps:

- ``operands(model)``: the model's weights packed as its kernels take them (cached per model);
- ``encode_content``: image -> the content feature f1, quarter res, and optionally its statistics;
- ``decoder_block``: one FeatMod + FilterMod residual block, and optionally its output's statistics;
- ``tail``: quarter-res map -> image.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from ..signals import StyleSignals, alpha_vector
from ..streaming import Patch
from .base import Backend


class KernelBackend(Backend):
    """A backend whose content path is a chain of fused kernels on NHWC maps in the model's dtype.
    ``ops()`` gives the kernels' custom ops (loading them on first use); statistics are ``(mean, std)``
    pairs ``[N, 64]`` fp32."""

    @abstractmethod
    def ops(self):
        """The backend's ops (``torch.ops.microast``), loaded on first use."""

    @abstractmethod
    def operands(self, model):
        """The model's weights packed for the kernels, cached per model."""

    def check_maps(self, x: torch.Tensor) -> None:
        """Raise a TypeError when the kernels cannot take maps of ``x``'s dtype."""

    @abstractmethod
    def encode_content(self, ops, operands, image: torch.Tensor, with_stats: bool):
        """``(f1 NHWC, its statistics or None)``."""

    @abstractmethod
    def block_operands(self, stats, block_signals, alpha: torch.Tensor) -> tuple:
        """A decoder block's FeatMod and FilterMod operands from its input's statistics ``(mean, std)``,
        the style's ``block_signals`` (``StyleSignals.per_block``) and ``alpha`` ``[1 or N]`` fp32."""

    @abstractmethod
    def decoder_block(self, ops, operands, index: int, x: torch.Tensor, block_operands: tuple, with_stats: bool):
        """``(decoder block index (1 or 2) of NHWC x, its output's statistics or None)``."""

    @abstractmethod
    def tail(self, ops, operands, x: torch.Tensor) -> torch.Tensor:
        """NHWC ``[N, h, w, 64]`` -> image ``[N, 3, 4h, 4w]``."""

    def stylize(self, model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
        self.check_maps(content)
        ops, operands = self.ops(), self.operands(model)
        alpha = alpha_vector(alpha, content.device)
        x, stats = self.encode_content(ops, operands, content, with_stats=True)
        for index, block_signals in enumerate(signals.per_block(), start=1):
            # dec1's output statistics feed dec2's FeatMod; dec2's feed nothing.
            x, stats = self.decoder_block(ops, operands, index, x, self.block_operands(stats, block_signals, alpha),
                                          with_stats=index == 1)
        return self.tail(ops, operands, x)

    def tile_stages(self, model) -> "KernelTileStages":
        return KernelTileStages(self, model)


def _nhwc(p: Patch) -> torch.Tensor:
    return p.data.permute(0, 2, 3, 1).contiguous()


class KernelTileStages:
    """A kernel backend's primitives as the tiled executor's stages (``streaming.TileStages``), on
    patches of NCHW-shaped views of NHWC maps. Each kernel reflects at its own input's edge: on a tile
    side that is the image border that is the model's padding, elsewhere the executor's halo (each
    stage's receptive field) keeps the wrong values out of the tile's own pixels. The decoder blocks'
    statistics are the executor's (whole-image, merged from per-tile partials), not the kernels'."""

    memory_format = torch.contiguous_format

    def __init__(self, backend: KernelBackend, model):
        self.backend = backend
        self.ops, self.operands = backend.ops(), backend.operands(model)
        self.device, self.dtype = model.device, model.dtype

    def encode(self, p: Patch) -> Patch:
        self.backend.check_maps(p.data)
        x, _ = self.backend.encode_content(self.ops, self.operands, p.data, with_stats=False)
        # An image patch starts on a multiple of 4 (a quarter-res tile's halo'd origin, times 4).
        return Patch(x.permute(0, 3, 1, 2), p.y // 4, p.x // 4, -(-p.height // 4), -(-p.width // 4))

    def decoder_block(self, index: int, x_mean, x_std, block_signals, alpha):
        """Decoder block ``index`` (1 or 2) as a function of a patch; its operands are prepared once."""
        prepared = self.backend.block_operands((x_mean, x_std), block_signals, alpha_vector(alpha, x_mean.device))

        def run(p: Patch) -> Patch:
            out, _ = self.backend.decoder_block(self.ops, self.operands, index, _nhwc(p), prepared, with_stats=False)
            return Patch(out.permute(0, 3, 1, 2), p.y, p.x, p.height, p.width)
        return run

    def tail(self, p: Patch) -> Patch:
        out = self.backend.tail(self.ops, self.operands, _nhwc(p))
        return Patch(out, 4 * p.y, 4 * p.x, 4 * p.height, 4 * p.width)
