#!/usr/bin/env bash
# GPU run: install this checkout, run the GPU tests, then `microast-fast bench` at 1080p, 4K and 8K in
# float32, float16 and bfloat16, every result written to OUTDIR. For a machine with an NVIDIA GPU, its
# own torch and triton, and no network:
#
#   bash benchmarks/gpu_run.sh OUTDIR        (GPU_RUN_BUDGET=SECONDS: a shorter run than 570 s;
#                                             GPU_RUN_SKIP=step,step: leave those steps out)
#
# OUTDIR receives results.csv (rows as `bench --record` writes them; merge them into
# benchmarks/results/results.csv), one JSON and one log per step, env.txt, table.md, the plots,
# auto_backend.json (the "auto" table updated with this run's fastest verified backends) and
# skipped.txt naming any step that did not fit. Exit status 1 when a test step failed; a skipped step
# (GPU_RUN_SKIP or out of time) is named there, never counted as passed, and does not fail the run.
#
# The whole run ends within 10 minutes: every step runs under `timeout` against one deadline, the
# measurements that the open issues need first, and a step that no longer fits is skipped (and never
# counts as passed). Budget on an H100-class GPU (each measurement is a fresh process: about 5 s to
# start Python, torch and a CUDA context, then its calls, well under a second each up to 8K):
#   install <= 180 s (about 10 s); the Triton kernel and model tests on the GPU, 8 processes (pytest-xdist)
#     compiling every kernel variant, dtype and autotune config on first use: about 1 min on an H100
#     machine, cached on disk for the later steps. Meanwhile the CUDA extension builds for this GPU's
#     architecture on the CPU cores (ninja): about 1 min;
#   4K, 3 dtypes x (reference, torch, triton): 9 processes, about 1.5 min;
#   the CUDA extension's GPU tests (compute-sanitizer apart), its 4K rows;
#   a kernel-by-kernel profile of one 4K fp16 forward per kernel backend (torch.profiler);
#   1080p as 4K; memory profile at 4K, fp16 and fp32: about 1 min;
#   the first image's cost (warmup command, fresh Triton cache, then a second process): up to a minute;
#   video fps at 1080p and 4K fp16 (96 frames each, benchmarks/video_bench.py): under a minute;
#   8K, 3 dtypes: about 1 to 2 min. The float32 reference at 8K is kept: 55,544 FLOP/pixel x 35.4 Mpixel
#     = 2.0 TFLOP per forward, about 0.2 s even at 10 fp32 TFLOP/s; its memory scales from the spec's
#     4.3 GB at 3840x2160 by the 4.3x pixel count to about 18 GB, far below 78 GiB (H100). It still runs
#     last within its step, under --worker-timeout, so if it does not fit only it is lost;
#   streaming at 8K fp16 within --max-memory 1.5GB: about 1 min;
#   Nsight Compute on one 4K fp16 forward per kernel backend (benchmarks/ncu_profile.sh): 1-2 min;
#   compute-sanitizer on the CUDA kernels;
#   compiled (torch.compile mode=max-autotune, the tuning takes minutes) only at 4K, with what is left.
# A first run on a machine will not fit everything: what is skipped is named in skipped.txt.
set -u -o pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUTDIR=$(cd "$1" && pwd)  # absolute, since the steps run from the repository root
cd "$(dirname "$0")/.." || exit 2

PYTHON=${PYTHON:-$(command -v python >/dev/null && echo python || echo python3)}
BUDGET=${GPU_RUN_BUDGET:-570}  # seconds (default: 10 minutes less slack for the last step's clean-up)
unset TRITON_INTERPRET  # the real kernels, never Triton's CPU interpreter
export MAX_JOBS=${MAX_JOBS:-16}  # parallel compile jobs, should the install build a CUDA extension
REFDIR=$(mktemp -d)  # reference outputs for the error column: up to ~1 GB, so not in OUTDIR
trap 'rm -rf "$REFDIR"' EXIT
failed=0

