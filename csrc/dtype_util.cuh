// Loads and stores of the three map dtypes through fp32, and small helpers. Everything here is
// __host__ __device__: the kernel bodies also run on the host, thread by thread, in host_emulation.cpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cassert>
#include <cstdint>
#include <cstring>

#include "microast_kernels.h"

namespace microast {

__host__ __device__ __forceinline__ float to_float(float v) { return v; }
__host__ __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __host__ __device__ __forceinline__ T from_float(float v);
template <> __host__ __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __host__ __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Reflection padding by index (pad 1, n >= 2): -1 reads 1, n reads n - 2.
__host__ __device__ __forceinline__ int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

__host__ __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Four consecutive floats through the read-only cache on the device; a plain load when the kernel
// body runs on the host (csrc/host_emulation.cpp).
__host__ __device__ __forceinline__ float4 load4(const float* p) {
#ifdef __CUDA_ARCH__
  return __ldg(reinterpret_cast<const float4*>(p));
#else
  return *reinterpret_cast<const float4*>(p);
#endif
}

// 16 bytes from global memory to shared memory, through the read-only cache on the device; ``dst`` and
// ``src`` 16-byte aligned.
__host__ __device__ __forceinline__ void copy16(void* dst, const void* src) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(dst) = __ldg(reinterpret_cast<const uint4*>(src));
#else
  std::memcpy(dst, src, 16);
#endif
}

// 16 bytes from registers or shared memory to shared memory; ``dst`` and ``src`` 16-byte aligned.
__host__ __device__ __forceinline__ void store16(void* dst, const void* src) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#else
  std::memcpy(dst, src, 16);
#endif
}

// Four consecutive elements as floats, in one 16-byte (fp32) or 8-byte (fp16/bf16) load on the device:
// ``p`` must be aligned to that (the host run asserts it).
template <typename T>
__host__ __device__ __forceinline__ float4 load4_float(const T* p) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    const uint2 bits = *reinterpret_cast<const uint2*>(p);
    const T* v = reinterpret_cast<const T*>(&bits);
    return make_float4(to_float(v[0]), to_float(v[1]), to_float(v[2]), to_float(v[3]));
  }
#else
  assert(reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0);
  return make_float4(to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3]));
#endif
}

// Calls fn(T{}) with T the map type of dtype (a generic lambda takes it as `auto tag`, `decltype(tag)`
// is T): the one switch from the C interface's dtype to the kernels' template argument. False for an
// unknown dtype.
template <typename Fn>
inline bool with_map_type(MicroastDtype dtype, Fn&& fn) {
  switch (dtype) {
    case MICROAST_F32: fn(float{}); return true;
    case MICROAST_F16: fn(__half{}); return true;
    case MICROAST_BF16: fn(__nv_bfloat16{}); return true;
  }
  return false;
}

}  // namespace microast
