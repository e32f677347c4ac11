"""The "cuda" backend: the CUDA C++ kernels of ``csrc/`` (extension ``microast_fast._C``).

The content path runs in four kernels: the encoder head, instance statistics, the fused
FeatMod/FilterMod residual block and the decoder tail. The residual block and the 9x9s of head and tail
run on the tensor cores for fp16/bf16 maps (fp32 accumulation) and in exact fp32 for fp32 maps; the
rest computes in fp32 for every map dtype. The style path, once per style, is the torch
backend's. The kernels compile for sm_80/sm_90 in CI (csrc/check.sh) and their bodies are tested on
the host (csrc/host_emulation.cpp). They ran on an H100 (2026-11-26, see the README); "auto" picks this
backend only where the table of measured, verified backends (data/auto_backend.json) says so.
"""

from __future__ import annotations

import torch

from . import cuda_ext, torch_backend
from .operand_cache import OperandCache
from .signals import StyleSignals, alpha_vector, channel_rows
from .tile_layers import Patch
from .weight_packing import compose_up2_grouped3x3, pack_conv3x3_weight, pack_conv9x9_im2col

CHANNELS = 64
_FAKES_REGISTERED = False


def _ops():
    """The extension's ops, with fake implementations so that torch.compile can trace them."""
    global _FAKES_REGISTERED
    cuda_ext.load()
    if not _FAKES_REGISTERED:
        @torch.library.register_fake("microast::cuda_instance_stats")
        def _(x):
            return x.new_empty(x.shape[0], CHANNELS, dtype=torch.float32), x.new_empty(x.shape[0], CHANNELS, dtype=torch.float32)

        @torch.library.register_fake("microast::cuda_resblock")
        def _(x, w1, b1, w2, b2, x_mean, x_std, s_mean, s_std, alpha, filt_w, filt_b):
            return torch.empty_like(x)

        @torch.library.register_fake("microast::cuda_encoder_head")
        def _(image, *weights):
            n, _, h, w = image.shape
            return image.new_empty(n, (h + 3) // 4, (w + 3) // 4, CHANNELS)

        @torch.library.register_fake("microast::cuda_decoder_tail")
        def _(x, *weights):
            n, h, w, _ = x.shape
            return x.new_empty(n, 3, 4 * h, 4 * w)

        _FAKES_REGISTERED = True
    return torch.ops.microast


def pack_conv3x3(conv, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``ConvLayer`` 64->64 3x3 -> weight ``[9 taps, 64 in, 64 out]`` in the maps' ``dtype`` (the kernels
    copy it as it is) and bias, fp32."""
    return pack_conv3x3_weight(conv.conv_layer.weight, dtype), conv.conv_layer.bias.float()


def _pack_block(block, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return (*pack_conv3x3(block.conv1, dtype), *pack_conv3x3(block.conv2, dtype))


def _resblock(ops, block, x, featmod=None, filtermod=None) -> torch.Tensor:
    return _run_block(ops, _pack_block(block, x.dtype), x, featmod, filtermod)


def _run_block(ops, packed, x, featmod=None, filtermod=None) -> torch.Tensor:
    fm = featmod if featmod is not None else (None,) * 5
    flt = filtermod if filtermod is not None else (None, None)
    return ops.cuda_resblock(x, *packed, *fm, *flt)


def encode_style(model, style: torch.Tensor) -> StyleSignals:
    return torch_backend.encode_style(model, style)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """A per-channel signal as the CUDA ops take it: fp32 ``[S, 64]``."""
    return channel_rows(t.float())


class _Operands:
    """The model's parameters as the kernels' operands (cached per model: ``_OPERANDS``)."""

    def __init__(self, model):
        encoder = model.content_encoder
        dtype = model.decoder.dec1.conv1.conv_layer.weight.dtype  # the maps' dtype: inputs match the model
        self.head = head_weights(encoder, dtype)
        self.encoder_blocks = (_pack_block(encoder.enc1[10], dtype), _pack_block(encoder.enc2[0], dtype))
        self.decoder_blocks = (_pack_block(model.decoder.dec1, dtype), _pack_block(model.decoder.dec2, dtype))
        self.tail = tail_weights(model, dtype)

    def encode(self, ops, image: torch.Tensor) -> torch.Tensor:
        """Image [N, 3, H, W] -> the content feature, NHWC at quarter res."""
        x = ops.cuda_encoder_head(image.contiguous(), *self.head)
        for packed in self.encoder_blocks:
            x = _run_block(ops, packed, x)
        return x


_OPERANDS = OperandCache(_Operands)


def stylize(model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
    ops = _ops()
    operands = _OPERANDS.get(model)
    x = operands.encode(ops, content)
    alpha = alpha_vector(alpha, content.device)
    for packed, (s_mean, s_std, w, b) in zip(operands.decoder_blocks, signals.per_block()):
        mean, std = ops.cuda_instance_stats(x)
        featmod = (mean, std, _per_channel(s_mean), _per_channel(s_std), alpha)
        x = _run_block(ops, packed, x, featmod, (_per_channel(w), _per_channel(b)))
    return ops.cuda_decoder_tail(x, *operands.tail)


def head_weights(encoder, dtype: torch.dtype) -> list[torch.Tensor | None]:
    """An encoder head's operands for images of ``dtype``: ten fp32 tensors (conv layers 0, 2, 4, 6, 8 of
    enc1), the 9x9 packed ``[3 * 81 taps (in, ky, kx), 16 out]`` (the kernel copies it as it is), the rest
    in PyTorch layouts; then the 9x9 as the tensor cores take it (``pack_conv9x9_im2col``; None for fp32)."""
    convs = [encoder.enc1[i].conv_layer for i in (0, 2, 4, 6, 8)]
    operands = [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]
    w9 = convs[0].weight
    operands[0] = w9.permute(1, 2, 3, 0).reshape(-1, w9.shape[0]).float().contiguous()
    return operands + [None if dtype == torch.float32 else pack_conv9x9_im2col(w9, dtype)]


def tail_weights(model, dtype: torch.dtype) -> list[torch.Tensor | None]:
    """The decoder tail's operands for maps of ``dtype``: ten fp32 tensors in PyTorch layouts (conv layers
    1, 3, 6, 8, 10 of dec3), the two grouped 3x3s composed with their bilinear x2 per output phase
    (``compose_up2_grouped3x3``), then the 9x9 as the tensor cores take it (``pack_conv9x9_mma``; None for
    fp32)."""
    convs = [model.decoder.dec3[i].conv_layer for i in (1, 3, 6, 8, 10)]
    fp32 = [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]
    phases = [compose_up2_grouped3x3(convs[i].weight) for i in (0, 2)]
    return fp32 + phases + [None if dtype == torch.float32 else pack_conv9x9_mma(convs[-1].weight, dtype)]


def pack_conv9x9_mma(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The tail's 9x9 ``[3 out, 16 in, 9, 9]`` -> ``[81 taps, 16 in, 16 out]`` in ``dtype``, outputs 3..15
    zero: one 16x16 B operand per tap for the tensor cores (whose N is 16)."""
    taps = weight.permute(2, 3, 1, 0).reshape(81, weight.shape[1], weight.shape[0])
    return torch.nn.functional.pad(taps, (0, 16 - weight.shape[0])).to(dtype).contiguous()


