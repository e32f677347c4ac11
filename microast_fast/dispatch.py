"""Which backend runs a forward pass, and why another one cannot.

A backend is a module with two functions: ``encode_style(model, style) -> StyleSignals`` and
``stylize(model, content, signals, alpha) -> image``. Asking for one that cannot run raises; nothing
falls back silently to a slower path.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
from importlib import resources
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS

# "auto" on a CUDA device takes the backend measured fastest on that GPU model for the input's dtype and
# size, from data/auto_backend.json: rows that benchmarks/auto_table.py writes from a GPU run of
# benchmarks/gpu_run.sh, naming only backends whose GPU tests passed in that run. A GPU model with no
# rows, or a measured backend that cannot run here, gets "torch". On a CPU "auto" is always "torch".
AUTO_TABLE = "auto_backend.json"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


def check_backend_name(name: str) -> str:
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None when backend ``name`` can run on ``device``, else what is missing, in words a user can act on."""
    check_backend_name(name)
    if name == "torch":
        return None
    if name == "triton":
        return _triton_unavailable_reason(device)
    if name == "cuda":
        if device.type != "cuda":
            return f"the CUDA kernels run on CUDA devices, not on {device.type}"
        from .cuda_ext import unavailable_reason as extension_unavailable_reason

        return extension_unavailable_reason()
    raise AssertionError(name)


def _triton_unavailable_reason(device: torch.device) -> str | None:
    # On a CPU the kernels run only in Triton's interpreter, which must be chosen before triton is
    # first imported: check the environment before importing anything.
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return ("the Triton kernels need a CUDA device; on a CPU they run only in Triton's interpreter "
                    "(set TRITON_INTERPRET=1 before triton is imported; slow, meant for testing)")
    elif device.type != "cuda":
        return f"the Triton kernels run on CUDA devices (or on the CPU under TRITON_INTERPRET=1), not on {device.type}"
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton cannot be imported ({exc}); install it with `pip install triton`"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "this PyTorch build has no working CUDA"
    return None


@functools.cache
def auto_table() -> tuple[dict, ...]:
    """The shipped measurements: rows ``{"device", "dtype", "pixels", "backend", ...}``."""
    text = (resources.files("microast_fast") / "data" / AUTO_TABLE).read_text(encoding="utf-8")
    return tuple(json.loads(text)["choices"])


def measured_choice(rows, device_name: str, dtype: torch.dtype, pixels: int | None) -> str | None:
    """The backend measured fastest for ``device_name`` and ``dtype`` at the size nearest ``pixels`` (on a
    log scale; None: the largest measured size, as MicroAST is for large images); None if unmeasured."""
    dtype_name = str(dtype).removeprefix("torch.")
    candidates = [r for r in rows if r["device"] == device_name and r["dtype"] == dtype_name]
    if not candidates:
        return None
    if pixels is None:
        return max(candidates, key=lambda r: r["pixels"])["backend"]
    return min(candidates, key=lambda r: abs(math.log(r["pixels"] / max(pixels, 1))))["backend"]


# Not marked torch.compiler.assume_constant_result: that imports torch._dynamo with the package (2 s).
# Under torch.compile, name the backend explicitly so no lookup runs in the traced forward.
def _auto_on_gpu(device: torch.device, dtype: torch.dtype, pixels: int | None) -> str:
    choice = measured_choice(auto_table(), torch.cuda.get_device_name(device), dtype, pixels)
    return choice if choice is not None and unavailable_reason(choice, device) is None else "torch"


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype = torch.float32,
                    pixels: int | None = None) -> str:
    """The concrete backend for ``requested`` on ``device``; raises BackendUnavailableError if it cannot run.

    For "auto", ``dtype`` and ``pixels`` (content pixels of a forward, N * H * W) select among the
    measured rows of the device's GPU model (see AUTO_TABLE)."""
    check_backend_name(requested)
    if requested == "auto":
        if device.type != "cuda" or not torch.cuda.is_available():
            return "torch"
        return _auto_on_gpu(device, dtype, pixels)
    reason = unavailable_reason(requested, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {requested!r} is not available on {device}: {reason}")
    return requested


def backend_module(name: str) -> ModuleType:
    return importlib.import_module(f"microast_fast.{name}_backend")


def backend_report(device: torch.device) -> dict[str, str | None]:
    """Each backend -> None if it runs on ``device``, else why not (for ``bench`` and error messages)."""
    return {name: unavailable_reason(name, device) for name in BACKENDS}
