"""Which backend runs a forward pass, and why another one cannot.

A backend is a module with two functions: ``encode_style(model, style) -> StyleSignals`` and
``stylize(model, content, signals, alpha) -> image``. Asking for one that cannot run raises; nothing
falls back silently to a slower path.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS

# Preference of "auto" on a CUDA device, fastest first; on a CPU only "torch" applies. The Triton
# kernels (checked in Triton's interpreter) and the CUDA kernels (compiled for sm_80/sm_90 only) have
# not yet run on a GPU: until a GPU run has checked them against the reference and measured them
# faster, "auto" picks neither (ask for backend="triton" or "cuda" explicitly).
_AUTO_ORDER_CUDA = ("torch",)


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


def resolve_backend(requested: str, device: torch.device) -> str:
    """The concrete backend for ``requested`` on ``device``; raises BackendUnavailableError if it cannot run."""
    check_backend_name(requested)
    if requested == "auto":
        order = _AUTO_ORDER_CUDA if device.type == "cuda" else ("torch",)
        return next(name for name in order if unavailable_reason(name, device) is None)
    reason = unavailable_reason(requested, device)
    if reason is not None:
        raise BackendUnavailableError(f"backend {requested!r} is not available on {device}: {reason}")
    return requested


def backend_module(name: str) -> ModuleType:
    return importlib.import_module(f"microast_fast.{name}_backend")


def backend_report(device: torch.device) -> dict[str, str | None]:
    """Each backend -> None if it runs on ``device``, else why not (for ``bench`` and error messages)."""
    return {name: unavailable_reason(name, device) for name in BACKENDS}
