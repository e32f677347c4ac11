"""The loops of one Triton kernel's SASS, compiled ahead of time for a GPU, without one.

    python benchmarks/sass_loops.py encoder_head encoder_head_half_kernel \
        '{"TILE_H": 8, "TILE_W": 32, "BLOCK9": 64, "SEGMENTS": 64, "BANDED": true}' \
        --warps 8 --stages 2 --dtype fp16 --arch 90

Compiles with ``microast_fast.kernels.aot``, as tests/test_triton_compile.py does (16-byte-aligned
pointers unless ``--unaligned``; for the encoder head also a 4K image's strides), and prints
registers, spills and every loop (a backward branch and its target), nested by address, with its
static instruction count and the instructions that matter most. Instructions a pixel = the sum over
loops of (static count x trips), times the warps, over the pixels: trips are the kernel's own loop
bounds (a static count says nothing about them). A comparison between two builds, not a timing: on a
GPU, ``microast-fast bench`` and benchmarks/kernel_profile.py measure. Run with the triton that the
GPU machine has (PYTHONPATH), and TRITON_INTERPRET unset.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from microast_fast.kernels.aot import compile_for_gpu, sass_instructions, sass_loops

KEY_OPS = ("LDG", "LDGSTS", "STG", "LDS", "STS", "HGMMA", "HMMA", "FFMA", "BAR", "LDL", "STL")


def opcode(instruction: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0].split(".")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="module under microast_fast.kernels, e.g. encoder_head")
    parser.add_argument("kernel", help="kernel name, e.g. encoder_head_half_kernel")
    parser.add_argument("constexprs", help="JSON object of the constexpr arguments (a config's and the variant's)")
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--maxnreg", type=int, default=None)
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp16")
    parser.add_argument("--arch", type=int, choices=(80, 90), default=90)
    parser.add_argument("--unaligned", action="store_true", help="pointers not marked 16-byte aligned")
    args = parser.parse_args(argv)
    job = dict(module=args.module, kernel=args.kernel, variant=0, constexprs=json.loads(args.constexprs),
               num_warps=args.warps, num_stages=args.stages, maxnreg=args.maxnreg, dtype=args.dtype, arch=args.arch,
               aligned=not args.unaligned)
    _, info, sass = compile_for_gpu(job)
    print(re.search(r"Used \d+ registers", info).group(0) + ";",
          re.search(r"\d+ bytes spill stores, \d+ bytes spill loads", info).group(0))
    found = [loop for loop in sass_loops(sass) if loop[0] < loop[1]]  # not the final branch-to-self
    print(f"{len(sass_instructions(sass))} instructions; loops (static instructions):")
    for start, end, body in found:
        depth = sum(1 for s, e, _ in found if s <= start and end <= e and (s, e) != (start, end))
        counts = {}
        for instruction in body:
            counts[opcode(instruction)] = counts.get(opcode(instruction), 0) + 1
        ops = " ".join(f"{op} {counts[op]}" for op in KEY_OPS if counts.get(op))
        print(f"{'  ' * depth}[{start:#07x}-{end:#07x}] {len(body):5d}  {ops}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
