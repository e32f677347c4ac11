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


def loaded_cxx_runtime() -> str | None:
    """The path of the libstdc++ this process (torch) has loaded, or None (not Linux, or none loaded).
    The extension links this very file: where the compiler would link its C++ runtime statically (the
    first GPU machine's did), the extension carried a second runtime and crashed formatting its first
    error message (two runtimes' std::locale ids)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so"):
                    return path
    except OSError:
        pass
    return None


# std::locale::id::_M_id() const: part of libstdc++ proper, never emitted inline into other objects.
_CXX_RUNTIME_PROBE = "_ZNKSt6locale2id5_M_idEv"


def carries_own_cxx_runtime(library: str) -> bool:
    """True when the shared library ``library`` defines libstdc++'s own functions (a static copy of the
    C++ runtime) instead of taking them from the libstdc++ the process has loaded."""
    import ctypes

    runtime = loaded_cxx_runtime()
    if runtime is None:
        return False
    lib = ctypes.CDLL(library)  # dlsym on a library's handle searches the library itself first
    try:
        own = ctypes.cast(getattr(lib, _CXX_RUNTIME_PROBE), ctypes.c_void_p).value
    except AttributeError:
        return False
    return own != ctypes.cast(getattr(ctypes.CDLL(runtime), _CXX_RUNTIME_PROBE), ctypes.c_void_p).value


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
    except ImportError:
        return _jit_build()
    if carries_own_cxx_runtime(_C.__file__):  # built by an earlier version on such a machine
        raise ExtensionUnavailable(
            f"{_C.__file__} carries its own static copy of the C++ runtime (libstdc++), which crashes the "
            f"process as soon as an op reports an error; rebuild it with this version of microast-fast: {BUILD_HINT}")
    return _C


def _jit_build():
    from torch.utils.cpp_extension import load as jit_load

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ".".join(map(str, torch.cuda.get_device_capability())))
    runtime = loaded_cxx_runtime()
    return jit_load("microast_fast_C", [str(CSRC / name) for name in SOURCES],
                    extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],  # the -std that torch's headers need
                    extra_ldflags=[runtime] if runtime else [])  # torch's C++ runtime: see setup.py
