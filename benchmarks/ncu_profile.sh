#!/usr/bin/env bash
# Nsight Compute on one forward per backend (after warm-up forwards, so no compile or autotuning run is
# in it): per kernel, speed of light, occupancy, launch statistics, memory and compute workload, warp
# states and the scheduler. What the kernel_profile table cannot say: why a kernel takes its time.
#
#   bash benchmarks/ncu_profile.sh OUTDIR [BACKENDS=cuda,triton] [DTYPE=fp16] [SIZE=4k]
#
# Writes OUTDIR/ncu_<backend>_<size>_<dtype>.txt. Each kernel is replayed once per section group, so
# a 4K forward takes about a minute a backend. --clock-control none: the card's clocks as they are.
set -u -o pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUTDIR [BACKENDS] [DTYPE] [SIZE]" >&2
    exit 2
fi
out=$1 backends=${2:-cuda,triton} dtype=${3:-fp16} size=${4:-4k}
PYTHON=${PYTHON:-$(command -v python >/dev/null && echo python || echo python3)}
NCU=${NCU:-ncu}
command -v "$NCU" >/dev/null || { echo "$0: $NCU (Nsight Compute) not found; set NCU" >&2; exit 1; }
mkdir -p "$out" || exit 2
cd "$(dirname "$0")/.." || exit 2
failed=0
for backend in ${backends//,/ }; do
    report="$out/ncu_${backend}_${size}_${dtype}.txt"
    "$NCU" --profile-from-start off --clock-control none --target-processes all \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
        "$PYTHON" benchmarks/kernel_profile.py --device cuda --size "$size" --dtype "$dtype" --backends "$backend" \
        --profiler-range >"$report" 2>&1 || failed=1
    echo "wrote $report"
done
exit "$failed"
