"""Finding the CUDA extension: ``microast_fast._C`` built by ``pip install``, or, in a source checkout
(editable installs), built on first use with ninja by ``torch.utils.cpp_extension.load`` and cached
in torch's extension folder (``TORCH_EXTENSIONS_DIR``)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ("binding.cpp", "decoder_tail.cu", "encoder_head.cu", "instance_stats.cu", "resblock.cu")
BUILD_HINT = ("build it with `MICROAST_FAST_CUDA=1 pip install --no-build-isolation .` on a machine with a CUDA "
              "build of torch and nvcc")


class ExtensionUnavailable(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """None when the extension is importable or can be built here, else why not (cheap: builds nothing)."""
    if torch.version.cuda is None or not torch.cuda.is_available():
        return "this PyTorch build has no working CUDA"
    try:
        from . import _C  # noqa: F401
        return None
    except ImportError:
        pass
    if os.environ.get("MICROAST_FAST_CUDA") == "0":
        return f"the extension microast_fast._C is not built and MICROAST_FAST_CUDA=0 forbids building it; {BUILD_HINT}"
    from torch.utils.cpp_extension import CUDA_HOME

    if not all((CSRC / name).exists() for name in SOURCES):
        return f"the extension microast_fast._C is not built and this install has no csrc/ to build it from; {BUILD_HINT}"
    if CUDA_HOME is None:
        return f"the extension microast_fast._C is not built and nvcc was not found for a JIT build; {BUILD_HINT}"
    return None


@functools.cache
def load():
    """Import (or JIT-build, once per machine) the extension; its ops land in ``torch.ops.microast``."""
    reason = unavailable_reason()
    if reason is not None:
        raise ExtensionUnavailable(reason)
    try:
        from . import _C
        return _C
    except ImportError:
        from torch.utils.cpp_extension import load as jit_load

        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ".".join(map(str, torch.cuda.get_device_capability())))
        return jit_load("microast_fast_C", [str(CSRC / name) for name in SOURCES],
                        extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],  # the -std that torch's headers need
                        extra_ldflags=["-lstdc++"])  # torch's C++ runtime, never a static second one (setup.py)
