#!/usr/bin/env bash
# GPU run: install this checkout, run the GPU tests, then measure every backend and variant, every
# result written to OUTDIR. For a machine with an NVIDIA GPU, its own torch and triton, and no network:
#
#   bash benchmarks/gpu_run.sh OUTDIR        (GPU_RUN_BUDGET=SECONDS: a shorter run than 450 s;
#                                             GPU_RUN_SKIP=step,step: leave those steps out)
#
# OUTDIR receives results.csv (rows as `bench --record` writes them; merge them into
# benchmarks/results/results.csv), summary.txt (one screen: times, ratios, the GPU-speed budgets met or
# missed), one JSON and one log per step, env.txt, table.md, the plots, auto_backend.json (the "auto"
# table updated with this run's fastest verified backends: benchmarks/verified.py reads the tests'
# JUnit files) and skipped.txt naming any step that did not fit. Exit status 1 when a test step
# failed; a skipped step (GPU_RUN_SKIP or out of time) is named there, never counted as passed.
#
# The whole run ends within 8 minutes (450 s of steps): every step runs under `timeout` against one
# deadline, in the order of what the open issues need first, and a step that no longer fits is
# skipped. Each measurement is a fresh process (about 5 s: Python, torch, a CUDA context, then its
# calls). In order:
#   install (about 10 s); the CUDA extension builds in the background meanwhile (ninja, about 1 min);
#   the GPU tests of the Triton kernels, every variant, the model and the CUDA-graph path (8 processes,
#     compiling every kernel config on first use, cached on disk for the later steps): about 1.5 min;
#   4K fp16: reference, reference channels-last, torch, every triton variant, the repeated-frame case
#     (style encoded once) eager and from CUDA graphs; then 1080p fp16 the same: about 2 min;
#   the CUDA extension's tests and its 4K fp16 row; a kernel-by-kernel profile of one 4K fp16 forward of
#     triton and its variants (torch.profiler); 1080p fp16 batch 8 (images/s); the 4K fp16 memory
#     profile; 4K bf16 and fp32 of the kernel backends and the reference;
#   compiled (torch.compile max-autotune of the reference, fp16, its Inductor cache kept on disk under
#     ~/.cache/microast_fast/inductor so that a rerun on the same machine compiles nothing) with the time left;
#   then, only if time is left: warm-up cost, video fps, 8K, streaming, Nsight Compute, compute-sanitizer.
set -u -o pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUTDIR=$(cd "$1" && pwd)  # absolute, since the steps run from the repository root
cd "$(dirname "$0")/.." || exit 2

PYTHON=${PYTHON:-$(command -v python >/dev/null && echo python || echo python3)}
BUDGET=${GPU_RUN_BUDGET:-450}  # seconds of steps: 8 minutes with start-up and clean-up
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

# Every test that runs on the GPU here: the Triton kernels, variants and model (their DEVICE is cuda)
# and the CUDA-graph path, not the files whose Triton calls run on CPU tensors (those need the
# interpreter: CI). Exit status 5 is pytest's "no tests collected", not a failure.
XDIST=()
"$PYTHON" -c 'import xdist' 2>/dev/null && XDIST=(-n 8)  # the kernels' first compiles, in parallel
# MICROAST_FAST_CUDA=0: the CUDA backend's cases skip here rather than JIT-build the extension that the
# background build is making; they run in cuda-tests.
step gpu-tests 30 200 env MICROAST_FAST_CUDA=0 "$PYTHON" -m pytest tests/test_triton_kernels.py tests/test_triton_model.py \
    tests/test_triton_tail_banded.py tests/test_triton_reductions.py tests/test_triton_variants.py \
    tests/test_cuda_graphs.py -q -p no:cacheprovider "${XDIST[@]}" --junitxml="$OUTDIR/gpu-tests.xml"
rc=$?
((rc == 0 || rc == 5 || rc == 75)) || failed=1
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
    --reference-dir "$REFDIR" --worker-timeout 90)
VARIANTS=$("$PYTHON" -c 'from microast_fast.backends.triton_backend import VARIANTS; print(",".join(VARIANTS))')
# Every variant, the reference as users would run it (plain and channels-last), and repeated frames
# (the style encoded once, as for video) eager and replayed from CUDA graphs.
FP16="reference,reference-channels-last,torch,$VARIANTS,triton:repeated,triton:graphs"
for size in 4k 1080p; do
    step "bench-$size-fp16" 40 150 "${BENCH[@]}" --size "$size" --dtype fp16 --backends "$FP16" \
        --warmup 2 --repeat 10 --json "$OUTDIR/bench_${size}_fp16.json"
done
if ((cuda_built)); then
    step cuda-tests 30 90 "$PYTHON" -m pytest tests/test_cuda_ext.py tests/test_cuda_graphs.py -m gpu -q \
        -p no:cacheprovider -k "not compute_sanitizer" --junitxml="$OUTDIR/cuda-tests.xml"
    rc=$?
    ((rc == 0 || rc == 75)) || failed=1
    step bench-cuda 20 60 "${BENCH[@]}" --size 4k --dtype fp16 --backends cuda,cuda:graphs --warmup 2 --repeat 10 \
        --json "$OUTDIR/bench_cuda_4k.json"
