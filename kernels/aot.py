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
``compile_for_gpu`` in a process that imported triton with ``TRITON_INTERPRET`` unset. ``compile_jobs``
compiles the jobs of ``jobs()`` (every kernel of ``KERNELS``, config and map dtype the launchers use) in
such a subprocess. Importing this module imports no part of triton's compiler.

The occupancy part (``resident_programs``, ``LAUNCH_4K``, ``occupancy_table``) turns an sm_90 compile's
registers, shared memory and warps into the programs an H100 SM holds at once and the waves of each
kernel's launch in the bench's 4K forward: benchmarks/occupancy.py prints the table, and
tests/test_triton_compile.py checks that the committed one is current.
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
from typing import Callable, NamedTuple

ARCHS = (80, 90)
DTYPES = ("fp32", "fp16", "bf16")

# Kernels whose spills would cost real time: they run per content pixel.
HOT = {
    "resblock_conv3x3_kernel", "resblock_conv3x3_wide_kernel", "encoder_head_half_kernel", "encoder_head_quarter_kernel",
    "decoder_tail_kernel", "tail_level_kernel", "tail_conv9x9_kernel",
}

# (module, kernel, constexpr variants the launchers use)
# The launchers also use both conv2 variants without STATS (content f0, dec2): strict subsets of the
# code of variants 1 and 3, left out to keep the compile time down.
RESBLOCK_VARIANTS = [
    dict(SECOND=False, FEATMOD=False, FILTERMOD=False, STATS=False),  # encoders' conv1
    dict(SECOND=True, FEATMOD=False, FILTERMOD=False, STATS=True),    # encoders' conv2 (+ statistics)
    dict(SECOND=False, FEATMOD=True, FILTERMOD=True, STATS=False),    # decoder conv1
    dict(SECOND=True, FEATMOD=True, FILTERMOD=True, STATS=True),      # dec1 conv2 (+ statistics)
]
# A kernel added here needs its 4K launch in ``LAUNCH_4K`` too.
KERNELS = [
    ("instance_stats", "instance_stats_merge_kernel", [dict(C=64, BLOCK_T=64)]),
    ("filtermod_resblock", "resblock_conv3x3_kernel", [dict(v, C=64) for v in RESBLOCK_VARIANTS]),
    ("filtermod_resblock", "featmod_affine_kernel", [dict(C=64)]),
    # each form of the head's 9x9 for the map dtypes that launch it
    ("encoder_head", "encoder_head_half_kernel", [dict(BANDED=False, dtypes=("fp32",)),
                                                  dict(BANDED=True, dtypes=("fp16", "bf16"))]),
    ("encoder_head", "encoder_head_quarter_kernel", [{}]),
    ("decoder_tail", "decoder_tail_kernel", [{}]),
    ("modulator_pool", "modulator_pool_kernel", [dict(C=64)]),
    # the split reductions (variant "triton+split-reductions"); pass 2 of the merge is
    # instance_stats_merge_kernel. Their pointers are all fp32: one dtype compiles them.
    ("instance_stats", "instance_stats_group_kernel", [dict(C=64, BLOCK_T=64, dtypes=("fp32",))]),
    ("modulator_pool", "modulator_pool_partial_kernel", [dict(C=64)]),
    ("modulator_pool", "modulator_pool_sum_kernel", [dict(C=64, BLOCK_B=64, dtypes=("fp32",))]),
    # the decoder tail in row bands (variant "triton+banded-tail"): levels A and B, then the 9x9
    ("decoder_tail_banded", "tail_level_kernel", [dict(C_IN=64, C_OUT=32), dict(C_IN=32, C_OUT=16)]),
    ("decoder_tail_banded", "tail_conv9x9_kernel", [{}]),
    # the residual convolutions in wide tiles (variant "triton+wide-tiles"); for fp32 maps it takes the
    # base kernel's config, compiled above
    ("filtermod_resblock", "resblock_conv3x3_wide_kernel", [dict(v, C=64, dtypes=("fp16", "bf16"))
                                                            for v in RESBLOCK_VARIANTS]),
]