# step NAME MIN MAX COMMAND...: runs COMMAND for at most MAX seconds and never past the deadline, its
# output in OUTDIR/NAME.log; skipped when fewer than MIN seconds are left. Returns COMMAND's status,
# or 75 when skipped.
step() {
    local name=$1 min=$2 max=$3
    shift 3
    if [[ ",${GPU_RUN_SKIP:-}," == *",$name,"* ]]; then
        echo "skipped $name: GPU_RUN_SKIP" | tee -a "$OUTDIR/skipped.txt"
        return 75
    fi
    local limit=$((BUDGET - SECONDS))
    if ((limit < min)); then
        echo "skipped $name: ${limit} s left, it needs ${min} s" | tee -a "$OUTDIR/skipped.txt"
        return 75  # not run: neither passed nor failed, and never counted as passed
    fi
    if ((limit > max)); then
        limit=$max
    fi
    echo "== $name (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    if ((rc == 124 || rc == 137)); then
        echo "$name: stopped after ${limit} s (its finished measurements are kept)" | tee -a "$OUTDIR/skipped.txt"
    fi
    return "$rc"
}

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse --short HEAD 2>/dev/null || echo "git revision unknown"
    nvidia-smi 2>&1 || echo "nvidia-smi not found"
    "$PYTHON" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PYTHON" -c 'import triton; print("triton", triton.__version__)' 2>&1
    # What the machine lacks: bench needs only torch and numpy; the tests that read the bundled images
    # need Pillow; plots need matplotlib.
    for module in numpy PIL png tifffile tqdm matplotlib pytest pytest_benchmark ninja av; do
        "$PYTHON" -c "import $module" 2>/dev/null && echo "has $module" || echo "MISSING $module"
    done
    command -v nvcc compute-sanitizer 2>&1
} >"$OUTDIR/env.txt" 2>&1

# --no-index: there is no network, so pip must not even try an index. The CUDA extension is built in
# a step of its own: a failure there must not cost the Triton measurements.
if ! step install 30 180 env MICROAST_FAST_CUDA=0 "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e .; then
    echo "install failed (see $OUTDIR/install.log); nothing measured" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "torch sees no CUDA device here; this script is for a GPU machine" >&2
    exit 1
fi

# The CUDA extension builds (nvcc and the binding on the CPU cores, ninja, MAX_JOBS) for this GPU's
# architecture only while the Triton tests run on the GPU. The processes already running keep their
# import paths when pip re-installs the same editable checkout at the end of the build.
ARCH=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
step cuda-build 60 240 env MICROAST_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" \
    "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e . >/dev/null &
build_pid=$!

# Every test that runs on the GPU here: the Triton kernels and model (their DEVICE is cuda), not the
# files whose Triton calls run on CPU tensors (those need the interpreter: CI). Exit status 5 is
# pytest's "no tests collected", not a failure.
XDIST=()
"$PYTHON" -c 'import xdist' 2>/dev/null && XDIST=(-n 8)  # the kernels' first compiles, in parallel
step gpu-tests 30 240 "$PYTHON" -m pytest tests/test_triton_kernels.py tests/test_triton_model.py -q \
    -p no:cacheprovider "${XDIST[@]}" --junitxml="$OUTDIR/gpu-tests.xml"
rc=$?
verified=""  # kernel backends whose GPU tests passed: only these may become "auto" choices
if ((rc == 0)); then
    verified=triton
elif ((rc != 5 && rc != 75)); then
    failed=1
fi
wait "$build_pid"
build_rc=$?
cuda_built=0
if ((build_rc == 0)); then
    cuda_built=1
elif ((build_rc != 75)); then
    failed=1
    echo "the CUDA build failed (see $OUTDIR/cuda-build.log)" >&2
fi

BENCH=("$PYTHON" -m microast_fast.cli bench --device cuda --record --results-csv "$OUTDIR/results.csv"
    --reference-dir "$REFDIR" --worker-timeout 120)
FAST=reference,torch,triton

step bench-4k 40 240 "${BENCH[@]}" --size 4k --dtype fp16,bf16,fp32 --backends "$FAST" \
    --warmup 2 --repeat 5 --json "$OUTDIR/bench_4k.json"
if ((cuda_built)); then
    # compute-sanitizer's run is the least predictable: a step of its own, after the measurements.
    step cuda-tests 30 120 "$PYTHON" -m pytest tests/test_cuda_ext.py -m gpu -q -p no:cacheprovider \
        -k "not compute_sanitizer" --junitxml="$OUTDIR/cuda-tests.xml"
    rc=$?
    if ((rc == 0)); then
        verified=${verified:+$verified,}cuda
    elif ((rc != 75)); then
        failed=1
    fi
    step bench-cuda 40 120 "${BENCH[@]}" --size 4k --dtype fp16,bf16,fp32 --backends cuda --warmup 2 --repeat 5 \
        --json "$OUTDIR/bench_cuda_4k.json"
