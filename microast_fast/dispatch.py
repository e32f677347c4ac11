"""Which backend runs a forward pass ("auto" or a name), and why another one cannot.

Asking for a backend that cannot run raises ``BackendUnavailableError``; nothing falls back silently
to a slower path. Each backend answers for its own availability (``Backend.unavailable_reason``).
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import torch

from .backends import BACKENDS, BackendUnavailableError, get_backend

BACKEND_CHOICES = ("auto",) + BACKENDS
# The backend that runs everywhere: "auto" off a GPU, or where nothing measured can run.
FALLBACK = "torch"

# "auto" on a CUDA device takes the backend measured fastest on that GPU model for the input's dtype and
# size, from data/auto_backend.json: rows that benchmarks/auto_table.py writes from a GPU run of
# benchmarks/gpu_run.sh, naming only backends whose GPU tests passed in that run. A GPU model with no
# rows, or a measured backend that cannot run here, gets FALLBACK.
AUTO_TABLE = "auto_backend.json"

__all__ = ["AUTO_TABLE", "BACKENDS", "BACKEND_CHOICES", "BackendUnavailableError", "auto_table", "backend_report",
           "check_backend_name", "measured_choice", "resolve_backend", "unavailable_reason"]


def check_backend_name(name: str) -> str:
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None when backend ``name`` can run on ``device``, else what is missing, in words a user can act on."""
    return get_backend(check_backend_name(name)).unavailable_reason(device)


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
    return choice if choice is not None and unavailable_reason(choice, device) is None else FALLBACK


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype = torch.float32,
                    pixels: int | None = None) -> str:
    """The concrete backend for ``requested`` on ``device``; raises BackendUnavailableError if it cannot run.

    For "auto", ``dtype`` and ``pixels`` (content pixels of a forward, N * H * W) select among the
    measured rows of the device's GPU model (see AUTO_TABLE)."""
    check_backend_name(requested)
    if requested == "auto":
        if device.type != "cuda" or not torch.cuda.is_available():
            return FALLBACK
        return _auto_on_gpu(device, dtype, pixels)
    reason = unavailable_reason(requested, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {requested!r} is not available on {device}: {reason}")
    return requested


def backend_report(device: torch.device) -> dict[str, str | None]:
    """Each backend -> None if it runs on ``device``, else why not (for ``bench`` and error messages)."""
    return {name: unavailable_reason(name, device) for name in BACKENDS}
