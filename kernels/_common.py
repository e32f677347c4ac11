"""Pieces every MicroAST kernel shares: reflection indexing, dtype mapping, launch configs."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton import knobs

# Decided when triton is first imported (tests/conftest.py sets it on CPU-only machines): kernels
# decorated under the interpreter are InterpretedFunctions and run on CPU tensors.
INTERPRET = bool(knobs.runtime.interpret)

# fp32 statistics and accumulation whatever the map dtype; these are the map dtypes the kernels take.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def autotune_configs(gpu_configs: list[triton.Config], interpreter_config: triton.Config) -> list[triton.Config]:
    """The GPU list on a GPU; one config under the interpreter, where timing means nothing and every
    extra config would only slow the tests (a single config skips the autotuner's benchmarking).

    Interpreter configs use big tiles: there every tl op costs a fixed Python overhead whatever its
    size, so fewer, larger programs run the test shapes several times faster. Their shapes are not
    compiled for a GPU (tests/test_triton_compile.py compiles the GPU lists)."""
    return [interpreter_config] if INTERPRET else gpu_configs


class ConfigsByMapDtype:
    """``early_config_prune`` of an autotuned kernel whose configs differ by map dtype (that of pointer
    argument ``pointer``): those in ``fp32_only`` are tried for fp32 maps only, those in ``half_only``
    for fp16/bf16 maps only, the rest for both. The exact fp32 forms keep a second [pixels, C]
    partial-sum tile live and run their products on FMA units, so some configs that suit half maps
    spill in fp32. tests/test_triton_compile.py compiles only what ``allows``."""

    def __init__(self, pointer: str, fp32_only: list[triton.Config] = (), half_only: list[triton.Config] = ()):
        self.pointer = pointer
        self.fp32_only = list(fp32_only)
        self.half_only = list(half_only)

    def allows(self, config: triton.Config, dtype: str) -> bool:
        excluded = self.half_only if dtype == "fp32" else self.fp32_only
        return all(config is not e for e in excluded)

    def for_maps(self, configs: list[triton.Config], map_dtype: torch.dtype) -> list[triton.Config]:
        """The configs a map of ``map_dtype`` may take (all of them if the lists exclude every one)."""
        dtype = "fp32" if map_dtype == torch.float32 else "half"
        return [c for c in configs if self.allows(c, dtype)] or configs

    def __call__(self, configs, named_args, **kwargs):
        return self.for_maps(configs, named_args[self.pointer].dtype)


def launched_config(kernel) -> dict:
    """Meta-parameters of the config the autotuner used for ``kernel``'s last launch."""
    return kernel.best_config.kwargs


def check_map_dtype(x: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the Triton kernels take float32, float16 or bfloat16 maps, got {x.dtype}")


def persistent_programs(device: torch.device, work_items: int, per_sm: int) -> int:
    """Program count for a persistent kernel: ``per_sm`` (as many as can be resident at once) an SM,
    never more than the work."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(work_items, sms * per_sm))
    return max(1, work_items)


@triton.jit
def partial_sum_start(acc, EXACT: tl.constexpr):
    """The accumulator a group of products (a tap, a kernel row) sums into: with ``EXACT`` (fp32 maps) a
    fresh zero partial, added to ``acc`` by ``partial_sum_end``; else ``acc`` itself (half maps: the
    tensor cores' one fp32 chain). One FMA chain over a whole convolution (576 products in a residual
    block's 3x3, 1,296 in the tail's 9x9) rounded about twice as far from float64 as PyTorch's
    convolutions (docs/kernel_notes.md). The partial must be a loop result: ``acc + tl.dot(a, b)``
    would be folded back into ``tl.dot(a, b, acc)``, one chain again."""
    if EXACT:
        part = tl.zeros(acc.shape, tl.float32)
    else:
        part = acc
    return part


@triton.jit
def partial_sum_end(acc, part, EXACT: tl.constexpr):
    """``acc`` after the group of products that ``partial_sum_start`` began."""
    if EXACT:
        total = acc + part
    else:
        total = part
    return total


@triton.jit
def reflect(i, n):
    """Reflection padding as index arithmetic (``F.pad(mode="reflect")``): -1 -> 1, n -> n - 2.

    Valid for pads shorter than the side, which the 5x5 minimum image guarantees at every level.
    The final clamp only keeps lanes of partial tiles (masked out later) inside the map.
    """
    i = tl.where(i < 0, -i, i)
    i = tl.where(i > n - 1, 2 * (n - 1) - i, i)
    return tl.minimum(tl.maximum(i, 0), n - 1)


@triton.jit
def persistent_tile(work, tiles_per_image, tiles_w, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Work item ``work`` of a persistent program's walk over every image's tiles (row-major within an
    image) -> (image, first row, first column)."""
    tile = work % tiles_per_image
    return work // tiles_per_image, (tile // tiles_w) * TILE_H, (tile % tiles_w) * TILE_W


@triton.jit
def relu_1x1_relu(acc, bg_ptr, w1_ptr, b1_ptr, C_OUT: tl.constexpr):
    """relu(1x1(relu(acc + bg))) of a (grouped) convolution's accumulator [pixels, C_OUT] -> fp32."""
    c_out = tl.arange(0, C_OUT)
    f = tl.maximum(acc + tl.load(bg_ptr + c_out).to(tl.float32)[None, :], 0.0)
    w1 = tl.load(w1_ptr + c_out[:, None] * C_OUT + c_out[None, :])
    f = tl.dot(f.to(w1.dtype), w1, input_precision="ieee") + tl.load(b1_ptr + c_out).to(tl.float32)[None, :]
    return tl.maximum(f, 0.0)


@triton.jit
def bilinear_up2_source(o, n_src):
    """Source row (or column) pair and weight of output index ``o`` of a bilinear x2 upsampling with
    align_corners=False, as PyTorch computes them: ``src = max((o + 0.5) / 2 - 0.5, 0)``,
    neighbours ``floor(src)`` and ``min(floor(src) + 1, n_src - 1)``, weight of the second ``src - floor(src)``."""
    src = tl.maximum(o.to(tl.float32) * 0.5 - 0.25, 0.0)
    i0 = src.to(tl.int32)  # src >= 0, so truncation is floor
    lam = src - i0.to(tl.float32)
    i1 = tl.minimum(i0 + 1, n_src - 1)
    return i0, i1, lam


@triton.jit
def tile_pixels(tile, H, W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Row, column and in-map mask of the ``TILE_H * TILE_W`` pixels of tile number ``tile`` of an
    ``H x W`` map, tiles numbered row-major."""
    tiles_w = tl.cdiv(W, TILE_W)
    p = tl.arange(0, TILE_H * TILE_W)
    py = (tile // tiles_w) * TILE_H + p // TILE_W
    px = (tile % tiles_w) * TILE_W + p % TILE_W
    return py, px, (py < H) & (px < W)
