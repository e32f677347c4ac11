"""The "torch" backend: the spec's fused algebra in plain PyTorch (``torch_layers``), on every device.

The style path runs once per style image (``encode_style``) and broadcasts over the content batch.
It is also the autograd path of the module and the style path of the CUDA backend.
"""

from __future__ import annotations

import torch

from ..signals import StyleSignals
from ..streaming import Patch
from .base import Backend
from .torch_layers import (TileConv, TileResidual, UpsampleConv, conv_memory_format, encode, featmod_affine,
                           filtermod_resblock, instance_stats, upsample2)


def encode_style(model, style: torch.Tensor) -> StyleSignals:
    s0, s1 = encode(model.style_encoder, style)
    (w_a, b_a), (w_b, b_b) = model.modulator((s0, s1))
    mean0, std0 = instance_stats(s0)
    mean1, std1 = instance_stats(s1)
    return StyleSignals(mean1, std1, w_b, b_b, mean0, std0, w_a, b_a)


def stylize(model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
    _, x = encode(model.content_encoder, content)
    decoder = model.decoder
    for block, (s_mean, s_std, w, b) in zip((decoder.dec1, decoder.dec2), signals.per_block()):
        a, shift = featmod_affine(*instance_stats(x), s_mean, s_std, alpha)
        x = filtermod_resblock(block, x, a, shift, w, b)
    return decoder.dec3(x).contiguous()


class TorchBackend(Backend):
    name = "torch"

    def unavailable_reason(self, device: torch.device) -> str | None:
        return None

    def encode_style(self, model, style: torch.Tensor) -> StyleSignals:
        return encode_style(model, style)

    def stylize(self, model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
        return stylize(model, content, signals, alpha)

    def tile_stages(self, model) -> "TorchTileStages":
        return TorchTileStages(model)


class TorchTileStages:
    """The content path of a ``MicroAST`` module as the tiled executor's stages (``streaming.TileStages``),
    its layers in the form that runs fastest on the model's device. On the CPU (oneDNN, channels-last,
    measured on 2 cores at tile size):
    - the tail's grouped convolutions (2 input channels a group) and the encoder's stride-2 16->32 run as
      dense convolutions with a block-diagonal weight (oneDNN has no fast kernel for such groups);
    - each bilinear x2 + grouped 3x3 of the tail runs as one convolution on the low-resolution map
      (``UpsampleConv``), and the final 9x9 16->3 as a 1x9 16->27 (one output per kernel row) and a 9x1
      27->3 that sums the rows (oneDNN is slow at 3 output channels).
    ``cpu_forms`` overrides that choice (tests run the other devices' forms on a CPU)."""

    def __init__(self, model, cpu_forms: bool | None = None):
        self.device, self.dtype = model.device, model.dtype
        self.memory_format = conv_memory_format(self.device)
        cpu = self.device.type == "cpu" if cpu_forms is None else cpu_forms
        enc1 = model.content_encoder.enc1
        # Dense on the CPU: the stride-2 16->32 (1.5x faster); not the stride-2 32->64 (1.2x slower).
        self.head = [TileConv(enc1[0], relu=True), TileConv(enc1[2], relu=True, dense=cpu),
                     TileConv(enc1[4], relu=True), TileConv(enc1[6], relu=True), TileConv(enc1[8], relu=True)]
        self.encoder_blocks = [TileResidual(enc1[10], cpu), TileResidual(model.content_encoder.enc2[0], cpu)]
        self.block1, self.block2 = TileResidual(model.decoder.dec1, cpu), TileResidual(model.decoder.dec2, cpu)
        d3 = model.decoder.dec3
        if cpu:
            self.tail_half = [UpsampleConv(d3[1], relu=True, dense=True), TileConv(d3[3], relu=True)]
            self.tail_full = [UpsampleConv(d3[6], relu=True, dense=True), TileConv(d3[8], relu=True),
                              TileConv(d3[10], row_split=True)]
        else:
            self.tail_half = [upsample2, TileConv(d3[1], relu=True), TileConv(d3[3], relu=True)]
            self.tail_full = [upsample2, TileConv(d3[6], relu=True), TileConv(d3[8], relu=True), TileConv(d3[10])]

    def encode(self, p: Patch) -> Patch:
        # Both stride-2 windows must start on odd rows/columns. An interior image patch starts on a
        # multiple of 4; one image row/column less (inside the halo's slack) makes both start right,
        # where TileConv would otherwise cut a row of the 16-channel full-res map: a copy of it per tile.
        if p.y > 0 and p.y % 2 == 0:
            p = p.crop(p.y + 1, p.y1, p.x, p.x1)
        if p.x > 0 and p.x % 2 == 0:
            p = p.crop(p.y, p.y1, p.x + 1, p.x1)
        for layer in self.head:
            p = layer(p)
        for block in self.encoder_blocks:
            p = block(p)
        return p

    def decoder_block(self, index: int, x_mean, x_std, block_signals, alpha):
        """Decoder block ``index`` (1 or 2), FeatMod from the input's statistics and the style's, as a
        function of a patch (the affine is computed once, not per tile)."""
        s_mean, s_std, w, b = block_signals
        affine = featmod_affine(x_mean, x_std, s_mean, s_std, alpha)
        block = self.block1 if index == 1 else self.block2
        return lambda p: block(p, affine, (w, b))

    def tail(self, p: Patch) -> Patch:
        for layer in self.tail_half + self.tail_full:
            p = layer(p)
        return p
