"""Which backend runs a forward pass ("auto" or a name), and why another one cannot.

Asking for a backend that cannot run raises ``BackendUnavailableError``; nothing falls back silently
to a slower path. Each backend answers for its own availability (``Backend.unavailable_reason``).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

import torch

from .backends import BACKENDS, BackendUnavailableError, get_backend

BACKEND_CHOICES = ("auto",) + BACKENDS
# The backend that runs everywhere: "auto" off a GPU, or where nothing measured can run.
FALLBACK = "torch"

# "auto" on a CUDA device ranks the backends by data/auto_backend.json: rows that
# benchmarks/auto_table.py writes from a GPU run of benchmarks/gpu_run.sh, naming only backends whose GPU
# tests passed in that run. A GPU model with rows of its own is verified; any other GPU the kernels
# support is ranked by the rows of the nearest measured architecture, and the kernel backend it gets
# must pass a self-check (microast_fast/self_check.py) before it serves a forward.
AUTO_TABLE = "auto_backend.json"

# The kernels need compute capability 8.0 (Ampere) or newer: bf16 tensor-core products (Triton's tl.dot,
# the CUDA backend's WMMA) and asynchronous global-to-shared copies; they are compiled and checked for
# sm_80 and sm_90 (tests/test_triton_compile.py, csrc/check.sh).
MIN_CAPABILITY = (8, 0)

__all__ = ["AUTO_TABLE", "BACKENDS", "BACKEND_CHOICES", "BackendUnavailableError", "Choice", "Gpu", "MIN_CAPABILITY",
           "auto_choice", "auto_table", "backend_report", "check_backend_name", "choose", "gpu_of",
           "measured_choice", "resolve_backend", "unavailable_reason"]


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class Choice:
    """The backend that runs, and why, in words for users (``MicroAST.backend_choice``, the CLI)."""
    backend: str
    why: str
    # True when no shipped GPU run verified this backend on this GPU model: it runs only once it passes
    # the self-check (``MicroAST`` runs it and replaces the choice if it fails).
    needs_self_check: bool = False


def check_backend_name(name: str) -> str:
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """None when backend ``name`` can run on ``device``, else what is missing, in words a user can act on."""
    return _unavailable_reason(get_backend(check_backend_name(name)), torch.device(device))


@functools.cache
def _unavailable_reason(backend, device: torch.device) -> str | None:
    # Once per process and device: the answer does not change while it runs, and finding it probes
    # imports and files (the CUDA extension), which "auto" would otherwise repeat on every forward.
    return backend.unavailable_reason(device)


@functools.cache
def auto_table() -> tuple[dict, ...]:
    """The shipped measurements: rows ``{"device", "dtype", "pixels", "backend", ...}``."""
    text = (resources.files("microast_fast") / "data" / AUTO_TABLE).read_text(encoding="utf-8")
    return tuple(json.loads(text)["choices"])


def measured_row(rows, device_name: str, dtype: torch.dtype, pixels: int | None) -> dict | None:
    """The row of ``device_name`` and ``dtype`` at the size nearest ``pixels`` (on a log scale; None: the
    largest measured size, as MicroAST is for large images); None if unmeasured."""
    dtype_name = str(dtype).removeprefix("torch.")
    candidates = [r for r in rows if r["device"] == device_name and r["dtype"] == dtype_name]
    if not candidates:
        return None
    if pixels is None:
        return max(candidates, key=lambda r: r["pixels"])
    return min(candidates, key=lambda r: abs(math.log(r["pixels"] / max(pixels, 1))))


def measured_choice(rows, device_name: str, dtype: torch.dtype, pixels: int | None) -> str | None:
    """The backend measured fastest for ``device_name`` and ``dtype`` at the size nearest ``pixels``."""
    row = measured_row(rows, device_name, dtype, pixels)
    return None if row is None else row["backend"]


def gpu_of(device: torch.device) -> Gpu:
    return Gpu(torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device))


def _capability(row) -> tuple[int, int] | None:
    text = row.get("capability")
    return tuple(int(part) for part in text.split(".")) if text else None


def _nearest_measured(rows, gpu: Gpu, dtype_name: str):
    """(device name, capability) of the measured GPU model whose architecture is nearest ``gpu``'s: same
    major version first, then the nearest capability; None if no row of ``dtype_name`` has one."""
    measured = {(r["device"], _capability(r)) for r in rows if r["dtype"] == dtype_name and _capability(r)}
    if not measured:
        return None
    major, minor = gpu.capability
    return min(measured, key=lambda m: (m[1][0] != major, abs(m[1][0] - major), abs(m[1][1] - minor), m[0]))


def auto_choice(rows, gpu: Gpu, dtype: torch.dtype, pixels: int | None, unavailable) -> Choice:
    """What "auto" runs on ``gpu`` for ``dtype`` and ``pixels``, given the table ``rows`` and
    ``unavailable(name) -> reason or None`` for the backends on this device: the fastest measured backend
    that can run here, on this GPU model's rows, else on those of the nearest measured architecture."""
    if gpu.capability < MIN_CAPABILITY:
        return Choice(FALLBACK, f"{gpu.name} is {gpu.arch}; the kernels need compute capability "
                                f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
    dtype_name = str(dtype).removeprefix("torch.")
    row = measured_row(rows, gpu.name, dtype, pixels)
    if row is not None:
        source, verified = f"measured on {gpu.name}", True
    else:
        nearest = _nearest_measured(rows, gpu, dtype_name)
        if nearest is None:
            return Choice(FALLBACK, f"no GPU run has measured {dtype_name} on {gpu.name} or a GPU like it")
        row = measured_row(rows, nearest[0], dtype, pixels)
        source = f"measured on the nearest architecture, {nearest[0]} (sm_{nearest[1][0]}{nearest[1][1]})"
        verified = False
    times = row.get("time_ms") or {row["backend"]: 0.0}
    skipped = []
    for backend in sorted(times, key=times.get):
        if backend not in BACKENDS:  # a table row naming a backend this version does not have
            reason = "this version of microast-fast has no such backend"
        else:
            reason = None if backend == FALLBACK else unavailable(backend)
        if reason is None:
            why = f"fastest {source}" + "".join(f"; {name!r} would be faster but {r}" for name, r in skipped)
            return Choice(backend, why, needs_self_check=backend != FALLBACK and not verified)
        skipped.append((backend, reason))
    return Choice(FALLBACK, f"{source}: " + "; ".join(f"{name!r} cannot run here: {r}" for name, r in skipped))


# Not marked torch.compiler.assume_constant_result: that imports torch._dynamo with the package (2 s).
# Under torch.compile, name the backend explicitly so no lookup runs in the traced forward.
def choose(requested: str, device: torch.device, dtype: torch.dtype = torch.float32,
           pixels: int | None = None) -> Choice:
    """The backend for ``requested`` on ``device`` and why; raises BackendUnavailableError if a backend
    asked for by name cannot run (it is never replaced). For "auto", ``dtype`` and ``pixels`` (content
    pixels of a forward, N * H * W) select among the measured rows (see AUTO_TABLE)."""
    check_backend_name(requested)
    if requested != "auto":
        reason = unavailable_reason(requested, device)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} is not available on {device}: {reason}")
        return Choice(requested, "asked for by name")
    if device.type != "cuda" or not torch.cuda.is_available():
        return Choice(FALLBACK, f"auto on {device.type}")
    return auto_choice(auto_table(), gpu_of(device), dtype, pixels, lambda name: unavailable_reason(name, device))


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype = torch.float32,
                    pixels: int | None = None) -> str:
    """The name of ``choose``'s backend (before any self-check: ``MicroAST.backend_choice`` has the final one)."""
    return choose(requested, device, dtype, pixels).backend


def backend_report(device: torch.device) -> dict[str, str | None]:
    """Each backend -> None if it runs on ``device``, else why not (for ``bench`` and error messages)."""
    return {name: unavailable_reason(name, device) for name in BACKENDS}
