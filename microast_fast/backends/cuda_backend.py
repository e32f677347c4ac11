"""The "cuda" backend: the CUDA C++ kernels of ``csrc/`` (extension ``microast_fast._C``, ``cuda_ext``).

The content path runs in four kernels: the encoder head, instance statistics, the fused
FeatMod/FilterMod residual block and the decoder tail. The residual block and the 9x9s of head and tail
run on the tensor cores for fp16/bf16 maps (fp32 accumulation) and in exact fp32 for fp32 maps; the
rest computes in fp32 for every map dtype. The style path, once per style, is the torch backend's.
"""

from __future__ import annotations

import torch

from .. import cuda_ext
from ..operand_cache import OperandCache
from ..signals import StyleSignals, channel_rows
from ..weight_packing import compose_up2_grouped3x3, pack_conv9x9_im2col, pack_conv9x9_out, pack_residual_block
from . import torch_backend
from .kernel_backend import KernelBackend

CHANNELS = 64
_FAKES_REGISTERED = False


def load_ops():
    """The extension's ops (``torch.ops.microast``), with fake implementations so that torch.compile can
    trace them; loads (or JIT-builds) the extension on the first call."""
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


def head_operands(encoder, dtype: torch.dtype) -> list[torch.Tensor | None]:
    """An encoder head's operands for images of ``dtype``: ten fp32 tensors (conv layers 0, 2, 4, 6, 8 of
    enc1), the 9x9 as its im2col rows ``[3 * 81, 16]`` (the kernel copies it as it is), the rest in PyTorch
    layouts; then the 9x9 as the tensor cores take it (im2col rows padded to 256; None for fp32)."""
    convs = [encoder.enc1[i].conv_layer for i in (0, 2, 4, 6, 8)]
    operands = [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]
    w9 = convs[0].weight
    operands[0] = pack_conv9x9_im2col(w9, torch.float32)
    return operands + [None if dtype == torch.float32 else pack_conv9x9_im2col(w9, dtype, rows=256)]


def tail_operands(model, dtype: torch.dtype) -> list[torch.Tensor | None]:
    """The decoder tail's operands for maps of ``dtype``: ten fp32 tensors in PyTorch layouts (conv layers
    1, 3, 6, 8, 10 of dec3), the two grouped 3x3s composed with their bilinear x2 per output phase
    (``compose_up2_grouped3x3``), then the 9x9 as the tensor cores take it (``pack_conv9x9_out``: [81 taps,
    16 in, 16 out]; None for fp32)."""
    convs = [model.decoder.dec3[i].conv_layer for i in (1, 3, 6, 8, 10)]
    fp32 = [t.float().contiguous() for conv in convs for t in (conv.weight, conv.bias)]
    phases = [compose_up2_grouped3x3(convs[i].weight) for i in (0, 2)]
    return fp32 + phases + [None if dtype == torch.float32 else pack_conv9x9_out(convs[-1].weight, dtype)]


class _Operands:
    """The model's parameters as the kernels' operands, for maps of the model's dtype (cached per model:
    ``_OPERANDS``). Weights take the maps' dtype (the kernels copy them as they are); biases are fp32."""

    def __init__(self, model):
        encoder, dtype = model.content_encoder, model.dtype
        self.head = head_operands(encoder, dtype)
        self.encoder_blocks = tuple(pack_residual_block(b, dtype, torch.float32) for b in (encoder.enc1[10], encoder.enc2[0]))
        self.decoder_blocks = tuple(pack_residual_block(b, dtype, torch.float32) for b in (model.decoder.dec1, model.decoder.dec2))
        self.tail = tail_operands(model, dtype)


_OPERANDS = OperandCache(_Operands)
_PLAIN_BLOCK = (None,) * 7  # no FeatMod (x_mean, x_std, s_mean, s_std, alpha), no FilterMod (w, b)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """A per-channel signal as the CUDA ops take it: fp32 ``[S, 64]``."""
    return channel_rows(t.float())


class CudaBackend(KernelBackend):
    name = "cuda"

    def unavailable_reason(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return f"the CUDA kernels run on CUDA devices, not on {device.type}"
        return cuda_ext.unavailable_reason()

    def ops(self):
        return load_ops()

    def operands(self, model) -> _Operands:
        return _OPERANDS.get(model)

    def encode_style(self, model, style: torch.Tensor) -> StyleSignals:
        return torch_backend.encode_style(model, style)

    def encode_content(self, ops, operands, image, with_stats):
        x = ops.cuda_encoder_head(image.contiguous(), *operands.head)
        for packed in operands.encoder_blocks:
            x = ops.cuda_resblock(x, *packed, *_PLAIN_BLOCK)
        return x, ops.cuda_instance_stats(x) if with_stats else None

    def block_operands(self, stats, block_signals, alpha):
        (x_mean, x_std), (s_mean, s_std, w, b) = stats, block_signals
        return (_per_channel(x_mean), _per_channel(x_std), _per_channel(s_mean), _per_channel(s_std), alpha,
                _per_channel(w), _per_channel(b))

    def decoder_block(self, ops, operands, index, x, block_operands, with_stats):
        out = ops.cuda_resblock(x, *operands.decoder_blocks[index - 1], *block_operands)
        return out, ops.cuda_instance_stats(out) if with_stats else None

    def tail(self, ops, operands, x):
        return ops.cuda_decoder_tail(x, *operands.tail)
