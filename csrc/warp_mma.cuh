// One warp's 16x16x16 matrix product on the tensor cores (WMMA: fp16 or bf16 operands, fp32
// accumulation), behind five __host__ __device__ calls, so that a kernel body written with them also
// runs in csrc/host_emulation.cpp. There a "warp" is one call that does the whole 16x16 tile with plain
// loops over the operands as the tensor cores see them (rounded to fp16 / bf16), in fp32: the
// emulation tests which shared-memory rows and columns feed each product, not the tensor cores.
//
// Operands are row-major in shared memory: A [16 rows][16 k] and B [16 k][16 columns], ``ldm``
// elements apart, each pointer 32-byte aligned and ``ldm`` a multiple of 16 elements (WMMA's rules).
#pragma once

#include <mma.h>

#include "dtype_util.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "the tensor-core kernels need sm_80 or newer (bf16 WMMA): set TORCH_CUDA_ARCH_LIST to 8.0 or above"
#endif

namespace microast {
namespace warp_mma {

constexpr int kSide = 16;  // M = N = K of one product

#ifdef __CUDA_ARCH__
template <typename T>
using OperandA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, kSide, kSide, kSide, T, nvcuda::wmma::row_major>;
template <typename T>
using OperandB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, kSide, kSide, kSide, T, nvcuda::wmma::row_major>;
using Accumulator = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, kSide, kSide, kSide, float>;
#else
// On the host, the whole tile that the warp's 32 lanes hold between them.
template <typename T> struct OperandA { float v[kSide * kSide]; };
template <typename T> struct OperandB { float v[kSide * kSide]; };
struct Accumulator { float v[kSide * kSide]; };
#endif

__host__ __device__ inline void zero(Accumulator& acc) {
#ifdef __CUDA_ARCH__
  nvcuda::wmma::fill_fragment(acc, 0.f);
#else
  for (float& v : acc.v) v = 0.f;
#endif
}

template <typename T, typename Operand>
__host__ __device__ inline void load(Operand& op, const T* p, unsigned ldm) {
#ifdef __CUDA_ARCH__
  nvcuda::wmma::load_matrix_sync(op, p, ldm);
#else
  for (int r = 0; r < kSide; ++r)
    for (int c = 0; c < kSide; ++c) op.v[r * kSide + c] = to_float(p[r * ldm + c]);
#endif
}

// acc += a * b
template <typename T>
__host__ __device__ inline void multiply_add(Accumulator& acc, const OperandA<T>& a, const OperandB<T>& b) {
#ifdef __CUDA_ARCH__
  nvcuda::wmma::mma_sync(acc, a, b, acc);
#else
  for (int r = 0; r < kSide; ++r)
    for (int c = 0; c < kSide; ++c) {
      float sum = acc.v[r * kSide + c];
      for (int k = 0; k < kSide; ++k) sum = fmaf(a.v[r * kSide + k], b.v[k * kSide + c], sum);
      acc.v[r * kSide + c] = sum;
    }
#endif
}

// Row-major fp32 store; ``ldm`` a multiple of 4.
__host__ __device__ inline void store(float* p, const Accumulator& acc, unsigned ldm) {
#ifdef __CUDA_ARCH__
  nvcuda::wmma::store_matrix_sync(p, acc, ldm, nvcuda::wmma::mem_row_major);
#else
  for (int r = 0; r < kSide; ++r)
    for (int c = 0; c < kSide; ++c) p[r * ldm + c] = acc.v[r * kSide + c];
#endif
}

}  // namespace warp_mma
}  // namespace microast