# Pointer arguments that are fp32 whatever the map dtype (statistics, partials, alpha, fp32-packed
# operands); every other pointer has the map dtype.
FP32_POINTERS = {
    "instance_stats_merge_kernel": {"part_ptr", "mean_ptr", "std_ptr"},
    "instance_stats_group_kernel": {"part_ptr", "group_ptr"},
    "resblock_conv3x3_kernel": {"part_ptr", "affine_ptr"},
    "resblock_conv3x3_wide_kernel": {"part_ptr", "affine_ptr"},
    "featmod_affine_kernel": {"x_mean_ptr", "x_std_ptr", "s_mean_ptr", "s_std_ptr", "alpha_ptr", "affine_ptr"},
    "modulator_pool_kernel": {"w_ptr", "b_ptr", "out_ptr"},
    "modulator_pool_partial_kernel": {"w_ptr", "part_ptr"},
    "modulator_pool_sum_kernel": {"part_ptr", "b_ptr", "out_ptr"},
    "decoder_tail_kernel": {"wp1_ptr", "wp2_ptr", "b9_ptr"},
    "tail_level_kernel": {"wp_ptr"},
    "tail_conv9x9_kernel": {"b9_ptr"},
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


def cubin_resources(cubin: bytes) -> dict[str, int]:
    """``cuobjdump --dump-resource-usage`` of a one-kernel cubin: ``REG`` (registers a thread), ``SHARED``
    (static shared memory, bytes: 1 KB in Triton's sm_90 kernels with barriers, besides their dynamic
    ``metadata.shared``), ``LOCAL``, ``STACK``, ..."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(_nvidia_bin() / "cuobjdump"), "--dump-resource-usage", str(path)],
                              capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in re.findall(r"\b([A-Z]+):(\d+)", text)}


def tf32_products(ptx: str) -> list[str]:
    """The TF32 instructions in ``ptx`` (mma/wgmma on .tf32 operands, conversions to tf32)."""
    return sorted({line.split()[0] for line in ptx.splitlines() if re.search(r"\.tf32\b", line)})


# --------------------------------------------------------------------------------------------------
# Every job, compiled in a subprocess without the interpreter
# --------------------------------------------------------------------------------------------------
def jobs(archs=ARCHS, alignments=(True, False)):
    """Every (kernel, variant, config, dtype, arch, alignment) to compile: each kernel of ``KERNELS`` in
    each constexpr variant, for every config of its GPU list and every map dtype that the config is
    allowed for (``ConfigsByMapDtype.allows``). Run with ``TRITON_INTERPRET`` unset: under the
    interpreter the kernels have their one interpreter config."""
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
                    for arch in archs:
                        for aligned in alignments:
                            yield dict(module=module_name, kernel=kernel_name, variant=v, config=dict(kwargs),
                                       constexprs={**variant, **kwargs}, num_warps=warps, num_stages=stages,
                                       maxnreg=maxnreg, dtype=dtype, arch=arch, aligned=aligned)


def compile_job(job: dict) -> dict:
    """``job`` and what its compile shows: ``shared`` (Triton's dynamic shared memory, bytes), from the
    ``ptxas -v`` of ``compile_for_gpu`` ``registers``, ``spill_stores`` and ``spill_loads`` (bytes),
    ``spills_in_loops``, ``approximate`` and ``tf32`` (PTX instructions), from the cubin that Triton built
    (and a GPU would run: Triton's choice of ptxas and flags, which may take a register or two more or
    fewer) ``cubin_registers`` and ``static_shared``; or the ``error`` that stopped it (else None)."""
    result = dict(job)
    try:
        compiled, info, sass = compile_for_gpu(job)
        result["shared"] = compiled.metadata.shared
        usage = cubin_resources(compiled.asm["cubin"])
        result["cubin_registers"], result["static_shared"] = usage["REG"], usage["SHARED"]
        # fp32 instructions that are not correctly rounded (``/`` and tl.sqrt compile to these).
        result["approximate"] = sorted(set(re.findall(r"\b(?:div\.full|div\.approx|sqrt\.approx|rsqrt\.approx|"
                                                      r"rcp\.approx)\.[a-z0-9.]*", compiled.asm["ptx"])))
        result["spills_in_loops"] = spills_in_loops(sass)
        result["tf32"] = tf32_products(compiled.asm["ptx"])
        result["registers"] = int(re.search(r"Used (\d+) registers", info).group(1))
        stores = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
        result["spill_stores"], result["spill_loads"] = int(stores.group(1)), int(stores.group(2))
        result["error"] = None
    except Exception as exc:  # reported by the caller
        result["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
    return result


def compile_jobs(archs=ARCHS, alignments=(True, False)) -> list[dict]:
    """``compile_job`` of every job of ``jobs(archs, alignments)``, in that order, compiled in parallel in
    a subprocess that imports triton with ``TRITON_INTERPRET`` unset (tests/conftest.py sets it on
    CPU-only machines), so that the kernels there are real JITFunctions."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # keep Triton 3.9's default, without its warning
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        selection = json.dumps({"archs": list(archs), "alignments": list(alignments)})
        proc = subprocess.run([sys.executable, "-m", "microast_fast.kernels.aot", selection, str(out)], env=env,
                              capture_output=True, text=True, timeout=1500)
        if proc.returncode != 0:
            raise RuntimeError(f"the compile subprocess failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def _compile_in_this_process(selection: str, out_path: str) -> None:
    todo = list(jobs(**json.loads(selection)))
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(compile_job, todo))
    Path(out_path).write_text(json.dumps(results))


# --------------------------------------------------------------------------------------------------
# Occupancy on an H100 (sm_90)
# --------------------------------------------------------------------------------------------------
class SM(NamedTuple):
    """A GPU's SM count and the limits of one SM on the programs (CUDA blocks) it holds at once."""
    count: int
    registers: int              # 32-bit registers an SM, split evenly between its sub-partitions
    sub_partitions: int         # each warp takes its registers from one of them
    register_unit: int          # a warp's registers are allocated in units of this many
    registers_per_program: int
    warps: int
    programs: int
    shared: int                 # bytes an SM: the largest carveout, which the default preference allows
    shared_per_program: int     # the most one program may opt in to
    shared_reserved: int        # bytes the runtime reserves for each program
    shared_unit: int            # shared memory is allocated in units of this many bytes


# Compute capability 9.0 (the CUDA programming guide's table; cuda_occupancy.h of CUDA 13.0).
H100 = SM(count=132, registers=65536, sub_partitions=4, register_unit=256, registers_per_program=65536, warps=64,
          programs=32, shared=228 * 1024, shared_per_program=227 * 1024, shared_reserved=1024, shared_unit=128)


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy_limits(registers: int, num_warps: int, shared: int, sm: SM = H100) -> dict[str, int]:
    """Programs of ``num_warps`` warps, ``registers`` a thread and ``shared`` bytes (dynamic and static)
    that one SM holds at once as each resource allows, counted as CUDA's occupancy calculator
    (cuda_occupancy.h) counts them. 0: the program cannot launch."""
    per_warp = _round_up(registers * 32, sm.register_unit)  # a thread's registers rounded up to 8
    if per_warp * _round_up(num_warps, sm.sub_partitions) > sm.registers_per_program:
        # the hardware's launch check, which spreads a program's warps over all sub-partitions
        by_registers = 0
    elif per_warp == 0:
        by_registers = sys.maxsize
    else:
        # whole warps per sub-partition: 80 registers a thread fit 6 warps in each of the four 16,384-
        # register sub-partitions, 24 an SM, not 65,536 / 2,560 = 25
        by_registers = sm.registers // sm.sub_partitions // per_warp * sm.sub_partitions // num_warps
    allocated = _round_up(shared + sm.shared_reserved, sm.shared_unit)
    by_shared = 0 if shared > sm.shared_per_program else sm.shared // allocated
    return {"registers": by_registers, "warps": sm.warps // num_warps, "shared": by_shared, "programs": sm.programs}


def resident_programs(registers: int, num_warps: int, shared: int, sm: SM = H100) -> tuple[int, str]:
    """(programs an SM holds at once, the resources that limit it to that, joined by "+")."""
    limits = occupancy_limits(registers, num_warps, shared, sm)
    fewest = min(limits.values())
    return fewest, "+".join(name for name, count in limits.items() if count == fewest)


# The bench's "4k" forward (``microast-fast bench --size 4k``): one 2160x4096 content, so half-res maps
# of 1080x2048 and quarter-res maps of 540x1024, styled by one 512x512 style (quarter-res 128x128).
BATCH = 1
STYLES = 1
FULL_4K = (2160, 4096)
HALF_4K = (1080, 2048)
QUARTER_4K = (540, 1024)
STYLE_QUARTER = (128, 128)  # a 512x512 style


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(size: tuple[int, int], config: dict) -> int:
    return _cdiv(size[0], config["TILE_H"]) * _cdiv(size[1], config["TILE_W"])


def _persistent(work: int, per_sm: int = 2) -> int:
    """``_common.persistent_programs`` on an H100. The launchers count the work in the smallest tile of
    the map dtype's configs, not the launched one: at 4K either count is far above the cap."""
    return max(1, min(work, H100.count * per_sm))


class Launch(NamedTuple):
    grid: str                          # the launcher's grid, in words
    programs: Callable[[dict], int]    # programs of the 4K launch, from the config's constexprs


# Each kernel's launch in the bench's 4K forward: the content's where the kernel runs on it, the style's
# where it runs only on styles. A kernel of ``KERNELS`` without an entry fails tests/test_triton_compile.py.
LAUNCH_4K = {
    "instance_stats_merge_kernel": Launch("(N,)", lambda c: BATCH),
    "resblock_conv3x3_kernel": Launch("(tiles of the 540x1024 quarter-res map, N)",
                                      lambda c: _tiles(QUARTER_4K, c) * BATCH),
    "resblock_conv3x3_wide_kernel": Launch("(tiles of the 540x1024 quarter-res map, N)",
                                           lambda c: _tiles(QUARTER_4K, c) * BATCH),
    "featmod_affine_kernel": Launch("(N,)", lambda c: BATCH),
    "encoder_head_half_kernel": Launch("persistent: min(1080x2048 half-res tiles, 2 an SM)",
                                       lambda c: _persistent(BATCH * _cdiv(HALF_4K[0] * HALF_4K[1],
                                                                           c["TILE_H"] * c["TILE_W"]))),
    "encoder_head_quarter_kernel": Launch("(tiles of the 540x1024 quarter-res map, N)",
                                          lambda c: _tiles(QUARTER_4K, c) * BATCH),
    "decoder_tail_kernel": Launch("persistent: min(2160x4096 full-res tiles, 2 an SM)",
                                  lambda c: _persistent(BATCH * _cdiv(FULL_4K[0] * FULL_4K[1],
                                                                      c["TILE_H"] * c["TILE_W"]))),
    "modulator_pool_kernel": Launch("(styles,) on the 128x128 quarter-res style map", lambda c: STYLES),
    "instance_stats_group_kernel": Launch("(groups of the 8x8 resblock tiles of the 540x1024 map, N)",
                                          lambda c: _split_groups(_tiles(QUARTER_4K, {"TILE_H": 8, "TILE_W": 8}))
                                          * BATCH),
    "modulator_pool_partial_kernel": Launch("(pixel blocks of the 128x128 quarter-res style map, styles)",
                                            lambda c: _cdiv(STYLE_QUARTER[0] * STYLE_QUARTER[1], c["BLOCK_P"])
                                            * STYLES),
    "modulator_pool_sum_kernel": Launch("(styles,)", lambda c: STYLES),
    # per band of 128 full-res rows (fp16; 17 bands a 4K forward): level A on its 70 half-res rows,
    # level B on its 136 full-res rows (the larger of the two launches is shown), the 9x9 on 128 rows
    "tail_level_kernel": Launch("per band: (column tiles, row tiles of 136 full-res rows, N)",
                                lambda c: _cdiv(FULL_4K[1], c["TILE_W"]) * _cdiv(136, c["TILE_H"]) * BATCH),
    "tail_conv9x9_kernel": Launch("per band: (column tiles of 8-pixel segments, row tiles of 128 rows, N)",
                                  lambda c: _cdiv(FULL_4K[1], 8 * c["SEGMENTS"]) * _cdiv(128, c["TILE_H"]) * BATCH),
}


def _split_groups(tiles: int) -> int:
    from microast_fast.kernels.instance_stats import split_groups  # imports triton: only when tabulating

    return split_groups(tiles)[0]


def occupancy_table_name(triton_version: str) -> str:
    """The committed table's file name under benchmarks/results/."""
    return f"occupancy_sm90_triton{triton_version}.txt"


def _variant_text(result: dict) -> str:
    variant = {k: v for k, v in result["constexprs"].items() if k not in result["config"]}
    words = [k if v is True else f"{k}={v}" for k, v in variant.items() if v is not False]
    return ",".join(words) or "-"


def _config_text(result: dict) -> str:
    text = ",".join(f"{k}={v}" for k, v in result["config"].items()) + f",s{result['num_stages']}"
    return text.lstrip(",") + (f",r{result['maxnreg']}" if result["maxnreg"] else "")


def occupancy_table(results: list[dict], triton_version: str) -> str:
    """The occupancy table of the sm_90, aligned-pointer results of ``compile_jobs`` (others are left
    out), one row a result in their order: what benchmarks/occupancy.py prints and writes."""
    rows = [r for r in results if r["arch"] == 90 and r["aligned"]]
    missing = sorted({r["kernel"] for r in rows} - LAUNCH_4K.keys())
    if missing:
        raise KeyError(f"no 4K launch for {', '.join(missing)}: add an entry to LAUNCH_4K in kernels/aot.py")
    lines = [
        f"# Occupancy of the Triton kernels on an H100 (sm_90, {H100.count} SMs), triton {triton_version}.",
        "# Written by `python benchmarks/occupancy.py --write`; tests/test_triton_compile.py fails when it is stale.",
        "# Every config the launchers may pick, for each map dtype it is allowed for, compiled with 16-byte aligned",
        "# pointers (the JIT's common case). config: the config's constexprs, s num_stages, r maxnreg. From the",
        "# cubin Triton built: regs, registers a thread; smem, shared memory a program (Triton's dynamic plus the",
        "# cubin's static), bytes.",
        "# progs/SM: programs an SM holds at once by CUDA's occupancy rules (65,536 registers in 4 sub-partitions,",
        "# allocated a warp at a time in units of 256; 64 warps; 32 programs; 228 KB of shared memory, 1 KB of it",
        "# reserved a program); limit: the resources that set it.",
        "# 4K progs: programs of the kernel's launch in the bench's 4K forward (a 2160x4096 content, batch 1, a",
        f"# 512x512 style); waves: 4K progs / (progs/SM x {H100.count}). The launches:",
    ]
    for name in dict.fromkeys(r["kernel"] for r in rows):
        lines.append(f"#   {name}: {LAUNCH_4K[name].grid}")
    lines.append(f"{'kernel':28s} {'variant':36s} {'config':74s} {'dtype':5s} {'warps':>5s} {'regs':>4s} "
                 f"{'smem':>6s} {'progs/SM':>8s} {'limit':9s} {'4K progs':>8s} {'waves':>6s}")
    for r in rows:
        head = f"{r['kernel']:28s} {_variant_text(r):36s} {_config_text(r):74s} {r['dtype']:5s} {r['num_warps']:5d}"
        if r["error"]:
            lines.append(f"{head} compile error")
            continue
        shared = r["shared"] + r["static_shared"]
        resident, limit = resident_programs(r["cubin_registers"], r["num_warps"], shared)
        programs = LAUNCH_4K[r["kernel"]].programs(r["constexprs"])
        waves = f"{programs / (resident * H100.count):.2f}" if resident else "-"
        lines.append(f"{head} {r['cubin_registers']:4d} {shared:6d} {resident:8d} {limit:9s} {programs:8d} {waves:>6s}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the subprocess of ``compile_jobs``
    _compile_in_this_process(*sys.argv[1:])
