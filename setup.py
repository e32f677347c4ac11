"""Build of microast-fast.

The Triton kernels in ``kernels/`` ship inside the package as ``microast_fast.kernels``. torch is a
run-time dependency only: nothing here imports it, so a plain ``pip install .`` never makes pip fetch
a (CUDA) torch into an isolated build environment.
"""

from setuptools import setup

setup(
    name="microast-fast",
    version="0.1.0",
    description="Fused Triton/CUDA kernels for MicroAST arbitrary style transfer, behind a drop-in nn.Module",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["microast_fast", "microast_fast.kernels"],
    package_dir={"microast_fast.kernels": "kernels"},
    package_data={"microast_fast": ["data/weights/*", "data/assets/*"]},
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "pypng", "tifffile"],
    extras_require={
        # triton runs the kernel tests on CPU through its interpreter; CUDA builds of torch bring it anyway.
        "test": ["pytest", "pytest-benchmark", "triton", "matplotlib"],
        "bench": ["pytest-benchmark", "matplotlib"],
    },
    entry_points={"console_scripts": ["microast-fast = microast_fast.cli:main"]},
)