fi
# Where a 4K fp16 forward's time goes, kernel by kernel, per kernel backend: what to optimise next.
profiled=triton
((cuda_built)) && profiled=triton,cuda
step kernel-profile 30 90 "$PYTHON" benchmarks/kernel_profile.py --device cuda --size 4k --dtype fp16 \
    --backends "$profiled" --out "$OUTDIR"
step bench-1080p 40 150 "${BENCH[@]}" --size 1080p --dtype fp16,bf16,fp32 --backends "$FAST" \
    --warmup 2 --repeat 5 --json "$OUTDIR/bench_1080p.json"
step memory-4k 40 120 "${BENCH[@]}" --memory-profile --size 4k --dtype fp16,fp32 --backends "$FAST" \
    --json "$OUTDIR/memory_4k.json"
# The first image's cost, 1080p and 4K fp16 through "auto": in a first process on an empty Triton cache
# (compiling and autotuning every kernel), then in a second that finds both on disk.
for run in first second; do
    step "warmup-$run-process" 20 150 env TRITON_CACHE_DIR="$REFDIR/triton-cache" MICROAST_FAST_CACHE="$REFDIR" \
        "$PYTHON" -m microast_fast.cli warmup --device cuda --dtype float16 --size 1080p --size 4k
done
# Video throughput through the whole pipeline (decode, model, encode), fp16, "auto".
for size in 1080p 4k; do
    step "video-$size" 30 90 "$PYTHON" benchmarks/video_bench.py --device cuda --size "$size" --frames 96 \
        --record --results "$OUTDIR/video.csv"
done
step bench-8k 60 200 "${BENCH[@]}" --size 8k --dtype fp16,bf16,fp32 --backends "$FAST" \
    --warmup 1 --repeat 3 --json "$OUTDIR/bench_8k.json"
# Streaming at 8K in fp16 within 1.5 GB of GPU memory (the streaming issue's GPU target).
step streaming-8k 40 120 "${BENCH[@]}" --size 8k --dtype fp16 --backends streaming --max-memory 1.5GB \
    --warmup 1 --repeat 3 --json "$OUTDIR/streaming_8k.json"
# Hardware counters (Nsight Compute) of one 4K fp16 forward per kernel backend: why the kernels of
# kernel-profile take their time.
step ncu-profile 60 150 bash benchmarks/ncu_profile.sh "$OUTDIR" "$profiled" fp16 4k
if ((cuda_built)); then
    step cuda-sanitizer 45 150 "$PYTHON" -m pytest tests/test_cuda_ext.py -m gpu -q -p no:cacheprovider \
        -k compute_sanitizer --junitxml="$OUTDIR/cuda-sanitizer.xml"
    rc=$?
    ((rc == 0 || rc == 75)) || failed=1
fi
# compiled last: its compile time is the least predictable. The reference it is compared with was
# measured by bench-4k into REFDIR; the worker gets all the time left but 15 s.
for dtype in fp16 fp32; do
    left=$((BUDGET - SECONDS - 15))
    step "compiled-4k-$dtype" 120 600 "${BENCH[@]}" --worker-timeout "$left" --size 4k --dtype "$dtype" \
        --backends compiled --warmup 3 --repeat 5 --json "$OUTDIR/compiled_4k_$dtype.json"
done

if [[ -s "$OUTDIR/results.csv" ]]; then
    # The "auto" table with this run's choices (review, then copy to microast_fast/data/auto_backend.json).
    cp microast_fast/data/auto_backend.json "$OUTDIR/auto_backend.json"
    "$PYTHON" benchmarks/auto_table.py --csv "$OUTDIR/results.csv" --verified "$verified" --capability "$ARCH" \
        --out "$OUTDIR/auto_backend.json" >"$OUTDIR/auto_backend.log" 2>&1 ||
        echo "auto_table.py failed (see $OUTDIR/auto_backend.log)" >&2
    "$PYTHON" benchmarks/plot.py --csv "$OUTDIR/results.csv" --out "$OUTDIR" --no-readme >"$OUTDIR/table.md" 2>&1 ||
        echo "plot.py failed (see $OUTDIR/table.md)" >&2
fi
echo "done in ${SECONDS} s; results in $OUTDIR"
exit "$failed"
