"""``microast-fast bench``: wall time, peak memory and error of each backend against the reference.

Every measurement (one backend, one size, one dtype) runs in a fresh child process,
``python -m microast_fast.bench.workers --worker SPEC``, which prints its figures as one JSON line on stdout.
The reason is memory: on a CPU the only honest peak figure is the process's resident set, and a
process's high-water mark never goes down, so in a shared process one backend's allocations would
show up in the next one's figure. On a GPU the child also starts with an empty caching allocator.

What is measured (the same for every backend):
- inputs: uniform random content ``[batch, 3, H, W]`` and one 512x512 style (seeded, generated in fp32
  on the CPU, then cast), the style broadcast over the content batch; ``alpha`` 1; under
  ``torch.inference_mode()``; the style path runs inside every forward, as a user calls the model;
- time: ``--warmup`` untimed calls (``compiled`` always gets at least one, so compilation is never
  timed), then ``--repeat`` timed calls: ``time.perf_counter`` on a CPU, CUDA events then a
  synchronize on a GPU;
- peak memory during the timed calls: ``torch.cuda.max_memory_allocated`` after a reset on a GPU;
  on the CPU the resident-set high-water mark (VmHWM) of the child, reset after warm-up through
  ``/proc/self/clear_refs`` so that ``torch.compile``'s own memory is not counted; where that reset is
  impossible (not Linux), ``ru_maxrss`` of the whole child. The figure is the whole process's
  (Python, torch, weights and inputs included), which the JSON's ``baseline_mem_mib`` shows apart;
- error: max abs difference from the reference's output at the same dtype, computed in fp32 after
  the peak is read (the reference child saves its output to a .pt file the others load);
- GFLOP/s: 55,544 FLOPs per content pixel (``MICROAST_SPEC.md``); the style path (about 7.3 GFLOP
  for a 512x512 style) is not counted, so small sizes understate the rate.

``--memory-profile`` prints each backend's peak at 4096x2160 (or ``--size``) and the reference's peak
per stage, from forward hooks on its submodules, also in a fresh process.
"""

from __future__ import annotations

import argparse

# Only what the parser needs: cli imports this package to register the subcommand, so the measuring,
# the workers and the reporting are imported when the command runs (run_bench), not before.
from .cases import BENCH_BACKENDS, DTYPE_NAMES, is_bench_backend, parse_size
from .machine import RESULTS_CSV, default_device


def _size_list(text: str) -> list[tuple[str, int, int]]:
    try:
        return [parse_size(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _choice_list(allowed, aliases=None, accepts=None):
    def parse(text: str) -> list[str]:
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        names = [aliases.get(n, n) for n in names] if aliases else names
        bad = [n for n in names if not (accepts(n) if accepts else n in allowed)]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return names
    return parse


def run_bench(args) -> int:
    """``microast-fast bench`` with parsed ``args``: every dtype, size and backend, one child process each."""
    from .sweep import sweep

    return sweep(args)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time and memory of each backend against the reference (one fresh process per measurement)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", dest="sizes", action="append", type=_size_list, metavar="SIZE",
                   help="512, 1080p (1920 wide), 4k (4096x2160), 8k (8192x4320), N (NxN) or HxW (height x width); "
                        "repeatable or comma list (default: 512; 4k with --memory-profile)")
    p.add_argument("--backends", action="append", type=_choice_list(BENCH_BACKENDS, accepts=is_bench_backend),
                   metavar="LIST",
                   help=f"comma list of {','.join(BENCH_BACKENDS)} (default: all; unavailable ones are skipped "
                        "with the reason); a MicroAST backend with ':repeated' is timed with the style encoded "
                        "once (as video frames), with ':graphs' also replayed from CUDA graphs")
    p.add_argument("--dtype", dest="dtypes", action="append", type=_choice_list(("float32", "float16", "bfloat16"),
                   DTYPE_NAMES), metavar="LIST", help="float32, float16, bfloat16 (or fp32, fp16, bf16); comma list "
                   "(default: float32)")
    p.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="content batch; one style broadcast over it (default: 1)")
    p.add_argument("--repeat", type=int, default=None, help="timed calls (default: 10; 1 with --memory-profile)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls before them (default: 3; 1 with --memory-profile); compiled gets at least 1")
    p.add_argument("--alpha", type=float, default=1.0, help="stylisation strength (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random content and style (default: 0)")
    p.add_argument("--json", metavar="FILE", help="write meta data and every measurement as JSON")
    p.add_argument("--record", action="store_true", help="append one row per measurement and metric to --results-csv")
    p.add_argument("--results-csv", default=str(RESULTS_CSV), metavar="FILE",
                   help="the results data file (default: benchmarks/results/results.csv of this checkout)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="device peak for %%peak; default on a CPU threads x fp32 FLOP/cycle of its vector ISA "
                        "(AVX2 32, AVX-512 64) x the clock in /proc/cpuinfo, on a GPU the data-sheet figure of an "
                        "H100/H200/A100, else unknown")
    p.add_argument("--max-memory", default="1GB",
                   help="working-memory budget of the 'streaming' backend (default: %(default)s)")
    p.add_argument("--compile-mode", default="auto",
                   help="torch.compile mode of 'compiled' (default: max-autotune on a GPU, the default mode on a CPU)")
    p.add_argument("--allow-tf32", action="store_true", help="let cuDNN and matmuls use TF32 in float32 (default: off)")
    p.add_argument("--worker-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a measurement after this long and report it skipped (default: no limit)")
    p.add_argument("--reference-dir", metavar="DIR",
                   help="keep the reference's output and figures here, so a later run without the reference "
                        "still reports error and speed-up against it (default: a temporary folder)")
    p.add_argument("--memory-profile", action="store_true",
                   help="peak memory of each backend (default size 4k) and of the reference per stage: style path, "
                        "content encoder, decoder block 1, decoder block 2, tail")
    p.set_defaults(run=run_bench)
    return p
