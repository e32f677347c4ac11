"""The "triton" backend: the whole forward pass through the Triton kernels of ``microast_fast.kernels``.

Per content image: encoder head (image -> quarter-res 64-channel map), two plain residual blocks,
then the decoder's two FeatMod + FilterMod residual blocks, whose FeatMod statistics come from the
epilogue of the kernel that wrote the map, then the decoder tail (-> image). Per style image: the
same encoder with statistics of both features, and the Modulator's depthwise conv + pooling.
This module turns the model's parameters into kernel operands and chains the ops; the kernels and
their launchers live in ``kernels/``, imported (with triton) on the first forward.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch

from ..operand_cache import OperandCache
from ..signals import StyleSignals, channel_rows
from ..weight_packing import (compose_up2_grouped3x3, pack_conv1x1, pack_conv9x9_banded, pack_conv9x9_out,
                              pack_conv9x9_out_banded, pack_conv9x9_rows, pack_grouped_conv, pack_modulator_pair,
                              pack_residual_block)
from .kernel_backend import KernelBackend

CHANNELS = 64
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_kernels = None


def load_kernels():
    """``microast_fast.kernels``. The first call imports the kernels (and triton), which registers their
    ops in ``torch.ops.microast``; later calls, traced by torch.compile too, only read a global."""
    global _kernels
    if _kernels is None:
        _kernels = importlib.import_module("microast_fast.kernels")
    return _kernels


def encoder_head_operands(enc1: torch.nn.Sequential, dtype: torch.dtype) -> list[torch.Tensor]:
    """The eleven weight operands of ``microast::encoder_head`` from an ``Encoder.enc1`` (conv layers 0,
    2, 4, 6, 8): the 9x9 in both forms the kernel has (per-row im2col, banded), then the grouped
    3x3s and 1x1s."""
    head = load_kernels().encoder_head
    conv = [enc1[i].conv_layer for i in (0, 2, 4, 6, 8)]
    return [
        pack_conv9x9_rows(conv[0].weight, dtype, head.ROW_K.value),
        pack_conv9x9_banded(conv[0].weight, dtype, head.SEGMENT.value, head.WINDOW.value), conv[0].bias,
        pack_grouped_conv(conv[1].weight, 16, dtype), conv[1].bias,
        pack_conv1x1(conv[2].weight, dtype), conv[2].bias,
        pack_grouped_conv(conv[3].weight, 32, dtype), conv[3].bias,
        pack_conv1x1(conv[4].weight, dtype), conv[4].bias,
    ]


def decoder_tail_operands(dec3: torch.nn.Sequential, dtype: torch.dtype) -> list[torch.Tensor]:
    """The twelve weight operands of ``microast::decoder_tail`` from a ``Decoder.dec3`` (conv layers 1, 3,
    6, 8, 10): each grouped 3x3 as block-sparse taps and composed with its bilinear x2 per output phase,
    the 1x1s, then the 9x9 per kernel row and its bias padded to 16 (fp32)."""
    tail = load_kernels().decoder_tail
    conv = [dec3[i].conv_layer for i in (1, 3, 6, 8, 10)]
    b9 = torch.nn.functional.pad(conv[4].bias.float(), (0, 16 - conv[4].bias.shape[0]))
    return [
        pack_grouped_conv(conv[0].weight, 32, dtype), compose_up2_grouped3x3(conv[0].weight), conv[0].bias,
        pack_conv1x1(conv[1].weight, dtype), conv[1].bias,
        pack_grouped_conv(conv[2].weight, 16, dtype), compose_up2_grouped3x3(conv[2].weight), conv[2].bias,
        pack_conv1x1(conv[3].weight, dtype), conv[3].bias,
        pack_conv9x9_out(conv[4].weight, dtype, tail.W9_ROW_K.value), b9,
    ]


def decoder_tail_banded_operands(dec3: torch.nn.Sequential, dtype: torch.dtype,
                                 tail_operands: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``microast::decoder_tail_banded``'s operands: ``decoder_tail``'s (``tail_operands`` if already
    packed), with its 9x9 for 8 consecutive output pixels of a row at once (``pack_conv9x9_out_banded``)."""
    operands = list(tail_operands or decoder_tail_operands(dec3, dtype))
    segment = load_kernels().decoder_tail_banded.SEGMENT.value
    operands[10] = pack_conv9x9_out_banded(dec3[10].conv_layer.weight, dtype, segment)
    return operands


def _pack_encoder(encoder) -> tuple:
    dtype = encoder.enc1[0].conv_layer.weight.dtype
    return (encoder_head_operands(encoder.enc1, dtype), pack_residual_block(encoder.enc1[10], dtype, dtype),
            pack_residual_block(encoder.enc2[0], dtype, dtype))


def _pack(model) -> dict:
    dtype = model.dtype
    mod = model.modulator
    tail = decoder_tail_operands(model.decoder.dec3, dtype)
    return {
        "content": _pack_encoder(model.content_encoder),
        "style": _pack_encoder(model.style_encoder),
        "modulator_a": pack_modulator_pair(mod.weight1, mod.bias1),  # from s0: (w_a, b_a)
        "modulator_b": pack_modulator_pair(mod.weight2, mod.bias2),  # from s1: (w_b, b_b)
        "dec1": pack_residual_block(model.decoder.dec1, dtype, dtype),
        "dec2": pack_residual_block(model.decoder.dec2, dtype, dtype),
        "tail": tail,
        "tail_banded": decoder_tail_banded_operands(model.decoder.dec3, dtype, tail),
    }


_OPERANDS = OperandCache(_pack)


