"""What a benchmark case is made of: sizes, dtypes, backends, the style's side and the FLOPs per pixel."""

from __future__ import annotations

from ..dispatch import BACKENDS

FLOPS_PER_PIXEL = 55_544  # per content pixel, multiply-add = 2 (MICROAST_SPEC.md)
STYLE_SIDE = 512

# Named sizes as (height, width).
SIZE_PRESETS = {"512": (512, 512), "1080p": (1080, 1920), "4k": (2160, 4096), "8k": (4320, 8192)}

# "reference" is the plain module, "compiled" is torch.compile of it (what a user tries first),
# "reference-channels-last" the plain module on channels-last tensors (cuDNN's fast layout for half
# precision: what a user tries next); the others are MicroAST backends, run when dispatch says they
# can; "streaming" is the torch backend streamed in tiles within --max-memory.
BENCH_BACKENDS = ("reference", "compiled", "reference-channels-last") + BACKENDS + ("streaming",)

# A MicroAST backend with a mode suffix is timed as video frames are served: "<backend>:repeated" with
# the style encoded once, outside the timed calls (cached StyleSignals); "<backend>:graphs" the same,
# replayed from CUDA graphs (MicroAST(cuda_graphs=True)).
BENCH_MODES = ("repeated", "graphs")


def split_mode(name: str) -> tuple[str, str | None]:
    """``"triton:graphs"`` -> ``("triton", "graphs")``; ``"triton"`` -> ``("triton", None)``."""
    backend, _, mode = name.partition(":")
    return backend, mode or None


def is_bench_backend(name: str) -> bool:
    backend, mode = split_mode(name)
    if mode is None:
        return backend in BENCH_BACKENDS
    return backend in BACKENDS and mode in BENCH_MODES

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def parse_size(text: str) -> tuple[str, int, int]:
    """``"4k"`` -> ``("4k", 2160, 4096)``; ``"128x96"`` (height x width) -> ``("128x96", 128, 96)``;
    ``"256"`` -> ``("256", 256, 256)``."""
    label = text.strip().lower()
    if label in SIZE_PRESETS:
        return (label, *SIZE_PRESETS[label])
    try:
        height, width = (int(v) for v in (label.split("x") if "x" in label else (label, label)))
    except ValueError:
        raise ValueError(f"size {text!r} is neither one of {', '.join(SIZE_PRESETS)} nor N (NxN) nor HxW "
                         "such as 1080x1920") from None
    if height < 5 or width < 5:
        raise ValueError(f"size {text!r}: MicroAST needs at least 5x5 pixels")
    return label, height, width
