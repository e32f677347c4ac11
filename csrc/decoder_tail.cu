// The decoder tail as one kernel: a 16x16 image tile a block, both intermediate maps in shared memory.
// The body is in decoder_tail_impl.cuh.
#include "decoder_tail_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(tail::kThreads)
tail_kernel(const T* __restrict__ x, int h, int w, MicroastTailWeights weights, T* __restrict__ out) {
  // Past the 48 KB of static shared memory in fp32 (62 KB): dynamic, opted in by the launcher.
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  tail::Shared<T>& s = *reinterpret_cast<tail::Shared<T>*>(shared_bytes);
  tail::stage_half<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, x, h, w, weights);
  __syncthreads();
  tail::stage_full<T>(s, threadIdx.x, blockIdx.x, 2 * h, 2 * w, weights);
  __syncthreads();
  tail::conv9x9<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, 2 * h, 2 * w, weights, out);
}

template <typename T>
cudaError_t launch_tail(const void* x, MicroastTailWeights weights, int n, int h, int w, void* out, cudaStream_t stream) {
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
