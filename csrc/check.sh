#!/usr/bin/env bash
# Compiles every CUDA kernel translation unit for sm_80 and sm_90 with warnings as errors, on a machine
# with no GPU (and no CUDA build of torch: the .cu files include no torch header), and prints each
# kernel's registers, spills and shared memory. binding.cpp needs a CUDA build of torch; it is
# compiled by `pip install` / the JIT build on a machine that has one.
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null; then
    echo "csrc/check.sh: $NVCC not found; install the CUDA toolkit or set NVCC" >&2
    exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for arch in 80 90; do
    for cu in *.cu; do
        log="$out/${cu%.cu}_sm$arch.log"
        "$NVCC" -std=c++17 -O3 -arch=sm_$arch --Werror all-warnings -Xptxas -v,-warn-spills,-Werror \
            -c "$cu" -o "$out/${cu%.cu}_sm$arch.o" 2> "$log" || { cat "$log" >&2; exit 1; }
        summary=$(grep -E "Used [0-9]+ registers" "$log" | sed -E 's/.*Used ([0-9]+) registers.*/\1/' | sort -n | tail -1)
        smem=$(grep -oE "[0-9]+ bytes smem" "$log" | sort -n | tail -1 || true)
        echo "sm_$arch $cu: ok, at most $summary registers, ${smem:-0 bytes smem} static (dynamic: see the kernel), no spills"
    done
done
