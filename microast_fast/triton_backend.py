"""The "triton" backend: the whole forward pass through the Triton kernels of ``microast_fast.kernels``.

Per content image: encoder head (image -> quarter-res 64-channel map), two plain residual blocks,
then the decoder's two FeatMod + FilterMod residual blocks, whose FeatMod statistics come from the
epilogue of the kernel that wrote the map, then the decoder tail (-> image). Per style image: the
same encoder with statistics of both features, and the Modulator's depthwise conv + pooling.
Maps between kernels are NHWC in the model's dtype (fp32, fp16 or bf16); accumulation and statistics
are fp32. This module only turns the model's parameters into kernel operands and chains the ops;
the kernels and their launchers live in ``kernels/``.
"""

from __future__ import annotations

import torch

from .kernels._common import SUPPORTED_DTYPES
from .kernels.decoder_tail import decoder_tail, pack_decoder_tail
from .kernels.encoder_head import encoder_head, pack_encoder_head
from .kernels.filtermod_resblock import filtermod_resblock
from .kernels.modulator_pool import modulator_pool, pack_modulator_pair
from .operand_cache import OperandCache
from .signals import StyleSignals, alpha_vector, channel_rows
from .tile_layers import Patch
from .weight_packing import pack_conv3x3_weight

CHANNELS = 64


def _check_dtype(x: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"backend 'triton' runs float32, float16 and bfloat16 models, got {x.dtype}; "
            "use backend='torch' for other dtypes"
        )


def _pack_block(block) -> list[torch.Tensor]:
    dtype = block.conv1.conv_layer.weight.dtype
    return [pack_conv3x3_weight(block.conv1.conv_layer.weight, dtype), block.conv1.conv_layer.bias,
            pack_conv3x3_weight(block.conv2.conv_layer.weight, dtype), block.conv2.conv_layer.bias]


def _pack_encoder(encoder) -> tuple:
    dtype = encoder.enc1[0].conv_layer.weight.dtype
    return pack_encoder_head(encoder.enc1, dtype), _pack_block(encoder.enc1[10]), _pack_block(encoder.enc2[0])


def _pack(model) -> dict:
    dtype = model.decoder.dec1.conv1.conv_layer.weight.dtype
    mod = model.modulator
    return {
        "content": _pack_encoder(model.content_encoder),
        "style": _pack_encoder(model.style_encoder),
        "modulator_a": pack_modulator_pair(mod.weight1, mod.bias1),  # from s0: (w_a, b_a)
        "modulator_b": pack_modulator_pair(mod.weight2, mod.bias2),  # from s1: (w_b, b_b)
        "dec1": _pack_block(model.decoder.dec1),
        "dec2": _pack_block(model.decoder.dec2),
        "tail": pack_decoder_tail(model.decoder.dec3, dtype),
    }


_OPERANDS = OperandCache(_pack)


def _encode(packed_encoder, image: torch.Tensor, stats_f0: bool):
    """``(f0, f1, f0 statistics or empty, f1 statistics)``; maps NHWC."""
    head, block1, block2 = packed_encoder
    plain = (None,) * 7
    # The head's map is dropped as soon as block 1 is done: at most three quarter-res maps live at once.
    f0, mean0, std0 = filtermod_resblock(encoder_head(image, *head), *block1, *plain, stats_f0)
    f1, mean1, std1 = filtermod_resblock(f0, *block2, *plain, True)
    return f0, f1, (mean0, std0), (mean1, std1)


def encode_style(model, style: torch.Tensor) -> StyleSignals:
    _check_dtype(style)
    packed = _OPERANDS.get(model)
    s0, s1, (mean0, std0), (mean1, std1) = _encode(packed["style"], style, stats_f0=True)
    filter_a = modulator_pool(s0, *packed["modulator_a"])  # [S, 2, 64] fp32: (w_a, b_a)
    filter_b = modulator_pool(s1, *packed["modulator_b"])

    def signal(t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        return t.reshape(-1, CHANNELS, 1, 1).to(dtype)

    # Statistics stay fp32; FilterMod signals take the model's dtype, as the torch backend's do.
    return StyleSignals(
        signal(mean1), signal(std1), signal(filter_b[:, 0], style.dtype), signal(filter_b[:, 1], style.dtype),
        signal(mean0), signal(std0), signal(filter_a[:, 0], style.dtype), signal(filter_a[:, 1], style.dtype),
    )


def stylize(model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
    """``alpha`` is a float or an fp32 tensor ``[N or 1, 1, 1, 1]``; signals of batch 1 broadcast."""
    _check_dtype(content)
    packed = _OPERANDS.get(model)
    alpha = alpha_vector(alpha, content.device)
    _, x, _, (mean, std) = _encode(packed["content"], content, stats_f0=False)
    for block, (s_mean, s_std, w, b), with_stats in (
        (packed["dec1"], signals.per_block()[0], True),   # its output's statistics feed dec2's FeatMod
        (packed["dec2"], signals.per_block()[1], False),
    ):
        x, mean, std = filtermod_resblock(
            x, *block, mean, std, channel_rows(s_mean), channel_rows(s_std), alpha,
            channel_rows(w), channel_rows(b), with_stats,
        )
    return decoder_tail(x, *packed["tail"])


class TileStages:
    """The kernels as stages of the tiled executor (``streaming.stream``), on patches of NCHW-shaped
    views of NHWC maps. Each kernel reflects at its own input's edge: on a tile side that is the image
    border that is the model's padding, elsewhere the executor's halo (each stage's receptive field)
    keeps the wrong values out of the tile's own pixels."""

    def __init__(self, model):
        self.packed = _OPERANDS.get(model)

    @staticmethod
    def _nhwc(p: Patch) -> torch.Tensor:
        return p.data.permute(0, 2, 3, 1).contiguous()

    def encode(self, p: Patch) -> Patch:
        _check_dtype(p.data)
        _, f1, _, _ = _encode(self.packed["content"], p.data, stats_f0=False)
        # An image patch starts on a multiple of 4 (a quarter-res tile's halo'd origin, times 4).
        return Patch(f1.permute(0, 3, 1, 2), p.y // 4, p.x // 4, -(-p.height // 4), -(-p.width // 4))

    def decoder_block(self, index: int, x_mean, x_std, block_signals, alpha):
        """Decoder block ``index`` (1 or 2) as a function of a patch; its operands are prepared once."""
        s_mean, s_std, w, b = (channel_rows(t) for t in block_signals)
        alpha = alpha_vector(alpha, x_mean.device)
        operands = (*self.packed[f"dec{index}"], channel_rows(x_mean), channel_rows(x_std), s_mean, s_std, alpha, w, b)

        def run(p: Patch) -> Patch:
            out, _, _ = filtermod_resblock(self._nhwc(p), *operands, False)
            return Patch(out.permute(0, 3, 1, 2), p.y, p.x, p.height, p.width)
        return run

    def tail(self, p: Patch) -> Patch:
        out = decoder_tail(self._nhwc(p), *self.packed["tail"])
        return Patch(out, 4 * p.y, 4 * p.x, 4 * p.height, 4 * p.width)


def tile_stages(model) -> TileStages:
    """The tiled executor's stages for this backend (``streaming.stream``)."""
    return TileStages(model)
