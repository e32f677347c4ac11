"""Occupancy of every Triton kernel config on an H100 (sm_90), without a GPU.

    python benchmarks/occupancy.py            # print the table
    python benchmarks/occupancy.py --write    # write benchmarks/results/occupancy_sm90_triton<version>.txt
    python benchmarks/occupancy.py --check    # exit 1, with a diff, if the committed table is stale

Compiles every config the launchers may pick, for each map dtype it is allowed for, for sm_90 with
16-byte aligned pointers (``microast_fast.kernels.aot``: triton's own ptxas, in a subprocess without the
interpreter), and prints a row each: registers, shared memory and warps, the programs an SM holds at
once and the resource that limits them, the programs of the kernel's launch in the bench's 4K forward
and the waves they make on 132 SMs. The table depends on the triton version: run with the GPU
machines' (``PYTHONPATH`` to a ``pip install --target`` of it, as .ci/run does) for the table that
describes them. tests/test_triton_compile.py checks the committed table from its own compiles.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import triton

from microast_fast.kernels.aot import compile_jobs, occupancy_table, occupancy_table_name

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the table for this triton under results/")
    action.add_argument("--check", action="store_true", help="exit 1 if the committed table differs")
    args = parser.parse_args(argv)

    results = compile_jobs(archs=(90,), alignments=(True,))
    errors = [f"{r['kernel']} {r['constexprs']} w{r['num_warps']} {r['dtype']}: {r['error']}"
              for r in results if r["error"]]
    if errors:
        print("\n\n".join(errors), file=sys.stderr)
        return 1
    table = occupancy_table(results, triton.__version__)
    path = RESULTS / occupancy_table_name(triton.__version__)
    if args.write:
        path.write_text(table)
        print(f"wrote {path}")
    elif args.check:
        committed = path.read_text() if path.exists() else ""
        diff = "".join(difflib.unified_diff(committed.splitlines(True), table.splitlines(True),
                                            f"committed {path.name}", "regenerated"))
        if diff:
            print(f"{path} is {'stale' if committed else 'missing'}: rewrite it with --write\n{diff}", file=sys.stderr)
            return 1
        print(f"{path.name} is current")
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
