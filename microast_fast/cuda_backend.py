"""The "cuda" backend: the CUDA C++ kernels of ``csrc/`` (extension ``microast_fast._C``).

The content path runs in four kernels: the encoder head, instance statistics, the fused
FeatMod/FilterMod residual block and the decoder tail. The residual block runs on the tensor cores for
fp16/bf16 maps (fp32 accumulation) and in exact fp32 for fp32 maps; the other kernels compute in fp32
for every map dtype. The style path, once per style, is the torch
backend's. The kernels compile for sm_80/sm_90 in CI (csrc/check.sh) and their bodies are tested on
the host (csrc/host_emulation.cpp), but they have **not run on a GPU yet**: "auto" never picks this
backend.
"""

from __future__ import annotations

import torch

from . import cuda_ext, torch_backend
from .dispatch import BackendUnavailableError
from .signals import StyleSignals, alpha_vector, channel_rows

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


def pack_conv3x3(conv) -> tuple[torch.Tensor, torch.Tensor]:
    """``ConvLayer`` 64->64 3x3 -> weight ``[9 taps, 64 in, 64 out]`` and bias, fp32."""
    w = conv.conv_layer.weight
    return w.permute(2, 3, 1, 0).reshape(9, w.shape[1], w.shape[0]).float().contiguous(), conv.conv_layer.bias.float()


def _resblock(ops, block, x, featmod=None, filtermod=None) -> torch.Tensor:
    w1, b1 = pack_conv3x3(block.conv1)
    w2, b2 = pack_conv3x3(block.conv2)
    fm = featmod if featmod is not None else (None,) * 5
    flt = filtermod if filtermod is not None else (None, None)
    return ops.cuda_resblock(x, w1, b1, w2, b2, *fm, *flt)


def encode_style(model, style: torch.Tensor) -> StyleSignals:
    return torch_backend.encode_style(model, style)


def stylize(model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
    ops = _ops()
    encoder = model.content_encoder
    x = ops.cuda_encoder_head(content.contiguous(), *head_weights(encoder))  # NHWC quarter-res map
    x = _resblock(ops, encoder.enc1[10], x)
    x = _resblock(ops, encoder.enc2[0], x)
    alpha = alpha_vector(alpha, content.device)

    def per_channel(t: torch.Tensor) -> torch.Tensor:  # the CUDA ops take fp32 signals
        return channel_rows(t.float())

    for block, (s_mean, s_std, w, b) in zip((model.decoder.dec1, model.decoder.dec2), signals.per_block()):
        mean, std = ops.cuda_instance_stats(x)
        featmod = (mean, std, per_channel(s_mean), per_channel(s_std), alpha)
        x = _resblock(ops, block, x, featmod, (per_channel(w), per_channel(b)))
    return ops.cuda_decoder_tail(x, *tail_weights(model))


def head_weights(encoder) -> list[torch.Tensor]:
    """An encoder head's ten fp32 operands in PyTorch layouts (conv layers 0, 2, 4, 6, 8 of enc1)."""
    convs = [encoder.enc1[i].conv_layer for i in (0, 2, 4, 6, 8)]
    return [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]


def tail_weights(model) -> list[torch.Tensor]:
    """The decoder tail's ten fp32 operands in PyTorch layouts (conv layers 1, 3, 6, 8, 10 of dec3)."""
    convs = [model.decoder.dec3[i].conv_layer for i in (1, 3, 6, 8, 10)]
    return [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]


def tile_stages(model):
    raise BackendUnavailableError(
        "tiled streaming (max_memory / tile_size) does not run on the 'cuda' backend yet; use backend='torch' "
        "or 'triton' for streaming, or drop max_memory and tile_size"
    )
