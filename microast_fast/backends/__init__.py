"""The backends that run MicroAST's forward pass, each a ``Backend``, registered here by name.

- ``torch``: the fused algebra in plain PyTorch, on every device; also the autograd path.
- ``triton``: the Triton kernels of ``microast_fast.kernels`` (CUDA GPUs; the CPU under Triton's
  interpreter, for tests). ``triton+<design>...``: the same with newer kernel designs for some stages
  (``triton_backend.VARIANTS``), selectable by name, and by "auto" only once a GPU run measured them.
- ``cuda``: the CUDA C++ kernels of ``csrc/`` (CUDA GPUs, once built).

Which one runs a forward pass is ``dispatch``'s decision; nothing here imports triton or loads the
CUDA extension before a backend computes.
"""

from .base import Backend, BackendUnavailableError
from .cuda_backend import CudaBackend
from .torch_backend import TorchBackend
from .triton_backend import VARIANTS, TritonBackend

# The variants last: lists of backends (help, bench) name the verified ones first.
_REGISTRY: dict[str, Backend] = {backend.name: backend for backend in (
    TorchBackend(), TritonBackend(), CudaBackend(), *(TritonBackend(name) for name in VARIANTS if name != "triton"))}
BACKENDS = tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "Backend", "BackendUnavailableError", "get_backend"]
