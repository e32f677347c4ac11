"""The self-check a kernel backend passes before "auto" lets it serve a GPU model that no shipped GPU run
verified (``dispatch.Choice.needs_self_check``).

The check runs the backend on the bundled weights and a bundled photograph (96 pixels on the short
side, style 64: well under a second, compilation aside) in the model's dtype and compares the output
with the ``torch`` backend's in fp32 on the same device, under the dtype's rule: fp32 within the spec's
1e-4 (max abs) of two correct fp32 implementations, fp16 and bf16 above the PSNR bars of the GPU tests.
An exception (a kernel that does not compile or launch on this GPU) is a failure too.

The verdict, passed or the failure, is kept for the process and on disk (``cache_path``), keyed by the
device, backend, dtype and the versions of torch, triton and this package's sources, so that a
second process neither re-runs it nor retries a backend that failed. Delete the file to check again.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import warnings
from pathlib import Path

import torch

# PSNR (8-bit, against the fp32 output) a half-precision backend must reach: the bars of the GPU tests.
MIN_PSNR = {torch.float16: 45.0, torch.bfloat16: 38.0}
FP32_MAX_ABS = 1e-4  # MICROAST_SPEC.md: two correct fp32 implementations at image sizes
CONTENT, STYLE = ("chelsea.png", 96), ("hubble_deep_field.jpg", 64)
CACHE_FILE = "self_check.json"

_verdicts: dict[str, str | None] = {}  # this process's verdicts: key -> None (passed) or the failure


def cache_path() -> Path:
    """``$MICROAST_FAST_CACHE/self_check.json``, default ``~/.cache/microast_fast`` (or under
    ``$XDG_CACHE_HOME``)."""
    root = os.environ.get("MICROAST_FAST_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "microast_fast"
    return Path(root) / CACHE_FILE


# Cached: "auto" looks its verdict up on every forward, and neither a device's name nor an installed
# version changes within a process.
@functools.cache
def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return device.type


@functools.cache
def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def sources_digest() -> str:
    """Of this package's Python sources, the Triton kernels included: an edited kernel is checked anew."""
    digest = hashlib.sha256()
    folders = {Path(__file__).resolve().parent}
    kernels = importlib.util.find_spec("microast_fast.kernels")  # kernels/ in a source checkout
    if kernels is not None and kernels.submodule_search_locations:
        folders.update(Path(p).resolve() for p in kernels.submodule_search_locations)
    for path in sorted({p for folder in folders for p in folder.rglob("*.py")}):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(device: str, backend: str, dtype: torch.dtype) -> str:
    return (f"{device} | {backend} | {str(dtype).removeprefix('torch.')} | torch {torch.__version__} | "
            f"triton {_version('triton')} | microast-fast {_version('microast-fast')} {sources_digest()}")


def psnr_8bit(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR of the images as the published script saves them (x * 255 + 0.5, clamped, truncated)."""
    def to8(t):
        return (t.float() * 255 + 0.5).clamp(0, 255).floor()
    mse = (to8(x) - to8(y)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def compare(out: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> str | None:
    """None if ``out`` (in ``dtype``) matches the fp32 ``expected`` under the dtype's rule, else how it
    does not."""
    if out.shape != expected.shape:
        return f"output shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    out = out.float()
    if not torch.isfinite(out).all():
        return "non-finite output"
    if dtype == torch.float32:
        err = (out - expected).abs().max().item()
        return None if err <= FP32_MAX_ABS else f"max abs {err:.2e} from the fp32 torch backend (rule: {FP32_MAX_ABS:g})"
    psnr = psnr_8bit(out, expected)
    bar = MIN_PSNR[dtype]
    return None if psnr >= bar else f"PSNR {psnr:.1f} dB against the fp32 torch backend (bar: {bar:g} dB)"


def run(candidate, reference) -> str | None:
    """Compare ``candidate`` (a ``MicroAST`` on the backend under test, in its dtype) with ``reference``
    (the same weights on the ``torch`` backend in fp32, on the same device)."""
    from .images import asset_path, load_image

    content = load_image(asset_path(CONTENT[0]), CONTENT[1]).to(reference.device)
    style = load_image(asset_path(STYLE[0]), STYLE[1]).to(reference.device)
    with torch.inference_mode():
        expected = reference(content, style)
        out = candidate(content.to(candidate.dtype), style.to(candidate.dtype))
    return compare(out, expected, candidate.dtype)


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record(key: str, failure: str | None) -> None:
    """Add a verdict to the cache file, atomically (a failed write only costs a re-check next time)."""
    path = cache_path()
    records = _read_cache()
    records[key] = {"passed": failure is None, "failure": failure,
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def verdict(device: torch.device, backend: str, dtype: torch.dtype, check) -> str | None:
    """None if ``backend`` passes the self-check on ``device`` in ``dtype``, else why not. ``check()``
    runs it (``run`` on freshly built models) when neither this process nor the cache has a verdict;
    a failure warns once."""
    key = cache_key(device_label(device), backend, dtype)
    if key in _verdicts:
        return _verdicts[key]
    cached = _read_cache().get(key)
    if cached is not None:
        failure = cached.get("failure") if not cached.get("passed") else None
    else:
        try:
            failure = check()
        except Exception as err:  # a kernel that does not compile or launch here fails the check
            failure = f"{type(err).__name__}: {err}"
        _record(key, failure)
    if failure is not None:
        warnings.warn(f"backend {backend!r} failed its self-check on {device_label(device)} in "
                      f"{str(dtype).removeprefix('torch.')} ({failure}); 'auto' runs 'torch' instead. The verdict "
                      f"is kept in {cache_path()}: delete it to check again.", RuntimeWarning, stacklevel=4)
    _verdicts[key] = failure
    return failure