fi
# Where a 4K fp16 forward's time goes, kernel by kernel: the stage budgets of the GPU-speed issue.
profiled=$VARIANTS
((cuda_built)) && profiled=$profiled,cuda
step kernel-profile 30 60 "$PYTHON" benchmarks/kernel_profile.py --device cuda --size 4k --dtype fp16 \
    --backends "$profiled" --out "$OUTDIR"
step batch8-1080p 30 60 "${BENCH[@]}" --size 1080p --dtype fp16 --batch 8 --backends "torch,$VARIANTS" \
    --warmup 1 --repeat 5 --json "$OUTDIR/batch8_1080p.json"
step memory-4k 30 60 "${BENCH[@]}" --memory-profile --size 4k --dtype fp16 --backends "reference,torch,$VARIANTS" \
    --json "$OUTDIR/memory_4k.json"
KERNELS=$VARIANTS
((cuda_built)) && KERNELS=$KERNELS,cuda
step bench-4k-bf16-fp32 40 120 "${BENCH[@]}" --size 4k --dtype bf16,fp32 --backends "reference,torch,$KERNELS" \
    --warmup 2 --repeat 5 --json "$OUTDIR/bench_4k_bf16_fp32.json"
# compiled: max-autotune's tuning takes minutes; its Inductor cache stays on the machine for a rerun.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/microast_fast/inductor}
left=$((BUDGET - SECONDS - 15))
step compiled-4k-fp16 60 400 "${BENCH[@]}" --worker-timeout "$left" --size 4k --dtype fp16 --backends compiled \
    --warmup 3 --repeat 5 --json "$OUTDIR/compiled_4k_fp16.json"

# What is left over, when a run has time for it.
for run in first second; do
    step "warmup-$run-process" 20 90 env TRITON_CACHE_DIR="$REFDIR/triton-cache" MICROAST_FAST_CACHE="$REFDIR" \
        "$PYTHON" -m microast_fast.cli warmup --device cuda --dtype float16 --size 1080p --size 4k
done
for size in 1080p 4k; do
    step "video-$size" 30 60 "$PYTHON" benchmarks/video_bench.py --device cuda --size "$size" --frames 96 \
        --record --results "$OUTDIR/video.csv"
done
step bench-8k 60 120 "${BENCH[@]}" --size 8k --dtype fp16 --backends "reference,triton" \
    --warmup 1 --repeat 3 --json "$OUTDIR/bench_8k.json"
step streaming-8k 40 90 "${BENCH[@]}" --size 8k --dtype fp16 --backends streaming --max-memory 1.5GB \
    --warmup 1 --repeat 3 --json "$OUTDIR/streaming_8k.json"
step ncu-profile 60 120 bash benchmarks/ncu_profile.sh "$OUTDIR" "$profiled" fp16 4k
if ((cuda_built)); then
    step cuda-sanitizer 45 120 "$PYTHON" -m pytest tests/test_cuda_ext.py -m gpu -q -p no:cacheprovider \
        -k compute_sanitizer --junitxml="$OUTDIR/cuda-sanitizer.xml"
    rc=$?
    ((rc == 0 || rc == 75)) || failed=1
fi

junits=()
for f in "$OUTDIR/gpu-tests.xml" "$OUTDIR/cuda-tests.xml"; do
    [[ -s $f ]] && junits+=("$f")
done
verified=""  # kernel backends whose GPU tests passed: only these may become "auto" choices
((${#junits[@]})) && verified=$("$PYTHON" benchmarks/verified.py "${junits[@]}")
echo "verified on this GPU: ${verified:-nothing}" | tee "$OUTDIR/verified.txt"
if [[ -s "$OUTDIR/results.csv" ]]; then
    # The "auto" table with this run's choices (review, then copy to microast_fast/data/auto_backend.json).
    cp microast_fast/data/auto_backend.json "$OUTDIR/auto_backend.json"
    "$PYTHON" benchmarks/auto_table.py --csv "$OUTDIR/results.csv" --verified "$verified" --capability "$ARCH" \
        --out "$OUTDIR/auto_backend.json" >"$OUTDIR/auto_backend.log" 2>&1 ||
        echo "auto_table.py failed (see $OUTDIR/auto_backend.log)" >&2
    "$PYTHON" benchmarks/plot.py --csv "$OUTDIR/results.csv" --out "$OUTDIR" --no-readme >"$OUTDIR/table.md" 2>&1 ||
        echo "plot.py failed (see $OUTDIR/table.md)" >&2
    "$PYTHON" benchmarks/gpu_summary.py "$OUTDIR/results.csv" --out "$OUTDIR/summary.txt" ||
        echo "gpu_summary.py failed" >&2
fi
echo "done in ${SECONDS} s; results in $OUTDIR"
exit "$failed"
