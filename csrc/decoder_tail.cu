// The decoder tail as one kernel: a 16x32 image tile a block, both intermediate maps in shared memory;
// the 9x9 on the tensor cores for fp16/bf16 maps. The body is in decoder_tail_impl.cuh.
#include <type_traits>

#include "decoder_tail_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(tail::kThreads)
tail_kernel(const T* __restrict__ x, int h, int w, MicroastTailWeights weights, T* __restrict__ out) {
  // Past the 48 KB of static shared memory (103.3 KB fp32, 102.5 KB fp16/bf16): dynamic, opted in by the
  // launcher.
  // 128-byte aligned: the WMMA operands in it need 32 bytes, and only 16 are the default.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  tail::Shared<T>& s = *reinterpret_cast<tail::Shared<T>*>(shared_bytes);
  const int t = threadIdx.x, block = blockIdx.x, n = blockIdx.y;
  if constexpr (!std::is_same_v<T, float>) tail::load_conv9x9_weights<T>(s, t, weights);
  tail::stage_half<T>(s, t, block, n, x, h, w, weights);
  __syncthreads();
  tail::stage_full<T>(s, t, block, 2 * h, 2 * w, weights);
  __syncthreads();
  if constexpr (std::is_same_v<T, float>) {
    tail::conv9x9<T>(s, t, block, n, 2 * h, 2 * w, weights, out);
  } else {
    tail::conv9x9_multiply<T>(s, t / 32);  // its accumulators overwrite the window: phase 2 is done with it
    __syncthreads();
    tail::conv9x9_store<T>(s, t, block, n, 2 * h, 2 * w, weights, out);
  }
}

template <typename T>
cudaError_t launch_tail(const void* x, MicroastTailWeights weights, int n, int h, int w, void* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // an empty grid is an invalid launch; there is nothing to compute
  constexpr int bytes = sizeof(tail::Shared<T>);
  const cudaError_t opt_in = cudaFuncSetAttribute(tail_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (opt_in != cudaSuccess) return opt_in;
  tail_kernel<T><<<dim3(tail::blocks(h, w), n), tail::kThreads, bytes, stream>>>(static_cast<const T*>(x), h, w, weights,
                                                                                 static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_decoder_tail(MicroastDtype dtype, const void* x, MicroastTailWeights weights, int n, int h,
                                  int w, void* out, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_tail<decltype(tag)>(x, weights, n, h, w, out, stream);
  });
  return error;
}
