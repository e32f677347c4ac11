"""Ahead-of-time compilation of every Triton kernel for real GPUs (sm_80, sm_90), without a GPU.

The interpreter (what the other Triton tests run on a CPU) accepts programs the GPU compiler rejects
(tl.dot operands below 16, non-power-of-two blocks, shared memory beyond the SM), so every kernel is
compiled here for every autotune config of its GPU list, every map dtype and every constexpr
variant the launchers use, then its PTX is assembled with ``ptxas -v`` to read registers and spills.

Each is compiled twice, as Triton's JIT specializes it: with every pointer marked 16-byte aligned
(``tt.divisibility``; what runs for tensors from PyTorch's allocator, so nearly always) and without
(a view with a storage offset). The two are different programs: aligned, loads vectorize and ptxas
allocates registers differently (sm_80 spilled in configs where the unaligned form did not). Integer
arguments are left unmarked, except the image strides of the encoder head (``IMAGE_STRIDES``): the
aligned form is then the head as the JIT compiles it for a contiguous image whose width is a multiple
of 16 (1080p, 4K), where its banded 9x9 loads whole 16-byte rows (cp.async) instead of elements.

tests/conftest.py sets TRITON_INTERPRET=1 on CPU-only machines, and triton decides at decoration
time whether a ``@triton.jit`` function is interpreted: the compiles run in a subprocess with
TRITON_INTERPRET unset, so the kernels are real JITFunctions there. ptxas comes from triton's wheel
(the machine's CUDA toolkit may be older than the PTX version Triton emits).

Run ``python tests/test_triton_compile.py`` for the resource table.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ARCHS = (80, 90)
DTYPES = ("fp32", "fp16", "bf16")
# Largest shared memory one block may opt in to: A100 (sm_80) 163 KB, H100 (sm_90) 227 KB.
SMEM_LIMIT_BY_ARCH = {80: 163 * 1024, 90: 227 * 1024}

# Kernels whose spills would cost real time: they run per content pixel.
HOT = {
    "resblock_conv3x3_kernel", "encoder_head_half_kernel", "encoder_head_quarter_kernel",
    "decoder_tail_kernel",
}

# Pointer arguments that are fp32 whatever the map dtype (statistics, partials, alpha, fp32-packed
# operands); every other pointer has the map dtype.
FP32_POINTERS = {
    "instance_stats_partials_kernel": {"part_ptr"},
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

# (module, kernel, constexpr variants the launchers use)
# The launchers also use both conv2 variants without STATS (content f0, dec2): strict subsets of the
# code of variants 1 and 3, left out to keep the compile time down.
RESBLOCK_VARIANTS = [
    dict(SECOND=False, FEATMOD=False, FILTERMOD=False, STATS=False),  # encoders' conv1
    dict(SECOND=True, FEATMOD=False, FILTERMOD=False, STATS=True),    # encoders' conv2 (+ statistics)
    dict(SECOND=False, FEATMOD=True, FILTERMOD=True, STATS=False),    # decoder conv1
    dict(SECOND=True, FEATMOD=True, FILTERMOD=True, STATS=True),      # dec1 conv2 (+ statistics)
]
KERNELS = [
    ("instance_stats", "instance_stats_partials_kernel", [dict(C=64)]),
    ("instance_stats", "instance_stats_merge_kernel", [dict(C=64, BLOCK_T=64)]),
    ("filtermod_resblock", "resblock_conv3x3_kernel", [dict(v, C=64) for v in RESBLOCK_VARIANTS]),
    ("filtermod_resblock", "featmod_affine_kernel", [dict(C=64)]),
    # each form of the head's 9x9 for the map dtypes that launch it
    ("encoder_head", "encoder_head_half_kernel", [dict(BANDED=False, dtypes=("fp32",)),
                                                  dict(BANDED=True, dtypes=("fp16", "bf16"))]),
    ("encoder_head", "encoder_head_quarter_kernel", [{}]),
    ("decoder_tail", "decoder_tail_kernel", [{}]),
    ("modulator_pool", "modulator_pool_kernel", [dict(C=64)]),
]


# --------------------------------------------------------------------------------------------------
# Worker side (runs with TRITON_INTERPRET unset)
# --------------------------------------------------------------------------------------------------
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


def _jobs():
    """Every (kernel, variant, config, dtype, arch) to compile."""
    import importlib

    import triton

    for module_name, kernel_name, variants in KERNELS:
        kernel = getattr(importlib.import_module(f"microast_fast.kernels.{module_name}"), kernel_name)
        if isinstance(kernel, triton.runtime.Autotuner):
            configs = kernel.configs
            prune = getattr(kernel.early_config_prune, "allows", lambda config, dtype: True)
        else:
            configs = [triton.Config({}, num_warps=4, num_stages=3)]
            prune = lambda config, dtype: True  # noqa: E731
        for v, variant in enumerate(variants):
            variant = dict(variant)
            dtypes = variant.pop("dtypes", DTYPES)
            for config in configs:
                kwargs, warps, stages, maxnreg = config.kwargs, config.num_warps, config.num_stages, config.maxnreg
                for dtype in [d for d in dtypes if prune(config, d)]:  # the configs it would launch
                    for arch in ARCHS:
                        for aligned in (True, False):
                            yield dict(module=module_name, kernel=kernel_name, variant=v,
                                       constexprs={**variant, **kwargs}, num_warps=warps, num_stages=stages,
                                       maxnreg=maxnreg, dtype=dtype, arch=arch, aligned=aligned)


def compile_for_gpu(job: dict):
    """(CompiledKernel, ptxas -v output, cuobjdump -sass text) of one job (fields as ``_jobs`` yields);
    raises on a compile or ptxas error. benchmarks/sass_loops.py reads loops from the SASS."""
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


def _compile_one(job: dict) -> dict:
    result = dict(job)
    try:
        compiled, info, sass = compile_for_gpu(job)
        result["shared"] = compiled.metadata.shared
        # fp32 instructions that are not correctly rounded (``/`` and tl.sqrt compile to these).
        result["approximate"] = sorted(set(re.findall(r"\b(?:div\.full|div\.approx|sqrt\.approx|rsqrt\.approx|"
                                                      r"rcp\.approx)\.[a-z0-9.]*", compiled.asm["ptx"])))
        result["spills_in_loops"] = spills_in_loops(sass)
        result["tf32"] = tf32_products(compiled.asm["ptx"])
        result["registers"] = int(re.search(r"Used (\d+) registers", info).group(1))
        stores = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
        result["spill_stores"], result["spill_loads"] = int(stores.group(1)), int(stores.group(2))
        result["error"] = None
    except Exception as exc:  # reported, then failed on by the test
        result["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
    return result


def worker_main(out_path: str) -> None:
    jobs = list(_jobs())
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_compile_one, jobs))
    Path(out_path).write_text(json.dumps(results))


# --------------------------------------------------------------------------------------------------
# Test side
# --------------------------------------------------------------------------------------------------
def compile_all() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # keep Triton 3.9's default, without its warning
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        proc = subprocess.run([sys.executable, __file__, "--worker", str(out)], env=env,
                              capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(out.read_text())


def pointers(result: dict) -> str:
    return "a16" if result["aligned"] else "any"


def resource_table(results: list[dict]) -> str:
    rows = ["kernel                          variant  config                                   dtype arch ptrs "
            "regs  smem(B) spills(st/ld B, in loops)"]
    for r in results:
        cfg = ",".join(f"{k}={v}" for k, v in r["constexprs"].items()
                       if k not in ("SECOND", "FEATMOD", "FILTERMOD", "STATS", "C", "BANDED")) + f",w{r['num_warps']}"
        cfg += f",r{r['maxnreg']}" if r["maxnreg"] else ""
        head = f"{r['kernel']:32s} {r['variant']:7d}  {cfg:40s} {r['dtype']:5s} {r['arch']:4d} {pointers(r):4s}"
        if r["error"]:
            rows.append(f"{head} ERROR")
        else:
            rows.append(f"{head} {r['registers']:4d} {r['shared']:8d} {r['spill_stores']}/{r['spill_loads']}, "
                        f"{r['spills_in_loops']}")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def compiled():
    triton = pytest.importorskip("triton")
    results = compile_all()
    print(f"\ntriton {triton.__version__}\n" + resource_table(results))
    return results


def test_every_kernel_compiles(compiled):
    errors = [f"{r['kernel']} variant {r['variant']} {r['constexprs']} {r['dtype']} sm_{r['arch']} "
              f"{pointers(r)} pointers: {r['error']}"
              for r in compiled if r["error"]]
    assert not errors, "\n\n".join(errors)
    expected = {name for _, name, _ in KERNELS}
    assert {r["kernel"] for r in compiled} == expected


def test_shared_memory_fits(compiled):
    over = [(r["kernel"], r["constexprs"], r["dtype"], r["arch"], r["shared"]) for r in compiled
            if not r["error"] and r["shared"] > SMEM_LIMIT_BY_ARCH[r["arch"]]]
    assert not over, over


def test_hot_kernels_do_not_spill(compiled):
    """No spill instruction inside any loop of a hot kernel (``spills_in_loops``). The table reports
    every byte ptxas spills; outside the loops it is a few bytes a program, by ptxas's choice."""
    spills = [(r["kernel"], r["constexprs"], r["num_warps"], r["num_stages"], r["dtype"], r["arch"], pointers(r),
               r["spill_stores"], r["spill_loads"], r["spills_in_loops"])
              for r in compiled if not r["error"] and r["kernel"] in HOT and r["spills_in_loops"]]
    assert not spills, spills


