"""Build of microast-fast.

The Triton kernels in ``kernels/`` ship inside the package as ``microast_fast.kernels``. The CUDA
extension ``microast_fast._C`` (``csrc/``) is built only where it can be: torch is a run-time
dependency, never a build requirement, so a plain ``pip install .`` never makes pip fetch a (CUDA)
torch into an isolated build environment; there torch is absent and the extension is skipped.

``MICROAST_FAST_CUDA``: unset builds the extension when the installed torch has CUDA and nvcc is found
(``pip install --no-build-isolation .``); ``0`` never builds it; ``1`` must build it and fails loudly
otherwise. Architectures come from ``TORCH_CUDA_ARCH_LIST`` (default "8.0;9.0"); ninja honours
``MAX_JOBS``.
"""

import os

from setuptools import setup

CUDA_SOURCES = [
    "csrc/binding.cpp", "csrc/decoder_tail.cu", "csrc/encoder_head.cu", "csrc/instance_stats.cu", "csrc/resblock.cu",
]


def cxx_runtime() -> list[str]:
    """The libstdc++ that torch has loaded in this process, by path, linked before the compiler's own.
    The first GPU machine's g++ (/opt/gcc) linked its static libstdc++.a, even with -lstdc++ (it
    presumably found no unversioned libstdc++.so), so the extension carried a second C++ runtime and
    crashed formatting its first error message. A path to the shared file links it dynamically (its
    soname, libstdc++.so.6, is recorded) whatever the compiler's default. The path comes from
    ``cuda_ext.loaded_cxx_runtime``, which the JIT build uses too; the module is loaded from its file,
    since importing the package would import all of it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "microast_fast_cuda_ext", os.path.join(os.path.dirname(os.path.abspath(__file__)), "microast_fast", "cuda_ext.py"))
    cuda_ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_ext)
    runtime = cuda_ext.loaded_cxx_runtime()
    return [runtime] if runtime else []


def cuda_build() -> dict:
    mode = os.environ.get("MICROAST_FAST_CUDA", "")
    if mode == "0":
        return {}

    def skip(reason: str) -> dict:
        if mode == "1":
            raise SystemExit(f"MICROAST_FAST_CUDA=1 but the CUDA extension cannot be built: {reason}")
        return {}

    try:
        import torch  # only here: deciding whether to build the extension
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return skip("torch is not importable in the build environment (install torch first and pass "
                    "--no-build-isolation to pip)")
    if torch.version.cuda is None:
        return skip(f"the installed torch {torch.__version__} has no CUDA")
    if CUDA_HOME is None:
        return skip("nvcc / the CUDA toolkit was not found (set CUDA_HOME)")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    extension = CUDAExtension(
        "microast_fast._C", CUDA_SOURCES,
        # No -std: torch's builder picks the standard its headers need (C++20 since torch 2.10). The
        # kernels compile as C++20 (csrc/check.sh, torch's flags) and C++17 (the tests' host build).
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
        extra_link_args=cxx_runtime(),
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


if __name__ == "__main__":  # pip runs it so; tests import its helpers
    setup(
        name="microast-fast",
        version="0.1.0",
        description="Fused Triton/CUDA kernels for MicroAST arbitrary style transfer, behind a drop-in nn.Module",
        long_description=open("README.md", encoding="utf-8").read(),
        long_description_content_type="text/markdown",
        license="MIT",
        python_requires=">=3.10",
        packages=["microast_fast", "microast_fast.backends", "microast_fast.bench", "microast_fast.kernels"],
        package_dir={"microast_fast.kernels": "kernels"},
        package_data={"microast_fast": ["data/weights/*", "data/assets/*", "data/*.json"]},
        # av: PyAV, FFmpeg with its codecs in the wheel, for `microast-fast video`.
        install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "pypng", "tifffile", "av"],
        extras_require={
            # triton runs the kernel tests on CPU through its interpreter; CUDA builds of torch bring it anyway.
            "test": ["pytest", "pytest-benchmark", "triton", "matplotlib", "ray[data]"],
            "bench": ["pytest-benchmark", "matplotlib"],
            # microast_fast.distributed: stylize --ray, video --ray.
            "ray": ["ray[data]"],
        },
        entry_points={"console_scripts": ["microast-fast = microast_fast.cli:main"]},
        **cuda_build(),
    )