@dataclass(frozen=True)
class Design:
    """Which kernel design runs each stage. The default is the set a GPU run verified; each other design
    is a variant, a backend of its own name (``VARIANTS``), until a GPU run (benchmarks/gpu_run.sh)
    times it and writes it into the "auto" table, so "auto" never runs what no GPU run checked.

    - ``banded_tail``: the decoder tail as three kernels streaming row bands whose 32- and 16-channel
      intermediates stay in L2 (``decoder_tail_banded``), not one persistent kernel with scratch slots;
    - ``split_reductions``: the FeatMod statistics merge and the Modulator's pooling as many programs
      and a deterministic second pass, not one program per sample;
    - ``wide_tiles``: the residual blocks' convolutions in 8x16-pixel tiles for half maps, not 8x8."""
    banded_tail: bool = False
    split_reductions: bool = False
    wide_tiles: bool = False


VARIANTS = {
    "triton": Design(),
    "triton+banded-tail": Design(banded_tail=True),
    "triton+split-reductions": Design(split_reductions=True),
    "triton+wide-tiles": Design(wide_tiles=True),
    "triton+all-new": Design(banded_tail=True, split_reductions=True, wide_tiles=True),
}


def _encode(ops, packed_encoder, image: torch.Tensor, stats_f0: bool, stats_f1: bool, design: Design):
    """``(f0, f1, f0 statistics, f1 statistics)``; maps NHWC; statistics empty ``[0, 64]`` unless asked."""
    head, block1, block2 = packed_encoder
    plain = (None,) * 7
    block = (design.split_reductions, design.wide_tiles)
    # The head's map is dropped as soon as block 1 is done: at most three quarter-res maps live at once.
    f0, mean0, std0 = ops.filtermod_resblock(ops.encoder_head(image, *head), *block1, *plain, stats_f0, *block)
    f1, mean1, std1 = ops.filtermod_resblock(f0, *block2, *plain, stats_f1, *block)
    return f0, f1, (mean0, std0), (mean1, std1)


class TritonBackend(KernelBackend):
    def __init__(self, name: str = "triton"):
        self.name = name
        self.design = VARIANTS[name]

    def unavailable_reason(self, device: torch.device) -> str | None:
        # On a CPU the kernels run only in Triton's interpreter, which must be chosen before triton is
        # first imported: check the environment before importing anything.
        if device.type == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1":
                return ("the Triton kernels need a CUDA device; on a CPU they run only in Triton's interpreter "
                        "(set TRITON_INTERPRET=1 before triton is imported; slow, meant for testing)")
        elif device.type != "cuda":
            return (f"the Triton kernels run on CUDA devices (or on the CPU under TRITON_INTERPRET=1), "
                    f"not on {device.type}")
        try:
            import triton
        except ImportError as exc:
            return f"triton cannot be imported ({exc}); install it with `pip install triton`"
        if device.type == "cuda" and not torch.cuda.is_available():
            return "this PyTorch build has no working CUDA"
        try:
            load_kernels()  # now, not in a forward that torch.compile may be tracing
        except (ImportError, AttributeError) as exc:  # a triton whose language lacks what the kernels use
            return f"the Triton kernels do not load with triton {triton.__version__} ({type(exc).__name__}: {exc})"
        return None

    def check_maps(self, x: torch.Tensor) -> None:
        if x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"backend 'triton' runs float32, float16 and bfloat16 models, got {x.dtype}; "
                            "use backend='torch' for other dtypes")

    def ops(self):
        load_kernels()
        return torch.ops.microast

    def operands(self, model) -> dict:
        return _OPERANDS.get(model)

    def encode_style(self, model, style: torch.Tensor) -> StyleSignals:
        self.check_maps(style)
        ops, packed = self.ops(), self.operands(model)
        split = self.design.split_reductions
        s0, s1, (mean0, std0), (mean1, std1) = _encode(ops, packed["style"], style, True, True, self.design)
        pool = ops.modulator_pool_split if split else ops.modulator_pool
        filter_a = pool(s0, *packed["modulator_a"])  # [S, 2, 64] fp32: (w_a, b_a)
        filter_b = pool(s1, *packed["modulator_b"])

        def signal(t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
            return t.reshape(-1, CHANNELS, 1, 1).to(dtype)

        # Statistics stay fp32; FilterMod signals take the model's dtype, as the torch backend's do.
        return StyleSignals(
            signal(mean1), signal(std1), signal(filter_b[:, 0], style.dtype), signal(filter_b[:, 1], style.dtype),
            signal(mean0), signal(std0), signal(filter_a[:, 0], style.dtype), signal(filter_a[:, 1], style.dtype),
        )

    def encode_content(self, ops, operands, image, with_stats):
        _, f1, _, stats = _encode(ops, operands["content"], image, False, with_stats, self.design)
        return f1, stats if with_stats else None

    def block_operands(self, stats, block_signals, alpha):
        (x_mean, x_std), (s_mean, s_std, w, b) = stats, block_signals
        return (channel_rows(x_mean), channel_rows(x_std), channel_rows(s_mean), channel_rows(s_std), alpha,
                channel_rows(w), channel_rows(b))

    def decoder_block(self, ops, operands, index, x, block_operands, with_stats):
        out, mean, std = ops.filtermod_resblock(x, *operands[f"dec{index}"], *block_operands, with_stats,
                                                self.design.split_reductions, self.design.wide_tiles)
        return out, (mean, std) if with_stats else None

    def tail(self, ops, operands, x):
        if self.design.banded_tail:
            return ops.decoder_tail_banded(x, *operands["tail_banded"])
        return ops.decoder_tail(x, *operands["tail"])

