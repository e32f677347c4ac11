// The decoder tail as two kernels (half level, then full level with the 9x9); bodies in
// decoder_tail_impl.cuh.
#include "decoder_tail_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(tail::kThreads)
tail_half_kernel(const T* __restrict__ x, int h, int w, MicroastTailWeights weights, T* __restrict__ half) {
  tail::half_pixel<T>(threadIdx.x, blockIdx.x, blockIdx.y, x, h, w, weights, half);
}

template <typename T>
__global__ void __launch_bounds__(tail::kThreads)
tail_full_kernel(const T* __restrict__ half, int h2, int w2, MicroastTailWeights weights, T* __restrict__ out) {
  __shared__ tail::Shared s;  // 36.9 KB: under the 48 KB that needs no opt-in
  tail::stage_full<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, half, h2, w2, weights);
  __syncthreads();
  tail::conv9x9<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, h2, w2, weights, out);
}

template <typename T>
cudaError_t launch_tail(const void* x, MicroastTailWeights weights, int n, int h, int w, void* half, void* out,
                        cudaStream_t stream) {
  tail_half_kernel<T><<<dim3(tail::half_blocks(h, w), n), tail::kThreads, 0, stream>>>(
      static_cast<const T*>(x), h, w, weights, static_cast<T*>(half));
  tail_full_kernel<T><<<dim3(tail::full_blocks(h, w), n), tail::kThreads, 0, stream>>>(
      static_cast<const T*>(half), 2 * h, 2 * w, weights, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_decoder_tail(MicroastDtype dtype, const void* x, MicroastTailWeights weights, int n, int h,
                                  int w, void* half, void* out, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_tail<decltype(tag)>(x, weights, n, h, w, half, out, stream);
  });
  return error;
}