def test_spill_detector_tells_loops_apart():
    """``spills_in_loops`` on hand-written SASS: a spill before a loop, one inside, one after."""
    sass = """
        /*0000*/                   STL [R1], R3 ;
        /*0010*/                   IADD3 R0, R0, 0x1, RZ ;
        /*0020*/                   LDL.LU R4, [R1+0x4] ;
        /*0030*/                   ISETP.GE.AND P0, PT, R0, R5, PT ;
        /*0040*/               @!P0 BRA 0x10 ;
        /*0050*/                   LDL.LU R54, [R1] ;
        /*0060*/                   BRA 0x60 ;
    """
    assert spills_in_loops(sass) == 1
    assert spills_in_loops(sass.replace("LDL.LU R4, [R1+0x4]", "NOP")) == 0


def test_no_approximate_division_or_square_root(compiled):
    """The interpreter divides and takes square roots exactly; on a GPU ``x / y`` is div.full.f32 (2 ulp)
    and tl.sqrt is sqrt.approx.ftz.f32. The first H100 run (2026-11-26) measured what that costs the
    fp32 backend: 2-3x the fp32 reference's distance from float64 on small images. Kernels use
    tl.div_rn / tl.sqrt_rn (or a multiplication by an exact reciprocal)."""
    approximate = {(r["kernel"], r["dtype"], r["arch"], tuple(r["approximate"])) for r in compiled
                   if not r["error"] and r["approximate"]}
    assert not approximate, sorted(approximate)


def test_no_tf32_products(compiled):
    """``tl.dot`` of fp32 operands is TF32 on a GPU unless ``input_precision="ieee"`` (10-bit mantissas);
    the interpreter computes it exactly, so only a GPU run showed it (the head's banded 9x9 on fp32 maps,
    H100, 2026-11-26: 2.7e-4 from the layers). No kernel offers TF32, so no compiled variant may hold it."""
    tf32 = {(r["kernel"], r["dtype"], r["arch"], tuple(r["tf32"])) for r in compiled if not r["error"] and r["tf32"]}
    assert not tf32, sorted(tf32)


def test_tf32_detector():
    """``tf32_products`` on PTX lines as Triton writes them for a TF32 and an ieee fp32 dot."""
    ptx = "\n".join(["\tcvt.rna.tf32.f32 \t%r1, %f1;",
                     "\twgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 {%f2}, %rd1, %rd2, p, 1, 1;",
                     "\tfma.rn.f32 \t%f3, %f4, %f5, %f3;"])
    assert tf32_products(ptx) == ["cvt.rna.tf32.f32", "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32"]
    assert tf32_products(ptx.split("\n")[2]) == []


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2])
    else:
        print(resource_table(compile_all()))
