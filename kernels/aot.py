"""Ahead-of-time compilation of the Triton kernels for real GPUs (sm_80, sm_90), without a GPU.

For developers only: nothing at run time imports this module (``microast_fast.kernels`` does not
import it). ``compile_for_gpu`` compiles one kernel of ``microast_fast.kernels`` for one config,
constexpr variant, map dtype and architecture, assembles its PTX with the ``ptxas -v`` of triton's
wheel (the machine's CUDA toolkit may be older than the PTX version Triton emits) and disassembles the
cubin, so that its registers, spills, shared memory and SASS can be read on a machine with no GPU.
Triton's interpreter, which runs the kernel tests on a CPU, shows none of these, and it accepts
programs the GPU compiler rejects (``tl.dot`` operands below 16, non-power-of-two blocks, shared
memory beyond the SM). tests/test_triton_compile.py compiles every kernel with it;
benchmarks/sass_loops.py prints one kernel's loops.

A job is compiled as Triton's JIT specializes it, either with every pointer marked 16-byte aligned
(``tt.divisibility``; what runs for tensors from PyTorch's allocator, so nearly always) or without (a
view with a storage offset). The two are different programs: aligned, loads vectorize and ptxas
allocates registers differently (sm_80 spilled in configs where the unaligned form did not). Integer
arguments are left unmarked, except the image strides of the encoder head (``IMAGE_STRIDES``): the
aligned form is then the head as the JIT compiles it for a contiguous image whose width is a multiple
of 16 (1080p, 4K), where its banded 9x9 loads whole 16-byte rows (cp.async) instead of elements.

Triton decides at decoration time whether a ``@triton.jit`` function is interpreted: call
``compile_for_gpu`` in a process that imported triton with ``TRITON_INTERPRET`` unset (the test runs
its compiles in such a subprocess). Importing this module imports no part of triton's compiler.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

# Pointer arguments that are fp32 whatever the map dtype (statistics, partials, alpha, fp32-packed
# operands); every other pointer has the map dtype.
FP32_POINTERS = {
    "instance_stats_merge_kernel": {"part_ptr", "mean_ptr", "std_ptr"},
    "resblock_conv3x3_kernel": {"part_ptr", "affine_ptr"},
    "featmod_affine_kernel": {"x_mean_ptr", "x_std_ptr", "s_mean_ptr", "s_std_ptr", "alpha_ptr", "affine_ptr"},
    "modulator_pool_kernel": {"w_ptr", "b_ptr", "out_ptr"},
    "decoder_tail_kernel": {"wp1_ptr", "wp2_ptr", "b9_ptr"},
}
FLOAT_SCALARS = {"eps"}

# Integer arguments that the aligned form marks as the JIT does for a contiguous NCHW image of width a
# multiple of 16: strides divisible by 16, and the unit stride a constant.
IMAGE_STRIDES = {"encoder_head_half_kernel": ({"stride_n", "stride_c", "stride_h"}, {"stride_w"})}


def _nvidia_bin() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _ptxas() -> str:
    for name in ("ptxas-blackwell", "ptxas"):
        if (_nvidia_bin() / name).exists():
            return str(_nvidia_bin() / name)
    raise FileNotFoundError(f"no ptxas in {_nvidia_bin()}")


def sass_instructions(sass: str) -> list[tuple[int, str]]:
    """(address, instruction) of ``cuobjdump -sass`` output."""
    return [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]


def sass_loops(sass: str) -> list[tuple[int, int, list[str]]]:
    """(first address, last address, instructions) of every loop of ``cuobjdump -sass`` output: a
    backward branch and its target, in address order (the final branch-to-self included)."""
    instructions = sass_instructions(sass)
    found = []
    for address, text in instructions:
        branch = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if branch and int(branch.group(1), 16) <= address:
            start = int(branch.group(1), 16)
            found.append((start, address, [t for a, t in instructions if start <= a <= address]))
    return sorted(found)


def spills_in_loops(sass: str) -> int:
    """Local-memory spill instructions (LDL/STL) inside a loop of ``cuobjdump -sass`` output. Spills
    outside every loop run once a program (ptxas trades a value kept across the main loop for
    occupancy that way: sm_80 stores one 4-byte value before the loop and reloads it after); inside a
    loop they run per tile, tap or chunk."""
    loops = sass_loops(sass)
    return sum(1 for address, text in sass_instructions(sass) if re.search(r"\b(?:LDL|STL)\b", text)
               and any(start <= address <= end for start, end, _ in loops))


def compile_for_gpu(job: dict):
    """(CompiledKernel, ptxas -v output, cuobjdump -sass text) of one job; raises on a compile or ptxas
    error. ``job``: ``module`` (under ``microast_fast.kernels``), ``kernel``, ``constexprs`` (the
    config's and the variant's), ``num_warps``, ``num_stages``, ``maxnreg`` (or None), ``dtype`` of the
    maps ("fp32", "fp16", "bf16"), ``arch`` (80 or 90) and ``aligned`` (see the module docstring)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget

    kernel = getattr(importlib.import_module(f"microast_fast.kernels.{job['module']}"), job["kernel"])
    fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel
    divisible, unit = IMAGE_STRIDES.get(job["kernel"], (set(), set())) if job["aligned"] else (set(), set())
    constexprs = {**job["constexprs"], **{name: 1 for name in unit}}
    fp32_pointers = FP32_POINTERS.get(job["kernel"], set())
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32_pointers else "*" + job["dtype"]
        elif name in FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    # The JIT's specialization of 16-byte aligned pointer arguments (see the module docstring).
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
               if signature[name].startswith("*") or name in divisible} if job["aligned"] else None
    src = triton.compiler.ASTSource(fn, signature, constexprs, aligned)
    compiled = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32),
                              options={"num_warps": job["num_warps"], "num_stages": job["num_stages"],
                                       **({"maxnreg": job["maxnreg"]} if job["maxnreg"] else {})})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(compiled.asm["ptx"])
        arch = f"sm_{job['arch']}a" if job["arch"] == 90 else f"sm_{job['arch']}"
        cubin = Path(tmp) / "k.cubin"
        proc = subprocess.run([_ptxas(), "-v", f"--gpu-name={arch}", str(ptx), "-o", str(cubin)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        sass = subprocess.run([str(_nvidia_bin() / "cuobjdump"), "-sass", str(cubin)], capture_output=True,
                              text=True, check=True).stdout
    return compiled, proc.stderr, sass


def tf32_products(ptx: str) -> list[str]:
    """The TF32 instructions in ``ptx`` (mma/wgmma on .tf32 operands, conversions to tf32)."""
    return sorted({line.split()[0] for line in ptx.splitlines() if re.search(r"\.tf32\b", line)})