class TileStages:
    """The CUDA kernels as stages of the tiled executor (``streaming.stream``), on patches of NCHW-shaped
    views of NHWC maps. Each kernel reflects at its own input's edge: on a tile side that is the image
    border that is the model's padding, elsewhere the executor's halo (each stage's receptive field)
    keeps the wrong values out of the tile's own pixels. The decoder blocks' statistics are the
    executor's (whole-image, merged from per-tile partials), not the kernels'."""

    def __init__(self, model):
        self.ops = _ops()
        self.operands = _OPERANDS.get(model)

    @staticmethod
    def _nhwc(p: Patch) -> torch.Tensor:
        return p.data.permute(0, 2, 3, 1).contiguous()

    def encode(self, p: Patch) -> Patch:
        x = self.operands.encode(self.ops, p.data)
        # An image patch starts on a multiple of 4 (a quarter-res tile's halo'd origin, times 4).
        return Patch(x.permute(0, 3, 1, 2), p.y // 4, p.x // 4, -(-p.height // 4), -(-p.width // 4))

    def decoder_block(self, index: int, x_mean, x_std, block_signals, alpha):
        """Decoder block ``index`` (1 or 2) as a function of a patch; its operands are prepared once."""
        s_mean, s_std, w, b = block_signals
        featmod = (_per_channel(x_mean), _per_channel(x_std), _per_channel(s_mean), _per_channel(s_std),
                   alpha_vector(alpha, x_mean.device))
        filtermod = (_per_channel(w), _per_channel(b))
        packed = self.operands.decoder_blocks[index - 1]

        def run(p: Patch) -> Patch:
            out = _run_block(self.ops, packed, self._nhwc(p), featmod, filtermod)
            return Patch(out.permute(0, 3, 1, 2), p.y, p.x, p.height, p.width)
        return run

    def tail(self, p: Patch) -> Patch:
        out = self.ops.cuda_decoder_tail(self._nhwc(p), *self.operands.tail)
        return Patch(out, 4 * p.y, 4 * p.x, 4 * p.height, 4 * p.width)


def tile_stages(model) -> TileStages:
    """The tiled executor's stages for this backend (``streaming.stream``)."""
    return TileStages(model)
