"""Ahead-of-time compilation of every Triton kernel for real GPUs (sm_80, sm_90), without a GPU.

The interpreter (what the other Triton tests run on a CPU) accepts programs the GPU compiler rejects
(tl.dot operands below 16, non-power-of-two blocks, shared memory beyond the SM), so every kernel is
compiled here for every autotune config of its GPU list, every map dtype and every constexpr
variant the launchers use, then its PTX is assembled with ``ptxas -v`` to read registers and spills.
Each is compiled twice, as Triton's JIT specializes it: with every pointer marked 16-byte aligned and
without (``microast_fast.kernels.aot``, which does the compiling, says why both).

tests/conftest.py sets TRITON_INTERPRET=1 on CPU-only machines, and triton decides at decoration
time whether a ``@triton.jit`` function is interpreted: the compiles run in a subprocess with
TRITON_INTERPRET unset (``compile_jobs``), so the kernels are real JITFunctions there.

The same compiles give the sm_90 occupancy table (benchmarks/occupancy.py), which must be committed
under benchmarks/results/ for the running triton and be current.

Run ``python tests/test_triton_compile.py`` for the resource table.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

pytest.importorskip("triton")  # importing microast_fast.kernels imports it
pytestmark = pytest.mark.aot

from microast_fast.kernels.aot import (HOT, KERNELS, LAUNCH_4K, compile_jobs, occupancy_table,  # noqa: E402
                                       occupancy_table_name, resident_programs, spills_in_loops, tf32_products)

# Largest shared memory one block may opt in to: A100 (sm_80) 163 KB, H100 (sm_90) 227 KB.
SMEM_LIMIT_BY_ARCH = {80: 163 * 1024, 90: 227 * 1024}

# The Triton of the GPU machines this project is measured on (.ci/run's GPU_TRITON): its occupancy
# table must be committed.
GPU_TRITON = "3.6.0"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


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
    results = compile_jobs()
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


def test_occupancy_table_is_current(compiled):
    """benchmarks/results/occupancy_sm90_triton<version>.txt is what benchmarks/occupancy.py makes of
    this triton's compiles (the GPU machines' triton must have one)."""
    import triton

    path = RESULTS / occupancy_table_name(triton.__version__)
    regenerate = f"regenerate it with triton {triton.__version__}: python benchmarks/occupancy.py --write"
    if not path.exists():
        assert triton.__version__ != GPU_TRITON, f"no {path.name} for the GPU machines' triton: {regenerate}"
        pytest.skip(f"no occupancy table for triton {triton.__version__} ({path.name}); {regenerate}")
    table = occupancy_table(compiled, triton.__version__)
    diff = "".join(difflib.unified_diff(path.read_text().splitlines(True), table.splitlines(True),
                                        f"committed {path.name}", "regenerated"))
    assert not diff, f"{path.name} is stale; {regenerate}\n{diff}"


def test_every_kernel_has_a_4k_launch():
    missing = [name for _, name, _ in KERNELS if name not in LAUNCH_4K]
    assert not missing, f"add the 4K launch of {missing} to LAUNCH_4K in kernels/aot.py"


@pytest.mark.parametrize("registers, warps, shared, expected", [
    # 233 -> 240 registers a thread, 7,680 a warp: 2 warps in each 16,384-register sub-partition
    (233, 8, 0, (1, "registers")),
    (128, 4, 1024, (4, "registers")),          # 4,096 a warp: 4 a sub-partition, 16 an SM
    (80, 1, 0, (24, "registers")),             # 2,560 a warp: 6 a sub-partition (the SM's 65,536 would take 25)
    (255, 16, 0, (0, "registers")),            # 16 warps x 8,192 > 65,536 a program: no launch
    (32, 4, 49152, (4, "shared")),             # 49,152 + 1,024 reserved = 50,176: 233,472 // 50,176
    (32, 4, 227 * 1024, (1, "shared")),        # the most a program may have, with its 1 KB: the whole SM
    (32, 4, 227 * 1024 + 1, (0, "shared")),
    (24, 16, 0, (4, "warps")),                 # 768 a warp: 21 a sub-partition, 84 an SM, but 64 warps at most
    (16, 1, 0, (32, "programs")),
    (32, 2, 0, (32, "registers+warps+programs")),
])
def test_resident_programs_by_hand(registers, warps, shared, expected):
    """Counted by hand from the rules of compute capability 9.0; each agrees with CUDA 13.0's
    cuda_occupancy.h (``cudaOccMaxActiveBlocksPerMultiprocessor`` for an H100)."""
    assert resident_programs(registers, warps, shared) == expected


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
    print(resource_table(compile_jobs()))
